"""No input to any route of the HTTP app makes the server answer 5xx.

A real ``cloudfilm serve`` holding a study, its report and its film, called with an API token
and a logged-in console admin's cookie. schemathesis tests two OpenAPI documents the way
``schemathesis run`` does (documented examples, the coverage phase: boundary values, wrong
types, missing fields, unexpected methods; fuzzing of valid and invalid inputs; stateful
sequences), from a fixed seed:

* ``/openapi.json`` as the server publishes it (what a new user points schemathesis at);
* every other route of the app (console, patient pages, viewer), described by FastAPI from the
  same route table with ``include_in_schema`` lifted. Both come from the app itself, so routes
  added later are covered without touching this file.

Path parameters are drawn half the time from resources that exist and console forms half the
time carry the session's CSRF token, so handlers behind the 404 and the CSRF check run too.
The only check is "no 5xx" (and every request gets an answer; a 503 with Retry-After, the
viewer's page before its build, is an answer on purpose); all distinct failures are listed in
one assertion, each with a curl line that reproduces it.

Run on both index engines, whose limits differ (SQLite cannot bind a number past 64 bits;
PostgreSQL refuses NUL, INTEGER past 32 bits and text longer than its column). Bounded:
``MAX_EXAMPLES`` per operation and phase, about a minute for both on a 2-core machine.

This drives schemathesis's engine (what its CLI runs) from Python rather than the per-case
``as_strategy`` API: only the engine has the coverage and stateful phases, and it sends the
requests a new user's ``schemathesis run`` would. The version is pinned in pyproject.toml.
"""

from __future__ import annotations

import copy
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import routing
from fastapi.openapi.utils import get_openapi
from pydicom.uid import generate_uid
from schemathesis.engine import events, from_schema

from cloudfilm.access.tokens import create_token
from cloudfilm.accounts.models import FIRST_HOSPITAL
from cloudfilm.accounts.users import create_user
from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.http.app import create_app
from cloudfilm.storage.database import Database
from tests.conftest import ServerProcess
from tests.dicomweb.conftest import stow
from tests.factory import make_instance
from tests.portal.conftest import REPORT

SEED = 20_260_901
MAX_EXAMPLES = 10
"""Per operation and phase."""
SCOPES = "read,write,film,admin"
ADMIN, PASSWORD = "fuzz-admin", "Kx7-harbour-lantern"
EXTRA_HEADERS: dict[str, str] = {}
"""Sent with every request besides the token and the cookies: the hook for what later routes
need (add a cookie to ``Target.cookies`` in ``target`` instead, e.g. a patient session)."""
SERVER_FAULTS = {"Network Error", "Unhealthy API", "Unresponsive Operation", "Server Unavailable"}
"""Engine errors that are the server's doing (no answer, a dropped connection, a timeout)."""
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
SESSION_ENDING = {
    "POST /console/logout",
    "POST /console/password",
    "POST /console/admin/users/{pk}/password",
    "POST /console/admin/users/{pk}/disable",
}
"""Console operations that may end the fuzzer's own session (its CSRF token is valid): tested
after all the others, so those still run logged in. Unknown names only cost depth."""


@dataclass
class Target:
    """The running server, what every request carries, and real values to draw from."""

    server: ServerProcess
    token: str
    cookies: dict[str, str] = field(default_factory=dict)
    known: dict[str, str] = field(default_factory=dict)
    """Path parameter name -> a value naming something that exists."""
    form: dict[str, str] = field(default_factory=dict)
    """Form field name -> the value a real page would send (the console's CSRF token)."""

    @property
    def url(self) -> str:
        return self.server.http_url

    @property
    def headers(self) -> dict[str, str]:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {
            "Authorization": f"Bearer {self.token}",
            **({"Cookie": cookie} if cookie else {}),
            **EXTRA_HEADERS,
        }


def _wait_for_film(http: httpx.Client, study: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        r = http.get("/api/films", params={"study_uid": study})
        if r.status_code == 200 or time.monotonic() > deadline:
            assert r.status_code == 200, r.text
            return r.json()
        time.sleep(0.2)


def _hidden_field(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m, f"no hidden field {name!r} in the page"
    return m.group(1)


def _console_login(url: str) -> tuple[str, str]:
    """Log in through the login form as a browser would: (session cookie, CSRF token)."""
    with httpx.Client(base_url=url, timeout=30) as browser:
        page = browser.get("/")
        assert page.status_code == 200, page.text
        form = {"login": ADMIN, "password": PASSWORD, "pre": _hidden_field(page.text, "pre")}
        r = browser.post("/console/login", data=form)
        assert r.status_code == 303, r.text
        page = browser.get("/console/password")
        assert page.status_code == 200, page.text
        return browser.cookies["cf_console"], _hidden_field(page.text, "csrf")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, module_db: str) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("fuzz")
    server = ServerProcess(
        data_dir=root / "data",
        database_url=module_db,
        env_extra={"CLOUDFILM_FILM_STABLE_SECONDS": "0"},
    )
    server.start()
    try:
        db = Database(server.database_url)
        try:
            token = create_token(db, "schemathesis", SCOPES, hospital=FIRST_HOSPITAL)[1]
            create_user(
                db, username=ADMIN, password=PASSWORD, role="admin", hospital=FIRST_HOSPITAL
            )
        finally:
            db.dispose()
        t = Target(server=server, token=token)
        study, series = str(generate_uid()), str(generate_uid())
        sops = [str(generate_uid()) for _ in range(3)]
        accession = "FUZZ0001"
        with httpx.Client(base_url=server.http_url, headers=t.headers, timeout=60) as http:
            parts = [
                make_instance(
                    study_uid=study,
                    series_uid=series,
                    sop_uid=sop,
                    instance_number=i + 1,
                    accession=accession,
                    size=32,
                )
                for i, sop in enumerate(sops)
            ]
            r = stow(http, parts)
            assert r.status_code == 200, r.text
            r = http.post(
                "/api/reports",
                json={**REPORT, "accession_number": accession, "phone": "13912345678"},
            )
            assert r.status_code == 201, r.text
            film = _wait_for_film(http, study)
        session, csrf = _console_login(server.http_url)
        t.cookies["cf_console"] = session
        t.form["csrf"] = csrf
        t.known = {
            "study": study,
            "series": series,
            "sop": sops[0],
            "frame_list": "1",
            "frame": "1",
            "path": "7FE00010",
            "film_id": film["film_id"],
        }
        yield t
    finally:
        server.stop()


def _operations(doc: dict[str, Any]) -> set[str]:
    return {
        f"{method.upper()} {path}"
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


def _unpublished_document(tmp: Path, published: set[str]) -> dict[str, Any]:
    """The app's other routes as an OpenAPI document, described by FastAPI itself.

    The app is built over a throwaway archive only to read its route table; requests go to
    the real server."""
    archive = Archive(Settings(data_dir=tmp / "data", database_url=f"sqlite:///{tmp / 'i.db'}"))
    try:
        app = create_app(archive, background=False)
        routes = []
        for ctx in routing.iter_route_contexts(app.routes):
            route = ctx.original_route
            if not isinstance(route, routing.APIRoute):
                continue  # mounts (static files), Starlette's own /docs and /openapi.json
            keys = {f"{m} {ctx.path_format}" for m in ctx.methods or ()}
            if keys <= published:
                continue
            # routes of an included router with a prefix would need it added here
            assert route.path_format == ctx.path_format, (route.path_format, ctx.path_format)
            shown = copy.copy(route)
            shown.include_in_schema = True
            routes.append(shown)
        with warnings.catch_warnings():
            # GET+HEAD routes (the viewer's) share one operation id: harmless for testing
            warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
            return get_openapi(title="cloudfilm (unpublished routes)", version="0", routes=routes)
    finally:
        archive.close()


def _split(doc: dict[str, Any], last: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``doc`` without the operations in ``last``, and ``doc`` with only those."""
    first, then = copy.deepcopy(doc), copy.deepcopy(doc)
    for part, keep_last in ((first, False), (then, True)):
        for path, item in part["paths"].items():
            for method in [m for m in item if m in METHODS]:
                if (f"{method.upper()} {path}" in last) != keep_last:
                    del item[method]
        part["paths"] = {p: i for p, i in part["paths"].items() if set(i) & set(METHODS)}
    return first, then


def _config(target: Target) -> schemathesis.Config:
    bindings = {f"path.{name}": value for name, value in target.known.items()}
    names = {key: key.replace(".", "-") for key in bindings}
    fixed = {f"body.{name}": value for name, value in target.form.items()}
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": target.url,
            "headers": target.headers,
            "request-timeout": 30,
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "checks": {"enabled": False, "not_a_server_error": {"enabled": True}},
            "dictionaries": {names[k]: {"values": [v]} for k, v in bindings.items()},
            "parameters": {
                **{k: {"dictionary": names[k], "probability": 0.5} for k in bindings},
                **fixed,
            },
        }
    )


@dataclass(frozen=True)
class Failure:
    operation: str
    status: str
    curl: str


def _on_purpose(status: int, headers: dict[str, list[str]]) -> bool:
    """503 with Retry-After: "not available yet, on purpose" (the viewer before its build),
    not an input the server failed on."""
    return status == 503 and "retry-after" in headers


def _failures(recorder: Any) -> Iterator[Failure]:
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.failure_info is None:
                continue
            case = recorder.cases[case_id].value
            interaction = recorder.interactions.get(case_id)
            response = interaction.response if interaction else None
            if response is not None and _on_purpose(response.status_code, response.headers):
                continue
            status = str(response.status_code) if response is not None else "no answer"
            label = f"{case.method.upper()} {case.path}"
            yield Failure(label, status, check.failure_info.code_sample)


def _run(schema: Any, failures: dict[tuple[str, str], list[Failure]], tested: set[str]) -> None:
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            if any(i.response is not None for i in event.recorder.interactions.values()):
                tested.add(event.recorder.label)
            for f in _failures(event.recorder):
                failures.setdefault((f.operation, f.status), []).append(f)
        elif isinstance(event, events.NonFatalError):
            why = event.info.format()
            if event.info.title in SERVER_FAULTS:
                f = Failure(event.label, f"error: {event.info.title}", why)
                failures.setdefault((f.operation, f.status), []).append(f)
            else:
                # the engine's own trouble with a case (seen once in CI under load: a bare
                # "Runtime Error" on GET /api/films, with nothing in the server's log): not an
                # answer of the server's, so reported in full rather than failed on
                warnings.warn(f"schemathesis on {event.label}: {why}", stacklevel=1)
        elif isinstance(event, events.FatalError):
            raise event.exception


def test_no_input_answers_a_server_error(
    target: Target, tmp_path_factory: pytest.TempPathFactory
) -> None:
    public = httpx.get(f"{target.url}/openapi.json", timeout=30).json()
    published = _operations(public)
    unpublished = _unpublished_document(tmp_path_factory.mktemp("routes"), published)
    config = _config(target)
    failures: dict[tuple[str, str], list[Failure]] = {}
    tested: set[str] = set()
    _run(
        schemathesis.openapi.from_url(f"{target.url}/openapi.json", config=config), failures, tested
    )
    for doc in _split(unpublished, SESSION_ENDING):
        if doc["paths"]:
            _run(schemathesis.openapi.from_dict(doc, config=config), failures, tested)
    if failures:
        lines = [
            f"{len(failures)} distinct server errors (operation, status); in the curl lines"
            f" '[Filtered]' stands for the token (scopes {SCOPES}) or the console cookie, and"
            " the port for any server started the same way:"
        ]
        for (operation, status), seen in sorted(failures.items()):
            lines.append(f"- {operation} -> {status} ({len(seen)}x), e.g.\n    {seen[0].curl}")
        lines.append("server log (tail):\n" + target.server.log()[-6000:])
        pytest.fail("\n".join(lines), pytrace=False)
    everything = published | _operations(unpublished)
    assert len(published) >= 30 and len(everything) >= 60, sorted(everything)
    assert everything <= tested, f"operations never answered: {sorted(everything - tested)}"

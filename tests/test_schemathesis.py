"""No input to any operation in ``/openapi.json`` makes the server answer 5xx.

A real ``cloudfilm serve`` holding a study, its report and its film; schemathesis reads the
published OpenAPI document and tests every operation in it (so routes added later are covered
without touching this file) the way ``schemathesis run`` does: the documented examples, the
coverage phase (boundary values, wrong types, missing fields, unexpected methods), fuzzing of
valid and invalid inputs, and stateful sequences, from a fixed seed. Path parameters are drawn
half the time from the resources that exist, so the handlers behind the 404 run too.

The only check is "no 5xx" (and every request gets an answer). All distinct failures are
collected and listed in one assertion, each with a curl line that reproduces it.

Bounded: ``MAX_EXAMPLES`` per operation and phase, one engine (SQLite: the index engine does
not change which inputs reach which handler), well under a minute on a 2-core machine.

This drives schemathesis's engine (what its CLI runs) from Python rather than the per-case
``as_strategy`` API: only the engine has the coverage and stateful phases, and it sends the
same requests a new user's ``schemathesis run`` would. The version is pinned in pyproject.toml.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from pydicom.uid import generate_uid
from schemathesis.engine import events, from_schema

from cloudfilm.access.tokens import create_token
from cloudfilm.storage.database import Database
from tests.conftest import ServerProcess
from tests.dicomweb.conftest import stow
from tests.factory import make_instance
from tests.portal.conftest import REPORT

SEED = 20_260_901
MAX_EXAMPLES = 15
"""Per operation and phase."""
SCOPES = "read,write,film,admin"
EXTRA_HEADERS: dict[str, str] = {}
"""Sent with every request besides the bearer token: the hook for routes that need more (a
session cookie, say: ``{"Cookie": "cf_session=…"}``, set in ``target`` once one is made)."""


@dataclass
class Target:
    """The running server, what every request carries, and real values for path parameters."""

    server: ServerProcess
    headers: dict[str, str]
    known: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.http_url


def _new_token(database_url: str, scopes: str) -> str:
    db = Database(database_url)
    try:
        return create_token(db, "schemathesis", scopes, hospital=1)[1]
    finally:
        db.dispose()


def _wait_for_film(http: httpx.Client, study: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        r = http.get("/api/films", params={"study_uid": study})
        if r.status_code == 200 or time.monotonic() > deadline:
            assert r.status_code == 200, r.text
            return r.json()
        time.sleep(0.2)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("fuzz")
    server = ServerProcess(
        data_dir=root / "data",
        database_url=f"sqlite:///{root / 'index.sqlite3'}",
        env_extra={"CLOUDFILM_FILM_STABLE_SECONDS": "0"},
    )
    server.start()
    try:
        token = _new_token(server.database_url, SCOPES)
        headers = {"Authorization": f"Bearer {token}", **EXTRA_HEADERS}
        study, series = str(generate_uid()), str(generate_uid())
        sops = [str(generate_uid()) for _ in range(3)]
        accession = "FUZZ0001"
        with httpx.Client(base_url=server.http_url, headers=headers, timeout=60) as http:
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
        known = {
            "study": study,
            "series": series,
            "sop": sops[0],
            "frame_list": "1",
            "frame": "1",
            "path": "7FE00010",
            "film_id": film["film_id"],
        }
        yield Target(server=server, headers=headers, known=known)
    finally:
        server.stop()


@dataclass(frozen=True)
class Failure:
    operation: str
    status: str
    curl: str


def _config(target: Target) -> schemathesis.Config:
    known = target.known
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": target.headers,
            "request-timeout": 30,
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "checks": {"enabled": False, "not_a_server_error": {"enabled": True}},
            "dictionaries": {name: {"values": [value]} for name, value in known.items()},
            "parameters": {
                f"path.{name}": {"dictionary": name, "probability": 0.5} for name in known
            },
        }
    )


def _failures(recorder: Any) -> Iterator[Failure]:
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.failure_info is None:
                continue
            case = recorder.cases[case_id].value
            interaction = recorder.interactions.get(case_id)
            response = interaction.response if interaction else None
            status = str(response.status_code) if response is not None else "no answer"
            label = f"{case.method.upper()} {case.path}"
            yield Failure(label, status, check.failure_info.code_sample)


def test_no_input_answers_a_server_error(target: Target) -> None:
    spec = httpx.get(f"{target.url}/openapi.json", timeout=30).json()
    published = {
        f"{method.upper()} {path}"
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "put", "post", "delete", "patch", "head", "options")
    }
    schema = schemathesis.openapi.from_url(f"{target.url}/openapi.json", config=_config(target))
    failures: dict[tuple[str, str], list[Failure]] = {}
    tested: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            if any(i.response is not None for i in event.recorder.interactions.values()):
                tested.add(event.recorder.label)
            for f in _failures(event.recorder):
                failures.setdefault((f.operation, f.status), []).append(f)
        elif isinstance(event, events.NonFatalError):
            f = Failure(event.label, f"error: {event.info.title}", event.info.code_sample or "")
            failures.setdefault((f.operation, f.status), []).append(f)
        elif isinstance(event, events.FatalError):
            raise event.exception
    if failures:
        lines = [
            f"{len(failures)} distinct server errors (operation, status); in the curl lines"
            f" 'Authorization: [Filtered]' stands for 'Bearer <a token of scopes {SCOPES}>'"
            " and the port for any server started the same way:"
        ]
        for (operation, status), seen in sorted(failures.items()):
            lines.append(f"- {operation} -> {status} ({len(seen)}x), e.g.\n    {seen[0].curl}")
        lines.append("server log (tail):\n" + target.server.log()[-6000:])
        pytest.fail("\n".join(lines), pytrace=False)
    assert len(published) >= 30, sorted(published)
    assert published <= tested, f"operations never tested: {sorted(published - tested)}"

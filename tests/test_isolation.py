"""No door lets hospital A reach hospital B's data; an operator's every read is audited.

One parametrised test runs over **every route the HTTP application has** (the OpenAPI document
and the pages left out of it), found by walking the application, so a new endpoint is tested
the day it is added: its path parameters are filled with hospital B's identifiers, and it is
called with hospital A's most powerful credentials (an API token with every scope, and a
hospital-admin's console session when the console is installed). Whatever it answers must not
carry B's data, and nothing of B may change. The DIMSE services are tested the same way with a
calling AE of hospital A. A platform operator's token reads B's study, and the audit trail names
the operator. All against a real ``cloudfilm serve``, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import func, select

from cloudfilm.access.tokens import create_token
from cloudfilm.accounts.aes import register_ae
from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.accounts.users import create_user
from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.portal.films import film_link, issue_film
from cloudfilm.portal.reports import ReportFields, save_report
from cloudfilm.portal.shares import create_share
from cloudfilm.storage.models import AuditEvent, Study
from tests.conftest import ServerProcess
from tests.factory import make_instance

pytestmark = pytest.mark.timeout(600)

B_PATIENT = "BPAT7770"
B_NAME = "Zhao^Liu=赵^六"
B_ACCESSION = "BACC7770"
B_STUDY = "1.2.826.0.1.3680043.8.498.7770"
B_SERIES = B_STUDY + ".1"
B_SOPS = [f"{B_SERIES}.{n}" for n in (1, 2)]
MARKERS = ("赵^六", "Zhao^Liu", "赵六", "乙医院的报告")
"""B's patient name and report text: never sent in a request (pages may echo the IDs a user
typed), so any of these in an answer to hospital A is a leak."""
AIMED = re.compile(r"\{(study|series|sop|film_id|share_id)\}")
"""A route addressing one of B's resources must refuse outright (a frame has no name in it)."""
PASSWORD = "isolation-pass-1"
PUBLIC = {
    "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/healthz",
    "/viewer", "/viewer/", "/viewer/{file_path:path}", "/p/static/{name}", "/p/lang/{lang}",
}  # fmt: skip
"""Routes that serve no study data at all (docs, health, static files); still called."""


def _walk(routes: list, prefix: str = "") -> Iterator[tuple[str, str]]:  # type: ignore[type-arg]
    for r in routes:
        if type(r).__name__ == "_IncludedRouter":
            yield from _walk(r.original_router.routes, prefix + r.include_context.prefix)
        elif hasattr(r, "original_router"):
            yield from _walk(r.original_router.routes, prefix)
        elif hasattr(r, "routes") and not hasattr(r, "methods"):
            yield from _walk(r.routes, prefix + getattr(r, "path", ""))
        elif hasattr(r, "path"):
            for method in sorted(getattr(r, "methods", None) or {"GET"}):
                if method != "HEAD":
                    yield method, prefix + r.path


def _routes() -> list[tuple[str, str]]:
    """Every (method, path) of the application, as ``cloudfilm serve`` builds it."""
    import tempfile

    from cloudfilm.http.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        archive = Archive(Settings(data_dir=Path(tmp), database_url=f"sqlite:///{tmp}/i.db"))
        try:
            app = create_app(archive, background=False)
            found = sorted(set(_walk(app.routes)))
            schema = app.openapi()["paths"]
        finally:
            archive.close()
    for path, ops in schema.items():  # the OpenAPI document is covered, whatever the walk saw
        for method, op in ops.items():
            if (method.upper(), path) not in found:
                found.append((method.upper(), path))
            DECLARED[(method.upper(), path)] = [
                p["name"] for p in op.get("parameters", []) if p.get("in") == "query"
            ]
    return sorted(set(found))


DECLARED: dict[tuple[str, str], list[str]] = {}
"""Query parameters each documented operation declares (an undeclared one may be refused)."""
ROUTES = _routes()
QIDO = re.compile(r"^/dicom-web/(studies(/\{study\}(/series(/\{series\}/instances)?|/instances)?)?"
                  r"|series|instances)$")  # fmt: skip


@dataclass
class World:
    server: ServerProcess
    a_token: str
    operator_token: str
    operator_id: str
    b_film: str
    b_share: str
    b_film_token: str
    a_cookies: dict[str, str]
    b_request: str
    b_grant: str


def _ingest_b(archive: Archive, hospital: int) -> None:
    for n, sop in enumerate(B_SOPS, 1):
        archive.ingest(
            make_instance(
                patient_name=B_NAME, patient_id=B_PATIENT, charset="ISO_IR 192",
                study_uid=B_STUDY, series_uid=B_SERIES, sop_uid=sop, instance_number=n,
                accession=B_ACCESSION,
            ),
            hospital=hospital,
        )  # fmt: skip


def _b_consent(archive: Archive, hospital: int) -> tuple[str, str]:
    """B's patient is a person; a B doctor holds a pending request and a grant for them."""
    from cloudfilm.regional import consent
    from cloudfilm.regional.identifiers import national_id
    from cloudfilm.regional.persons import link_patient
    from cloudfilm.storage.models import Patient

    with archive.db.write() as s:
        patient = s.execute(select(Patient).where(Patient.patient_id == B_PATIENT)).scalar_one()
        person = link_patient(s, archive.secret, patient, [national_id("11010519491231002X")],
                              source="test").person_pk  # fmt: skip
        assert person is not None
        ask = consent.Ask("乙医院复查")
        made = [
            consent.new_request(s, archive.secret, person_pk=person, hospital_pk=hospital,
                                requester="user:b-desk", requester_name="乙", ask=ask,
                                mode="app")[0]
            for _ in range(2)
        ]  # fmt: skip
        grant = consent.decide(s, made[1], approve=True, by="test")
        assert grant is not None
        return made[0].request_id, grant.grant_id


@pytest.fixture(scope="module")
def world(module_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("iso") / "data"
    archive = Archive(Settings(data_dir=data, database_url=module_db))
    try:
        b = create_hospital(archive.db, "HOSP-B", "乙医院", region_code="320200")
        archive.ingest(
            make_instance(patient_name="Zhang^San=张^三", patient_id="APAT1110",
                          charset="ISO_IR 192", accession="AACC1110"),
            hospital=1,
        )  # fmt: skip
        _ingest_b(archive, b.pk)
        save_report(
            archive,
            ReportFields(study_uid=B_STUDY, accession_number=B_ACCESSION, patient_name="赵六",
                         phone="13900139000", impression="乙医院的报告"),
            source="json", hospital=b.pk,
        )  # fmt: skip
        film, _ = issue_film(archive, B_STUDY)
        create_user(archive.db, username="b-desk", password=PASSWORD, role="filmdesk",
                    hospital=b.pk, display_name="乙 胶片窗口")  # fmt: skip
        share = create_share(archive, [film], days=3, created_by="system:test",
                             assisted_by="乙 胶片窗口 (b-desk)")  # fmt: skip
        scopes = "read,write,film,admin"
        _i, a_token = create_token(archive.db, "A everything", scopes, hospital=1)
        op, operator_token = create_token(archive.db, "平台运维 值班", "operator", hospital=None)
        create_user(archive.db, username="a-admin", password=PASSWORD, role="admin",
                    hospital=1, display_name="甲 管理员")  # fmt: skip
        register_ae(archive.db, 1, "A_MOD")
        register_ae(archive.db, b.pk, "B_MOD")
        link = film_link(archive, film)
        b_request, b_grant = _b_consent(archive, b.pk)
    finally:
        archive.close()
    server = ServerProcess(data_dir=data, database_url=module_db)
    server.start()
    try:
        cookies = _console_login(server, "a-admin")
        yield World(
            server=server, a_token=a_token, operator_token=operator_token,
            operator_id=op.token_id, b_film=film.film_id, b_share=share.share_id,
            b_film_token=link.link.rsplit("/", 1)[1], a_cookies=cookies,
            b_request=b_request, b_grant=b_grant,
        )  # fmt: skip
    finally:
        server.stop()


def _console_login(server: ServerProcess, username: str) -> dict[str, str]:
    """A's admin logged in to the console, when the console has a login route."""
    if ("POST", "/console/login") not in ROUTES:
        return {}
    with httpx.Client(base_url=server.http_url, follow_redirects=False) as http:
        page = http.get("/")
        fields = dict(re.findall(r'name="(\w+)"\s+value="([^"]*)"', page.text))
        r = http.post("/console/login", data={**fields, "login": username, "password": PASSWORD})
        assert r.status_code in (302, 303), r.text[:500]
        return dict(http.cookies)


def _fill(path: str, world: World) -> str:
    values = {
        "study": B_STUDY, "series": B_SERIES, "sop": B_SOPS[0], "frame_list": "1", "frame": "1",
        "path": "7FE00010", "film_id": world.b_film, "share_id": world.b_share,
        "token": secrets.token_urlsafe(32), "lang": "en", "name": "portal.css",
        "file_path": "index.html", "user_id": "x", "pk": "1", "ae_pk": "1", "token_id": "x",
        "code": "HOSP-B", "request_id": world.b_request, "grant_id": world.b_grant,
    }  # fmt: skip

    def one(m: re.Match[str]) -> str:
        name = m.group(1).split(":")[0]
        if name not in values:
            raise AssertionError(
                f"teach tests/test_isolation.py how to aim path parameter {name!r} at "
                "hospital B's data"
            )
        return values[name]

    return re.sub(r"\{([^}]+)\}", one, path)


QUERY = {
    "study_uid": B_STUDY, "studyUID": B_STUDY, "seriesUID": B_SERIES, "objectUID": B_SOPS[0],
    "requestType": "WADO", "PatientID": B_PATIENT, "AccessionNumber": B_ACCESSION,
    "study": B_STUDY, "q": B_PATIENT, "patient_id": B_PATIENT, "accession": B_ACCESSION,
}  # fmt: skip


def _b_body() -> tuple[bytes, str]:
    """A STOW-RS body with a new instance claiming B's study."""
    part = make_instance(study_uid=B_STUDY, series_uid=B_SERIES, patient_id=B_PATIENT)
    boundary = "isolation"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + part
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def _json_body(world: World) -> dict[str, object]:
    return {
        "study_uid": B_STUDY, "film_ids": [world.b_film], "accession_number": B_ACCESSION,
        "assisted_by": "b-desk", "days": 1, "token": world.b_film_token, "code": "000000",
        "phone": "13900139000", "impression": "A 的报告不得并入乙医院",
    }  # fmt: skip


def _calls(http: httpx.Client, method: str, path: str, world: World) -> list[httpx.Response]:
    url = _fill(path, world)
    if method == "GET":
        if (method, path) in DECLARED:
            params = {n: QUERY[n] for n in DECLARED[(method, path)] if n in QUERY}
            if QIDO.match(path):  # matching keys aimed at B's patient and accession
                params.update(PatientID=B_PATIENT)
                extra = [http.get(url, params={"AccessionNumber": B_ACCESSION})]
            else:
                extra = []
        else:  # a page: it may read any of these
            params, extra = QUERY, []
        return [http.get(url), http.get(url, params=params), *extra]
    if method == "DELETE":
        return [http.delete(url)]
    if path.startswith("/dicom-web/studies"):
        body, ctype = _b_body()
        return [http.post(url, content=body, headers={"Content-Type": ctype})]
    if path.startswith("/console/"):
        return [http.post(url, data={k: str(v) for k, v in _json_body(world).items()})]
    return [http.post(url, json=_json_body(world))]


def _b_state(world: World) -> tuple[int, int, str, bool]:
    archive = Archive(
        Settings(data_dir=world.server.data_dir, database_url=world.server.database_url)
    )
    try:
        with archive.db.read() as s:
            instances = s.execute(
                select(Study.num_instances).where(Study.study_uid == B_STUDY)
            ).scalar_one()
            from cloudfilm.portal.models import Report

            reports = s.execute(
                select(func.count()).select_from(Report).where(Report.study_uid == B_STUDY)
            ).scalar_one()
            from cloudfilm.regional.models import ConsentGrant, ConsentRequest

            asked = s.execute(
                select(ConsentRequest.status).where(ConsentRequest.request_id == world.b_request)
            ).scalar_one()
            revoked = s.execute(
                select(ConsentGrant.revoked_at).where(ConsentGrant.grant_id == world.b_grant)
            ).scalar_one()
        return instances, reports, asked, revoked is None
    finally:
        archive.close()


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_hospital_a_cannot_reach_hospital_b_through_any_route(
    world: World, method: str, path: str
) -> None:
    before = _b_state(world)
    credentials = [
        ("A's token", {"Authorization": f"Bearer {world.a_token}"}, {}),
        ("A's console session", {}, world.a_cookies),
    ]
    for who, headers, cookies in credentials:
        if who == "A's console session" and not cookies:
            continue
        with httpx.Client(
            base_url=world.server.http_url, headers=headers, cookies=cookies, timeout=60
        ) as http:
            answers = _calls(http, method, path, world)
        for r in answers:
            _check(who, method, path, r)
    assert _b_state(world) == before, f"{method} {path} changed hospital B's study"


def _check(who: str, method: str, path: str, r: httpx.Response) -> None:
    assert r.status_code < 500, f"{who}: {method} {path} -> {r.status_code} {r.text[:300]}"
    if AIMED.search(path) or (method, path) == ("GET", "/api/films"):
        assert r.status_code >= 400, f"{who}: {method} {path} answered {r.status_code}"
    if r.status_code < 400 and path not in PUBLIC:
        text = r.content.decode("utf-8", "replace")
        if path == "/api/reports":  # the answer echoes the fields sent: what matters is
            body = r.json()  # that the report of A did not attach itself to B's study
            assert body["matched_study_uid"] != B_STUDY
            text = json.dumps({k: v for k, v in body.items() if k != "fields"})
        leaked = [m for m in MARKERS if m in text or json.dumps(m)[1:-1] in text]
        assert not leaked, f"{who}: {method} {path} answered {r.status_code} with {leaked}"


@pytest.mark.parametrize(
    "path",
    [p for m, p in ROUTES if m == "GET" and "{study}" in p and "bulkdata" not in p],
)
def test_an_operator_reads_hospital_b_and_is_audited_by_name(world: World, path: str) -> None:
    url = _fill(path, world)
    with httpx.Client(
        base_url=world.server.http_url,
        headers={"Authorization": f"Bearer {world.operator_token}"},
        timeout=60,
    ) as http:
        r = http.get(url, headers={"Accept": "*/*"})
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
        before = _b_state(world)
        body, ctype = _b_body()
        stow = http.post(
            f"/dicom-web/studies/{B_STUDY}", content=body, headers={"Content-Type": ctype}
        )
        assert stow.status_code in (403, 409), "an operator reads; it never writes"
        assert _b_state(world) == before
    archive = Archive(
        Settings(data_dir=world.server.data_dir, database_url=world.server.database_url)
    )
    try:
        archive.audit.flush()
        with archive.db.read() as s:
            rows = s.execute(
                select(AuditEvent.principal, AuditEvent.detail, AuditEvent.hospital_pk).where(
                    AuditEvent.resource == B_STUDY,
                    AuditEvent.principal == f"token:{world.operator_id}",
                    AuditEvent.outcome == "allow",
                )
            ).all()
    finally:
        archive.close()
    assert rows and all("operator read" in d for _p, d, _h in rows)
    assert {h for _p, _d, h in rows} == {2}, "the record belongs to the hospital whose data it is"


# -- DIMSE ------------------------------------------------------------------------------------
def _assoc(world: World, calling: str, *contexts: str):  # type: ignore[no-untyped-def]
    ae = AE(ae_title=calling)
    for c in contexts:
        ae.add_requested_context(c)
    ae.add_requested_context(CTImageStorage)
    roles = [build_role(CTImageStorage, scp_role=True)]
    assoc = ae.associate("127.0.0.1", world.server.dicom_port, ae_title="CLOUDFILM",
                         ext_neg=roles)  # fmt: skip
    assert assoc.is_established
    return assoc


def _identifier(level: str = "STUDY") -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = ""
    ds.PatientID = ""
    ds.PatientName = ""
    return ds


def test_dimse_find_get_move_store_keep_hospitals_apart(world: World) -> None:
    find = StudyRootQueryRetrieveInformationModelFind
    assoc = _assoc(world, "A_MOD", find, StudyRootQueryRetrieveInformationModelGet,
                   StudyRootQueryRetrieveInformationModelMove)  # fmt: skip
    try:
        seen = [
            ident.StudyInstanceUID
            for status, ident in assoc.send_c_find(_identifier(), find)
            if status and status.Status == 0xFF00
        ]
        assert seen and B_STUDY not in seen, "A's AE finds its own study only"
        by_uid = _identifier()
        by_uid.StudyInstanceUID = B_STUDY
        assert not [s for s, i in assoc.send_c_find(by_uid, find) if s and s.Status == 0xFF00]
        got = list(assoc.send_c_get(by_uid, StudyRootQueryRetrieveInformationModelGet))
        final = got[-1][0]
        assert final.Status == 0x0000 and final.get("NumberOfCompletedSuboperations", 0) == 0
    finally:
        assoc.release()
    ae = AE(ae_title="A_MOD")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", world.server.dicom_port, ae_title="CLOUDFILM")
    try:
        data = make_instance(study_uid=B_STUDY, series_uid=B_SERIES, patient_id=B_PATIENT)
        status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(data)))
        assert status.Status == 0x0124, f"A's AE stores into B's study: {status.Status:#06x}"
    finally:
        assoc.release()
    assoc = _assoc(world, "B_MOD", find)
    try:
        seen = [
            ident.StudyInstanceUID
            for status, ident in assoc.send_c_find(_identifier(), find)
            if status and status.Status == 0xFF00
        ]
        assert seen == [B_STUDY], "B's AE finds B's study (and nothing of A's)"
    finally:
        assoc.release()
    unknown = AE(ae_title="NOBODY")
    unknown.add_requested_context(find)
    stranger = unknown.associate("127.0.0.1", world.server.dicom_port, ae_title="CLOUDFILM")
    # never let in, and refused by the server with A-ASSOCIATE-RJ (its log says so: once, in a
    # loaded fresh-clone run, pynetdicom's side ended with the association neither established
    # nor marked rejected, while the server had sent the rejection)
    assert not stranger.is_established, "an AE title no hospital registered is let in"
    if stranger.is_alive():
        stranger.abort()
    deadline = time.monotonic() + 10
    while "association from NOBODY@127.0.0.1 rejected" not in world.server.log():
        assert time.monotonic() < deadline, "an AE title no hospital registered is not rejected"
        time.sleep(0.1)


def test_audit_records_about_b_belong_to_b(world: World) -> None:
    """Records whose writer did not name a hospital (film issuing, shares) take the owner of
    the study they are about, so B's audit search finds them and A's never does."""
    archive = Archive(
        Settings(data_dir=world.server.data_dir, database_url=world.server.database_url)
    )
    try:
        with archive.db.read() as s:
            rows = s.execute(
                select(AuditEvent.action, AuditEvent.hospital_pk).where(
                    AuditEvent.resource == B_STUDY, AuditEvent.action.in_(["issue", "share"])
                )
            ).all()
    finally:
        archive.close()
    assert {a for a, _h in rows} == {"issue", "share"}
    assert {h for _a, h in rows} == {2}

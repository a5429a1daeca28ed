"""Credentials, the token CLI, CORS and the self-documenting API."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from cloudfilm.demo import DemoManifest
from cloudfilm.storage.database import Database
from cloudfilm.storage.models import AuditEvent
from tests.dicomweb.conftest import DicomWeb, start_server, stow
from tests.procs import child_pids

pytestmark = pytest.mark.engines("postgresql")  # HTTP behaviour, not the index

FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def _cli(dw: DicomWeb, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloudfilm.cli", "token", *args],
        env=dw.server.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_requests_without_valid_credentials_are_refused(dw: DicomWeb, demo: DemoManifest) -> None:
    study = demo.study("ct").study_uid
    with dw.http(None) as anon:
        for url in (
            "/dicom-web/studies",
            f"/dicom-web/studies/{study}/metadata",
            f"/dicom-web/studies/{study}",
        ):
            r = anon.get(url)
            assert r.status_code == 401, url
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.headers["content-type"] == "application/problem+json"
        r = anon.get("/dicom-web/studies", headers={"Authorization": "Bearer cf_wrong"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        r = anon.get("/dicom-web/studies", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert r.status_code == 401
    with dw.http("write") as writer:  # write scope does not include read
        assert writer.get("/dicom-web/studies").status_code == 403
        assert writer.get(f"/dicom-web/studies/{study}/metadata").status_code == 403
    with dw.http("admin") as admin:
        assert admin.get("/dicom-web/studies").status_code == 200
    with dw.http(None) as anon:
        assert anon.get("/healthz").status_code == 200


def test_reads_are_audited_under_the_token(dw: DicomWeb, demo: DemoManifest) -> None:
    study = demo.study("mr").study_uid
    with dw.http("read") as http:
        assert http.get(f"/dicom-web/studies/{study}/metadata").status_code == 200
    with dw.http("write") as http:
        assert http.get(f"/dicom-web/studies/{study}/metadata").status_code == 403
    db = Database(dw.server.database_url)
    try:
        for _ in range(50):
            with db.read() as session:
                events = (
                    session.execute(select(AuditEvent).where(AuditEvent.resource == study))
                    .scalars()
                    .all()
                )
            seen = {(e.principal, e.outcome) for e in events}
            # the trail is written in batches: wait for this test's own two decisions
            if {
                (f"token:{dw.token_ids['read']}", "allow"),
                (f"token:{dw.token_ids['write']}", "deny"),
            } <= seen:
                break
            time.sleep(0.1)
    finally:
        db.dispose()
    assert (f"token:{dw.token_ids['read']}", "allow") in seen
    assert (f"token:{dw.token_ids['write']}", "deny") in seen


def test_token_cli_create_list_revoke(dw: DicomWeb) -> None:
    created = _cli(dw, "create", "--name", "pacs-gateway", "--scope", "read,write")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("cf_") and len(token) >= 40 and " " not in token
    listing = _cli(dw, "list")
    line = next(x for x in listing.stdout.splitlines() if "pacs-gateway" in x)
    token_id = line.split()[0]
    assert "read,write" in line and "active" in line
    assert token not in listing.stdout  # the secret is never shown again
    headers = {"Authorization": f"Bearer {token}"}
    with dw.http(None) as http:
        assert http.get("/dicom-web/studies", headers=headers).status_code == 200
        revoked = _cli(dw, "revoke", token_id)
        assert revoked.returncode == 0, revoked.stderr
        # every server process stops the token within RECHECK_SECONDS (1 s)
        time.sleep(1.2)
        for _ in range(4):  # requests land on either HTTP process
            r = http.get("/dicom-web/studies", headers=headers)
            assert r.status_code == 401
    assert "revoked" in next(x for x in _cli(dw, "list").stdout.splitlines() if token_id in x)
    bad = _cli(dw, "create", "--name", "x", "--scope", "superuser")
    assert bad.returncode != 0 and "unknown scope" in bad.stderr
    assert _cli(dw, "revoke", "nope").returncode != 0


def test_cors(dw: DicomWeb) -> None:
    origin = "https://viewer.example.org"
    with dw.http(None) as http:
        r = http.options(
            "/dicom-web/studies",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] in ("*", origin)
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
    with dw.http("read") as http:
        r = http.get("/dicom-web/studies", headers={"Origin": origin})
        assert r.headers["access-control-allow-origin"] in ("*", origin)
        assert "etag" in r.headers["access-control-expose-headers"].lower()


def test_openapi_documents_the_api(dw: DicomWeb) -> None:
    with dw.http(None) as http:
        docs = http.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        spec = http.get("/openapi.json").json()
    paths = spec["paths"]
    for p in (
        "/dicom-web/studies",
        "/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/{frame_list}",
        "/dicom-web/studies/{study}/series/{series}/metadata",
        "/wado",
    ):
        assert p in paths, p
    assert "post" in paths["/dicom-web/studies"]


def test_no_internal_argument_is_published_as_a_query_parameter(
    dw: DicomWeb, demo: DemoManifest
) -> None:
    """The principal dependency once took an internal ``inline`` flag, which FastAPI published
    as a query parameter: ``?inline=true`` with a token not yet cached answered 500."""
    _, token = dw.new_token("inline-probe", "read")  # fresh: not in any process's token cache
    study = demo.study("ct").study_uid
    with dw.http(None) as http:
        http.headers["Authorization"] = f"Bearer {token}"
        spec = http.get("/openapi.json").json()
        r = http.get(f"/dicom-web/studies/{study}/metadata", params={"inline": "true"})
        assert r.status_code == 200, r.text
        # QIDO-RS refuses query keys it does not know: a problem naming the key, not a 500
        r = http.get("/dicom-web/studies", params={"inline": "true"})
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert "inline" in r.json()["detail"]
    published = [
        (method, path)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if isinstance(op, dict)
        for param in op.get("parameters", [])
        if param.get("name") == "inline"
    ]
    assert published == []


def test_a_nul_anywhere_in_the_url_is_a_400_problem(dw: DicomWeb, demo: DemoManifest) -> None:
    """No text column takes NUL (PostgreSQL refuses it: this once answered 500 there)."""
    study = demo.study("ct").study_uid
    with dw.http("read") as http:
        for url in (
            "/dicom-web/studies?PatientName=a%00b",
            f"/dicom-web/studies/{study}/series?SeriesDescription=%00",
            "/api/films?study_uid=1.2%00",
            "/api/films/a%00b/qr.svg",
            "/f/a%00b",
        ):
            r = http.get(url)
            assert r.status_code == 400, (url, r.status_code)
            assert r.headers["content-type"] == "application/problem+json"
        assert http.get("/dicom-web/studies", params={"PatientName": "a*"}).status_code == 200


def test_unknown_paths_and_methods_are_problems(dw: DicomWeb) -> None:
    with dw.http("read") as http:
        r = http.get("/dicom-web/nothing-here")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        r = http.put("/dicom-web/studies")
        assert r.status_code == 405 and r.json()["status"] == 405


def test_demo_banner_gives_a_working_read_token(dw: DicomWeb) -> None:
    """``serve --demo`` prints these lines; each run replaces the previous demo token."""
    from cloudfilm.access.token_cli import demo_token_lines
    from cloudfilm.archive import Archive
    from cloudfilm.config import Settings

    archive = Archive(Settings(data_dir=dw.server.data_dir, database_url=dw.server.database_url))
    try:
        first = demo_token_lines(archive)[0].split()[-1]
        second = demo_token_lines(archive)[0].split()[-1]
    finally:
        archive.close()
    with dw.http(None) as http:
        auth = {"Authorization": f"Bearer {second}"}
        assert http.get("/dicom-web/studies", headers=auth).status_code == 200
        assert http.post("/dicom-web/studies", headers=auth).status_code == 403
        old = {"Authorization": f"Bearer {first}"}
        assert http.get("/dicom-web/studies", headers=old).status_code == 401


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_http_worker_processes_share_the_load_and_die_with_the_server(
    tmp_path: Path, demo: DemoManifest
) -> None:
    """``serve`` answers HTTP from several processes (one per core by default) on one socket;
    a burst of frame requests is served by more than one of them, and none outlives a
    SIGKILLed server."""
    server = start_server(
        tmp_path, f"sqlite:///{tmp_path / 'i.sqlite3'}", CLOUDFILM_HTTP_WORKERS="3"
    )
    try:
        pid = server.server.proc.pid  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while len(child_pids(pid, b"http-worker")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = child_pids(pid, b"http-worker")
        assert len(workers) == 2
        ct = demo.study("ct")
        with server.http("write") as http:
            data = [(demo.root / f).read_bytes() for f in ct.files]  # type: ignore[operator]
            assert stow(http, data).status_code == 200
        time.sleep(3)  # the workers finish importing and start accepting
        before = {p: _cpu_ticks(p) for p in (pid, *workers)}
        series = ct.series[0]
        urls = [
            f"/dicom-web/studies/{ct.study_uid}/series/{series.series_uid}/instances/{sop}/frames/1"
            for sop in series.sop_instance_uids
        ] * 20

        def fetch(chunk: list[str]) -> list[int]:
            with server.http("read") as http:
                return [http.get(u, headers={"Accept": FRAMES}).status_code for u in chunk]

        with ThreadPoolExecutor(8) as pool:
            codes = [c for r in pool.map(fetch, [urls[i::8] for i in range(8)]) for c in r]
        assert set(codes) == {200}
        busy = [p for p in (pid, *workers) if _cpu_ticks(p) - before[p] >= 5]
        assert len(busy) >= 2, {p: _cpu_ticks(p) - before[p] for p in before}
    finally:
        server.server.kill()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [
        p
        for p in workers
        if Path(f"/proc/{p}/cmdline").exists()
        and b"http-worker" in Path(f"/proc/{p}/cmdline").read_bytes()
    ]


def test_each_frame_request_is_audited_once(dw: DicomWeb, demo: DemoManifest) -> None:
    """Frames are answered from a worker thread or, once the token and the instance are at
    hand, right on the event loop: either way one request is one audit record."""
    token_id, token = dw.new_token("audit-count", "read")
    ct = demo.study("ct")
    series = ct.series[0]
    sop = series.sop_instance_uids[0]
    url = f"/dicom-web/studies/{ct.study_uid}/series/{series.series_uid}/instances/{sop}/frames/1"
    with dw.http(None) as http:
        for _ in range(12):
            r = http.get(url, headers={"Authorization": f"Bearer {token}", "Accept": FRAMES})
            assert r.status_code == 200
    db = Database(dw.server.database_url)
    try:
        count = 0
        for _ in range(50):
            with db.read() as session:
                count = len(
                    session.execute(
                        select(AuditEvent).where(AuditEvent.principal == f"token:{token_id}")
                    )
                    .scalars()
                    .all()
                )
            if count >= 12:
                break
            time.sleep(0.1)
        time.sleep(0.3)  # a duplicate would arrive in the same or the next batch
        with db.read() as session:
            events = (
                session.execute(
                    select(AuditEvent).where(AuditEvent.principal == f"token:{token_id}")
                )
                .scalars()
                .all()
            )
    finally:
        db.dispose()
    assert len(events) == 12
    assert {(e.outcome, e.detail, e.resource) for e in events} == {
        ("allow", "frames 1", ct.study_uid)
    }

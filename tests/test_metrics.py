"""``GET /metrics``: what an operator's Prometheus scrapes from a real ``cloudfilm serve``.

Instances go in by storescu (dcmtk) and STOW-RS (httpx); the scrape is parsed with
prometheus-client's own parser and must show what a user did: so many stored by DIMSE, one
rejected and why, the index's figures per hospital, films issued and their SMS. With two DICOM
and two HTTP processes the counts are the sums over processes, whichever process answers the
scrape. Only a platform operator's token, or a token-less client on ``metrics_networks``,
may read them.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import generate_uid
from sqlalchemy import func, select
from starlette.testclient import TestClient

from cloudfilm.access.tokens import create_token
from cloudfilm.accounts.aes import register_ae
from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.http.app import create_app
from cloudfilm.portal.films import issue_film
from cloudfilm.portal.reports import ReportFields, save_report
from cloudfilm.storage.models import Study
from tests.conftest import ServerProcess, dcmtk
from tests.dicomweb.conftest import stow
from tests.factory import make_dataset, make_instance, to_bytes

pytestmark = [
    pytest.mark.engines("postgresql"),  # the processes' counters, not the index
    pytest.mark.timeout(300),
]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` that carry these labels (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def scrape(server: ServerProcess, token: str | None = None) -> Samples:
    """A fresh connection each time: any of the HTTP processes may take it."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(f"{server.http_url}/metrics", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def per_process(data_dir: Path, name: str, **labels: str) -> dict[str, float]:
    """The value each process holds in the shared directory (pid -> value), read the way
    prometheus-client reads it, one process's file at a time."""
    out: dict[str, float] = defaultdict(float)
    wanted = set(labels.items())
    for f in (data_dir / "metrics").glob("counter_*.db"):
        pid = f.stem.split("_", 1)[1]
        for metric in MultiProcessCollector.merge([str(f)]):
            for s in metric.samples:
                if s.name == name and wanted <= set(s.labels.items()):
                    out[pid] += s.value
    return {pid: v for pid, v in out.items() if v}


def write_files(folder: Path, instances: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, data in enumerate(instances):
        p = folder / f"{n}.dcm"
        p.write_bytes(data)
        paths.append(p)
    return paths


def storescu(server: ServerProcess, calling: str, *files: Path) -> str:
    r = dcmtk("storescu", "-aet", calling, "-aec", server.ae_title, "127.0.0.1",
              str(server.dicom_port), *map(str, files))  # fmt: skip
    return r.stdout + r.stderr


def setup_index(server: ServerProcess) -> dict[str, object]:
    """Before ``serve`` starts: a second hospital, AEs, tokens (as an operator would)."""
    archive = Archive(Settings(data_dir=server.data_dir, database_url=server.database_url))
    try:
        b = create_hospital(archive.db, "HOSP-B", "乙医院")
        register_ae(archive.db, 1, "A_MOD")
        register_ae(archive.db, b.pk, "B_MOD")
        _i, operator = create_token(archive.db, "prometheus", "operator", hospital=None)
        _i, a_write = create_token(archive.db, "A pacs", "read,write", hospital=1)
        _i, b_write = create_token(archive.db, "B pacs", "read,write", hospital=b.pk)
    finally:
        archive.close()
    return {"operator": operator, "a": a_write, "b": b_write}


def index_figures(server: ServerProcess) -> dict[str, tuple[int, int, int]]:
    """Per hospital code: (studies, instances, bytes), straight from the index."""
    from cloudfilm.accounts.models import Hospital

    archive = Archive(
        Settings(data_dir=server.data_dir, database_url=server.database_url), upgrade=False
    )
    try:
        with archive.db.read() as s:
            rows = s.execute(
                select(
                    Hospital.code,
                    func.count(Study.pk),
                    func.coalesce(func.sum(Study.num_instances), 0),
                    func.coalesce(func.sum(Study.size_bytes), 0),
                )
                .outerjoin(Study, Study.hospital_pk == Hospital.pk)
                .group_by(Hospital.code)
            ).all()
    finally:
        archive.close()
    return {code: (int(n), int(i), int(b)) for code, n, i, b in rows}


def test_one_process_counts_what_came_in_and_the_index_agrees(
    server_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(env_extra={"CLOUDFILM_FILM_STABLE_SECONDS": "0.5"})
    tokens = setup_index(server)
    study = f"1.2.826.0.1.3680043.8.498.{secrets.randbelow(10**12)}"
    # the report arrives first; the film is issued (and its SMS sent) once the study is in
    archive = Archive(Settings(data_dir=server.data_dir, database_url=server.database_url))
    try:
        save_report(archive, ReportFields(study_uid=study, patient_name="王^小东",
                                          phone="13800138000", impression="未见异常"),
                    source="json", hospital=1)  # fmt: skip
    finally:
        archive.close()
    server.start()

    good = [
        make_instance(study_uid=study, series_uid=study + ".1", instance_number=n)
        for n in range(1, 6)
    ]
    no_study_uid = make_dataset()
    del no_study_uid.StudyInstanceUID
    bad = [to_bytes(no_study_uid)]
    files = write_files(tmp_path / "dimse", good + bad)
    storescu(server, "A_MOD", *files)  # one association, six instances
    storescu(server, "A_MOD", files[0])  # the same bytes again: a duplicate
    b_files = write_files(tmp_path / "b", [make_instance(patient_id="B1") for _ in range(2)])
    storescu(server, "B_MOD", *b_files)
    storescu(server, "NOT_REGISTERED", files[1])  # refused at A-ASSOCIATE

    with httpx.Client(base_url=server.http_url, timeout=30) as http:
        headers = {"Authorization": f"Bearer {tokens['a']}"}
        stowed = [make_instance(patient_id="S1"), make_instance(patient_id="S2")]
        assert stow(http, stowed, **headers).status_code == 200
        r = stow(http, [make_instance(patient_id="S3"), b"not a DICOM file at all"], **headers)
        assert r.status_code == 202, r.text  # one stored, one refused
        assert http.get(f"/dicom-web/studies/{study}/series", headers=headers).status_code == 200
        assert http.get("/dicom-web/studies/1.2.3.4.5/series").status_code == 401  # no token

    deadline = time.monotonic() + 30
    while True:  # the film issuer runs in serve's background
        m = scrape(server)
        if value(m, "cloudfilm_films_issued_total") >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    m = scrape(server)  # a scrape counts itself only once it is answered: this one sees the last

    received = "cloudfilm_instances_received_total"
    assert value(m, received, door="dimse", outcome="stored") == 7  # 5 of A, 2 of B
    assert value(m, received, door="dimse", outcome="duplicate") == 1
    assert value(m, received, door="dimse", outcome="rejected") == 1
    assert value(m, received, door="dimse", outcome="rejected", reason="missing-uid") == 1
    assert value(m, received, door="stow", outcome="stored") == 3
    assert value(m, received, door="stow", outcome="rejected", reason="not-dicom") == 1
    sizes = sum(map(len, stowed)) + len(make_instance(patient_id="S3"))
    assert value(m, "cloudfilm_received_bytes_total", door="stow") >= sizes
    associations = "cloudfilm_dimse_associations_total"
    assert value(m, associations, path="event-loop", outcome="accepted") == 3
    assert value(m, associations, path="event-loop", outcome="rejected") == 1

    # the index's figures, per hospital code
    figures = index_figures(server)
    assert figures["HOSP-B"][1] == 2
    for code, (studies, instances, size) in figures.items():
        assert value(m, "cloudfilm_studies", hospital=code) == studies
        assert value(m, "cloudfilm_instances", hospital=code) == instances
        assert value(m, "cloudfilm_stored_bytes", hospital=code) == size
    assert value(m, "cloudfilm_instances", hospital="default") == 5 + 3

    # films, SMS, audit
    assert value(m, "cloudfilm_films_issued_total") == 1
    assert value(m, "cloudfilm_films_waiting") == 0
    assert value(m, "cloudfilm_sms_messages_total", outcome="sent") == 1
    assert value(m, "cloudfilm_audit_records_total", outcome="allow") > 0

    # HTTP by route template, never the raw path
    route = "/dicom-web/studies/{study}/series"
    assert value(m, "cloudfilm_http_requests_total", route=route, status="2xx") == 1
    assert value(m, "cloudfilm_http_requests_total", route=route, status="4xx") == 1
    assert value(m, "cloudfilm_http_request_duration_seconds_count", route=route) == 2
    assert value(m, "cloudfilm_http_requests_total", route="/metrics", status="2xx") >= 1
    assert not [ls for _n, ls in m if any(study in v or "1.2.3.4.5" in v for _k, v in ls)]
    # standard process metrics, for each process of the deployment
    assert {dict(ls).get("role") for n, ls in m if n == "process_resident_memory_bytes"} == {
        "serve"
    }


def test_counters_are_summed_over_every_dicom_and_http_process(
    server_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(
        env_extra={"CLOUDFILM_DICOM_WORKERS": "2", "CLOUDFILM_HTTP_WORKERS": "2"}
    )
    tokens = setup_index(server)
    server.start()
    files = write_files(tmp_path / "in", [make_instance(patient_id=f"M{n}") for n in range(40)])
    data = server.data_dir
    received = "cloudfilm_instances_received_total"

    # one association per instance until both DICOM processes have stored some (the kernel
    # spreads new associations over the processes listening on the port)
    sent = 0
    while len(per_process(data, received, door="dimse")) < 2 and sent < len(files):
        storescu(server, "A_MOD", files[sent])
        sent += 1
    assert len(per_process(data, received, door="dimse")) == 2, "one process took every one"
    # STOW-RS on fresh connections until both HTTP processes have answered some
    stowed = 0
    while len(per_process(data, received, door="stow")) < 2 and stowed < 40:
        with httpx.Client(base_url=server.http_url, timeout=30) as http:
            r = stow(http, [make_instance()], Authorization=f"Bearer {tokens['a']}")
            assert r.status_code == 200, r.text
        stowed += 1
    assert len(per_process(data, received, door="stow")) == 2, "one process took every one"

    # every scrape, whichever process answers it, shows the sums
    answers = [scrape(server, tokens["operator"]) for _ in range(6)]
    for m in answers:
        assert value(m, received, door="dimse", outcome="stored") == sent
        assert value(m, received, door="stow", outcome="stored") == stowed
        assert value(m, "cloudfilm_dimse_associations_total", outcome="accepted") == sent
        assert value(m, "cloudfilm_instances", hospital="default") == sent + stowed
        roles = sorted(dict(ls)["role"] for n, ls in m if n == "process_start_time_seconds")
        assert roles == ["dicom-worker", "http-worker", "serve"]
    stow_requests = [
        value(m, "cloudfilm_http_requests_total", route="/dicom-web/studies", status="2xx")
        for m in answers
    ]
    assert stow_requests == [stowed] * 6
    scrapes = [value(m, "cloudfilm_http_requests_total", route="/metrics") for m in answers]
    assert scrapes == list(range(6)), "each scrape counts the ones before it, in any process"

    # a restart starts from zero (the directory is emptied), the index's figures remain
    server.stop()
    server.start()
    m = scrape(server, tokens["operator"])
    assert value(m, received) == 0
    assert value(m, "cloudfilm_instances", hospital="default") == sent + stowed


@pytest.fixture
def app_archive(archive: Archive) -> Iterator[tuple[FastAPI, Archive]]:
    """The ASGI app in this process, as tests and embedders build it: no shared directory."""
    yield create_app(archive, background=False), archive


def test_only_the_platform_operator_or_the_metrics_networks_may_read(
    app_archive: tuple[FastAPI, Archive],
) -> None:
    app, archive = app_archive
    b = create_hospital(archive.db, "HOSP-B", "乙医院")
    _i, operator = create_token(archive.db, "prometheus", "operator", hospital=None)
    _i, b_admin = create_token(archive.db, "B admin", "read,write,admin", hospital=b.pk)
    loopback = TestClient(app, client=("127.0.0.1", 40000))
    outside = TestClient(app, client=("203.0.113.9", 40000))

    assert loopback.get("/metrics").status_code == 200  # a Prometheus on the same host
    r = outside.get("/metrics")
    assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
    assert outside.get("/metrics", headers={"Authorization": f"Bearer {operator}"}).is_success
    for client in (loopback, outside):
        r = client.get("/metrics", headers={"Authorization": f"Bearer {b_admin}"})
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        assert "HOSP-B" not in r.text
        bad = client.get("/metrics", headers={"Authorization": "Bearer cf_unknown"})
        assert bad.status_code == 401

    archive.settings.metrics_networks = ["203.0.113.0/24"]
    assert outside.get("/metrics").status_code == 200
    assert loopback.get("/metrics").status_code == 401


def test_in_one_process_the_figures_follow_the_index(
    app_archive: tuple[FastAPI, Archive],
) -> None:
    """No shared directory (an Archive built in-process): counters live in memory, the
    gauges still come from the index, films waiting and issued included."""
    app, archive = app_archive
    client = TestClient(app, client=("127.0.0.1", 40000))
    before = parse(client.get("/metrics").text)
    study = generate_uid()
    for n in (1, 2):
        archive.ingest(make_instance(study_uid=study, instance_number=n), hospital=1,
                       source="import:test")  # fmt: skip
    save_report(archive, ReportFields(study_uid=study, phone="13800138000"), source="json",
                hospital=1)  # fmt: skip
    m = parse(client.get("/metrics").text)
    received = "cloudfilm_instances_received_total"
    assert (
        value(m, received, door="import", outcome="stored")
        - value(before, received, door="import", outcome="stored")
        == 2
    )
    assert value(m, "cloudfilm_instances", hospital="default") == 2
    assert value(m, "cloudfilm_films_waiting", hospital="default") == 1
    issue_film(archive, study)
    after = parse(client.get("/metrics").text)
    assert value(after, "cloudfilm_films_waiting", hospital="default") == 0
    issued = "cloudfilm_films_issued_total"
    assert value(after, issued) - value(m, issued) == 1
    assert value(after, "process_resident_memory_bytes") > 0  # this process's own

"""The imaging index ID where people and systems meet it, and the index feed a regional
platform reads: paged by cursor (JSON and FHIR R4), limited by the access check, pushed to a
real webhook receiver that fails first, and continued from its cursor after a restart.

Everything goes through the archive's doors (ingest, the reports function, the real app over
HTTP with real tokens, console logins and patient sessions); the receiver is a real HTTP server.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from pydicom.uid import generate_uid
from sqlalchemy import select

from cloudfilm.access.tokens import create_token
from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.accounts.users import create_user
from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.http.app import create_app
from cloudfilm.portal.films import film_link, issue_film
from cloudfilm.portal.reports import ReportFields, match_waiting, save_report
from cloudfilm.regional.index_id import valid_index_id
from cloudfilm.regional.webhook import delivered_cursor
from cloudfilm.storage.models import AuditEvent, Study
from tests.factory import make_instance

PASSWORD = "Kx7-harbour-lantern"


def ingest_study(
    archive: Archive, hospital: int, *, series: int = 1, study_uid: str | None = None, **kw
) -> str:  # type: ignore[no-untyped-def]
    uid = study_uid or generate_uid()
    for _n in range(series):
        series_uid = generate_uid()
        for i in range(2):
            archive.ingest(
                make_instance(study_uid=uid, series_uid=series_uid, instance_number=i + 1, **kw),
                hospital=hospital,
            )
    return uid


def index_id_of(archive: Archive, study_uid: str) -> str:
    with archive.db.read() as session:
        value = session.execute(
            select(Study.index_id).where(Study.study_uid == study_uid)
        ).scalar_one()
    assert value and valid_index_id(value)
    return value


@dataclass
class Site:
    archive: Archive
    b: int
    app: object
    clients: list[TestClient] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, token: str | None = None) -> TestClient:
        headers = {"Authorization": f"Bearer {self.tokens.get(token, token)}"} if token else {}
        c = TestClient(self.app, headers=headers)  # type: ignore[arg-type]
        self.clients.append(c)
        return c

    def login(self, username: str) -> TestClient:
        c = self.client()
        page = c.get("/")
        pre = re.search(r'name="pre" value="([^"]*)"', page.text)
        assert pre, page.text
        r = c.post(
            "/console/login",
            data={"login": username, "password": PASSWORD, "pre": pre.group(1)},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        return c


@pytest.fixture
def site(archive: Archive) -> Iterator[Site]:
    b = create_hospital(archive.db, "hosp-b", "鼓楼医院", region_code="320102").pk
    s = Site(archive, b, create_app(archive, background=False))
    for name, scopes, hospital in (
        ("platform", "read,operator", None), ("a-read", "read", 1), ("b-read", "read", b),
        ("a-write", "write", 1), ("a-desk", "read,write", 1),
    ):  # fmt: skip
        s.tokens[name] = create_token(archive.db, name, scopes, hospital=hospital)[1]
    create_user(archive.db, username="a-doc", password=PASSWORD, role="clinician", hospital=1)
    yield s
    for c in s.clients:
        c.close()


def read_all(client: TestClient, limit: int, after: int = 0, **params: str) -> tuple[list, int]:
    """Every page from ``after`` on, following ``after`` like a platform would."""
    records, pages = [], 0
    while True:
        r = client.get("/api/index/records", params={"after": after, "limit": limit, **params})
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        records += page["records"]
        assert ("link" in r.headers) == page["more"]
        after = page["after"]
        if not page["more"]:
            return records, after
        assert pages < 100


def test_pages_follow_the_cursor_with_no_gap_and_no_repeat(site: Site) -> None:
    archive = site.archive
    uids = [ingest_study(archive, 1 if i % 3 else site.b, accession=f"ACC{i}") for i in range(7)]
    platform = site.client("platform")
    records, cursor = read_all(platform, limit=3)
    assert [r["study_uid"] for r in records] == uids  # in the order they were stored
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(set(seqs)) and cursor == seqs[-1]
    first = records[0]
    assert first["index_id"] == index_id_of(archive, uids[0])
    assert first["hospital"] == {"code": "hosp-b", "name": "鼓楼医院", "region": "320102"}
    assert first["modalities"] == ["CT"] and first["body_parts"] == ["CHEST"]
    assert (first["num_series"], first["num_instances"], first["report"]) == (1, 2, False)
    assert "patient" not in json.dumps(first).lower()
    assert first["viewer_url"].endswith(f"/viewer/?study={uids[0]}")
    # the DICOMweb URL is where the study is read, with a token that may
    meta = platform.get(first["dicomweb_url"] + "/metadata")
    assert meta.status_code == 200 and meta.json()[0]["0020000D"]["Value"] == [uids[0]]

    # nothing new: an empty page that keeps the cursor
    again = platform.get("/api/index/records", params={"after": cursor}).json()
    assert again["records"] == [] and again["after"] == cursor and not again["more"]

    # changed studies come again, later: a new series, a report matched to its study
    ingest_study(archive, 1, study_uid=uids[1], modality="MR")
    save_report(
        archive, ReportFields(accession_number="ACC2", findings="未见异常。"), source="json",
        hospital=1,
    )  # fmt: skip
    changed, cursor2 = read_all(platform, limit=1, after=cursor)
    assert [(r["study_uid"], r["changes"]) for r in changed] == [
        (uids[1], ["series"]),
        (uids[2], ["report"]),
    ]
    assert changed[0]["modalities"] == ["CT", "MR"] and changed[0]["num_series"] == 2
    assert changed[1]["report"] is True and changed[1]["index_id"] == records[2]["index_id"]
    assert min(r["seq"] for r in changed) > cursor

    # a report that came before its images is a change when it finds its study
    save_report(
        archive, ReportFields(accession_number="LATE-1", findings="x"), source="json", hospital=1
    )
    late = ingest_study(archive, 1, accession="LATE-1")
    assert match_waiting(archive) == 1
    tail, _ = read_all(platform, limit=10, after=cursor2)
    assert [(r["study_uid"], r["changes"], r["report"]) for r in tail] == [
        (late, ["series", "report"], True)  # one page: the study once, at its latest change
    ]


def test_fhir_bundle_of_imaging_studies_parses_back(site: Site) -> None:
    archive = site.archive
    uids = [ingest_study(archive, 1, accession=f"F{i}") for i in range(3)]
    platform = site.client("platform")
    r = platform.get(
        "/api/index/records", params={"limit": 2}, headers={"Accept": "application/fhir+json"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate_json(r.content)
    assert bundle.type == "searchset"
    nxt = next(link.url for link in bundle.link if link.relation == "next")
    studies = [e for e in bundle.entry if e.resource.get_resource_type() == "ImagingStudy"]
    endpoints = {e.fullUrl: e.resource for e in bundle.entry if e.search.mode == "include"}
    assert len(studies) == 2
    study = studies[0].resource
    ids = {i.system: i.value for i in study.identifier if i.system}
    assert ids["urn:dicom:uid"] == f"urn:oid:{uids[0]}"
    assert ids[archive.settings.index_id_system] == index_id_of(archive, uids[0])
    assert [c.code for c in study.modality] == ["CT"]
    assert (study.numberOfSeries, study.numberOfInstances, study.status) == (1, 2, "available")
    assert study.series[0].bodySite.display == "CHEST"
    refs = [e.reference for e in study.endpoint]
    dicomweb = endpoints[refs[0]]  # the included Endpoint entry
    assert dicomweb.connectionType.code == "dicom-wado-rs"
    assert dicomweb.address.endswith("/dicom-web")
    viewer = next(c for c in study.contained if c.id == refs[1].lstrip("#"))
    assert viewer.connectionType.code == "ihe-iid" and uids[0] in viewer.address
    # the next page, as ?_format=fhir
    rest = Bundle.model_validate_json(platform.get(nxt).content)
    assert nxt.endswith("_format=fhir") and len(rest.entry) == 2  # one study, the Endpoint
    assert not [link for link in rest.link if link.relation == "next"]
    last = rest.entry[0].resource
    assert any(i.value == f"urn:oid:{uids[2]}" for i in last.identifier)


def test_a_hospital_token_reads_its_own_hospital_only(site: Site) -> None:
    archive = site.archive
    mine = [ingest_study(archive, 1) for _ in range(3)]
    theirs = [ingest_study(archive, site.b) for _ in range(4)]
    a_records, _ = read_all(site.client("a-read"), limit=2)
    b_records, _ = read_all(site.client("b-read"), limit=1)
    assert [r["study_uid"] for r in a_records] == mine
    assert [r["study_uid"] for r in b_records] == theirs
    assert {r["hospital"]["code"] for r in b_records} == {"hosp-b"}
    # a console user of hospital A (role with read) reads A's records too
    doc = site.login("a-doc")
    assert [r["study_uid"] for r in doc.get("/api/index/records").json()["records"]] == mine
    archive.audit.flush()
    with archive.db.read() as session:
        audited = session.execute(
            select(AuditEvent.principal, AuditEvent.outcome).where(
                AuditEvent.detail.like("index feed%")
            )
        ).all()
    assert len(audited) >= 2 + 4 + 1 and {o for _p, o in audited} == {"allow"}


def test_callers_without_the_right_are_refused(site: Site) -> None:
    ingest_study(site.archive, 1)
    assert site.client().get("/api/index/records").status_code == 401
    assert site.client("cf_not-a-token").get("/api/index/records").status_code == 401
    refused = site.client("a-write").get("/api/index/records")
    assert refused.status_code == 403, refused.text
    assert site.client("a-read").get("/api/index/records?limit=0").status_code in (400, 422)
    site.archive.audit.flush()
    with site.archive.db.read() as session:
        denied = session.execute(
            select(AuditEvent.pk).where(
                AuditEvent.detail.like("%index feed%"), AuditEvent.outcome == "deny"
            )
        ).all()
    assert len(denied) == 1


def test_index_id_on_the_film_page_the_printed_report_qido_and_the_worklist(site: Site) -> None:
    archive = site.archive
    uid = ingest_study(archive, 1, accession="P-1")
    other = ingest_study(archive, site.b)
    index_id = index_id_of(archive, uid)
    desk = site.client("a-desk")
    assert desk.post(
        "/api/reports", json={"accession_number": "P-1", "findings": "未见异常。"}
    ).status_code == 201  # fmt: skip
    film, _ = issue_film(archive, uid)
    link = film_link(archive, film)
    patient = site.client()
    r = patient.post("/api/verify", json={"token": link.link.rsplit("/", 1)[1], "code": link.code})
    assert r.status_code == 200, r.text
    page = patient.get(f"/p/films/{film.film_id}")
    assert page.status_code == 200 and index_id in page.text

    from pypdf import PdfReader

    pdf = desk.get(f"/api/films/{film.film_id}/printable.pdf")
    assert pdf.status_code == 200
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert index_id in text

    # QIDO-RS: IndexID= finds the study and the result carries it in our private block
    found = site.client("a-read").get("/dicom-web/studies", params={"IndexID": index_id}).json()
    assert [s["0020000D"]["Value"][0] for s in found] == [uid]
    assert found[0]["00090010"]["Value"] == ["CLOUDFILM 1.0"]
    assert found[0]["00091002"]["Value"] == [index_id]
    # another hospital's ID finds nothing for A's token; a malformed one is a bad request
    other_id = index_id_of(archive, other)
    theirs = site.client("a-read").get("/dicom-web/studies", params={"IndexID": other_id})
    assert theirs.status_code == 200 and theirs.json() == []
    assert site.client("a-read").get("/dicom-web/studies?IndexID=abc").status_code == 400

    # the console worklist: an ID pasted into a search box finds its study
    doc = site.login("a-doc")
    spaced = " ".join(re.findall(".{1,6}", index_id))  # as copied from a printed form
    for box in ("pid", "name"):
        listing = doc.get("/console/worklist", params={box: spaced})
        assert listing.status_code == 200
        assert re.findall(r'data-study="([^"]+)"', listing.text) == [uid]


# --- the webhook ------------------------------------------------------------------------------


class Receiver:
    """The regional platform's webhook: answers 500 to the first ``fail`` POSTs, then 200."""

    def __init__(self, fail: int, secret: str) -> None:
        self.fail = fail
        self.secret = secret
        self.attempts: list[int] = []
        self.accepted: list[dict] = []
        self.bad_signatures = 0
        self.delay = 0.0
        """Seconds each POST takes to answer (a slow platform)."""
        self.lock = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                time.sleep(outer.delay)
                stamp = self.headers.get("x-cloudfilm-timestamp", "")
                mac = hmac.new(outer.secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
                with outer.lock:
                    outer.attempts.append(len(json.loads(body)["records"]))
                    if self.headers.get("x-cloudfilm-signature") != "sha256=" + mac.hexdigest():
                        outer.bad_signatures += 1
                    status = 500 if outer.fail > 0 else 200
                    if outer.fail > 0:
                        outer.fail -= 1
                    else:
                        outer.accepted.append(json.loads(body))
                    outer.lock.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/index"

    def delivered(self) -> list[dict]:
        with self.lock:
            return [r for page in self.accepted for r in page["records"]]

    def wait_for(self, study_uids: set[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not study_uids <= {r["study_uid"] for p in self.accepted for r in p["records"]}:
                left = deadline - time.monotonic()
                assert left > 0, f"not delivered in time: {self.attempts}"
                self.lock.wait(left)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail=2, secret="s3cret-for-hmac")
    yield r
    r.httpd.shutdown()
    r.httpd.server_close()


def serving(settings: Settings) -> tuple[Archive, object]:
    """An archive and its app as ``serve`` makes them (background work on), film issuer off."""
    archive = Archive(settings)
    app = create_app(archive, background=True)
    app.state.film_issuer.stop()  # type: ignore[attr-defined]
    return archive, app


def stop(archive: Archive, app: object) -> None:
    """What ``serve`` does at shutdown: every background worker stops (the pusher included)."""
    for handler in app.router.on_shutdown:  # type: ignore[attr-defined]
        handler()
    archive.close()


def test_webhook_delivers_in_order_through_failures_and_restarts(
    tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url,
        index_webhook_url=receiver.url, index_webhook_secret=receiver.secret,
        index_webhook_batch=3, index_webhook_retry_seconds=0.2,
    )  # fmt: skip
    archive, app = serving(settings)
    first = [ingest_study(archive, 1) for _ in range(5)]
    receiver.wait_for(set(first))
    assert receiver.bad_signatures == 0
    delivered = receiver.delivered()
    seqs = [r["seq"] for r in delivered]
    assert seqs == sorted(seqs) and {r["study_uid"] for r in delivered} == set(first)
    assert len(receiver.attempts) >= len(receiver.accepted) + 2  # the two 500s were retried
    # each accepted batch starts where the previous one ended: in order, one at a time
    for before, page in zip(receiver.accepted, receiver.accepted[1:], strict=False):
        assert page["records"][0]["seq"] > before["records"][-1]["seq"]
    stop(archive, app)

    # stopped: what arrives meanwhile waits in the index; the cursor was kept there
    archive = Archive(settings)
    assert delivered_cursor(archive) == seqs[-1]
    later = [ingest_study(archive, 1) for _ in range(2)]
    archive.close()
    count = len(receiver.accepted)
    # two serves at once against the same index, a slow receiver: one pushes (the lease), so
    # nothing is sent twice
    receiver.delay = 0.5
    (archive, app), (archive2, app2) = serving(settings), serving(settings)
    receiver.wait_for(set(first) | set(later))
    time.sleep(1.5)  # a second pusher would have sent by now
    after_restart = [r for p in receiver.accepted[count:] for r in p["records"]]
    assert [r["study_uid"] for r in after_restart] == later  # not everything again
    stop(archive, app)
    stop(archive2, app2)


# --- PostgreSQL: numbers are handed out at insert, commits come in any order -----------------


@pytest.fixture
def pg_archive(tmp_path: Path) -> Iterator[Archive]:
    """PostgreSQL only: SQLite serialises writers, so its changes commit in number order."""
    from tests.conftest import _pg_database

    urls = _pg_database()
    archive = Archive(Settings(data_dir=tmp_path / "data", database_url=next(urls)))
    yield archive
    archive.close()
    urls.close()


def test_a_page_waits_for_a_change_that_may_still_commit(
    pg_archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.orm import Session

    from cloudfilm.regional import feed
    from cloudfilm.regional.models import IndexChange

    archive = pg_archive
    monkeypatch.setattr(feed, "SETTLE_SECONDS", 2.0)
    first = ingest_study(archive, 1)

    def page(after: int) -> feed.FeedPage:
        with archive.db.read() as session:
            return feed.feed_page(session, after, 100)

    cursor = page(0).after
    with archive.db.read() as session:
        first_pk = session.execute(select(Study.pk).where(Study.study_uid == first)).scalar_one()
    for outcome in ("commit", "rollback"):
        # a slow transaction takes the next number and has not committed yet ...
        slow = Session(archive.db.engine)
        slow.add(IndexChange(study_pk=first_pk, hospital_pk=1, kind="report"))
        slow.flush()
        # ... while a new study's change, numbered after it, commits
        late = ingest_study(archive, 1)
        held = page(cursor)
        assert held.records == [] and held.after == cursor  # the cursor does not pass the hole
        getattr(slow, outcome)()
        slow.close()
        if outcome == "commit":
            got = page(cursor)
            assert [r.study_uid for r in got.records] == [first, late]
        else:  # the hole stays: passed once the change after it is old enough
            assert page(cursor).records == []
            time.sleep(2.2)
            got = page(cursor)
            assert [r.study_uid for r in got.records] == [late]
        cursor = got.after

"""Cloud-film fixtures: the real app over the real archive (SQLite and PostgreSQL), clients that
keep cookies like browsers, and a study with its report and film ready to verify.

Nothing of ours is mocked: reports go through ``POST /api/reports``, films are issued by the
real issuer, SMS go through the real webhook back-end to a small HTTP server in the test.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from cloudfilm.access.tokens import create_token
from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.http.app import create_app
from tests.factory import make_instance

REPORT = {
    "hospital": "XXX人民医院",
    "department": "内一科",
    "patient_name": "张三",
    "patient_sex": "男",
    "patient_age": "76岁",
    "exam_name": "CT头部平扫",
    "modality": "CT",
    "exam_date": "2018-07-20",
    "body_part": "CT头部",
    "findings": "桥脑右方见约24毫米*20毫米高密度结节影，病变边界清晰，CT值45HU左右。",
    "impression": "1、桥脑右方高密度结节影，考虑：动脉瘤？脑膜瘤？建议MRI扫描进一步检查。",
    "reporting_doctor": "李医生",
    "reviewing_doctor": "王主任",
    "report_time": "2018-07-20 09:23",
}


class SmsGateway:
    """A hospital SMS gateway stand-in: records what the webhook back-end POSTs."""

    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []
        self.posts = 0
        self.fail_next = 0
        """How many of the next POSTs to answer 503 (the gateway being down)."""
        self.received = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.posts += 1
                if outer.fail_next > 0:
                    outer.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                with outer.received:
                    outer.messages.append(json.loads(body))
                    outer.received.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/sms"

    def wait(self, count: int = 1, timeout: float = 30) -> list[dict[str, str]]:
        with self.received:
            self.received.wait_for(lambda: len(self.messages) >= count, timeout)
        return list(self.messages)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def sms() -> Iterator[SmsGateway]:
    gw = SmsGateway()
    yield gw
    gw.close()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, sms: SmsGateway) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        film_stable_seconds=0,
        sms_backend="webhook",
        sms_webhook_url=sms.url,
        verify_max_attempts=5,
        verify_lockout_seconds=300,
    )


@dataclass
class Portal:
    archive: Archive
    app: object
    hospital: TestClient
    """Holds a write+read API token: the reporting system and the desk."""
    clients: list[TestClient] = field(default_factory=list)

    def browser(self, client_ip: str = "10.0.0.1", *, https: bool = False) -> TestClient:
        """A fresh cookie jar, like a new browser (from its own address)."""
        base = "https://testserver" if https else "http://testserver"
        c = TestClient(self.app, base_url=base, client=(client_ip, 50000))  # type: ignore[arg-type]
        self.clients.append(c)
        return c

    def study(self, n: int = 3, **kw: object) -> str:
        study_uid = str(kw.pop("study_uid", None) or generate_uid())
        series_uid = generate_uid()
        for i in range(n):
            self.archive.ingest(
                make_instance(
                    study_uid=study_uid, series_uid=series_uid, instance_number=i + 1, size=32, **kw
                ),
                hospital=1,
            )
        return study_uid

    def report(self, **fields: object) -> dict[str, object]:
        r = self.hospital.post("/api/reports", json={**REPORT, **fields})
        assert r.status_code == 201, r.text
        return r.json()

    def issue(self) -> None:
        self.app.state.film_issuer.run_once()  # type: ignore[attr-defined]

    def film(self, study_uid: str) -> dict[str, str]:
        self.issue()
        r = self.hospital.get("/api/films", params={"study_uid": study_uid})
        assert r.status_code == 200, r.text
        out = r.json()
        out["token"] = out["link"].rsplit("/", 1)[1]
        out["study_uid"] = study_uid
        return out

    def film_case(
        self, phone: str = "13912345678", patient_id: str = "P001", **report: object
    ) -> dict[str, str]:
        """A study of 3 instances (of one patient record), its JSON report, its issued film."""
        acc = f"A{generate_uid()[-12:]}"
        study_uid = self.study(accession=acc, patient_id=patient_id)
        self.report(accession_number=acc, phone=phone, **report)
        return self.film(study_uid)

    def verified(self, case: dict[str, str], client_ip: str = "10.0.0.1") -> TestClient:
        c = self.browser(client_ip)
        r = c.post("/api/verify", json={"token": case["token"], "code": case["access_code"]})
        assert r.status_code == 200, r.text
        return c


def csrf_of(client: TestClient, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    m = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert m and m.group(1)
    return m.group(1)


@pytest.fixture
def portal(archive: Archive) -> Iterator[Portal]:
    # no background work: tests drive issuing themselves (run_once), deterministically, and no
    # verifier thread outlives the test's index
    app = create_app(archive, background=False)
    _info, token = create_token(archive.db, "reporting system", "read,write", hospital=1)
    hospital = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    p = Portal(archive=archive, app=app, hospital=hospital)
    yield p
    for c in [hospital, *p.clients]:
        c.close()

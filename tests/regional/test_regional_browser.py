"""Regional sharing end to end in Debian's Chromium against a real ``cloudfilm serve``.

The patient's chest CT at hospital A (its report gave the phone); at hospital B the ordering
system plans a chest CT and is warned; B's clinician opens the person, sees the warning and a
count only, asks for consent by SMS; the patient approves from the SMS link on a 375-px phone;
the clinician sees A's CT in the viewer beside B's prior; the patient logs in by SMS, sees the
access in the film's history, revokes; the clinician's next frame request is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from cloudfilm.access.tokens import create_token
from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.accounts.users import create_user
from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from tests.conftest import ARTIFACTS, ServerProcess
from tests.factory import make_dataset
from tests.portal.conftest import REPORT, SmsGateway

VIEWER_BUILT = Path(__file__).resolve().parents[2] / "src/cloudfilm/static/viewer/index.html"
ID_P = "11010519491231002X"
PHONE = "13912345678"
PASSWORD = "clinic-pass-12"
pytestmark = pytest.mark.timeout(300)


def ct(days_ago: int, accession: str, slices: int = 6) -> tuple[str, list[Dataset]]:
    day = (datetime.now(UTC) + timedelta(hours=8) - timedelta(days=days_ago)).strftime("%Y%m%d")
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(slices):
        ds = make_dataset(
            study_uid=study,
            series_uid=series,
            instance_number=i + 1,
            size=64,
            fill=40 * i,
            patient_name="Wang^Xiaoming=王^小明",
            charset="ISO_IR 192",
            patient_id=f"P-{accession}",
            accession=accession,
            study_date=day,
        )
        ds.ImagePositionPatient = [0, 0, float(i * 5)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 5
        item = Dataset()
        item.PatientID = ID_P
        item.IssuerOfPatientID = "身份证"
        ds.OtherPatientIDsSequence = [item]
        out.append(ds)
    return study, out


class Sites:
    def __init__(self, server: ServerProcess, tokens: dict[str, str], sms: SmsGateway) -> None:
        self.server, self.tokens, self.sms = server, tokens, sms

    def client(self, site: str) -> httpx.Client:
        return httpx.Client(base_url=self.server.http_url, timeout=30,
                            headers={"Authorization": f"Bearer {self.tokens[site]}"})  # fmt: skip

    def stow(self, site: str, datasets: list[Dataset]) -> None:
        web = DICOMwebClient(f"{self.server.http_url}/dicom-web",
                             headers={"Authorization": f"Bearer {self.tokens[site]}"})  # fmt: skip
        web.store_instances(datasets)


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Sites]:
    sms = SmsGateway()
    url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    data = tmp_path / "data"
    archive = Archive(Settings(data_dir=data, database_url=url))
    try:
        b = create_hospital(archive.db, "hosp-b", "第二医院", region_code="320100").pk
        create_user(archive.db, username="dr-liu", password=PASSWORD, role="clinician",
                    hospital=b, display_name="刘医生")  # fmt: skip
        _i, a = create_token(archive.db, "A reporting", "read,write", hospital=1)
        _i, b_tok = create_token(archive.db, "B HIS", "read,write", hospital=b)
    finally:
        archive.close()
    server = ServerProcess(data_dir=data, database_url=url, env_extra={
        "CLOUDFILM_FILM_STABLE_SECONDS": "1", "CLOUDFILM_SMS_BACKEND": "webhook",
        "CLOUDFILM_SMS_WEBHOOK_URL": sms.url})  # fmt: skip
    server.start()
    try:
        yield Sites(server, {"a": a, "b": b_tok}, sms)
    finally:
        server.stop()
        sms.close()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "regional-browser-server.log").write_text(server.log())


def test_consent_across_hospitals_in_the_browser(sites: Sites, browser) -> None:  # type: ignore[no-untyped-def]
    base = sites.server.http_url
    a_study, a_images = ct(10, "A-CT-1")
    b_prior, b_images = ct(200, "B-CT-0")
    sites.stow("a", a_images)
    sites.stow("b", b_images)
    with sites.client("a") as a:
        r = a.post(
            "/api/reports",
            json={
                **REPORT,
                "accession_number": "A-CT-1",
                "phone": PHONE,
                "exam_name": "胸部CT平扫",
                "body_part": "胸部",
            },
        )
        assert r.status_code == 201 and r.json()["matched_study_uid"] == a_study, r.text
    film_sms = sites.sms.wait(1, timeout=60)  # the film's own SMS, once the study is stable
    assert any("/f/" in m["message"] for m in film_sms), film_sms

    # 1. B's ordering system plans a chest CT: warned of A's, 10 days ago
    with sites.client("b") as his:
        r = his.post("/api/regional/similar-exams", json={"national_id": ID_P, "exam": "胸部CT"})
    assert r.status_code == 200, r.text
    warned = r.json()
    assert warned["count"] == 1 and warned["exams"][0]["days_ago"] == 10, warned
    assert not warned["exams"][0]["this_hospital"]
    consent_url = warned["consent_url"]

    doc_ctx = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    phone_ctx = browser.new_context(viewport={"width": 375, "height": 740}, locale="zh-CN",
                                    is_mobile=True, has_touch=True)  # fmt: skip
    doc, phone = doc_ctx.new_page(), phone_ctx.new_page()
    try:
        # 2. The clinician opens the person: the warning and a count, no exam
        doc.goto(f"{base}/?next=/console/regional")
        doc.fill("input[name=login]", "dr-liu")
        doc.fill("input[name=password]", PASSWORD)
        doc.click("form[action='/console/login'] button[type=submit]")
        doc.wait_for_url(re.compile(r"/console/regional"))
        doc.goto(
            base + consent_url.split(base)[-1]
            if consent_url.startswith(base)
            else base + consent_url
        )
        assert doc.locator("#cf-similar").count() == 1
        assert "云胶片示范医院" in doc.locator("#cf-similar").inner_text()
        assert doc.locator("#cf-rg-person").get_attribute("data-elsewhere") == "1"
        assert doc.locator("#cf-rg-exams").count() == 0
        # 3. … and asks for consent by SMS
        before = len(sites.sms.messages)
        doc.fill("#cf-rg-ask input[name=reason]", "胸痛，对比上次胸部CT")
        doc.click("#cf-rg-ask button[type=submit]")
        doc.wait_for_selector("#cf-rg-done")
        message = sites.sms.wait(before + 1)[-1]
        assert message["phone"] == PHONE and "刘医生" in message["message"]
        link = re.search(r"https?://\S+/c/[A-Za-z0-9_-]+", message["message"]).group(0)

        # 4. The patient approves from the SMS link, on the phone
        phone.goto(link)
        assert "胸痛，对比上次胸部CT" in phone.content()
        phone.click("#consent-approve")
        phone.wait_for_selector("#consent-state")
        assert phone.locator("#consent").get_attribute("data-state") == "approved"

        # 5. The clinician sees A's CT, in the viewer beside B's prior
        doc.reload()
        row = doc.locator(f"#cf-rg-exams tr[data-study='{a_study}']")
        assert row.count() == 1 and "胸部CT平扫" in row.inner_text()
        compare = row.locator("a.cf-rg-compare").get_attribute("href")
        assert compare and b_prior in compare
        frames: list[str] = []
        doc.on("response", lambda r: frames.append(r.url) if "/frames/" in r.url and r.ok else None)
        if VIEWER_BUILT.exists():
            doc.goto(base + compare)
            doc.wait_for_function(
                "() => { const v = window.cloudfilmViewer; if (!v || !v.state) return false;"
                " const s = v.state(); return s.viewports.length === 2"
                " && s.viewports.every(p => p.rendered); }",
                timeout=90_000,
            )
            state = doc.evaluate("() => window.cloudfilmViewer.state()")
            assert state["layout"] == "1x2"
            assert any(a_study in u for u in frames), "A's frames were served to B's clinician"
        a_frame = next((u for u in frames if a_study in u), None)

        # 6. The patient logs in by SMS: the history names the doctor; revokes
        before = len(sites.sms.messages)
        phone.goto(f"{base}/p/login")
        phone.fill("input[name=phone]", PHONE)
        phone.click("form[data-api='/api/patient/otp'] button")
        code = re.search(r"(\d{6})", sites.sms.wait(before + 1)[-1]["message"]).group(1)
        phone.fill("input[name=code]", code)
        phone.click("form[data-api='/api/patient/otp/verify'] button")
        phone.wait_for_url(re.compile(r"/p/$"))
        phone.click("a.film")
        phone.click("#history")
        phone.wait_for_url(re.compile(r"/history$"))
        assert "第二医院 · 刘医生" in phone.content()
        phone.goto(f"{base}/p/consent")
        phone.click(".grant[data-state='active'] button")
        phone.wait_for_selector(".grant[data-state='revoked']")

        # 7. The clinician's very next frame request is refused
        if a_frame is None:
            with sites.client("a") as a:
                meta = a.get(f"/dicom-web/studies/{a_study}/metadata").json()
            sop = meta[0]["00080018"]["Value"][0]
            series = meta[0]["0020000E"]["Value"][0]
            a_frame = f"{base}/dicom-web/studies/{a_study}/series/{series}/instances/{sop}/frames/1"
        answer = doc_ctx.request.get(a_frame)
        assert answer.status in (403, 404), answer.status
        assert doc_ctx.request.get(f"{base}/dicom-web/studies/{b_prior}/metadata").status == 200
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        doc.screenshot(path=str(ARTIFACTS / "regional-doctor.png"))
        phone.screenshot(path=str(ARTIFACTS / "regional-phone.png"))
        raise
    finally:
        doc_ctx.close()
        phone_ctx.close()

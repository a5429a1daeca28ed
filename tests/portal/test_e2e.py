"""The whole cloud-film flow in a real browser (Debian's Chromium through Playwright) against a
real ``cloudfilm serve``: dcmtk's storescu sends a study, the reporting system posts its report,
the SMS gateway receives the link, the patient (a 375-px phone) fails and then passes the
check, reads the report, sees the images, downloads the zip, shares it; a doctor (a desktop
browser) opens the share; the patient revokes it; the doctor is refused; the history shows both.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.fileset import FileSet
from pypdf import PdfReader

from cloudfilm.access.tokens import create_token
from cloudfilm.demo import write_demo
from cloudfilm.storage.database import Database
from tests.conftest import ARTIFACTS, ServerProcess, dcmtk
from tests.portal.conftest import REPORT, SmsGateway

VIEWER_BUILT = (
    Path(__file__).resolve().parents[2] / "src" / "cloudfilm" / "static" / "viewer" / "index.html"
)
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def sms_gateway() -> Iterator[SmsGateway]:
    gw = SmsGateway()
    yield gw
    gw.close()


@pytest.fixture
def film_server(tmp_path: Path, sms_gateway: SmsGateway) -> Iterator[tuple[ServerProcess, str]]:
    url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    server = ServerProcess(
        data_dir=tmp_path / "data",
        database_url=url,
        env_extra={
            "CLOUDFILM_FILM_STABLE_SECONDS": "1",
            "CLOUDFILM_SMS_BACKEND": "webhook",
            "CLOUDFILM_SMS_WEBHOOK_URL": sms_gateway.url,
            "CLOUDFILM_SECRET_KEY": "e2e-" + "k" * 40,
            "CLOUDFILM_DICOM_WORKERS": "1",
        },
    )
    db = Database(url)
    db.upgrade()
    _info, token = create_token(db, "reporting system", "read,write", hospital=1)
    db.dispose()
    server.start()
    try:
        yield server, token
    finally:
        server.stop()
        if server.log_path and os.environ.get("CI"):
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "portal-e2e-server.log").write_text(server.log())


def test_the_whole_cloud_film_flow_in_a_browser(
    film_server: tuple[ServerProcess, str],
    sms_gateway: SmsGateway,
    browser,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    server, token = film_server
    demo = write_demo(
        tmp_path / "demo", ct_slices=20, ct_size=128, include_pydicom_files=False,
        include_codecs=False,
    )  # fmt: skip
    ct = demo.study("ct")

    # 1. The modality sends the study (C-STORE), the reporting system sends the report.
    sent = dcmtk(
        "storescu", "-aec", server.ae_title, "+sd", "+r", "+sp", "*.dcm",
        "127.0.0.1", str(server.dicom_port), str(tmp_path / "demo" / "ct"),
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    hospital = httpx.Client(
        base_url=server.http_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    r = hospital.post(
        "/api/reports",
        json={**REPORT, "accession_number": ct.accession_number, "phone": "13912345678"},
    )
    assert r.status_code == 201 and r.json()["matched_study_uid"] == ct.study_uid, r.text

    # 2. The film is issued once the study is stable; the SMS carries its link.
    [sms] = sms_gateway.wait(1, timeout=30)
    link = re.search(r"http\S+/f/[A-Za-z0-9_-]{43}", sms["message"]).group(0)  # type: ignore[union-attr]
    film = hospital.get("/api/films", params={"study_uid": ct.study_uid}).json()
    printed = hospital.get(f"/api/films/{film['film_id']}/printable.pdf")
    paper = "".join(p.extract_text() for p in PdfReader(io.BytesIO(printed.content)).pages)
    code = re.search(r"访问码: (\d{6})", paper).group(1)  # type: ignore[union-attr]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    # 3. The patient's phone: a wrong code, then the right one.
    phone_ctx = browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 375, "height": 812}, is_mobile=True, accept_downloads=True
    )
    phone = phone_ctx.new_page()
    phone.goto(link)
    assert "查看您的云胶片" in phone.text_content("h1")
    phone.fill("input[name=code]", wrong)
    phone.click("button[type=submit]")
    phone.wait_for_selector("text=验证码不正确")
    phone.fill("input[name=code]", code)
    phone.click("button[type=submit]")
    phone.wait_for_url(re.compile(r"/p/films/[0-9a-f]+$"))
    film_url = phone.url

    # 4. The report, on the page and as the original PDF.
    assert phone.text_content("#findings") == REPORT["findings"]
    assert phone.text_content("#impression") == REPORT["impression"]
    assert "XXX人民医院" in phone.content()
    width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 375, "the page fits a 375-px phone"
    report = phone_ctx.request.get(server.http_url + phone.get_attribute("#view-report", "href"))
    assert report.status == 200 and report.body().startswith(b"%PDF")

    # 5. The images, in the viewer, with the page's cookie session.
    viewer_href = phone.get_attribute("#view-images", "href")
    assert viewer_href == f"/viewer/?study={ct.study_uid}"
    frames: list[int] = []
    phone.on("response", lambda resp: "/frames/" in resp.url and frames.append(resp.status))
    phone.click("#view-images")
    if VIEWER_BUILT.is_file():
        phone.wait_for_function(
            "() => window.cloudfilmViewer && window.cloudfilmViewer.state"
            " && window.cloudfilmViewer.state().firstImageAt",
            timeout=60_000,
        )
        assert frames and all(s == 200 for s in frames)
    meta = phone_ctx.request.get(f"{server.http_url}/dicom-web/studies/{ct.study_uid}/metadata")
    assert meta.status == 200 and len(meta.json()) == ct.number_of_instances

    # 6. The original DICOM as a zip with a DICOMDIR.
    phone.goto(film_url)
    with phone.expect_download() as dl:
        phone.click("#download-zip")
    zpath = tmp_path / "film.zip"
    dl.value.save_as(zpath)
    out = tmp_path / "unzipped"
    zipfile.ZipFile(zpath).extractall(out)
    fs = FileSet(out / "DICOMDIR")
    assert len(fs) == ct.number_of_instances
    uids = {dcmread(i.path).SOPInstanceUID for i in fs}
    assert uids == {u for s in ct.series for u in s.sop_instance_uids}

    # 7. A share for a doctor, opened in another browser.
    phone.click("#share")
    phone.fill("input[name=label]", "陈医生")
    phone.check("input[name=allow_download]")
    phone.click("form.share-form button[type=submit]")
    phone.wait_for_selector(".share-result:not([hidden]) svg")
    share_link = phone.input_value(".share-result .share-link")
    assert "/s/" in share_link

    doctor_ctx = browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
    doctor = doctor_ctx.new_page()
    doctor.goto(share_link)
    doctor.wait_for_url(re.compile(r"/p/films/[0-9a-f]+$"))
    assert doctor.text_content("#impression") == REPORT["impression"]
    assert doctor.query_selector("#history") is None and doctor.query_selector("#share") is None
    frame_path = (
        f"{server.http_url}/dicom-web/studies/{ct.study_uid}/series/{ct.series[0].series_uid}"
        f"/instances/{ct.series[0].sop_instance_uids[0]}/frames/1"
    )
    assert doctor_ctx.request.get(frame_path).status == 200

    # 8. The patient revokes it; the doctor's very next request is refused.
    phone.reload()
    phone.click("button.revoke")
    phone.wait_for_selector("li.share.revoked")
    assert doctor_ctx.request.get(frame_path).status == 403
    doctor.reload()
    assert "此分享已撤销" in doctor.content()

    # 9. Both accesses in the patient's history.
    phone.goto(film_url + "/history")
    rows = phone.locator("table.history tr").all_text_contents()
    text = "\n".join(rows)
    assert any("本人" in r and "查看" in r for r in rows), text
    assert any("陈医生" in r and "查看" in r and "被拒绝" not in r for r in rows), text
    assert any("陈医生" in r and "被拒绝" in r for r in rows), text
    assert any("未验证的访客" in r and "被拒绝" in r for r in rows), text
    phone_ctx.close()
    doctor_ctx.close()

    audit = subprocess.run(
        [sys.executable, "-m", "cloudfilm.cli", "audit", "verify"],
        env=server.env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert audit.returncode == 0, audit.stdout

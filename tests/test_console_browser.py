"""The hospital console in a real browser (Debian's Chromium) against a real ``cloudfilm serve``
with two hospitals: a radiologist of hospital A logs in, finds a study by its Chinese name, opens
it in the viewer, prints its film, reads the dashboard (whose numbers must equal what was
stored), and cannot reach hospital B's study by URL. Also at 375 px (a phone).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import func, select

from cloudfilm.access.tokens import create_token
from cloudfilm.accounts.aes import register_ae
from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.accounts.users import create_user
from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.demo import DemoManifest, write_demo
from cloudfilm.storage.models import Instance, Series, Study
from tests.conftest import ARTIFACTS, ServerProcess, dcmtk
from tests.portal.conftest import REPORT

VIEWER_BUILT = Path(__file__).resolve().parents[1] / "src/cloudfilm/static/viewer/index.html"
PASSWORD = "radiology-pass-1"
pytestmark = pytest.mark.timeout(300)


class Two:
    def __init__(self, server: ServerProcess, demo: DemoManifest, a_token: str) -> None:
        self.server, self.demo, self.a_token = server, demo, a_token


@pytest.fixture
def two_hospitals(tmp_path: Path) -> Iterator[Two]:
    url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    data = tmp_path / "data"
    archive = Archive(Settings(data_dir=data, database_url=url))
    try:
        b = create_hospital(archive.db, "HOSP-B", "乙医院", region_code="320200")
        register_ae(archive.db, 1, "A_CT")
        register_ae(archive.db, b.pk, "B_MR")
        create_user(archive.db, username="wang-rad", password=PASSWORD, role="radiologist",
                    hospital=1, display_name="王影像")  # fmt: skip
        _i, a_token = create_token(archive.db, "A reporting", "read,write", hospital=1)
    finally:
        archive.close()
    server = ServerProcess(data_dir=data, database_url=url,
                           env_extra={"CLOUDFILM_FILM_STABLE_SECONDS": "1"})  # fmt: skip
    server.start()
    demo = write_demo(tmp_path / "demo", ct_slices=12, ct_size=128, include_pydicom_files=False,
                      include_codecs=False)  # fmt: skip
    for calling, folder in (("A_CT", "ct"), ("B_MR", "mr")):
        folder_path = str(tmp_path / "demo" / folder)
        sent = dcmtk("storescu", "-aet", calling, "-aec", server.ae_title, "+sd", "+r", "+sp",
                     "*.dcm", "127.0.0.1", str(server.dicom_port), folder_path)  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr
    try:
        yield Two(server, demo, a_token)
    finally:
        server.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "console-browser-server.log").write_text(server.log())


def _stored(two: Two, hospital: int) -> dict[str, int]:
    archive = Archive(Settings(data_dir=two.server.data_dir, database_url=two.server.database_url))
    try:
        with archive.db.read() as s:
            studies = s.execute(
                select(func.count()).select_from(Study).where(Study.hospital_pk == hospital)
            ).scalar_one()
            instances, size = s.execute(
                select(func.count(Instance.pk), func.sum(Instance.size_bytes))
                .join(Series, Instance.series_pk == Series.pk)
                .join(Study, Series.study_pk == Study.pk)
                .where(Study.hospital_pk == hospital)
            ).one()
        return {"studies": studies, "instances": instances, "bytes": int(size or 0)}
    finally:
        archive.close()


def test_a_radiologist_finds_opens_prints_counts_and_stays_in_hospital_a(
    two_hospitals: Two,
    browser,  # type: ignore[no-untyped-def]
) -> None:
    two = two_hospitals
    ct, mr = two.demo.study("ct"), two.demo.study("mr")
    import httpx

    with httpx.Client(base_url=two.server.http_url,
                      headers={"Authorization": f"Bearer {two.a_token}"}) as reporting:  # fmt: skip
        r = reporting.post("/api/reports", json={**REPORT, "accession_number": ct.accession_number})
        assert r.status_code == 201 and r.json()["matched_study_uid"] == ct.study_uid, r.text

    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")  # type: ignore[attr-defined]
    page = ctx.new_page()
    try:
        # 1. Log in (a login page first, Chinese first).
        page.goto(two.server.http_url + "/")
        assert "登录" in page.content()
        page.fill("input[name=login]", "wang-rad")
        page.fill("input[name=password]", PASSWORD)
        page.click("form[action='/console/login'] button[type=submit]")
        page.wait_for_url(re.compile(r"/console/worklist"))

        # 2. Find the CT by the patient's name in Chinese characters.
        surname = ct.patient_name.split("=")[1].split("^")[0]  # e.g. 王
        page.fill("input[name=name]", surname + "*")
        page.click("form[action='/console/worklist'] button[type=submit]")
        rows = page.locator("#cf-worklist tbody tr[data-study]")
        uids = rows.evaluate_all("rs => rs.map(r => r.dataset.study)")
        assert ct.study_uid in uids and mr.study_uid not in uids
        everything = page.goto(two.server.http_url + "/console/worklist")
        assert everything is not None and mr.study_uid not in page.content()

        # 3. Open it in the viewer (the console cookie authenticates DICOMweb).
        if VIEWER_BUILT.exists():
            page.goto(two.server.http_url + "/console/worklist")
            page.locator(f"tr[data-study='{ct.study_uid}'] a[href^='/viewer/']").first.click()
            page.wait_for_function(
                "() => window.cloudfilmViewer && window.cloudfilmViewer.state"
                " && window.cloudfilmViewer.state().firstImageAt",
                timeout=60_000,
            )

        # 4. Print the film: the paper report carries the access code and the QR.
        page.goto(f"{two.server.http_url}/console/desk?study={ct.study_uid}")
        if page.locator("form[action='/console/desk/issue']").count():
            page.click("form[action='/console/desk/issue'] button[type=submit]")
        href = page.locator("#cf-print").get_attribute("href")
        assert href and href.endswith("/printable.pdf")
        pdf = ctx.request.get(two.server.http_url + href)
        assert pdf.status == 200
        paper = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.body())).pages)
        assert re.search(r"访问码: \d{6}", paper), paper[:300]

        # 5. The dashboard's numbers are what was stored in hospital A.
        page.goto(two.server.http_url + "/console/stats")
        stats = json.loads(page.locator("#cf-stats").text_content() or "{}")
        want = _stored(two, 1)
        totals = stats["totals"]
        assert {k: totals[k] for k in want} == want, (totals, want)
        assert totals["films"] == 1
        assert sum(d["instances"] for d in stats["days"]) == want["instances"]
        assert {m["modality"] for m in stats["modalities"]} == {"CT"}
        page.wait_for_function(
            "() => window.cfCharts && document.querySelectorAll('.cf-chart canvas').length >= 2",
            timeout=30_000,
        )

        # 6. Hospital B's study, by URL: refused through every door the browser has.
        for url in (
            f"/dicom-web/studies/{mr.study_uid}/metadata",
            f"/dicom-web/studies/{mr.study_uid}/series/{mr.series[0].series_uid}",
            f"/console/desk?study={mr.study_uid}",
        ):
            answer = ctx.request.get(two.server.http_url + url)
            assert answer.status in (403, 404), f"{url}: {answer.status}"
            assert mr.patient_name.split("=")[-1] not in answer.text()
        if VIEWER_BUILT.exists():
            refused: list[int] = []
            page.on(
                "response",
                lambda r: refused.append(r.status) if "/dicom-web/" in r.url else None,
            )
            page.goto(f"{two.server.http_url}/viewer/?study={mr.study_uid}")
            page.wait_for_timeout(2000)
            assert refused and all(s in (403, 404) for s in refused), refused
            shown = page.evaluate(
                "() => window.cloudfilmViewer && window.cloudfilmViewer.state"
                " ? window.cloudfilmViewer.state().firstImageAt : null"
            )
            assert not shown, "no image of hospital B is painted"

        # 7. The phone width: the worklist still works, no sideways page scroll.
        page.set_viewport_size({"width": 375, "height": 740})
        page.goto(two.server.http_url + "/console/worklist")
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"the page scrolls sideways by {overflow}px at 375 px"
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "console-browser.png"))
        raise
    finally:
        ctx.close()

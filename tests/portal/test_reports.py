"""Reports in (JSON, virtual-printer PDF, DICOM SR and Encapsulated PDF), films issued when the
study is stable, SMS, the printed report, corrections, phone login, the DICOM zip."""

from __future__ import annotations

import hashlib
import io
import re
import time
import zipfile
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pypdf import PdfReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas
from sqlalchemy import select

from cloudfilm.portal.models import Report
from cloudfilm.storage.models import Instance
from tests.factory import make_dataset, to_bytes
from tests.portal.conftest import REPORT, Portal, SmsGateway


def test_report_before_images_waits_then_film_and_sms(portal: Portal, sms: SmsGateway) -> None:
    out = portal.report(accession_number="ACC-LATE", phone="139 1234 5678")
    assert out["matched_study_uid"] is None
    portal.issue()
    assert sms.messages == []
    study_uid = portal.study(accession="ACC-LATE")
    portal.issue()
    [msg] = sms.wait(1)
    assert msg["phone"] == "139 1234 5678"
    link = re.search(r"http\S+/f/[A-Za-z0-9_-]{43}", msg["message"])
    assert link and "XXX人民医院" in msg["message"] and "CT头部平扫" in msg["message"]
    film = portal.hospital.get("/api/films", params={"study_uid": study_uid}).json()
    assert film["link"] == link.group(0) and film["access_code"] not in msg["message"]
    page = portal.browser().get("/f/" + link.group(0).rsplit("/", 1)[1])
    assert page.status_code == 200 and "访问码" in page.text


def test_an_sms_the_gateway_refused_is_sent_later(portal: Portal, sms: SmsGateway) -> None:
    """Nothing acknowledged is lost: a film issued while the SMS gateway is down gets its SMS
    once the gateway is back, from the same server (after a back-off) or after a restart."""
    from cloudfilm.portal.films import FilmIssuer

    sms.fail_next = 3  # every attempt of the first send
    study_uid = portal.study(accession="ACC-SMS-DOWN")
    portal.report(accession_number="ACC-SMS-DOWN", phone="13900001111")
    portal.issue()
    assert portal.hospital.get("/api/films", params={"study_uid": study_uid}).status_code == 200
    assert (sms.posts, sms.messages) == (3, [])
    portal.issue()  # the gateway is back, but this server waits its back-off out
    assert sms.posts == 3
    restarted = FilmIssuer(portal.archive)
    restarted.run_once()
    [msg] = sms.wait(1)
    assert msg["phone"] == "13900001111" and "/f/" in msg["message"]
    restarted.run_once()
    portal.issue()
    assert len(sms.messages) == 1, "sent once, not again"
    film = portal.hospital.get("/api/films", params={"study_uid": study_uid}).json()
    assert film["notified_at"] is not None


def test_a_film_waits_until_the_study_is_stable(portal: Portal) -> None:
    # an hour's window: however slow this machine, the study is still arriving at the first pass
    portal.archive.settings.film_stable_seconds = 3600
    study_uid = portal.study(accession="ACC-STABLE")
    portal.report(accession_number="ACC-STABLE")
    portal.issue()
    assert portal.hospital.get("/api/films", params={"study_uid": study_uid}).status_code == 404
    portal.archive.settings.film_stable_seconds = 0.5
    time.sleep(0.6)  # now quiet for longer than the window
    portal.issue()
    assert portal.hospital.get("/api/films", params={"study_uid": study_uid}).status_code == 200


def test_a_corrected_report_replaces_the_old_and_keeps_it(portal: Portal) -> None:
    case = portal.film_case()
    acc = portal.archive.db.read().__enter__().execute(
        select(Report.accession_number).where(Report.study_uid == case["study_uid"])
    ).scalar_one()  # fmt: skip
    portal.report(accession_number=acc, impression="更正：桥脑右方脑膜瘤可能性大。")
    page = portal.verified(case).get(f"/p/films/{case['film_id']}").text
    assert "更正：桥脑右方脑膜瘤可能性大。" in page and "第 2 版" in page
    assert REPORT["impression"] not in page
    with portal.archive.db.read() as s:
        versions = s.execute(
            select(Report.version, Report.current, Report.impression)
            .where(Report.study_uid == case["study_uid"])
            .order_by(Report.version)
        ).all()
    assert [(v, c) for v, c, _i in versions] == [(1, False), (2, True)]
    assert versions[0][2] == REPORT["impression"]


def test_a_corrected_phone_number_gets_the_link_and_the_old_one_stops_working(
    portal: Portal, sms: SmsGateway
) -> None:
    """The first report had a wrong number: the correction moves the phone check and the SMS
    login to the right number and sends the link there."""
    case = portal.film_case(phone="13900000001")
    assert [m["phone"] for m in sms.wait(1)] == ["13900000001"]
    acc = portal.archive.db.read().__enter__().execute(
        select(Report.accession_number).where(Report.study_uid == case["study_uid"])
    ).scalar_one()  # fmt: skip
    portal.report(accession_number=acc, phone="13822223333")
    portal.issue()
    assert [m["phone"] for m in sms.wait(2)] == ["13900000001", "13822223333"]
    portal.issue()
    assert len(sms.messages) == 2, "sent once to the new number"
    token = case["token"]
    old = portal.browser("10.2.2.2").post("/api/verify", json={"token": token, "code": "000001"})
    assert old.status_code == 401
    new = portal.browser("10.2.2.3").post("/api/verify", json={"token": token, "code": "223333"})
    assert new.status_code == 200


def virtual_printer_pdf(exam_number: str) -> bytes:
    """A report as a hospital's reporting system prints it (the layout of seed 003)."""
    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.setFont("STSong-Light", 11)
    lines = [
        "XXX人民医院",
        "CT检查报告单",
        "姓名: 张三 性别: 男 年龄: 76岁 影像号: P00002568",
        f"科室: 内一科 门诊号: 2018072000 床号: - 检查号: {exam_number}",
        "检查日期: 2018.07.20 08:47 报告日期: 2018.07.20 09:23",
        "检查部位: CT头部",
        "检查所见:",
        "桥脑右方见约24毫米*20毫米高密度结节影, 病变边界清晰, CT值45HU左右。",
        "扫及颅骨未见异常。",
        "印象:",
        "1、桥脑右方高密度结节影, 考虑: 动脉瘤? 脑膜瘤? 建议MRI扫描进一步检查。",
        "2、老年性脑改变。",
        "报告医生: 李明 审核医生: 王建国",
    ]
    for i, line in enumerate(lines):
        c.drawString(50, 800 - 20 * i, line)
    c.save()
    return buf.getvalue()


def test_a_pdf_report_is_read_and_its_original_kept(portal: Portal) -> None:
    study_uid = portal.study(accession="ACC-PDF")
    pdf = virtual_printer_pdf("CT00000791")
    r = portal.hospital.post(
        "/api/reports",
        data={"accession_number": "ACC-PDF", "phone": "13512345678"},
        files={"pdf": ("report.pdf", pdf, "application/pdf")},
    )
    assert r.status_code == 201, r.text
    f = r.json()["fields"]
    assert r.json()["matched_study_uid"] == study_uid
    assert f["exam_number"] == "CT00000791" and f["body_part"] == "CT头部"
    assert f["findings"].startswith("桥脑右方见约24毫米") and f["findings"].endswith("未见异常。")
    assert f["impression"].startswith("1、桥脑右方") and "\n2、老年性脑改变" in f["impression"]
    assert (f["reporting_doctor"], f["reviewing_doctor"]) == ("李明", "王建国")
    assert f["hospital"] == "XXX人民医院" and f["patient_name"] == "张三"
    case = portal.film(study_uid)
    patient = portal.verified(case)
    original = patient.get(f"/api/films/{case['film_id']}/report.pdf")
    assert hashlib.sha256(original.content).digest() == hashlib.sha256(pdf).digest()
    bad = portal.hospital.post(
        "/api/reports", data={"accession_number": "X"}, files={"pdf": ("a.pdf", b"hello", "x/y")}
    )
    assert bad.status_code == 415
    assert portal.hospital.post("/api/reports", json={"findings": "?"}).status_code == 422


def _dicom_report(study_uid: str, sop_class: str) -> Dataset:
    ds = make_dataset(study_uid=study_uid, series_uid=generate_uid(), modality="DOC")
    for kw in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation",
               "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelData",
               "RescaleIntercept", "RescaleSlope"):  # fmt: skip
        delattr(ds, kw)
    ds.SOPClassUID = sop_class
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _text_item(meaning: str, text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "121071", "DCM", meaning
    item.ConceptNameCodeSequence = [code]
    item.TextValue = text
    return item


def test_dicom_sr_and_encapsulated_pdf_through_the_one_ingest(portal: Portal) -> None:
    sr_study = portal.study(accession="ACC-SR")
    sr = _dicom_report(sr_study, "1.2.840.10008.5.1.4.1.1.88.11")
    sr.ValueType = "CONTAINER"
    sr.ContentSequence = [_text_item("Findings", "肝脏形态大小正常。"),
                          _text_item("Impression", "肝脏未见异常。")]  # fmt: skip
    portal.archive.ingest(to_bytes(sr), hospital=1)

    pdf_study = portal.study(accession="ACC-EPDF")
    ep = _dicom_report(pdf_study, "1.2.840.10008.5.1.4.1.1.104.1")
    pdf = virtual_printer_pdf("CT00000792")
    ep.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ep.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    portal.archive.ingest(to_bytes(ep), hospital=1)

    portal.issue()
    sr_case, pdf_case = portal.film(sr_study), portal.film(pdf_study)
    sr_page = portal.verified(sr_case).get(f"/p/films/{sr_case['film_id']}").text
    assert "肝脏形态大小正常。" in sr_page and "肝脏未见异常。" in sr_page
    patient = portal.verified(pdf_case)
    assert "桥脑右方见约24毫米" in patient.get(f"/p/films/{pdf_case['film_id']}").text
    original = patient.get(f"/api/films/{pdf_case['film_id']}/report.pdf").content
    assert original == pdf


def test_the_printed_report_carries_the_code_and_a_qr(portal: Portal) -> None:
    case = portal.film_case()
    r = portal.hospital.get(f"/api/films/{case['film_id']}/printable.pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(r.content)).pages)
    assert f"访问码: {case['access_code']}" in text and "桥脑右方见约24毫米" in text
    svg = portal.hospital.get(f"/api/films/{case['film_id']}/qr.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and "<path" in svg.text


def test_a_phone_number_verified_by_sms_sees_all_its_films(portal: Portal, sms: SmsGateway) -> None:
    a = portal.film_case(phone="13600000001", hospital="甲医院", exam_name="胸部CT")
    b = portal.film_case(phone="136-0000-0001", hospital="乙医院", exam_name="头颅MR")
    # another patient (record): an SMS login never shows a stranger's film
    c = portal.film_case(phone="13600000002", patient_id="P002", hospital="丙医院",
                         exam_name="腹部超声")  # fmt: skip
    sent_before = len(sms.wait(3))
    user = portal.browser()
    assert user.post("/api/patient/otp", json={"phone": "13600000001"}).status_code == 200
    code = re.search(r"\b(\d{6})\b", sms.wait(sent_before + 1)[-1]["message"]).group(1)  # type: ignore[union-attr]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert user.post("/api/patient/otp/verify", json={"phone": "13600000001", "code": wrong}
                     ).status_code == 401  # fmt: skip
    r = user.post("/api/patient/otp/verify", json={"phone": "13600000001", "code": code})
    assert r.status_code == 200
    page = user.get("/p/").text
    assert "胸部CT" in page and "头颅MR" in page and "腹部超声" not in page
    studies = {s["0020000D"]["Value"][0] for s in user.get("/dicom-web/studies").json()}
    assert studies == {a["study_uid"], b["study_uid"]}
    assert user.get(f"/api/films/{c['film_id']}/report.pdf").status_code == 403
    again = user.post("/api/patient/otp/verify", json={"phone": "13600000001", "code": code})
    assert again.status_code == 401, "a one-time code works once"

    # One share for both films (the share page offers every film of the session).
    share_page = user.get(f"/p/films/{a['film_id']}/share").text
    assert share_page.count('name="film"') == 2
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', share_page).group(1)  # type: ignore[union-attr]
    r = user.post(
        "/api/shares", json={"film_ids": [a["film_id"], b["film_id"]], "days": 30},
        headers={"X-CSRF-Token": csrf},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    doctor = portal.browser("10.6.6.6")
    opened = doctor.post("/api/shares/open", json={"token": r.json()["link"].rsplit("/", 1)[1]})
    assert opened.json()["next"] == "/p/"
    listing = doctor.get("/p/").text
    assert "胸部CT" in listing and "头颅MR" in listing and "腹部超声" not in listing
    seen = {s["0020000D"]["Value"][0] for s in doctor.get("/dicom-web/studies").json()}
    assert seen == {a["study_uid"], b["study_uid"]}


def test_the_zip_holds_every_original_and_a_dicomdir(portal: Portal, tmp_path: Path) -> None:
    study_uid = portal.study(n=4, accession="ACC-ZIP", patient_name="Wang^XiaoDong=王^小东",
                             charset="ISO_IR 192")  # fmt: skip
    portal.study(n=2, study_uid=study_uid)  # a second series
    portal.report(accession_number="ACC-ZIP")
    case = portal.film(study_uid)
    r = portal.verified(case).get(f"/api/films/{case['film_id']}/download.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(r.content)).extractall(tmp_path)
    fs = FileSet(tmp_path / "DICOMDIR")
    assert len(fs) == 6
    assert fs.find(PatientName="Wang^XiaoDong=王^小东")
    with portal.archive.db.read() as s:
        stored = {
            sop: portal.archive.blobs.get(key)
            for sop, key in s.execute(select(Instance.sop_uid, Instance.blob_key)).all()
        }
    for inst in fs:
        data = Path(inst.path).read_bytes()
        assert data == stored[inst.SOPInstanceUID]
        assert dcmread(inst.path).StudyInstanceUID == study_uid

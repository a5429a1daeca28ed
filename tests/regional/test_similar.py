"""The similar-exam warning: the vocabulary, the matching on both engines, the HIS's HTTP API
against a real ``cloudfilm serve`` with a hospital's token, and the console's banner.

Persons are linked the way ingest links them: instances carry the national ID number as an
Other Patient ID whose issuer is 身份证. Study dates are set relative to today in China.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from cloudfilm.access.tokens import create_token
from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.accounts.models import Hospital
from cloudfilm.archive import Archive
from cloudfilm.portal.reports import ReportFields, save_report
from cloudfilm.regional import identifiers as ids
from cloudfilm.regional.bodypart_terms import ANNEX_L
from cloudfilm.regional.bodyparts import BY_TERM, REGIONS, regions_of
from cloudfilm.regional.similar import AmbiguousPerson, parse_exam, similar_exams
from cloudfilm.storage.models import AuditEvent, Study
from tests.conftest import ServerProcess
from tests.console.conftest import Console, console  # noqa: F401  (the console fixture)
from tests.factory import make_dataset, to_bytes

ID_A = "11010519491231002X"  # the GB 11643 standard's own example
ID_B = "440524188001010014"
CHINA = timedelta(hours=8)


def day(days_ago: int) -> str:
    return (datetime.now(UTC) + CHINA - timedelta(days=days_ago)).strftime("%Y%m%d")


def exam(
    archive: Archive,
    hospital: int,
    *,
    days_ago: int,
    modality: str = "CT",
    body_part: str = "CHEST",
    description: str = "",
    national_id: str = ID_A,
    patient_id: str = "",
) -> str:
    """One study of the person with ``national_id``, ingested at ``hospital``."""
    ds = make_dataset(
        patient_id=patient_id or f"H{hospital}-{national_id[-4:]}",
        modality=modality,
        study_date=day(days_ago),
        accession=generate_uid()[-12:],
        charset="ISO_IR 192",
    )
    ds.BodyPartExamined = body_part
    ds.StudyDescription = description
    item = Dataset()
    item.PatientID = national_id
    item.IssuerOfPatientID = "身份证"
    ds.OtherPatientIDsSequence = [item]
    archive.ingest(to_bytes(ds), hospital=hospital)
    return str(ds.StudyInstanceUID)


def find(archive: Archive, planned: str, national_id: str = ID_A, **kw):  # type: ignore[no-untyped-def]
    p = parse_exam(planned)
    with archive.db.read() as session:
        return similar_exams(
            session, archive.secret, [ids.national_id(national_id)], p.modality, p.regions,
            datetime.now(UTC), **kw,
        )  # fmt: skip


def test_the_vocabulary_reads_exam_names_terms_and_codes() -> None:
    assert parse_exam("胸部CT").modality == "CT" and parse_exam("胸部CT").regions == {"CHEST"}
    assert parse_exam("头颅MR").modality == "MR" and parse_exam("头颅MR").regions == {"HEAD"}
    assert parse_exam("腰椎DR").family == "DX" and parse_exam("腰椎DR").regions == {"LSPINE"}
    assert parse_exam("上腹部CT").regions == {"ABDOMEN"}
    assert parse_exam("颈椎MR").regions == {"CSPINE"}
    assert parse_exam("膝关节MR").regions == {"KNEE"}
    assert parse_exam("乳腺钼靶").modality == "MG"
    assert parse_exam("PET-CT全身").modality == "PT"
    # DICOM: defined terms, CID 4031 codes (PS3.16 2026: Chest is 816094009), descriptions
    assert regions_of("LSPINE") == {"LSPINE"}
    assert regions_of("816094009") == regions_of("SCT:816094009") == {"CHEST"}
    assert regions_of("CHESTABDPELVIS") == {"CHEST", "ABDOMEN", "PELVIS"}
    assert regions_of("MR L-SPINE") == {"LSPINE"}
    assert regions_of("CT Chest W/O contrast") == {"CHEST"}
    assert regions_of("CT SPINE") == {"CSPINE", "TSPINE", "LSPINE", "SSPINE"}  # not CTSPINE
    # Chinese: the longest name wins
    assert regions_of("颈椎") == {"CSPINE"} and regions_of("颈部") == {"NECK"}
    assert regions_of("宫颈") == {"PELVIS"} and regions_of("股骨头") == {"HIP"}
    assert regions_of("胸腹部CT") == {"CHEST", "ABDOMEN"}
    assert regions_of("胸腰椎") == {"TSPINE", "LSPINE"}
    # unknown names match nothing
    for unknown in ("血常规", "xyz", "手术后复查", "", "ARTERY", "12345678"):
        assert regions_of(unknown) == set(), unknown
    assert not parse_exam("血常规").understood
    assert not parse_exam("胸部").understood  # a region without a modality
    # every region name is a real Annex L defined term, and the vocabulary stays small
    assert set(BY_TERM) <= set(ANNEX_L)
    assert 20 <= len(REGIONS) <= 30


def test_a_chest_ct_elsewhere_is_found_for_the_same_modality_region_and_window(
    archive: Archive,
) -> None:
    a = create_hospital(archive.db, "hosp-a", "甲医院", region_code="320100").pk
    b = create_hospital(archive.db, "hosp-b", "乙医院", region_code="320100").pk
    chest = exam(archive, a, days_ago=10)
    exam(archive, a, days_ago=31, description="CT Chest")  # outside 30 days
    exam(archive, a, days_ago=5, modality="MR", body_part="CHEST")  # another modality
    exam(archive, b, days_ago=3, body_part="CHEST", national_id=ID_B)  # another person
    found = find(archive, "胸部CT")
    assert [e.study_uid for e in found] == [chest]
    hit = found[0]
    assert (hit.hospital_pk, hit.hospital_name, hit.modalities) == (a, "甲医院", ("CT",))
    assert hit.days_ago == 10 and hit.regions == {"CHEST"}
    with archive.db.read() as s:
        index_id = s.execute(select(Study.index_id).where(Study.study_uid == chest)).scalar()
    assert hit.index_id == index_id
    assert find(archive, "头颅CT") == []
    assert find(archive, "胸部MR")[0].days_ago == 5
    assert find(archive, "血常规") == []
    # the window is a setting: 40 days reach the older chest CT
    assert len(find(archive, "胸部CT", days={"CT": 40})) == 2


def test_radiography_is_one_family_with_a_14_day_window(archive: Archive) -> None:
    a = create_hospital(archive.db, "hosp-a", "甲医院").pk
    cr = exam(archive, a, days_ago=10, modality="CR", body_part="LSPINE")
    exam(archive, a, days_ago=20, modality="DX", body_part="LSPINE")
    ct = exam(archive, a, days_ago=20, modality="CT", body_part="LSPINE")
    assert [e.study_uid for e in find(archive, "腰椎DR")] == [cr]
    assert [e.study_uid for e in find(archive, "腰椎正侧位")] == [cr]
    assert [e.study_uid for e in find(archive, "腰椎CT")] == [ct]
    assert len(find(archive, "腰椎DR", days={"DR": 25})) == 2


def test_the_region_comes_from_the_description_and_the_report_too(archive: Archive) -> None:
    a = create_hospital(archive.db, "hosp-a", "甲医院").pk
    by_description = exam(archive, a, days_ago=2, body_part="", description="头颅平扫")
    by_report = exam(archive, a, days_ago=4, body_part="", description="")
    unknown = exam(archive, a, days_ago=6, body_part="", description="routine")
    save_report(
        archive,
        ReportFields(study_uid=by_report, exam_name="颅脑CT平扫", findings="未见异常"),
        source="json",
        hospital=a,
    )
    assert [e.study_uid for e in find(archive, "头颅CT")] == [by_description, by_report]
    assert unknown not in {e.study_uid for e in find(archive, "胸部CT")}


def test_identifiers_naming_two_persons_are_refused(archive: Archive) -> None:
    exam(archive, 1, days_ago=1)
    ds = make_dataset(patient_id="P-INS", study_date=day(1), charset="ISO_IR 192")
    item = Dataset()
    item.PatientID, item.IssuerOfPatientID = "YB12345678", "医保卡"
    ds.OtherPatientIDsSequence = [item]
    archive.ingest(to_bytes(ds), hospital=1)
    with archive.db.read() as s, pytest.raises(AmbiguousPerson):
        similar_exams(
            s, archive.secret, [ids.national_id(ID_A), ids.insurance_card("YB12345678")],
            "CT", "CHEST", datetime.now(UTC),
        )  # fmt: skip


def _audit_rows(archive: Archive, principal: str) -> list[AuditEvent]:
    with archive.db.read() as s:
        return list(
            s.execute(select(AuditEvent).where(AuditEvent.principal == principal)).scalars()
        )


def test_the_his_asks_over_http_with_its_hospitals_token(
    archive: Archive,
    server_factory,  # type: ignore[no-untyped-def]
) -> None:
    a = create_hospital(archive.db, "hosp-a", "甲医院", region_code="320100").pk
    b = create_hospital(archive.db, "hosp-b", "乙医院", region_code="320100").pk
    chest = exam(archive, a, days_ago=10)
    save_report(
        archive,
        ReportFields(study_uid=chest, exam_name="胸部CT平扫", findings="右肺上叶结节"),
        source="json",
        hospital=a,
    )
    info, token = create_token(archive.db, "HIS 乙医院", "read", hospital=b)
    server: ServerProcess = server_factory()
    server.start()
    url = f"{server.http_url}/api/regional/similar-exams"
    his = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30)

    r = his.post(url, json={"national_id": ID_A.lower(), "exam": "胸部CT"})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["count"] == 1 and body["planned"]["regions"] == ["CHEST"]
    assert body["planned"]["days"] == 30
    found = body["exams"][0]
    with archive.db.read() as s:
        index_id = s.execute(select(Study.index_id).where(Study.study_uid == chest)).scalar()
    assert found["index_id"] == index_id and found["hospital_name"] == "甲医院"
    assert found["modality"] == "CT" and found["region_names"] == "胸部"
    assert found["date"] == f"{day(10)[:4]}-{day(10)[4:6]}-{day(10)[6:]}"
    assert found["this_hospital"] is False
    assert body["consent_url"].endswith(f"/console/regional?person={body['person_id']}")
    assert "右肺" not in r.text and chest not in r.text  # no report text, no study UID

    # modality and body part given apart, as codes
    r = his.post(url, json={"national_id": ID_A, "modality": "CT", "body_part": "816094009"})
    assert r.json()["count"] == 1
    r = his.post(url, json={"national_id": ID_A, "exam": "头颅CT"})
    assert r.status_code == 200 and r.json()["count"] == 0 and r.json()["person_id"] is None
    r = his.post(url, json={"national_id": ID_A, "modality": "\u0000", "body_part": "CHEST"})
    assert r.status_code == 200 and r.json()["planned"]["understood"] is False

    r = httpx.post(url, json={"national_id": ID_A, "exam": "胸部CT"})
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
    r = his.post(url, json={"national_id": "110105194912310021", "exam": "胸部CT"})
    assert r.status_code == 400 and "check character" in r.json()["detail"]
    assert r.headers["content-type"].startswith("application/problem+json")
    r = his.post(url, json={"exam": "胸部CT"})
    assert r.status_code == 400
    r = his.post(url, json={"nationalId": ID_A, "exam": "胸部CT"})  # a misspelt field
    assert r.status_code == 400
    his.close()

    # audited: who asked, for which person, how many were found
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = [e for e in _audit_rows(archive, f"token:{info.token_id}") if e.action == "query"]
        if len(rows) >= 4:
            break
        time.sleep(0.1)
    assert len(rows) == 4, [(e.resource, e.detail) for e in rows]  # NUL kept out of the trail
    first = rows[0]
    assert first.outcome == "allow" and first.hospital_pk == b
    assert first.resource.startswith("person:") and first.resource != "person:?"
    assert "1 found, 1 at other hospitals" in first.detail
    assert "national_id 1101**********002X" in first.detail and ID_A not in first.detail
    assert "0 found" in rows[2].detail and "(not understood)" in rows[3].detail


def test_the_console_shows_the_warning_when_a_clinician_opens_one_patient(
    console: Console,  # noqa: F811
) -> None:
    archive, a, b = console.archive, console.hospital_a, console.hospital_b
    chest = exam(archive, a, days_ago=10)
    save_report(
        archive,
        ReportFields(study_uid=chest, exam_name="胸部CT平扫", findings="右肺上叶结节"),
        source="json",
        hospital=a,
    )
    exam(archive, a, days_ago=40, modality="CT", body_part="HEAD")  # outside its window
    exam(archive, b, days_ago=0, body_part="HEAD", patient_id="B-77")  # the same person at B
    exam(archive, b, days_ago=0, body_part="HEAD", patient_id="B-99", national_id=ID_B)
    archive.ingest(to_bytes(make_dataset(patient_id="B-00")), hospital=b)  # nobody's
    console.user("doc-b", role="clinician", hospital="b")
    doc = console.logged_in("doc-b")
    with archive.db.read() as s:
        index_id = s.execute(select(Study.index_id).where(Study.study_uid == chest)).scalar()
        a_name = s.execute(select(Hospital.name).where(Hospital.pk == a)).scalar() or "default"

    page = doc.get("/console/worklist", params={"pid": "B-77"})
    assert page.status_code == 200
    banner = page.text.split('id="cf-similar"', 1)[1].split("</div>", 1)[0]
    assert "该患者近期在其他医院有 1 项检查" in banner
    assert f"{day(10)[:4]}-{day(10)[4:6]}-{day(10)[6:]}" in banner and "10 天前" in banner
    assert a_name in banner and "CT 胸部" in banner and index_id in banner
    person = re.search(r'href="/console/regional\?person=([0-9a-f]+)"', banner)
    assert person is not None
    assert "右肺" not in page.text and chest not in page.text  # no report text, no study
    en = doc.get("/console/worklist", params={"pid": "B-77", "lang": "en"}).text
    assert "this patient had 1 exam(s) at other hospitals" in en and "CT Chest" in en

    # not one linked person: no banner
    for pid in ("B-99", "B-00", ""):
        assert 'id="cf-similar"' not in doc.get("/console/worklist", params={"pid": pid}).text
    archive.audit.flush()
    rows = [e for e in _audit_rows(archive, "user:doc-b") if "similar-exam banner" in e.detail]
    assert len(rows) == 2 and rows[0].resource.startswith("person:")

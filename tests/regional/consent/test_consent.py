"""Consent across hospitals, end to end over HTTP on the real app (SQLite and PostgreSQL).

A patient's chest CT at hospital A; a clinician at hospital B finds the person by ID number,
sees only a count, asks for consent by SMS; the patient approves from the SMS link; the
clinician sees A's exam through every door; the patient sees the access and revokes; the next
frame request is refused. Plus the code read to the doctor (limited), doctor-assisted consent
(last 4 digits checked), another person's study never opened by the grant, expiry, bad IDs.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from cloudfilm.access.tokens import create_token
from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.archive import Archive
from cloudfilm.portal.models import Report
from cloudfilm.regional.models import ConsentGrant
from cloudfilm.storage.models import Instance, Series, Study, utcnow
from tests.console.conftest import Console, hidden
from tests.factory import make_dataset, to_bytes
from tests.portal.conftest import Portal, SmsGateway

ID_P = "11010519491231002X"
ID_Q = "440524188001010014"
PHONE = "13912345678"


def ingest_study(archive: Archive, hospital: int, national_id: str, *, n: int = 2,
                 accession: str = "", modality: str = "CT") -> str:  # fmt: skip
    study_uid, series_uid = generate_uid(), generate_uid()
    for i in range(n):
        ds: Dataset = make_dataset(
            study_uid=study_uid, series_uid=series_uid, instance_number=i + 1, size=16,
            patient_id=f"H{hospital}-{national_id[-4:]}", accession=accession or study_uid[-10:],
            modality=modality, charset="ISO_IR 192",
        )  # fmt: skip
        item = Dataset()
        item.PatientID = national_id
        item.IssuerOfPatientID = "身份证"
        ds.OtherPatientIDsSequence = [item]
        archive.ingest(to_bytes(ds), hospital=hospital)
    return study_uid


def frame_url(archive: Archive, study_uid: str) -> str:
    with archive.db.read() as s:
        series_uid, sop = s.execute(
            select(Series.series_uid, Instance.sop_uid)
            .join(Instance, Instance.series_pk == Series.pk)
            .join(Study, Study.pk == Series.study_pk)
            .where(Study.study_uid == study_uid)
        ).first()
    return f"/dicom-web/studies/{study_uid}/series/{series_uid}/instances/{sop}/frames/1"


class World:
    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.archive = portal.archive
        self.b = create_hospital(self.archive.db, "hosp-b", "第二医院").pk
        self.console = Console(self.archive, portal.app, 1, self.b)
        self.console.user("dr_b", role="clinician", hospital="b", display_name="刘医生")
        self.doctor = self.console.logged_in("dr_b")
        # the patient's chest CT at A, its report with the phone, its film
        acc = "ACC-A1"
        self.a_study = ingest_study(self.archive, 1, ID_P, accession=acc)
        portal.report(accession_number=acc, phone=PHONE, exam_name="胸部CT平扫")
        self.a_film = portal.film(self.a_study)
        # B's prior of the same person, and another person's study at A
        self.b_prior = ingest_study(self.archive, self.b, ID_P, accession="ACC-B1")
        self.q_study = ingest_study(self.archive, 1, ID_Q, accession="ACC-Q1")

    def csrf(self) -> str:
        return hidden(self.doctor.get("/console/regional").text, "csrf")

    def find(self, value: str = ID_P, kind: str = "national_id") -> Any:
        return self.doctor.post(
            "/console/regional/find", data={"csrf": self.csrf(), "kind": kind, "value": value},
            follow_redirects=False,
        )  # fmt: skip

    def person(self) -> str:
        r = self.find()
        assert r.status_code == 303, r.text
        return r.headers["location"].split("person=")[1]

    def ask(self, person: str, mode: str = "sms", **form: str) -> Any:
        data = {"csrf": self.csrf(), "person": person, "mode": mode, "reason": "胸痛复查对比",
                "days": "7", **form}  # fmt: skip
        return self.doctor.post("/console/regional/request", data=data, follow_redirects=False)


def sms_to(sms: SmsGateway, phone: str, count: int) -> dict[str, str]:
    messages = [m for m in sms.wait(count) if m.get("phone") == phone]
    assert messages, sms.messages
    return messages[-1]


def test_sms_consent_opens_every_door_until_revoked(world: World, sms: SmsGateway) -> None:
    doctor, archive = world.doctor, world.archive
    person = world.person()
    page = doctor.get(f"/console/regional?person={person}")
    assert 'data-elsewhere="1"' in page.text  # A's chest CT, told as a count only
    assert "cf-rg-exams" not in page.text
    # no grant: no study data of A through DICOMweb, and searches show B's only
    assert doctor.get(f"/dicom-web/studies/{world.a_study}/metadata").status_code in (403, 404)
    assert doctor.get(frame_url(archive, world.a_study)).status_code in (403, 404)
    found = {s["0020000D"]["Value"][0] for s in doctor.get("/dicom-web/studies").json()}
    assert world.a_study not in found and world.b_prior in found

    before = len(sms.messages)
    r = world.ask(person)
    assert r.status_code == 303 and "done=sent" in r.headers["location"], r.text
    message = sms_to(sms, PHONE, before + 1)["message"]
    token = re.search(r"/c/([A-Za-z0-9_-]+)", message).group(1)
    assert re.search(r"验证码 \d{6}", message) and "第二医院" in message and "刘医生" in message

    patient = world.portal.browser("10.9.9.9")
    link_page = patient.get(f"/c/{token}")
    assert link_page.status_code == 200 and "胸痛复查对比" in link_page.text
    assert 'data-state="pending"' in link_page.text
    ok = patient.post("/api/portal/consent/link", json={"token": token, "decision": "approve"})
    assert ok.status_code == 200, ok.text
    again = patient.post("/api/portal/consent/link", json={"token": token, "decision": "refuse"})
    assert again.status_code == 409  # decided once

    page = doctor.get(f"/console/regional?person={person}")
    assert world.a_study in page.text and "胸部CT平扫" in page.text
    assert f"study={world.b_prior}" in page.text  # compare with B's prior, side by side
    assert doctor.get(f"/dicom-web/studies/{world.a_study}/metadata").status_code == 200
    assert doctor.get(frame_url(archive, world.a_study)).status_code == 200
    found = {s["0020000D"]["Value"][0] for s in doctor.get("/dicom-web/studies").json()}
    assert {world.a_study, world.b_prior} <= found
    # the grant is for person P: Q's study at A stays closed
    assert world.q_study not in found
    assert doctor.get(frame_url(archive, world.q_study)).status_code in (403, 404)
    # nothing but viewing: no download of A's study
    assert doctor.get(f"/dicom-web/studies/{world.a_study}").status_code in (403, 404)

    # the patient logs in by SMS: sees the grant and who looked
    otp_before = len(sms.messages)
    assert patient.post("/api/patient/otp", json={"phone": PHONE}).status_code == 200
    code = re.search(r"(\d{6})", sms_to(sms, PHONE, otp_before + 1)["message"]).group(1)
    r = patient.post("/api/patient/otp/verify", json={"phone": PHONE, "code": code})
    assert r.status_code == 200, r.text
    mine = patient.get("/p/consent")
    assert 'data-state="active"' in mine.text and "刘医生" in mine.text
    history = patient.get(f"/p/films/{world.a_film['film_id']}/history")
    assert "第二医院 · 刘医生" in history.text
    grant_id = re.search(r'data-grant="([0-9a-f]+)"', mine.text).group(1)
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', mine.text).group(1)
    r = patient.post(f"/api/portal/grants/{grant_id}/revoke", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    # the very next frame request is refused
    assert doctor.get(frame_url(archive, world.a_study)).status_code in (403, 404)
    assert doctor.get(f"/dicom-web/studies/{world.a_study}/metadata").status_code in (403, 404)
    assert 'data-state="revoked"' in patient.get("/p/consent").text


def test_code_read_to_the_doctor_is_limited_and_in_app_consent(
    world: World, sms: SmsGateway
) -> None:
    doctor, archive = world.doctor, world.archive
    person = world.person()
    before = len(sms.messages)
    assert world.ask(person).status_code == 303
    code = re.search(r"验证码 (\d{6})", sms_to(sms, PHONE, before + 1)["message"]).group(1)
    page = doctor.get(f"/console/regional?person={person}")
    request_id = re.search(r'data-request="([0-9a-f]+)" data-state="pending"', page.text).group(1)

    def enter(value: str) -> Any:
        data = {"csrf": world.csrf(), "person": person, "request_id": request_id, "code": value}
        return doctor.post("/console/regional/code", data=data, follow_redirects=False)

    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    statuses = [enter(wrong).status_code for _ in range(5)]
    assert statuses[:4] == [401] * 4 and statuses[4] == 429
    assert enter(code).status_code == 429  # locked: even the right code waits
    assert doctor.get(frame_url(archive, world.a_study)).status_code in (403, 404)

    # in-app: the request waits in the patient's pages
    assert world.ask(person, mode="app").status_code == 303
    patient = world.portal.browser("10.9.9.8")
    otp_before = len(sms.messages)
    patient.post("/api/patient/otp", json={"phone": PHONE})
    otp = re.search(r"(\d{6})", sms_to(sms, PHONE, otp_before + 1)["message"]).group(1)
    assert (
        patient.post("/api/patient/otp/verify", json={"phone": PHONE, "code": otp}).status_code
        == 200
    )
    mine = patient.get("/p/consent")
    pending = re.findall(r'data-request="([0-9a-f]+)"', mine.text)
    assert pending, mine.text
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', mine.text).group(1)
    r = patient.post(f"/api/portal/consent/{pending[0]}/decision", json={"decision": "approve"},
                     headers={"X-CSRF-Token": csrf})  # fmt: skip
    assert r.status_code == 200, r.text
    assert doctor.get(frame_url(archive, world.a_study)).status_code == 200


def test_assisted_consent_checks_the_id_card_and_grants_expire(world: World) -> None:
    doctor, archive = world.doctor, world.archive
    person = world.person()
    r = world.ask(person, mode="assisted", last4="1234")
    assert r.status_code == 401
    assert doctor.get(frame_url(archive, world.a_study)).status_code in (403, 404)
    r = world.ask(person, mode="assisted", last4=ID_P[-4:].lower())
    assert r.status_code == 303 and "done=granted" in r.headers["location"]
    assert doctor.get(frame_url(archive, world.a_study)).status_code == 200
    # a scope: days beyond 30 refused
    assert world.ask(person, mode="assisted", last4=ID_P[-4:], days="31").status_code == 400
    # expiry: the same grant a minute past its end opens nothing
    with archive.db.write() as s:
        s.execute(update(ConsentGrant).values(expires_at=utcnow() - timedelta(minutes=1)))
    assert doctor.get(frame_url(archive, world.a_study)).status_code in (403, 404)


def test_bad_id_numbers_are_refused_and_unknown_persons_told_so(world: World) -> None:
    assert world.find("110105194912310021").status_code == 400  # wrong check character
    assert world.find("12345").status_code == 400
    assert world.find("13800000000", kind="phone").status_code == 404
    # another hospital's doctor without a grant: the person's count only, no exams listed
    page = world.doctor.get(f"/console/regional?person={world.person()}")
    assert "cf-rg-exams" not in page.text


def test_a_reports_id_number_links_its_record_even_when_it_comes_first(world: World) -> None:
    archive, portal = world.archive, world.portal
    bad = portal.hospital.post(
        "/api/reports", json={"accession_number": "R-1", "national_id": "110105194912310021"}
    )
    assert bad.status_code == 400 and "check character" in bad.text
    # the report first (waiting for its images), with Q's ID number; the images carry none
    r = portal.hospital.post(
        "/api/reports",
        json={"accession_number": "R-2", "national_id": ID_Q, "exam_name": "头颅CT"},
    )
    assert r.status_code == 201 and r.json()["matched_study_uid"] is None
    study_uid, series_uid = generate_uid(), generate_uid()
    ds = make_dataset(study_uid=study_uid, series_uid=series_uid, patient_id="A-NOID",
                      accession="R-2")  # fmt: skip
    archive.ingest(to_bytes(ds), hospital=1)
    from cloudfilm.portal.reports import match_waiting

    assert match_waiting(archive) == 1
    with archive.db.read() as s:
        keys = s.execute(select(Report.person_keys).where(Report.accession_number == "R-2"))
        assert ID_Q not in keys.scalar()  # kept keyed, never as the number itself
    # the record is now Q's: the same person as Q's other study at A
    page = world.doctor.get(f"/console/regional?person={person_of(world, ID_Q)}")
    assert 'data-elsewhere="2"' in page.text


def person_of(world: World, national_id: str) -> str:
    r = world.find(national_id)
    assert r.status_code == 303, r.text
    return r.headers["location"].split("person=")[1]


def test_the_film_desk_links_a_record_and_sees_refused_links(world: World) -> None:
    archive, console = world.archive, world.console
    console.user("desk_a", role="filmdesk", hospital="a", display_name="窗口")
    desk = console.logged_in("desk_a", client_ip="10.1.0.2")
    noid = ingest_study(archive, 1, ID_P, accession="L-1")  # has P's ID already
    plain = generate_uid()
    archive.ingest(to_bytes(make_dataset(study_uid=plain, patient_id="A-PLAIN",
                                         accession="L-2")), hospital=1)  # fmt: skip
    csrf = hidden(desk.get(f"/console/desk?study={plain}").text, "csrf")

    def post(study: str, value: str) -> Any:
        data = {"csrf": csrf, "study": study, "kind": "national_id", "value": value}
        return desk.post("/console/regional/link", data=data, follow_redirects=False)

    assert "done=badid" in post(plain, "110105194912310021").headers["location"]
    assert "done=linked" in post(plain, ID_Q).headers["location"]
    # the record with P's number cannot become Q's as well: refused, listed for review
    assert "done=conflict" in post(noid, ID_Q).headers["location"]
    assert "cf-rg-conflicts" in desk.get("/console/regional").text
    # a clinician may not link, and B's desk may not touch A's record
    r = world.doctor.post("/console/regional/link", data={
        "csrf": world.csrf(), "study": plain, "kind": "national_id", "value": ID_Q})  # fmt: skip
    assert r.status_code == 403


def test_an_sms_login_sees_the_persons_films_of_every_hospital(
    world: World, sms: SmsGateway
) -> None:
    archive, portal = world.archive, world.portal
    _info, b_token = create_token(archive.db, "B reporting", "read,write", hospital=world.b)
    b_reports = TestClient(portal.app, headers={"Authorization": f"Bearer {b_token}"})
    portal.clients.append(b_reports)
    # B's report of the same person gave another number (a relative's, say)
    r = b_reports.post("/api/reports", json={"accession_number": "ACC-B1", "phone": "13700000000",
                                             "exam_name": "胸部CT复查"})  # fmt: skip
    assert r.status_code == 201 and r.json()["matched_study_uid"] == world.b_prior
    portal.issue()
    patient = world.portal.browser("10.9.9.6")
    before = len(sms.messages)
    patient.post("/api/patient/otp", json={"phone": PHONE})
    code = re.search(r"(\d{6})", sms_to(sms, PHONE, before + 1)["message"]).group(1)
    assert (
        patient.post("/api/patient/otp/verify", json={"phone": PHONE, "code": code}).status_code
        == 200
    )
    films = patient.get("/p/").text
    assert "胸部CT平扫" in films and "胸部CT复查" in films  # A's, and B's through the person
    # Q (another person at A) stays out
    seen = {s["0020000D"]["Value"][0] for s in patient.get("/dicom-web/studies").json()}
    assert world.a_study in seen and world.b_prior in seen and world.q_study not in seen

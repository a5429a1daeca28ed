"""IHE Invoke Image Display: the HIS opens ``/iid?requestType=…`` in the user's browser.

A logged-in user of the owning hospital lands in the viewer (whose DICOMweb reads the same
cookie authenticates); another hospital's user gets a refusal page, audited, unless the patient
consented; a browser with nobody logged in goes to the console login and comes back. Real app,
real console logins, real consent rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.accounts.users import create_user
from cloudfilm.archive import Archive
from cloudfilm.http.app import create_app
from cloudfilm.regional.consent import Ask, decide, new_request
from cloudfilm.regional.models import PersonLink
from cloudfilm.storage.models import AuditEvent, Patient
from tests.factory import make_dataset, to_bytes

PASSWORD = "Kx7-harbour-lantern"
ID_CARD = "11010519491231002X"


def study(archive: Archive, hospital: int, patient_id: str, date: str, **kw: object) -> str:
    uid = generate_uid()
    ds = make_dataset(
        study_uid=uid, patient_id=patient_id, study_date=date, charset="ISO_IR 192", **kw
    )  # type: ignore[arg-type]
    item = Dataset()
    item.PatientID, item.IssuerOfPatientID, item.TypeOfPatientID = ID_CARD, "身份证", "TEXT"
    ds.OtherPatientIDsSequence = [item]  # one person at both hospitals
    archive.ingest(to_bytes(ds), hospital=hospital)
    return uid


@dataclass
class Site:
    archive: Archive
    b: int
    app: object
    a_ct: str = ""
    a_mr: str = ""
    b_ct: str = ""
    clients: list[TestClient] = field(default_factory=list)

    def browser(self) -> TestClient:
        c = TestClient(self.app, follow_redirects=False)  # type: ignore[arg-type]
        self.clients.append(c)
        return c

    def login(self, username: str, c: TestClient | None = None, next_: str = "") -> TestClient:
        c = c or self.browser()
        page = c.get("/", params={"next": next_} if next_ else None)
        pre = re.search(r'name="pre" value="([^"]*)"', page.text)
        assert pre, page.text
        data = {"login": username, "password": PASSWORD, "pre": pre.group(1)}
        r = c.post("/console/login", data={**data, "next": next_} if next_ else data)
        assert r.status_code == 303, r.text
        c.last_redirect = r.headers["location"]  # type: ignore[attr-defined]
        return c


@pytest.fixture
def site(archive: Archive) -> Iterator[Site]:
    b = create_hospital(archive.db, "hosp-b", "鼓楼医院", region_code="320102").pk
    for name, role, hospital in (("a-doc", "clinician", 1), ("b-doc", "clinician", b)):
        create_user(archive.db, username=name, password=PASSWORD, role=role, hospital=hospital)
    s = Site(archive, b, create_app(archive, background=False))
    s.a_ct = study(archive, 1, "PA1", "20260110", accession="A-CT")
    s.a_mr = study(archive, 1, "PA1", "20260301", accession="A-MR", modality="MR")
    s.b_ct = study(archive, b, "PB7", "20260201", accession="A-CT")  # same accession text
    yield s
    for c in s.clients:
        c.close()


def viewer_studies(location: str) -> list[str]:
    parts = urlsplit(location)
    assert parts.path == "/viewer/", location
    return parse_qs(parts.query)["study"]


def test_the_owning_hospitals_user_is_sent_to_the_viewer(site: Site) -> None:
    doc = site.login("a-doc")
    r = doc.get("/iid", params={"requestType": "STUDY", "studyUID": site.a_ct})
    assert r.status_code == 303 and viewer_studies(r.headers["location"]) == [site.a_ct]
    # what the viewer then reads with the same cookie
    meta = doc.get(f"/dicom-web/studies/{site.a_ct}/metadata")
    assert meta.status_code == 200
    # by accession number (within the user's hospital: B's study of the same number is not it),
    # with the profile's display parameters
    r = doc.get(
        "/IHEInvokeImageDisplay",
        params={"requestType": "STUDY", "accessionNumber": "A-CT", "patientID": "PA1",
                "viewerType": "IHE_BIR", "diagnosticQuality": "true"},
    )  # fmt: skip
    assert viewer_studies(r.headers["location"]) == [site.a_ct]
    # several studies at once, and a patient's studies newest first
    r = doc.get("/iid", params={"requestType": "STUDY", "studyUID": f"{site.a_ct},{site.a_mr}"})
    assert viewer_studies(r.headers["location"]) == [site.a_ct, site.a_mr]
    r = doc.get("/iid", params={"requestType": "PATIENT", "patientID": "PA1^^^&1.2.3&ISO"})
    assert viewer_studies(r.headers["location"]) == [site.a_mr, site.a_ct]
    r = doc.get(
        "/iid",
        params={"requestType": "PATIENT", "patientID": "PA1", "mostRecentResults": "1"},
    )
    assert viewer_studies(r.headers["location"]) == [site.a_mr]
    r = doc.get(
        "/iid", params={"requestType": "PATIENT", "patientID": "PA1", "modalitiesInStudy": "CT"}
    )
    assert viewer_studies(r.headers["location"]) == [site.a_ct]


def test_another_hospitals_study_is_refused_unless_the_patient_consented(site: Site) -> None:
    archive = site.archive
    doc = site.login("a-doc")
    r = doc.get("/iid", params={"requestType": "STUDY", "studyUID": site.b_ct})
    assert r.status_code == 403 and "text/html" in r.headers["content-type"]
    assert "另一" in r.text or "其他医院" in r.text
    archive.audit.flush()
    with archive.db.read() as session:
        denied = session.execute(
            select(AuditEvent.principal).where(
                AuditEvent.resource == site.b_ct,
                AuditEvent.outcome == "deny",
                AuditEvent.detail.like("%IHE IID%"),
            )
        ).all()
    assert denied == [("user:a-doc",)]
    # unknown studies, other patients, nonsense
    missing = doc.get("/iid", params={"requestType": "STUDY", "studyUID": "1.2.3.4"})
    assert missing.status_code == 404
    wrong_patient = doc.get(
        "/iid", params={"requestType": "STUDY", "studyUID": site.a_ct, "patientID": "PB7"}
    )
    assert wrong_patient.status_code == 404
    for bad in (
        {"requestType": "SERIES"},
        {"requestType": "STUDY"},
        {"requestType": "STUDY", "studyUID": "1.2.x"},
        {"requestType": "STUDY", "studyUID": site.a_ct, "diagnosticQuality": "maybe"},
    ):
        assert doc.get("/iid", params=bad).status_code == 400, bad
    # B's user cannot open A's study either
    other = site.login("b-doc")
    assert (
        other.get("/iid", params={"requestType": "STUDY", "studyUID": site.a_ct}).status_code == 403
    )

    # the patient consents (in person) to A's doctor seeing their exams elsewhere
    with archive.db.write() as session:
        person = session.execute(
            select(PersonLink.person_pk)
            .join(Patient, Patient.pk == PersonLink.patient_pk)
            .where(Patient.patient_id == "PB7")
        ).scalar_one()
        row, _token, _code = new_request(
            session, archive.secret, person_pk=person, hospital_pk=1, requester="user:a-doc",
            requester_name="a-doc", ask=Ask("复诊对比"), mode="assisted",
        )  # fmt: skip
        decide(session, row, approve=True, by="user:a-doc")
    r = doc.get("/iid", params={"requestType": "STUDY", "studyUID": site.b_ct})
    assert r.status_code == 303 and viewer_studies(r.headers["location"]) == [site.b_ct]
    assert doc.get(f"/dicom-web/studies/{site.b_ct}/metadata").status_code == 200


def test_a_browser_without_a_login_goes_to_the_login_and_comes_back(site: Site) -> None:
    browser = site.browser()
    wanted = f"/iid?requestType=STUDY&studyUID={site.a_ct}"
    r = browser.get(wanted)
    assert r.status_code == 303
    login = urlsplit(r.headers["location"])
    assert login.path == "/"
    back = unquote(parse_qs(login.query)["next"][0])
    assert back == wanted
    site.login("a-doc", browser, next_=back)
    assert browser.last_redirect == wanted  # type: ignore[attr-defined]
    r = browser.get(browser.last_redirect)  # type: ignore[attr-defined]
    assert r.status_code == 303 and viewer_studies(r.headers["location"]) == [site.a_ct]

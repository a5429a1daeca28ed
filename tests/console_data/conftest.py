"""Two hospitals with studies, reports, films, SMS, shares and patient views, for the console's
data pages (worklist, statistics, audit search) on SQLite and PostgreSQL.

Everything goes in through the archive's own doors: instances through ``archive.ingest`` (names
in GB18030), reports through ``portal.reports.save_report``, films through
``portal.films.issue_film`` and ``notify_film`` (the log SMS back-end), shares through
``create_share``, views through ``archive.authorize`` with the principals the portal's sessions
make. Only the receive times of a few studies are moved back in the index, to days around a
Beijing midnight, so that "per day" can be checked against known instants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from cloudfilm.access import Principal
from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.accounts.users import UserInfo, create_user
from cloudfilm.archive import Archive
from cloudfilm.portal.films import get_film, issue_film, notify_film
from cloudfilm.portal.notify import LogNotifier
from cloudfilm.portal.reports import ReportFields, save_report
from cloudfilm.portal.sessions import PATIENT_SCOPES
from cloudfilm.portal.shares import create_share
from cloudfilm.storage.models import Instance, Series, Study
from tests.factory import make_instance

PASSWORD = "Kx7-harbour-lantern"
GB = "GB18030"


@dataclass
class StudyFacts:
    uid: str
    hospital: int
    name: str
    patient_id: str
    accession: str
    date: str
    time: str
    series: dict[str, int]
    """modality -> instances."""
    bytes: int = 0
    bytes_by_modality: dict[str, int] = field(default_factory=dict)

    @property
    def instances(self) -> int:
        return sum(self.series.values())


@dataclass
class World:
    archive: Archive
    a: int
    b: int
    c: int
    """A third hospital, in another region (Beijing 110000), with one study."""
    studies: dict[str, StudyFacts] = field(default_factory=dict)
    films: dict[str, str] = field(default_factory=dict)
    """study key -> film_id."""
    users: dict[str, UserInfo] = field(default_factory=dict)

    def principal(self, username: str) -> Principal:
        return self.users[username].principal("10.1.0.1")

    def add_study(
        self,
        key: str,
        hospital: int,
        name: str,
        patient_id: str,
        *,
        date: str,
        time: str = "101500",
        series: dict[str, int] | None = None,
        accession: str | None = None,
        birth: str = "19700101",
    ) -> StudyFacts:
        uid = generate_uid()
        facts = StudyFacts(
            uid, hospital, name, patient_id, accession or f"ACC-{key}", date, time,
            series or {"CT": 2},
        )  # fmt: skip
        n = 0
        for modality, count in facts.series.items():
            series_uid = generate_uid()
            for _ in range(count):
                n += 1
                ds_bytes = make_instance(
                    patient_name=name, patient_id=patient_id, charset=GB, study_uid=uid,
                    series_uid=series_uid, modality=modality, study_date=date,
                    accession=facts.accession, instance_number=n, size=8 + n,
                )  # fmt: skip
                ds_bytes = _with_time_and_birth(ds_bytes, time, birth)
                self.archive.ingest(ds_bytes, hospital=hospital)
                facts.bytes += len(ds_bytes)
                by = facts.bytes_by_modality
                by[modality] = by.get(modality, 0) + len(ds_bytes)
        self.studies[key] = facts
        return facts

    def report_and_film(self, key: str, phone: str = "13912345678") -> str:
        s = self.studies[key]
        save_report(
            self.archive,
            ReportFields(accession_number=s.accession, patient_name=s.name, phone=phone,
                         exam_name="CT胸部平扫", findings="未见异常。"),
            source="json", hospital=s.hospital,
        )  # fmt: skip
        film, created = issue_film(self.archive, s.uid)
        assert created
        self.films[key] = film.film_id
        return film.film_id

    def notify(self, key: str) -> None:
        """Send the film's SMS (the log back-end: a real notifier that needs no gateway)."""
        film = get_film(self.archive, self.films[key])
        assert film is not None and notify_film(self.archive, film, LogNotifier())

    def share(self, key: str, by: str = "") -> str:
        film = get_film(self.archive, self.films[key])
        assert film is not None
        info = create_share(
            self.archive, [film], days=3, created_by=by or f"patient:{film.film_id}"
        )
        return info.share_id

    def received_at(self, key: str, when: datetime) -> None:
        """Move a study's receive times (its instances, its first and last) to ``when``."""
        uid = self.studies[key].uid
        with self.archive.db.write() as session:
            study_pk = session.execute(select(Study.pk).where(Study.study_uid == uid)).scalar_one()
            series = select(Series.pk).where(Series.study_pk == study_pk)
            session.execute(
                update(Instance).where(Instance.series_pk.in_(series)).values(received_at=when)
            )
            session.execute(
                update(Study)
                .where(Study.pk == study_pk)
                .values(created_at=when, last_instance_at=when)
            )


def _with_time_and_birth(data: bytes, time: str, birth: str) -> bytes:
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyTime = time
    ds.PatientBirthDate = birth
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def patient(film_id: str, study_uid: str) -> Principal:
    """The principal a verified patient's session is (portal.sessions.load_session)."""
    return Principal(
        kind="patient", id=film_id, scopes=PATIENT_SCOPES, studies=frozenset({study_uid}),
        client="10.9.0.1",
    )  # fmt: skip


def share_visitor(share_id: str, study_uid: str) -> Principal:
    return Principal(
        kind="share", id=share_id, scopes=frozenset({"read"}), studies=frozenset({study_uid}),
        client="10.9.0.2",
    )  # fmt: skip


# Beijing midnight of 2026-01-10 is 2026-01-09 16:00 UTC.
JAN10_0030_BJ = datetime(2026, 1, 9, 16, 30, tzinfo=UTC)
JAN10_2359_BJ = datetime(2026, 1, 10, 15, 59, 59, tzinfo=UTC)
JAN11_0000_BJ = datetime(2026, 1, 10, 16, 0, 0, tzinfo=UTC)
JAN09_2359_BJ = datetime(2026, 1, 9, 15, 59, 59, tzinfo=UTC)


@pytest.fixture
def world(archive: Archive) -> World:
    a = create_hospital(archive.db, "hosp-a", "第一人民医院", region_code="320100").pk
    b = create_hospital(archive.db, "hosp-b", "鼓楼医院", region_code="320102").pk
    c = create_hospital(archive.db, "hosp-c", "北京协和医院", region_code="110000").pk
    w = World(archive, a, b, c)
    for username, role, hospital in (
        ("a-admin", "admin", a), ("a-desk", "filmdesk", a), ("a-doc", "clinician", a),
        ("b-admin", "admin", b), ("ops", "operator", None),
    ):  # fmt: skip
        w.users[username] = create_user(
            archive.db, username=username, password=PASSWORD, role=role, hospital=hospital,
            display_name=f"{username} 医生",
        )  # fmt: skip
    # Hospital A: 王秀英 (CT), 李娜 (MR), 王芳 (CT + DR in one study)
    w.add_study("a1", a, "Wang^XiuYing=王^秀英", "PA1", date="20260110", series={"CT": 3})
    w.add_study("a2", a, "Li^Na=李^娜", "PA2", date="20260112", time="083000", series={"MR": 2})
    w.add_study(
        "a3", a, "Wang^Fang=王^芳", "PA3", date="20260112", time="153000",
        series={"CT": 1, "DR": 2}, birth="20250601",
    )  # fmt: skip
    # Hospital B: a patient of the same name (another person), and 赵六
    w.add_study("b1", b, "Wang^XiuYing=王^秀英", "PB1", date="20260111", series={"CT": 2})
    w.add_study("b2", b, "Zhao^Liu=赵^六", "PB2", date="20260109", series={"DR": 1})
    w.add_study("c1", c, "Sun^Li=孙^丽", "PC1", date="20260110", series={"US": 1})
    # receive times around Beijing midnights (see the constants)
    w.received_at("a1", JAN10_0030_BJ)  # Beijing 2026-01-10 00:30
    w.received_at("a2", JAN10_2359_BJ)  # Beijing 2026-01-10 23:59:59
    w.received_at("a3", JAN11_0000_BJ)  # Beijing 2026-01-11 00:00:00
    w.received_at("b1", JAN10_0030_BJ)
    w.received_at("b2", JAN09_2359_BJ)  # Beijing 2026-01-09 23:59:59
    w.received_at("c1", JAN10_0030_BJ)
    return w

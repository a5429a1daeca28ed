"""A clinician's cross-hospital lookup: who the person is, and what exists elsewhere.

Without a grant only the number of exams at other hospitals is told; what they are comes only
through the access check with a consent grant (Archive.authorize reads the grants).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloudfilm.accounts.models import Hospital
from cloudfilm.regional import identifiers as ids
from cloudfilm.regional.models import Person, PersonIdentifier, PersonLink
from cloudfilm.regional.persons import find_person
from cloudfilm.storage.models import Series, Study


@dataclass(frozen=True)
class Found:
    person_pk: int
    person_id: str
    identifiers: list[tuple[str, str]]
    """(kind, masked value)."""
    elsewhere: int
    """Exams at other hospitals than the clinician's."""
    here: list[Study]
    """The person's exams at the clinician's hospital, newest first (the priors to compare)."""


def find(session: Session, secret: bytes, kind: str, value: str) -> int | None:
    """The person an identifier names; BadIdentifier for a malformed one."""
    return find_person(session, secret, ids.parse(kind, value))


def describe(session: Session, person_pk: int, hospital: int | None) -> Found:
    person = session.get(Person, person_pk)
    assert person is not None
    idents = session.execute(
        select(PersonIdentifier.kind, PersonIdentifier.masked)
        .where(PersonIdentifier.person_pk == person_pk)
        .order_by(PersonIdentifier.kind)
    ).all()
    linked = select(PersonLink.patient_pk).where(PersonLink.person_pk == person_pk)
    elsewhere = session.execute(
        select(func.count(Study.pk)).where(
            Study.patient_pk.in_(linked), Study.hospital_pk != (hospital or -1)
        )
    ).scalar()
    here = list(
        session.execute(
            select(Study)
            .where(Study.patient_pk.in_(linked), Study.hospital_pk == (hospital or -1))
            .order_by(Study.study_date.desc(), Study.pk.desc())
            .limit(50)
        ).scalars()
    )
    return Found(person_pk, person.person_id, [tuple(r) for r in idents], elsewhere or 0, here)


def body_parts(session: Session, study_pk: int) -> str:
    parts = session.execute(
        select(Series.body_part).where(Series.study_pk == study_pk, Series.body_part != "")
    ).scalars()
    return ", ".join(sorted(set(parts)))


def hospital_names(session: Session, pks: set[int]) -> dict[int, str]:
    return dict(
        session.execute(select(Hospital.pk, Hospital.name).where(Hospital.pk.in_(pks))).all()
    )

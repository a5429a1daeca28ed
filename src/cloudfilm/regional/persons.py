"""The master person index: each hospital's patient record linked to one regional person.

Links are made only through strong identifiers (regional.identifiers). A record whose
identifiers name two different persons, or a person who would get a second national ID
number, is a conflict: nothing is merged or changed, a :class:`LinkConflict` row and a
warning say so, and a person at a hospital resolves it.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudfilm.access.keys import mac_hex
from cloudfilm.regional.identifiers import NATIONAL_ID, PHONE, Identifier
from cloudfilm.regional.models import LinkConflict, Person, PersonIdentifier, PersonLink
from cloudfilm.storage.models import Patient

log = logging.getLogger(__name__)


def value_key(secret: bytes, ident: Identifier) -> str:
    """A phone's key is the portal's phone key (portal.keys.phone_key), so that an SMS login
    session, which holds only that key, finds its person."""
    if ident.kind == PHONE:
        return mac_hex(secret, "phone", ident.value)
    return mac_hex(secret, "person", ident.kind, ident.value)


def mac_check(secret: bytes, kind: str, last4: str) -> str:
    return mac_hex(secret, "person-last4", kind, last4)


def check_key(secret: bytes, ident: Identifier) -> str:
    """What the doctor-assisted consent compares: the value's last 4 characters."""
    return mac_check(secret, ident.kind, ident.value[-4:])


@dataclass(frozen=True)
class LinkOutcome:
    status: str
    """``linked`` (new link or new identifiers), ``unchanged``, ``conflict`` or ``none``."""
    person_pk: int | None = None
    detail: str = ""


def find_person(session: Session, secret: bytes, ident: Identifier) -> int | None:
    return session.execute(
        select(PersonIdentifier.person_pk).where(
            PersonIdentifier.kind == ident.kind,
            PersonIdentifier.value_key == value_key(secret, ident),
        )
    ).scalar()


@dataclass(frozen=True)
class Keyed:
    """An identifier as the index keeps it (no plaintext): what a waiting report holds."""

    kind: str
    value_key: str
    masked: str
    check: str


def keyed(secret: bytes, ident: Identifier) -> Keyed:
    return Keyed(ident.kind, value_key(secret, ident), ident.masked, check_key(secret, ident))


def link_patient(
    session: Session,
    secret: bytes,
    patient: Patient,
    identifiers: list[Identifier],
    *,
    source: str,
) -> LinkOutcome:
    """Link ``patient`` to the person its identifiers name (made when none exists yet)."""
    return link_keyed(session, patient, [keyed(secret, i) for i in identifiers], source=source)


def link_keyed(
    session: Session, patient: Patient, identifiers: list[Keyed], *, source: str
) -> LinkOutcome:
    if not identifiers:
        return LinkOutcome("none")
    current = session.execute(
        select(PersonLink).where(PersonLink.patient_pk == patient.pk)
    ).scalar_one_or_none()
    named = {ident: _holder(session, ident) for ident in identifiers}
    persons = {p for p in named.values() if p is not None}
    if current is not None:
        persons.add(current.person_pk)
    if len(persons) > 1:
        return _conflict(session, patient, sorted(persons), "its identifiers name two persons")
    person_pk = persons.pop() if persons else None
    if person_pk is not None:
        national = _national_ids(session, person_pk)
        for ident in identifiers:
            if ident.kind == NATIONAL_ID and named[ident] is None and national:
                return _conflict(
                    session, patient, [person_pk, person_pk], "a second national ID number"
                )
    changed = False
    if person_pk is None:
        person = Person(person_id=secrets.token_hex(8))
        session.add(person)
        session.flush()
        person_pk = person.pk
    for ident, found in named.items():
        if found is None:
            session.add(
                PersonIdentifier(
                    person_pk=person_pk,
                    kind=ident.kind,
                    value_key=ident.value_key,
                    masked=ident.masked,
                    check=ident.check,
                    source=source[:64],
                )
            )
            changed = True
    if current is None:
        session.add(
            PersonLink(
                patient_pk=patient.pk,
                person_pk=person_pk,
                hospital_pk=patient.hospital_pk,
                source=source[:64],
            )
        )
        changed = True
    session.flush()
    return LinkOutcome("linked" if changed else "unchanged", person_pk)


def _holder(session: Session, ident: Keyed) -> int | None:
    return session.execute(
        select(PersonIdentifier.person_pk).where(
            PersonIdentifier.kind == ident.kind, PersonIdentifier.value_key == ident.value_key
        )
    ).scalar()


def _national_ids(session: Session, person_pk: int) -> list[str]:
    return list(
        session.execute(
            select(PersonIdentifier.value_key).where(
                PersonIdentifier.person_pk == person_pk, PersonIdentifier.kind == NATIONAL_ID
            )
        ).scalars()
    )


def _conflict(session: Session, patient: Patient, persons: list[int], why: str) -> LinkOutcome:
    detail = f"patient record {patient.patient_id!r} of hospital {patient.hospital_pk}: {why}"
    open_one = session.execute(
        select(LinkConflict.pk).where(
            LinkConflict.patient_pk == patient.pk, LinkConflict.resolved_at.is_(None)
        )
    ).first()
    if open_one is None:
        session.add(
            LinkConflict(
                hospital_pk=patient.hospital_pk,
                patient_pk=patient.pk,
                person_pk=persons[0],
                other_person_pk=persons[-1],
                detail=detail,
            )
        )
        session.flush()
    log.warning("person link refused: %s", detail)
    return LinkOutcome("conflict", None, detail)


def person_of_patient(session: Session, patient_pk: int) -> int | None:
    return session.execute(
        select(PersonLink.person_pk).where(PersonLink.patient_pk == patient_pk)
    ).scalar()


def patients_of_person(session: Session, person_pk: int) -> list[int]:
    return list(
        session.execute(
            select(PersonLink.patient_pk).where(PersonLink.person_pk == person_pk)
        ).scalars()
    )


def person_by_phone_key(session: Session, phone_key: str) -> int | None:
    return session.execute(
        select(PersonIdentifier.person_pk).where(
            PersonIdentifier.kind == PHONE, PersonIdentifier.value_key == phone_key
        )
    ).scalar()


def person_pk_of(session: Session, person_id: str) -> int | None:
    return session.execute(select(Person.pk).where(Person.person_id == person_id)).scalar()

"""The patient's side of the master person index: a phone proven by SMS links its films'
patient records to one person, and that person's films of every hospital join the session."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import astuple
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from cloudfilm.portal.models import Film, Report
from cloudfilm.regional.identifiers import BadIdentifier, Identifier
from cloudfilm.regional.identifiers import phone as phone_identifier
from cloudfilm.regional.models import PersonIdentifier, PersonLink
from cloudfilm.regional.persons import Keyed, keyed, link_keyed, link_patient
from cloudfilm.storage.models import Patient, Study

if TYPE_CHECKING:
    from cloudfilm.archive import Archive


def link_proven_phone(archive: Archive, phone: str, phone_key: str) -> None:
    """After a right SMS code: the records whose films carry this number belong to its owner
    (a record already linked to someone else is a conflict, refused and recorded)."""
    try:
        ident = phone_identifier(phone)
    except BadIdentifier:
        return  # a landline or a foreign number: films by key only, no person
    with archive.db.write() as session:
        patients = session.execute(
            select(Patient)
            .join(Study, Study.patient_pk == Patient.pk)
            .join(Film, Film.study_uid == Study.study_uid)
            .where(Film.phone_key == phone_key, Film.revoked_at.is_(None))
            .distinct()
        ).scalars()
        for patient in list(patients):
            link_patient(session, archive.secret, patient, [ident], source="sms")


def films_of_phone(phone_key: str) -> ColumnElement[bool]:
    """The films a phone session sees: those sent to the number, and every film of the person
    who proved it, whichever hospital made it."""
    person = (
        select(PersonIdentifier.person_pk)
        .where(PersonIdentifier.kind == "phone", PersonIdentifier.value_key == phone_key)
        .scalar_subquery()
    )
    studies = (
        select(Study.study_uid)
        .join(PersonLink, PersonLink.patient_pk == Study.patient_pk)
        .where(PersonLink.person_pk == person)
    )
    return or_(Film.phone_key == phone_key, Film.study_uid.in_(studies))


def keys_json(secret: bytes, identifiers: Sequence[Identifier]) -> str:
    """A report's identifiers as the index keeps them: no plaintext ID number is stored."""
    if not identifiers:
        return ""
    return json.dumps([list(astuple(keyed(secret, i))) for i in identifiers])


def link_report(session: Session, report: Report) -> None:
    """A matched report's identifiers link its study's patient record to a person."""
    if not report.person_keys or not report.study_uid:
        return
    patient = session.execute(
        select(Patient)
        .join(Study, Study.patient_pk == Patient.pk)
        .where(Study.study_uid == report.study_uid)
    ).scalar_one_or_none()
    if patient is None:
        return
    held = [Keyed(*item) for item in json.loads(report.person_keys)]
    link_keyed(session, patient, held, source="report")

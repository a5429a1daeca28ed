"""What a consent grant lets a clinician see, asked afresh by the access check on each request.

A grant names one clinician (their principal label) at one hospital, one person, a scope (a
date range, modalities) and an expiry. The studies it opens are that person's studies at
*other* hospitals within the scope, as the index holds them at the moment of the request: a
study stored after the grant and inside its scope is seen; a revoked or expired grant opens
nothing from the next request on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudfilm.regional.models import ConsentGrant, PersonLink
from cloudfilm.storage.models import Study, utcnow


@dataclass(frozen=True)
class Scope:
    date_from: str = ""
    date_to: str = ""
    modalities: tuple[str, ...] = ()
    """Empty: every modality."""

    def covers(self, study_date: str, study_modalities: str) -> bool:
        if self.date_from and (not study_date or study_date < self.date_from):
            return False
        if self.date_to and (not study_date or study_date > self.date_to):
            return False
        if self.modalities:
            held = {m for m in study_modalities.split("\\") if m}
            if not held & set(self.modalities):
                return False
        return True

    @classmethod
    def of(cls, row: ConsentGrant) -> Scope:
        mods = tuple(m for m in row.modalities.split("\\") if m)
        return cls(row.date_from, row.date_to, mods)


def active_grants(
    session: Session, grantee: str, hospital: int | None, now: datetime | None = None
) -> list[ConsentGrant]:
    now = now or utcnow()
    return list(
        session.execute(
            select(ConsentGrant).where(
                ConsentGrant.grantee == grantee,
                ConsentGrant.hospital_pk == hospital,
                ConsentGrant.revoked_at.is_(None),
                ConsentGrant.expires_at > now,
            )
        ).scalars()
    )


def studies_in_scope(
    session: Session, person_pk: int, scope: Scope, outside: int | None
) -> list[Study]:
    """The person's studies at hospitals other than ``outside`` that the scope covers."""
    rows = session.execute(
        select(Study)
        .join(PersonLink, PersonLink.patient_pk == Study.patient_pk)
        .where(PersonLink.person_pk == person_pk, Study.hospital_pk != (outside or -1))
        .order_by(Study.study_date.desc(), Study.pk.desc())
    ).scalars()
    return [s for s in rows if scope.covers(s.study_date, s.modalities)]


def granted_studies(session: Session, grantee: str, hospital: int | None) -> frozenset[str]:
    found: set[str] = set()
    for grant in active_grants(session, grantee, hospital):
        studies = studies_in_scope(session, grant.person_pk, Scope.of(grant), hospital)
        found.update(s.study_uid for s in studies)
    return frozenset(found)

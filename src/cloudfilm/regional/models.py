"""Tables of regional sharing: the master person index, consent, and the imaging index feed.

A *person* is one human across hospitals. Each hospital's patient record (``patients``) is
linked to at most one person, and only through a strong identifier (national ID number,
insurance card number, a phone number proven by SMS). Identifier values are kept as HMACs of
the server secret with a masked form for display: a copy of the index names nobody.

Consent requests and grants say which clinician of which hospital may see which of a person's
exams at other hospitals, until when. None of these rows can be rebuilt from the DICOM files.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloudfilm.storage.models import Base, utcnow


class Person(Base):
    __tablename__ = "regional_persons"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PersonIdentifier(Base):
    """A strong identifier of a person: ``national_id``, ``insurance`` or ``phone``."""

    __tablename__ = "regional_identifiers"
    __table_args__ = (UniqueConstraint("kind", "value_key", name="uq_identifier_kind_value"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_pk: Mapped[int] = mapped_column(ForeignKey("regional_persons.pk"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    value_key: Mapped[str] = mapped_column(String(64))
    """HMAC of the normalised value (see regional.identifiers)."""
    masked: Mapped[str] = mapped_column(String(32), default="")
    check: Mapped[str] = mapped_column(String(64), default="")
    """HMAC of the value's last 4 characters: what a doctor checks on the ID card in person."""
    source: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PersonLink(Base):
    """One hospital's patient record belongs to one person (never two)."""

    __tablename__ = "regional_links"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.pk"), unique=True)
    person_pk: Mapped[int] = mapped_column(ForeignKey("regional_persons.pk"), index=True)
    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"), index=True)
    source: Mapped[str] = mapped_column(String(64), default="")
    """``dicom``, ``report`` or ``user:<username>``."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LinkConflict(Base):
    """A record whose identifiers name two persons: refused, kept here for a person to resolve."""

    __tablename__ = "regional_link_conflicts"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"), index=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.pk"), index=True)
    person_pk: Mapped[int] = mapped_column(Integer)
    other_person_pk: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ConsentRequest(Base):
    """A clinician's request to see a person's exams at other hospitals, with its scope."""

    __tablename__ = "regional_consent_requests"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(32), unique=True)
    person_pk: Mapped[int] = mapped_column(ForeignKey("regional_persons.pk"), index=True)
    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"), index=True)
    """The requesting clinician's hospital."""
    requester: Mapped[str] = mapped_column(String(128), index=True)
    """The clinician's principal label (``user:<username>``)."""
    requester_name: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    date_from: Mapped[str] = mapped_column(String(8), default="")
    date_to: Mapped[str] = mapped_column(String(8), default="")
    modalities: Mapped[str] = mapped_column(String(64), default="")
    """Backslash-joined; empty: every modality."""
    days: Mapped[int] = mapped_column(Integer, default=7)
    mode: Mapped[str] = mapped_column(String(16))
    """``sms``, ``app`` or ``assisted``."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """``pending``, ``approved``, ``refused`` or ``expired``."""
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    phone_key: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    """The phone the SMS went to (and whose logged-in owner sees the request)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decided_by: Mapped[str] = mapped_column(String(128), default="")


class ConsentGrant(Base):
    """What an approved request allows: one clinician, one person, a scope, an expiry."""

    __tablename__ = "regional_grants"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    grant_id: Mapped[str] = mapped_column(String(32), unique=True)
    request_pk: Mapped[int] = mapped_column(ForeignKey("regional_consent_requests.pk"))
    person_pk: Mapped[int] = mapped_column(ForeignKey("regional_persons.pk"), index=True)
    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"), index=True)
    grantee: Mapped[str] = mapped_column(String(128), index=True)
    grantee_name: Mapped[str] = mapped_column(String(64), default="")
    date_from: Mapped[str] = mapped_column(String(8), default="")
    date_to: Mapped[str] = mapped_column(String(8), default="")
    modalities: Mapped[str] = mapped_column(String(64), default="")
    mode: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_by: Mapped[str] = mapped_column(String(128), default="")


class IndexSequence(Base):
    """The last sequence number of imaging index IDs given per hospital and day."""

    __tablename__ = "regional_index_sequences"

    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"), primary_key=True)
    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last: Mapped[int] = mapped_column(Integer, default=0)


class IndexChange(Base):
    """A study that is new or changed, in order: the feed a higher platform pages through."""

    __tablename__ = "regional_index_changes"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.pk"), index=True)
    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="new")
    """``new``, ``series`` (a series was added) or ``report``."""
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

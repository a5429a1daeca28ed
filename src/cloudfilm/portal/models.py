"""Tables of the patient's cloud film: reports, films, sessions, shares, verification limits.

Kept apart from the image index (storage.models): these rows are about people and grants, and
none of them can be rebuilt from the stored DICOM files, so every write here is a durable commit.
Credentials (film links, access codes, session cookies, share links, SMS codes) are stored only
as hashes: a copy of the index gives nobody access.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloudfilm.storage.models import Base, utcnow


class Report(Base):
    """One version of a radiology report. A correction adds a version; older ones stay."""

    __tablename__ = "portal_reports"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"), index=True)
    report_id: Mapped[str] = mapped_column(String(32), unique=True)
    study_uid: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    """The matched study; None while the images have not arrived."""
    claimed_study_uid: Mapped[str] = mapped_column(String(64), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    exam_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(128), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    patient_age: Mapped[str] = mapped_column(String(16), default="")
    phone: Mapped[str] = mapped_column(String(32), default="")
    hospital: Mapped[str] = mapped_column(String(128), default="")
    department: Mapped[str] = mapped_column(String(64), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    exam_name: Mapped[str] = mapped_column(String(128), default="")
    exam_date: Mapped[str] = mapped_column(String(32), default="")
    body_part: Mapped[str] = mapped_column(String(128), default="")
    findings: Mapped[str] = mapped_column(Text, default="")
    impression: Mapped[str] = mapped_column(Text, default="")
    reporting_doctor: Mapped[str] = mapped_column(String(64), default="")
    reviewing_doctor: Mapped[str] = mapped_column(String(64), default="")
    report_time: Mapped[str] = mapped_column(String(32), default="")
    patient_class: Mapped[str] = mapped_column(String(16), default="")
    """``inpatient``, ``outpatient``, ``emergency``, ``checkup`` or '' (keeping.retention): it
    becomes the study's when the report is matched (the retention rules go by it)."""
    source: Mapped[str] = mapped_column(String(16), default="json")
    """``json``, ``pdf``, ``dicom-sr`` or ``dicom-pdf``."""
    source_sop_uid: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    pdf_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    """Blob key of the original PDF bytes, untouched."""
    person_keys: Mapped[str] = mapped_column(Text, default="")
    """The patient's identifiers the report gave (national ID, insurance card), keyed as the
    person index keeps them (regional.persons.Keyed, JSON): linked once the study is matched."""
    version: Mapped[int] = mapped_column(Integer, default=1)
    current: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Film(Base):
    """The patient's cloud film of one study: a link and an access code, stored as hashes."""

    __tablename__ = "portal_films"
    # the issuer's retry of unsent SMS (migration 0006)
    __table_args__ = (Index("ix_portal_films_notified_issued", "notified_at", "issued_at"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"), index=True)
    film_id: Mapped[str] = mapped_column(String(32), unique=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    phone_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """HMAC of the phone number's last 6 digits (the other way to verify)."""
    phone_key: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    """HMAC of the whole phone number: links the films of one patient across hospitals."""
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Throttle(Base):
    """Failed verification attempts of one film or one client address, and its lockout."""

    __tablename__ = "portal_throttle"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    lockouts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PortalSession(Base):
    """A browser session (cookie) of a verified patient or of a share's visitor."""

    __tablename__ = "portal_sessions"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sid_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    """``film`` (verified one film), ``phone`` (verified a phone number) or ``share``."""
    subject: Mapped[str] = mapped_column(String(64))
    """film_id, phone_key or share_id."""
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Share(Base):
    """A link a patient (or a hospital user on their behalf) gives a doctor."""

    __tablename__ = "portal_shares"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"), index=True)
    share_id: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    allow_download: Mapped[bool] = mapped_column(Boolean, default=False)
    label: Mapped[str] = mapped_column(String(64), default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    """The principal that created it (``patient:<film>``, ``token:<id>``)."""
    assisted_by: Mapped[str] = mapped_column(String(128), default="")
    """Doctor-assisted consent: the hospital user who verified the patient in person."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ShareFilm(Base):
    __tablename__ = "portal_share_films"
    __table_args__ = (UniqueConstraint("share_pk", "film_pk", name="uq_share_film"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    share_pk: Mapped[int] = mapped_column(ForeignKey("portal_shares.pk"), index=True)
    film_pk: Mapped[int] = mapped_column(ForeignKey("portal_films.pk"), index=True)


class OneTimeCode(Base):
    """An SMS code proving a phone number (sees every film linked to it)."""

    __tablename__ = "portal_otps"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    phone_key: Mapped[str] = mapped_column(String(64), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

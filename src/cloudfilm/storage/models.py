"""The index: the tables that answer C-FIND and QIDO-RS without opening a single file.

Patient / study / series / instance follow the DICOM information model. Every attribute a
standard query can match on has its own column; the rest of each instance's attributes sit in
``meta_json`` (DICOM JSON, bulk data left out) so series metadata is one query, not N file reads.
Everything here is derived from the stored files and can be rebuilt from them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint("hospital_pk", "patient_id", "issuer", name="uq_patient_hospital_id"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"))
    """Patient IDs are per hospital: the same ID at two hospitals is two patients."""
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    issuer: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(324), default="")
    """The whole PN value, decoded, with its ``=``-separated component groups."""
    name_alphabetic: Mapped[str] = mapped_column(String(200), default="", index=True)
    name_ideographic: Mapped[str] = mapped_column(String(200), default="", index=True)
    name_phonetic: Mapped[str] = mapped_column(String(200), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "studies"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    index_id: Mapped[str | None] = mapped_column(String(32), unique=True, index=True, nullable=True)
    """The imaging index ID given at first ingest (regional.index_id): permanent."""
    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"))
    """The owner (its patient's hospital, repeated so every query filters without a join). A
    Study Instance UID is unique in the world: another hospital sending it is refused."""
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.pk"), index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_id: Mapped[str] = mapped_column(String(64), default="")
    description: Mapped[str] = mapped_column(String(256), default="")
    referring_physician: Mapped[str] = mapped_column(String(324), default="")
    institution_name: Mapped[str] = mapped_column(String(256), default="")
    patient_class: Mapped[str] = mapped_column(String(16), default="")
    """``inpatient``, ``outpatient``, ``emergency``, ``checkup`` or empty (unknown): what the
    retention rules go by (keeping/)."""
    tier: Mapped[str] = mapped_column(String(16), default="hot")
    """``hot`` or ``cold``: where the study's blobs are kept (keeping/ lifecycle)."""
    modalities: Mapped[str] = mapped_column(String(128), default="")
    """Backslash-joined set of the series' modalities (ModalitiesInStudy)."""
    num_series: Mapped[int] = mapped_column(Integer, default=0)
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_instance_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.pk"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    body_part: Mapped[str] = mapped_column(String(64), default="")
    series_date: Mapped[str] = mapped_column(String(8), default="")
    series_time: Mapped[str] = mapped_column(String(16), default="")
    num_instances: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.pk"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64), default="")
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="")
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pixel_data_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Byte offset of the Pixel Data value in the stored file (native syntaxes), so frames can
    be served by byte range without decoding."""
    pixel_data_length: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    blob_key: Mapped[str] = mapped_column(String(256))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    meta_json: Mapped[str] = mapped_column(Text, default="{}")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")


class AuditEvent(Base):
    """One record per access decision. Append-only; each row's hash covers the previous one."""

    __tablename__ = "audit_events"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    principal: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str] = mapped_column(String(256), default="", index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    client: Mapped[str] = mapped_column(String(128), default="")
    hospital_pk: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    """The hospital whose data (or whose user) the record is about; None: the platform's.
    Derived from ``resource`` and ``principal``, so it is not part of the hash chain."""
    prev_hash: Mapped[str] = mapped_column(String(64), default="")
    hash: Mapped[str] = mapped_column(String(64), default="")


class IndexState(Base):
    """Small named values the index keeps about itself (e.g. the recovery watermark)."""

    __tablename__ = "index_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256), default="")


Index("ix_studies_hospital_date", Study.hospital_pk, Study.study_date)
Index("ix_series_study_number", Series.study_pk, Series.series_number)
Index("ix_instances_series_number", Instance.series_pk, Instance.instance_number)

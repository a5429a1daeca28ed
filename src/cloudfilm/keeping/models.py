"""Tables of keeping: what the verifier found, the replica queue, retention rules, legal
holds, the deletions an admin approves, tombstones, and the research export's keyed mapping.

Unlike the image index, none of these can be rebuilt from the blobs: they record decisions
(a hold, an approval, a deletion) and history (a blob found changed).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloudfilm.storage.models import Base, utcnow


class FixityEvent(Base):
    """A blob the verifier found missing or changed (and whether it was repaired)."""

    __tablename__ = "keeping_fixity_events"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    blob_key: Mapped[str] = mapped_column(String(256), index=True)
    hospital_pk: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    """``missing``, ``changed``, ``repaired`` or ``unrepaired``."""
    detail: Mapped[str] = mapped_column(Text, default="")


class ReplicaItem(Base):
    """A blob waiting to be copied to the second store (durably queued, retried)."""

    __tablename__ = "keeping_replica_queue"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    blob_key: Mapped[str] = mapped_column(String(256), unique=True)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    last_error: Mapped[str] = mapped_column(Text, default="")


class RetentionRule(Base):
    """How long a hospital keeps studies of a patient class and modality (``*``: any)."""

    __tablename__ = "keeping_retention_rules"
    __table_args__ = (
        UniqueConstraint("hospital_pk", "patient_class", "modality", name="uq_retention_rule"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"), index=True)
    patient_class: Mapped[str] = mapped_column(String(16), default="*")
    """``inpatient``, ``outpatient``, ``emergency``, ``checkup`` or ``*``."""
    modality: Mapped[str] = mapped_column(String(16), default="*")
    years: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LegalHold(Base):
    """Nothing under a hold is deleted, whatever its age: a patient or one study."""

    __tablename__ = "keeping_holds"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"), index=True)
    patient_pk: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    study_uid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    released_by: Mapped[str] = mapped_column(String(128), default="")


class Deletion(Base):
    """An expired study listed for an admin: deleted only once approved."""

    __tablename__ = "keeping_deletions"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="listed")
    """``listed``, ``approved``, ``deleted`` or ``withdrawn`` (held, or no longer expired)."""
    rule: Mapped[str] = mapped_column(String(128), default="")
    listed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    approved_by: Mapped[str] = mapped_column(String(128), default="")
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Tombstone(Base):
    """What the index remembers of a deleted instance: what, when, by whom, why."""

    __tablename__ = "keeping_tombstones"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    hospital_pk: Mapped[int] = mapped_column(Integer, index=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_uid: Mapped[str] = mapped_column(String(64), default="")
    sop_uid: Mapped[str] = mapped_column(String(64), index=True)
    index_id: Mapped[str] = mapped_column(String(32), default="")
    sha256: Mapped[str] = mapped_column(String(64), default="")
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_by: Mapped[str] = mapped_column(String(128), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    blob_key: Mapped[str] = mapped_column(String(256), default="")
    """The blob still to be removed (blobs go only after the index commit); emptied once it
    is gone (migration 0010)."""


class DeidMapping(Base):
    """The research export's keyed replacement of one value (a UID, an ID, a date shift),
    kept by the archive so two exports agree; never exported."""

    __tablename__ = "keeping_deid_map"
    __table_args__ = (UniqueConstraint("project", "kind", "original_key", name="uq_deid_value"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64), default="default")
    kind: Mapped[str] = mapped_column(String(16))
    """``uid``, ``patient_id``, ``accession`` or ``date_shift``."""
    original_key: Mapped[str] = mapped_column(String(64))
    """HMAC of the original value (the original itself is not kept here)."""
    replacement: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

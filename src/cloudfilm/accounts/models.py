"""Tables of the tenants and the people: hospitals, their AE titles, their users and sessions.

One deployment serves many hospitals. Every study, report, film, share, token, AE title, user
and audit record names the hospital that owns it (``hospital_pk``); the access check compares
that owner with the principal's. Hospital 1 is the deployment's first hospital: an index made
before hospitals existed was moved into it (migration 0007), and its blobs carry no hospital
code in their key (see storage.blobs.instance_key).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloudfilm.storage.models import Base, utcnow

FIRST_HOSPITAL = 1
"""Primary key of the deployment's first hospital (the owner of pre-tenancy data)."""


class Hospital(Base):
    __tablename__ = "hospitals"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    """The institution's code (letters, digits, ``-``, ``_``): part of blob keys, never changed."""
    name: Mapped[str] = mapped_column(String(128), default="")
    """The Chinese name, as patients read it on their films."""
    name_latin: Mapped[str] = mapped_column(String(128), default="")
    region_code: Mapped[str] = mapped_column(String(12), default="", index=True)
    """Administrative division code (GB/T 2260, e.g. 320100 Nanjing): groups the statistics."""
    sms_signature: Mapped[str] = mapped_column(String(32), default="")
    settings_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApplicationEntity(Base):
    """A calling AE title a hospital registered: the door its modalities come in through."""

    __tablename__ = "application_entities"
    __table_args__ = (UniqueConstraint("ae_title", "host", name="uq_ae_title_host"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    hospital_pk: Mapped[int] = mapped_column(ForeignKey("hospitals.pk"), index=True)
    ae_title: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(128), default="")
    """Empty: from any address. Otherwise only from this address."""
    services: Mapped[str] = mapped_column(String(64), default="echo,store,find,get,move,commit")
    description: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class User(Base):
    """A person who logs in to the console. ``hospital_pk`` None: a platform operator."""

    __tablename__ = "users"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32), unique=True)
    hospital_pk: Mapped[int | None] = mapped_column(
        ForeignKey("hospitals.pk"), index=True, nullable=True
    )
    username: Mapped[str] = mapped_column(String(64), unique=True)
    phone: Mapped[str | None] = mapped_column(String(32), unique=True, nullable=True)
    display_name: Mapped[str] = mapped_column(String(64), default="")
    role: Mapped[str] = mapped_column(String(16))
    """``operator``, ``admin``, ``radiologist``, ``clinician`` or ``filmdesk``."""
    password_hash: Mapped[str] = mapped_column(String(256))
    """argon2id (argon2-cffi's encoded form, salt and parameters included)."""
    totp_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    must_change_password: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class UserSession(Base):
    """A console login (cookie), stored as the SHA-256 of its id."""

    __tablename__ = "user_sessions"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sid_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_pk: Mapped[int] = mapped_column(ForeignKey("users.pk"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

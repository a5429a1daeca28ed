"""Console sessions: a random cookie, stored as its SHA-256, with a CSRF token and two expiries.

The rows live here; the cookie, the per-request look-up and its one-second cache are the
console's (``cloudfilm.console.session``). ``end_sessions`` is here because disabling a user or
resetting a password must end their sessions at once, from the command line too.

A session ends at the first of: logout or revocation (``revoked_at``), its absolute expiry
(``expires_at``, fixed at login) and ``idle_seconds`` without a request (``last_seen_at``, which
requests move forward at most once every ``TOUCH_SECONDS``: a viewer sends hundreds a second).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from cloudfilm.accounts.models import Hospital, User, UserSession
from cloudfilm.accounts.users import UserInfo, _info
from cloudfilm.storage.database import Database
from cloudfilm.storage.models import utcnow

TOUCH_SECONDS = 60
"""``last_seen_at`` is written at most this often: idle expiry is exact to about a minute."""


def sid_digest(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()


def aware(dt: datetime) -> datetime:
    """SQLite gives back naive datetimes; everything stored here is UTC."""
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class LiveSession:
    """A session that still grants something, with its user as of the look-up."""

    pk: int
    csrf: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    user: UserInfo


def create_session(db: Database, user_pk: int, *, absolute_seconds: int) -> tuple[str, str]:
    """A new session of this user; returns (cookie value, CSRF token). Only the cookie's
    SHA-256 is stored, so a copy of the index opens no session."""
    sid = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    now = utcnow()
    with db.write() as session:
        session.add(
            UserSession(
                sid_hash=sid_digest(sid),
                user_pk=user_pk,
                csrf=csrf,
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(seconds=absolute_seconds),
            )
        )
    return sid, csrf


def find_session(db: Database, digest: str, *, idle_seconds: int) -> LiveSession | None:
    """The live session with this cookie digest, or None when it is unknown, revoked, expired
    (absolutely or by idleness), or its user (or the user's hospital) is disabled."""
    with db.read() as session:
        row = session.execute(
            select(UserSession, User, Hospital.disabled_at)
            .join(User, User.pk == UserSession.user_pk)
            .outerjoin(Hospital, Hospital.pk == User.hospital_pk)
            .where(UserSession.sid_hash == digest)
        ).first()
    if row is None:
        return None
    us, user, hospital_disabled = row
    now = utcnow()
    last = aware(us.last_seen_at)
    if (
        us.revoked_at is not None
        or aware(us.expires_at) <= now
        or last + timedelta(seconds=idle_seconds) <= now
        or user.disabled_at is not None
        or hospital_disabled is not None
    ):
        return None
    return LiveSession(
        pk=us.pk,
        csrf=us.csrf,
        created_at=aware(us.created_at),
        last_seen_at=last,
        expires_at=aware(us.expires_at),
        user=_info(user),
    )


def touch_session(db: Database, pk: int) -> None:
    """Move the idle clock on. Not durable: a power cut costs at most an earlier idle end."""
    with db.write(durable=False) as session:
        session.execute(
            update(UserSession)
            .where(UserSession.pk == pk, UserSession.revoked_at.is_(None))
            .values(last_seen_at=utcnow())
        )


def revoke_session(db: Database, digest: str) -> bool:
    with db.write() as session:
        result = session.execute(
            update(UserSession)
            .where(UserSession.sid_hash == digest, UserSession.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def end_sessions(db: Database, user_pk: int, *, keep: int | None = None) -> int:
    """End every session of the user (but ``keep``, the session pk that asked: changing one's
    own password logs out one's other browsers, not this one)."""
    with db.write() as session:
        stmt = update(UserSession).where(
            UserSession.user_pk == user_pk, UserSession.revoked_at.is_(None)
        )
        if keep is not None:
            stmt = stmt.where(UserSession.pk != keep)
        result = session.execute(stmt.values(revoked_at=utcnow()))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

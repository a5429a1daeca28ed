"""People who log in to the console: their roles, passwords (argon2id) and second factor.

A role is a set of scopes in the one access check (access.policy), together with the user's
hospital: what a radiologist of hospital A may do is decided there like any other principal.
Passwords are hashed with argon2id (argon2-cffi's defaults: RFC 9106's second recommended
parameter set); neither a password nor its hash is ever logged or shown.
"""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import or_, select

from cloudfilm.access import Principal
from cloudfilm.accounts.models import User
from cloudfilm.storage.database import Database
from cloudfilm.storage.models import utcnow

ROLES: dict[str, frozenset[str]] = {
    "operator": frozenset({"read", "admin", "operator"}),
    "admin": frozenset({"read", "film", "consent", "admin"}),
    "radiologist": frozenset({"read", "download", "film"}),
    "clinician": frozenset({"read"}),
    "filmdesk": frozenset({"read", "film", "consent"}),
}
"""Role -> scopes. ``operator`` is the platform's (no hospital); the others are a hospital's."""
ROLE_NAMES = {
    "operator": ("平台运维", "Platform operator"),
    "admin": ("医院管理员", "Hospital admin"),
    "radiologist": ("放射科医生", "Radiologist"),
    "clinician": ("临床医生", "Clinician"),
    "filmdesk": ("胶片窗口", "Film desk"),
}
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{1,63}$")
PHONE = re.compile(r"^1\d{10}$")
MIN_PASSWORD = 10
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """What an unknown username is checked against, so it takes as long as a known one; made
    on first use, not at import (a hash costs ~150 ms, paid by every process that imports)."""
    return _hasher.hash(secrets.token_urlsafe(16))


class UserError(ValueError):
    pass


@dataclass(frozen=True)
class UserInfo:
    pk: int
    user_id: str
    hospital: int | None
    username: str
    phone: str | None
    display_name: str
    role: str
    totp: bool
    active: bool
    must_change_password: bool
    created_at: datetime

    def principal(self, client: str = "") -> Principal:
        return Principal(
            kind="user",
            id=self.username,
            scopes=ROLES[self.role],
            client=client,
            hospital=self.hospital,
            name=self.display_name or self.username,
        )


def _info(row: User) -> UserInfo:
    return UserInfo(
        pk=row.pk,
        user_id=row.user_id,
        hospital=row.hospital_pk,
        username=row.username,
        phone=row.phone,
        display_name=row.display_name,
        role=row.role,
        totp=bool(row.totp_secret),
        active=row.disabled_at is None,
        must_change_password=bool(row.must_change_password),
        created_at=row.created_at,
    )


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password too short: at least {MIN_PASSWORD} characters")
    if len(set(password)) < 4:
        raise UserError("password too simple")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def create_user(
    db: Database,
    *,
    username: str,
    password: str,
    role: str,
    hospital: int | None,
    display_name: str = "",
    phone: str | None = None,
    must_change_password: bool = False,
) -> UserInfo:
    username = username.strip()
    if not USERNAME.match(username):
        raise UserError("username: 2-64 letters, digits, '.', '_', '@' or '-'")
    if role not in ROLES:
        raise UserError(f"role: one of {', '.join(ROLES)}")
    if (role == "operator") != (hospital is None):
        raise UserError("operators belong to no hospital; every other role to one hospital")
    phone = (phone or "").strip() or None
    if phone is not None and not PHONE.match(phone):
        raise UserError("phone: an 11-digit mainland mobile number")
    check_password_strength(password)
    with db.write() as session:
        clash = session.execute(
            select(User.pk).where(
                or_(User.username == username, User.phone == phone)
                if phone
                else User.username == username
            )
        ).first()
        if clash is not None:
            raise UserError("username or phone number already used")
        now = utcnow()
        row = User(
            user_id=secrets.token_hex(6),
            hospital_pk=hospital,
            username=username,
            phone=phone,
            display_name=display_name.strip()[:64],
            role=role,
            password_hash=hash_password(password),
            must_change_password=1 if must_change_password else 0,
            created_at=now,
            password_changed_at=now,
        )
        session.add(row)
        session.flush()
        return _info(row)


def _find(session, login: str) -> User | None:  # type: ignore[no-untyped-def]
    login = login.strip()
    return session.execute(
        select(User).where(or_(User.username == login, User.phone == login))
    ).scalar_one_or_none()


def get_user(db: Database, login: str) -> UserInfo | None:
    with db.read() as session:
        row = _find(session, login)
        return _info(row) if row is not None else None


def user_by_pk(db: Database, pk: int) -> UserInfo | None:
    with db.read() as session:
        row = session.get(User, pk)
        return _info(row) if row is not None else None


def list_users(db: Database, *, hospital: int | None = None) -> list[UserInfo]:
    with db.read() as session:
        stmt = select(User).order_by(User.pk)
        if hospital is not None:
            stmt = stmt.where(User.hospital_pk == hospital)
        return [_info(r) for r in session.execute(stmt).scalars()]


def verify_password(db: Database, login: str, password: str) -> UserInfo | None:
    """The active user with this username (or phone) and password, else None. Takes the
    same time whether or not the user exists."""
    with db.read() as session:
        row = _find(session, login)
        encoded = row.password_hash if row is not None else _dummy_hash()
        try:
            _hasher.verify(encoded, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if row is None or row.disabled_at is not None:
            return None
        info = _info(row)
        stale = _hasher.check_needs_rehash(encoded)
    if stale:
        with db.write() as session:
            fresh = session.get(User, info.pk)
            if fresh is not None:
                fresh.password_hash = hash_password(password)
    return info


def set_password(db: Database, pk: int, password: str, *, must_change: bool = False) -> UserInfo:
    check_password_strength(password)
    with db.write() as session:
        row = session.get(User, pk)
        if row is None:
            raise UserError("no such user")
        row.password_hash = hash_password(password)
        row.password_changed_at = utcnow()
        row.must_change_password = 1 if must_change else 0
        return _info(row)


def set_disabled(db: Database, pk: int, disabled: bool) -> UserInfo:
    with db.write() as session:
        row = session.get(User, pk)
        if row is None:
            raise UserError("no such user")
        row.disabled_at = utcnow() if disabled else None
        return _info(row)


def enable_totp(db: Database, pk: int) -> str:
    """Give the user a new TOTP secret (RFC 6238, 30 s, 6 digits); returns the otpauth URI
    for the authenticator app (shown once, as a QR code)."""
    secret = pyotp.random_base32()
    with db.write() as session:
        row = session.get(User, pk)
        if row is None:
            raise UserError("no such user")
        row.totp_secret = secret
        name = row.username
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name="cloudfilm")


def verify_totp(db: Database, pk: int, code: str) -> bool:
    """True when the user has no second factor, or ``code`` is its current (±30 s) code."""
    with db.read() as session:
        row = session.get(User, pk)
        secret = row.totp_secret if row is not None else None
    if not secret:
        return True
    return pyotp.TOTP(secret).verify(code.strip(), valid_window=1)

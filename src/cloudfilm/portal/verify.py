"""Verification: the access code or the phone's last 6 digits for a film, an SMS code for a
phone number, an optional extra code for a share.

A 6-digit code has a million values, so guessing must be cut short: failures are counted per
film (or share, or phone number) and per client address in the index (shared by every server
process); after ``verify_max_attempts`` failures the key is locked for
``verify_lockout_seconds``, doubled for every further lockout (capped at a day). A locked key is
refused without looking at the code, so a right guess during a lockout still fails. Every
failure and every lockout is written to the audit trail. Comparisons are constant-time HMACs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select

from cloudfilm.portal import keys
from cloudfilm.portal.films import aware, code_hash, film_by_token, phone_hash
from cloudfilm.portal.models import Film, OneTimeCode, Throttle
from cloudfilm.storage.models import utcnow

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

MAX_LOCK_SECONDS = 24 * 3600
CLIENT_FACTOR = 4
"""A client address gets more tries than one film: a hospital lobby shares one address."""
OTP_SECONDS = 300
RESEND_SECONDS = 60
"""One SMS per number per minute: the page must not be a way to flood someone's phone."""


@dataclass
class VerifyFailed(Exception):
    status: int
    zh: str
    en: str
    retry_after: int = 0

    def __str__(self) -> str:
        return self.en


def _locked_for(archive: Archive, key: str) -> int:
    with archive.db.read() as session:
        row = session.get(Throttle, key)
    until = aware(row.locked_until) if row else None
    if until is None:
        return 0
    left = (until - utcnow()).total_seconds()
    return int(left) + 1 if left > 0 else 0


def _fail(archive: Archive, key: str, limit: int) -> tuple[int, int]:
    """Count a failure; returns (failures so far, lockout seconds if this one locked)."""
    base = archive.settings.verify_lockout_seconds
    with archive.db.write() as session:
        row = session.get(Throttle, key)
        if row is None:
            row = Throttle(key=key, failures=0, lockouts=0)
            session.add(row)
        row.failures += 1
        row.updated_at = utcnow()
        if row.failures < limit:
            return row.failures, 0
        seconds = min(MAX_LOCK_SECONDS, base * 2**row.lockouts)
        row.lockouts += 1
        row.failures = 0
        row.locked_until = utcnow() + timedelta(seconds=seconds)
        return limit, seconds


def _reset(archive: Archive, key: str) -> None:
    with archive.db.write() as session:
        row = session.get(Throttle, key)
        if row is not None:
            row.failures = 0


def locked_message(seconds: int) -> VerifyFailed:
    minutes = max(1, (seconds + 59) // 60)
    return VerifyFailed(
        429,
        f"尝试次数过多，已暂时锁定。请 {minutes} 分钟后再试，或联系医院。",
        f"Too many attempts: locked. Try again in {minutes} minute(s), or ask the hospital.",
        seconds,
    )


def checked(
    archive: Archive,
    *,
    subject_key: str,
    client: str,
    resource: str,
    principal: str,
    matches: bool,
    what: str,
) -> None:
    """Apply the limits around one comparison already made; raise VerifyFailed when refused.

    The comparison is made before we look at the limits so that its timing never depends on
    them, but its result is only used when neither key is locked.
    """
    limit = archive.settings.verify_max_attempts
    client_key = f"client:{client}"
    locked = max(_locked_for(archive, subject_key), _locked_for(archive, client_key))
    if locked:
        archive.audit.record(
            principal="anonymous", action="verify", resource=resource, outcome="deny",
            detail=f"{what}: locked", client=client,
        )  # fmt: skip
        raise locked_message(locked)
    if matches:
        _reset(archive, subject_key)
        archive.audit.record(
            principal=principal, action="verify", resource=resource, outcome="allow",
            detail=what, client=client,
        )  # fmt: skip
        return
    count, lock = _fail(archive, subject_key, limit)
    _c, client_lock = _fail(archive, client_key, limit * CLIENT_FACTOR)
    lock = max(lock, client_lock)
    archive.audit.record(
        principal="anonymous", action="verify", resource=resource, outcome="deny",
        detail=f"{what}: wrong code ({count}/{limit})" + (f"; locked {lock}s" if lock else ""),
        client=client,
    )  # fmt: skip
    if lock:
        raise locked_message(lock)
    left = limit - count
    raise VerifyFailed(
        401,
        f"验证码不正确，还可以再试 {left} 次。",
        f"That code is not right. {left} attempt(s) left.",
    )


def verify_film(archive: Archive, token: str, code: str, client: str) -> Film:
    """The film whose link this is, when ``code`` is its access code or phone suffix."""
    film = film_by_token(archive, token)
    if film is None:
        # a refusal like any other, but the token itself is a credential: never recorded
        archive.audit.record(
            principal="anonymous", action="verify", resource="", outcome="deny",
            detail="unknown or replaced film link", client=client,
        )  # fmt: skip
        raise VerifyFailed(404, "链接无效或已失效。", "This link is not valid (any more).")
    secret = keys.server_secret(archive.settings)
    entered = keys.digits(code)[:6] if len(keys.digits(code)) == 6 else "x"
    by_code = keys.same(code_hash(secret, film.film_id, entered), film.code_hash)
    by_phone = film.phone_hash is not None and keys.same(
        phone_hash(secret, film.film_id, entered), film.phone_hash
    )
    checked(
        archive,
        subject_key=f"film:{film.film_id}",
        client=client,
        resource=film.study_uid,
        principal=f"patient:{film.film_id}",
        matches=by_code or by_phone,
        what="film code" if by_code else "phone suffix" if by_phone else "film code",
    )
    return film


def send_phone_code(archive: Archive, phone: str, client: str) -> tuple[str, str] | None:
    """Make a one-time code for a phone number that has films; (phone_key, code) or None.

    The caller sends the SMS and answers the same whether or not the number has films, so the
    page does not tell strangers which numbers are patients here.
    """
    secret = keys.server_secret(archive.settings)
    key = keys.phone_key(secret, phone)
    if key is None:
        raise VerifyFailed(400, "请输入完整的手机号码。", "Enter the whole phone number.")
    locked = max(_locked_for(archive, f"phone:{key}"), _locked_for(archive, f"client:{client}"))
    if locked:
        raise locked_message(locked)
    with archive.db.read() as session:
        has_films = session.execute(select(Film.pk).where(Film.phone_key == key)).first()
        last = session.execute(
            select(OneTimeCode.created_at)
            .where(OneTimeCode.phone_key == key)
            .order_by(OneTimeCode.pk.desc())
            .limit(1)
        ).scalar()
    if last is not None and (utcnow() - (aware(last) or utcnow())).total_seconds() < RESEND_SECONDS:
        raise VerifyFailed(
            429, "验证码已发送，请 1 分钟后再试。", "A code was just sent; wait a minute.", 60
        )
    if not has_films:
        _fail(archive, f"client:{client}", archive.settings.verify_max_attempts * CLIENT_FACTOR)
        return None
    code = f"{secrets.randbelow(1_000_000):06d}"
    with archive.db.write() as session:
        session.add(
            OneTimeCode(
                phone_key=key,
                code_hash=keys.mac_hex(secret, "otp", key, code),
                created_at=utcnow(),
                expires_at=utcnow() + timedelta(seconds=OTP_SECONDS),
            )
        )
    return key, code


def verify_phone_code(archive: Archive, phone: str, code: str, client: str) -> str:
    """The phone key when ``code`` is the latest unexpired SMS code for this number."""
    secret = keys.server_secret(archive.settings)
    key = keys.phone_key(secret, phone)
    if key is None:
        raise VerifyFailed(400, "请输入完整的手机号码。", "Enter the whole phone number.")
    with archive.db.read() as session:
        otp = session.execute(
            select(OneTimeCode)
            .where(OneTimeCode.phone_key == key, OneTimeCode.used.is_(False))
            .order_by(OneTimeCode.pk.desc())
            .limit(1)
        ).scalar_one_or_none()
    expected = otp.code_hash if otp is not None else "0" * 64
    fresh = otp is not None and (aware(otp.expires_at) or utcnow()) > utcnow()
    matches = keys.same(keys.mac_hex(secret, "otp", key, keys.digits(code)), expected) and fresh
    checked(
        archive,
        subject_key=f"phone:{key}",
        client=client,
        resource="",
        principal=f"patient:phone-{key[:12]}",
        matches=matches,
        what="SMS code",
    )
    assert otp is not None
    with archive.db.write() as session:
        row = session.get(OneTimeCode, otp.pk)
        if row is not None:
            row.used = True
    return key

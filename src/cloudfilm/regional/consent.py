"""Consent: a clinician asks, the patient grants (three ways), the grant is seen and revoked.

1. ``sms``: the patient gets an SMS with a link and a 6-digit code; they approve on the phone
   (the link), or read the code to the doctor, who types it in.
2. ``app``: the request waits in the patient's pages (after SMS login) to be approved/refused.
3. ``assisted``: for a patient without a smartphone, the doctor records the consent given in
   person under their own account, with the reason, after checking the ID card's last 4 digits.

This module only keeps the rows; the doors (console for clinicians, portal for patients) apply
the attempt limits of portal.verify around every code comparison and send the SMS.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudfilm.access.keys import mac_hex
from cloudfilm.regional.models import ConsentGrant, ConsentRequest, PersonIdentifier
from cloudfilm.storage.models import utcnow

DEFAULT_DAYS = 7
MAX_DAYS = 30
REQUEST_HOURS = 24
"""A request not answered within a day lapses; the doctor asks again."""
MODES = ("sms", "app", "assisted")


class ConsentError(ValueError):
    def __init__(self, status: int, zh: str, en: str) -> None:
        super().__init__(en)
        self.status, self.zh, self.en = status, zh, en


@dataclass(frozen=True)
class Ask:
    """What a clinician asks for."""

    reason: str
    date_from: str = ""
    date_to: str = ""
    modalities: tuple[str, ...] = ()
    days: int = DEFAULT_DAYS

    def checked(self) -> Ask:
        reason = " ".join(self.reason.split())
        if len(reason) < 2:
            raise ConsentError(400, "请填写申请原因。", "Give a reason for the request.")
        if not 1 <= self.days <= MAX_DAYS:
            raise ConsentError(
                400,
                f"授权期限为 1 到 {MAX_DAYS} 天。",
                f"A grant lasts 1 to {MAX_DAYS} days.",
            )
        for d in (self.date_from, self.date_to):
            if d and not (len(d) == 8 and d.isdigit()):
                raise ConsentError(400, "日期格式为 YYYYMMDD。", "Dates are YYYYMMDD.")
        mods = tuple(sorted({m.strip().upper() for m in self.modalities if m.strip()}))
        if any(not m.isalnum() or len(m) > 16 for m in mods):
            raise ConsentError(400, "检查类型不正确。", "Bad modality.")
        return Ask(reason[:500], self.date_from, self.date_to, mods, self.days)


def token_hash(token: str) -> str:
    return mac_hex(b"consent-link", token)


def code_hash(secret: bytes, request_id: str, code: str) -> str:
    return mac_hex(secret, "consent-code", request_id, code.strip())


def new_request(
    session: Session,
    secret: bytes,
    *,
    person_pk: int,
    hospital_pk: int,
    requester: str,
    requester_name: str,
    ask: Ask,
    mode: str,
    phone_key: str | None = None,
) -> tuple[ConsentRequest, str, str]:
    """A pending request; returns it with its link token and 6-digit code (sms mode)."""
    if mode not in MODES:
        raise ConsentError(400, "授权方式不正确。", f"mode is one of {', '.join(MODES)}")
    ask = ask.checked()
    request_id = secrets.token_hex(8)
    token = secrets.token_urlsafe(32) if mode == "sms" else ""
    code = f"{secrets.randbelow(1_000_000):06d}" if mode == "sms" else ""
    row = ConsentRequest(
        request_id=request_id,
        person_pk=person_pk,
        hospital_pk=hospital_pk,
        requester=requester,
        requester_name=requester_name[:64],
        reason=ask.reason,
        date_from=ask.date_from,
        date_to=ask.date_to,
        modalities="\\".join(ask.modalities),
        days=ask.days,
        mode=mode,
        status="pending",
        token_hash=token_hash(token) if token else None,
        code_hash=code_hash(secret, request_id, code) if code else None,
        phone_key=phone_key,
        expires_at=utcnow() + timedelta(hours=REQUEST_HOURS),
        decided_by="",
    )
    session.add(row)
    session.flush()
    return row, token, code


def aware(when: datetime | None) -> datetime | None:
    if when is not None and when.tzinfo is None:  # SQLite hands back naive UTC
        return when.replace(tzinfo=UTC)
    return when


def state(row: ConsentRequest) -> str:
    if row.status == "pending" and (aware(row.expires_at) or utcnow()) <= utcnow():
        return "expired"
    return row.status


def decide(session: Session, row: ConsentRequest, *, approve: bool, by: str) -> ConsentGrant | None:
    """Approve (a grant is made) or refuse a pending request; a decided one cannot change."""
    if state(row) != "pending":
        raise ConsentError(
            409, "该申请已处理或已过期。", f"this request is {state(row)} and cannot change"
        )
    row.status = "approved" if approve else "refused"
    row.decided_at = utcnow()
    row.decided_by = by[:128]
    if not approve:
        session.flush()
        return None
    grant = ConsentGrant(
        grant_id=secrets.token_hex(8),
        request_pk=row.pk,
        person_pk=row.person_pk,
        hospital_pk=row.hospital_pk,
        grantee=row.requester,
        grantee_name=row.requester_name,
        date_from=row.date_from,
        date_to=row.date_to,
        modalities=row.modalities,
        mode=row.mode,
        expires_at=utcnow() + timedelta(days=row.days),
        revoked_by="",
    )
    session.add(grant)
    session.flush()
    return grant


def revoke(session: Session, grant: ConsentGrant, *, by: str) -> None:
    if grant.revoked_at is None:
        grant.revoked_at = utcnow()
        grant.revoked_by = by[:128]
        session.flush()


def request_by_token(session: Session, token: str) -> ConsentRequest | None:
    if not token:
        return None
    return session.execute(
        select(ConsentRequest).where(ConsentRequest.token_hash == token_hash(token))
    ).scalar_one_or_none()


def requests_of_person(session: Session, person_pk: int) -> list[ConsentRequest]:
    return list(
        session.execute(
            select(ConsentRequest)
            .where(ConsentRequest.person_pk == person_pk)
            .order_by(ConsentRequest.pk.desc())
            .limit(200)
        ).scalars()
    )


def grants_of_person(session: Session, person_pk: int) -> list[ConsentGrant]:
    return list(
        session.execute(
            select(ConsentGrant)
            .where(ConsentGrant.person_pk == person_pk)
            .order_by(ConsentGrant.pk.desc())
            .limit(200)
        ).scalars()
    )


def grant_state(grant: ConsentGrant) -> str:
    if grant.revoked_at is not None:
        return "revoked"
    if (aware(grant.expires_at) or utcnow()) <= utcnow():
        return "expired"
    return "active"


def last4_matches(session: Session, secret: bytes, person_pk: int, last4: str) -> bool:
    """Doctor-assisted consent: the last 4 characters of the person's national ID number."""
    from cloudfilm.regional.identifiers import NATIONAL_ID
    from cloudfilm.regional.persons import mac_check

    wanted = mac_check(secret, NATIONAL_ID, last4.strip().upper())
    held = session.execute(
        select(PersonIdentifier.check).where(
            PersonIdentifier.person_pk == person_pk, PersonIdentifier.kind == NATIONAL_ID
        )
    ).scalars()
    found = False
    for value in held:
        found = secrets.compare_digest(value, wanted) or found
    return found

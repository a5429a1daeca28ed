"""Searching the audit trail from the console: who did what to which study, when, and whether
it was allowed.

A hospital's users (with the ``admin`` scope: the hospital admin) search only their own
hospital's records, whatever they ask; operators search any hospital's, or all. Reading the
trail is itself an access decision and so is audited (``admin`` action). Pages go newest
first by record number (the chain's order) and continue below the last record shown
(``before``), so page 500 costs what page 1 does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from cloudfilm.access import Action, Principal
from cloudfilm.http.templating import BEIJING
from cloudfilm.storage.models import AuditEvent

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

PAGE_SIZE = 50
OUTCOMES = ("allow", "deny")


class AuditSearchError(ValueError):
    pass


def _escape_like(value: str) -> str:
    return value.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def parse_local(text: str, *, end: bool = False) -> datetime | None:
    """A Beijing wall-clock time typed in a form (``2026-01-10``, ``2026-01-10T08:30``,
    ``2026-01-10 08:30:15``) as an aware UTC datetime; '' → None. ``end``: a bare date means
    the end of that day (the range includes it)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            dt = datetime.fromisoformat(text)
            if end:
                dt = dt.replace(hour=23, minute=59, second=59, microsecond=999999)
        else:
            dt = datetime.fromisoformat(text.replace(" ", "T"))
            if end and dt.second == 0 and len(text) <= 16:
                dt = dt.replace(second=59, microsecond=999999)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=BEIJING)
        if not 1900 <= dt.year <= 2999:
            raise ValueError
        return dt.astimezone(UTC)
    except (ValueError, OverflowError):
        raise AuditSearchError(f"not a time: {text!r}") from None


@dataclass(frozen=True)
class AuditFilter:
    hospital: int | None = None
    """Operators: one hospital's records (None: all). Hospital users: always their own."""
    since: datetime | None = None
    until: datetime | None = None
    """Inclusive bounds (aware datetimes)."""
    principal: str = ""
    """``user:wang``, ``share:ab12…``; a trailing ``*`` matches a prefix (``patient:*``)."""
    study_uid: str = ""
    """The record's resource: exactly this Study Instance UID."""
    action: str = ""
    outcome: str = ""
    """``allow`` or ``deny`` ('' both)."""


@dataclass(frozen=True)
class AuditRow:
    pk: int
    at: datetime
    principal: str
    action: str
    resource: str
    outcome: str
    detail: str
    client: str
    hospital_pk: int | None


@dataclass
class AuditPage:
    rows: list[AuditRow]
    next_before: int | None
    """Pass as ``before`` for the next (older) page; None: this is the last page."""
    filter: AuditFilter = field(default_factory=AuditFilter)


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def search_audit(
    archive: Archive,
    principal: Principal,
    flt: AuditFilter,
    *,
    before: int | None = None,
    page_size: int = PAGE_SIZE,
) -> AuditPage:
    """Records matching ``flt`` that ``principal`` may read, newest first, below ``before``.
    Raises AccessDenied (audited) or AuditSearchError."""
    texts = (flt.principal, flt.study_uid, flt.action)
    if any(not t.isprintable() for t in texts):
        raise AuditSearchError("search terms are printable text")
    if flt.outcome and flt.outcome not in OUTCOMES:
        raise AuditSearchError("outcome: allow or deny")
    if flt.since and flt.until and flt.until < flt.since:
        raise AuditSearchError("the range ends before it starts")
    terms = [
        f"{name}={value}"
        for name, value in (
            ("principal", flt.principal),
            ("study", flt.study_uid),
            ("action", flt.action),
            ("outcome", flt.outcome),
        )
        if value
    ]
    decision = archive.authorize(
        principal, Action.ADMIN, None, detail=" ".join(["console audit search", *terms])
    )
    if decision.studies is not None:  # a patient or share grant: never the trail
        raise AuditSearchError("the audit trail is for a hospital's admins and operators")
    hospital = decision.hospital if decision.hospital is not None else flt.hospital
    if principal.hospital is not None and hospital != principal.hospital:
        hospital = principal.hospital  # never another hospital's records
    archive.audit.flush(timeout=5)
    stmt = select(AuditEvent).order_by(AuditEvent.pk.desc()).limit(page_size + 1)
    if hospital is not None:
        stmt = stmt.where(AuditEvent.hospital_pk == hospital)
    if before is not None:
        stmt = stmt.where(AuditEvent.pk < before)
    if flt.since is not None:
        stmt = stmt.where(AuditEvent.at >= flt.since.astimezone(UTC))
    if flt.until is not None:
        stmt = stmt.where(AuditEvent.at <= flt.until.astimezone(UTC))
    who = flt.principal.strip()
    if who.endswith("*"):
        if who.strip("*"):
            stmt = stmt.where(
                AuditEvent.principal.like(_escape_like(who.rstrip("*")) + "%", escape="!")
            )
    elif who:
        stmt = stmt.where(AuditEvent.principal == who)
    if flt.study_uid.strip():
        stmt = stmt.where(AuditEvent.resource == flt.study_uid.strip())
    if flt.action.strip():
        stmt = stmt.where(AuditEvent.action == flt.action.strip())
    if flt.outcome:
        stmt = stmt.where(AuditEvent.outcome == flt.outcome)
    with archive.db.read() as session:
        found = list(session.execute(stmt).scalars())
    rows = [
        AuditRow(
            pk=e.pk,
            at=_utc(e.at),
            principal=e.principal,
            action=e.action,
            resource=e.resource,
            outcome=e.outcome,
            detail=e.detail,
            client=e.client,
            hospital_pk=e.hospital_pk,
        )
        for e in found[:page_size]
    ]
    more = len(found) > page_size
    return AuditPage(rows=rows, next_before=rows[-1].pk if more and rows else None, filter=flt)


ACTIONS = (
    "query", "read", "write", "download", "manage", "film", "consent", "admin",
    "verify", "open", "share", "revoke", "issue", "notify", "login", "logout",
)  # fmt: skip
"""The actions the trail holds, for the search form's choice (others may be typed)."""

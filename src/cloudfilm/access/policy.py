"""The one access check. Every read of a study, whatever the door (DIMSE, DICOMweb, downloads,
pages), asks :func:`authorize`; nothing else decides, and every decision is audited.

A principal says who is asking and what it may reach: a set of scopes, and optionally the only
studies it may see (a patient's film, a share). ``studies=None`` means "any study", which only
machine principals (an allowed AE, an API token) get.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudfilm.access.audit import AuditLog


class Action(StrEnum):
    QUERY = "query"
    """Search (C-FIND, QIDO-RS): reveals which studies exist."""
    READ = "read"
    """Retrieve a study's data (C-GET, C-MOVE, WADO, frames, rendered, downloads)."""
    WRITE = "write"
    """Store (C-STORE, STOW-RS)."""
    DOWNLOAD = "download"
    """Take a whole study away (zip of originals, JPEG exports): a grant may allow viewing only."""
    MANAGE = "manage"
    """Act as the owner of a film: create and revoke its shares, read its access history."""
    ADMIN = "admin"


SCOPE_FOR = {
    Action.QUERY: "read",
    Action.READ: "read",
    Action.WRITE: "write",
    Action.ADMIN: "admin",
    Action.DOWNLOAD: "read",
    Action.MANAGE: "manage",
}


@dataclass(frozen=True)
class Principal:
    kind: str
    """``ae``, ``token``, ``patient``, ``share``, ``user`` or ``system``."""
    id: str
    scopes: frozenset[str] = frozenset()
    studies: frozenset[str] | None = None
    client: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass
class Decision:
    allowed: bool
    principal: Principal
    action: Action
    study_uid: str | None
    reason: str = ""
    studies: frozenset[str] | None = field(default=None)
    """For queries: the studies the answer must be limited to (None: no limit)."""


class AccessDenied(Exception):
    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


def decide(principal: Principal, action: Action, study_uid: str | None) -> Decision:
    """Pure decision, no side effects: kept separate so it is easy to read and to test."""
    if principal.kind == "system":
        return Decision(True, principal, action, study_uid, "system")
    needed = SCOPE_FOR[action]
    if needed not in principal.scopes and "admin" not in principal.scopes:
        return Decision(False, principal, action, study_uid, f"scope '{needed}' required")
    if principal.studies is not None:
        if action is Action.QUERY:
            return Decision(True, principal, action, study_uid, "limited", principal.studies)
        if study_uid is None or study_uid not in principal.studies:
            return Decision(False, principal, action, study_uid, "study outside this grant")
        if action is Action.DOWNLOAD and "download" not in principal.scopes:
            return Decision(False, principal, action, study_uid, "this grant allows viewing only")
    return Decision(True, principal, action, study_uid, "granted", principal.studies)


def authorize(
    audit: AuditLog,
    principal: Principal,
    action: Action,
    study_uid: str | None = None,
    *,
    detail: str = "",
) -> Decision:
    """Decide, audit the decision, and raise :class:`AccessDenied` when refused."""
    decision = decide(principal, action, study_uid)
    audit.record(
        principal=principal.label,
        action=str(action),
        resource=study_uid or "",
        outcome="allow" if decision.allowed else "deny",
        detail=detail if decision.allowed else f"{decision.reason}; {detail}".strip("; "),
        client=principal.client,
    )
    if not decision.allowed:
        raise AccessDenied(decision)
    return decision

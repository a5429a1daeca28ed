"""The one access check. Every read of a study, whatever the door (DIMSE, DICOMweb, downloads,
pages), asks :func:`authorize`; nothing else decides, and every decision is audited.

A principal says who is asking and what it may reach: a set of scopes, the hospital it belongs
to, and optionally the only studies it may see (a patient's film, a share, a consent grant).

- ``studies`` set: exactly those studies, whichever hospital holds them (the patient consented).
- otherwise ``hospital`` set: that hospital's studies only (its AEs, tokens and users).
- neither: only a platform operator (scope ``operator``) or the system; an operator's every
  read is audited under its own name.
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
    FILM = "film"
    """Issue, print and reissue a patient's film (the film desk, the reporting system)."""
    CONSENT = "consent"
    """Record a patient's consent given in person (doctor-assisted share): the film desk."""
    ADMIN = "admin"
    """Manage a hospital's users, AE titles and API tokens."""


SCOPE_FOR: dict[Action, frozenset[str]] = {
    Action.QUERY: frozenset({"read"}),
    Action.READ: frozenset({"read"}),
    Action.WRITE: frozenset({"write"}),
    Action.ADMIN: frozenset({"admin"}),
    Action.DOWNLOAD: frozenset({"read"}),
    Action.MANAGE: frozenset({"manage"}),
    Action.FILM: frozenset({"film", "write"}),
    Action.CONSENT: frozenset({"consent"}),
}
"""Any one of these scopes allows the action (``admin`` allows every action)."""


@dataclass(frozen=True)
class Principal:
    kind: str
    """``ae``, ``token``, ``patient``, ``share``, ``user`` or ``system``."""
    id: str
    scopes: frozenset[str] = frozenset()
    studies: frozenset[str] | None = None
    client: str = ""
    hospital: int | None = None
    """The owning hospital's pk; None for operators, the system and grant-limited visitors."""
    name: str = ""
    """A person's display name, for the audit trail and the patient's access history."""
    granted: frozenset[str] | None = None
    """A hospital user's studies of *other* hospitals, by a patient's consent grant (filled in
    by the access check itself, never by a door)."""

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
    hospital: int | None = None
    """For queries: the hospital the answer must be limited to (None: no limit)."""
    also: frozenset[str] | None = None
    """For queries limited to a hospital: studies of other hospitals the answer may include
    too (consent grants)."""


class AccessDenied(Exception):
    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


def decide(
    principal: Principal,
    action: Action,
    study_uid: str | None,
    study_hospital: int | None = None,
) -> Decision:
    """Pure decision, no side effects: kept separate so it is easy to read and to test.

    ``study_hospital``: the owner of ``study_uid`` when the index knows the study.
    """
    if principal.kind == "system":
        return Decision(True, principal, action, study_uid, "system")
    needed = SCOPE_FOR[action]
    if not needed & principal.scopes and "admin" not in principal.scopes:
        wanted = " or ".join(sorted(needed))
        return Decision(False, principal, action, study_uid, f"scope '{wanted}' required")
    if principal.studies is not None:
        if action is Action.QUERY:
            return Decision(True, principal, action, study_uid, "limited", principal.studies)
        if study_uid is None or study_uid not in principal.studies:
            return Decision(False, principal, action, study_uid, "study outside this grant")
        if action is Action.DOWNLOAD and "download" not in principal.scopes:
            return Decision(False, principal, action, study_uid, "this grant allows viewing only")
        return Decision(True, principal, action, study_uid, "granted", principal.studies)
    if principal.hospital is None:
        if "operator" not in principal.scopes:
            return Decision(False, principal, action, study_uid, "belongs to no hospital")
        if action in (Action.WRITE, Action.FILM, Action.CONSENT):
            # Data enters through a hospital's door, so that it has an owner.
            return Decision(
                False, principal, action, study_uid, "an operator acts through a hospital"
            )
        return Decision(True, principal, action, study_uid, "operator")
    if study_hospital is not None and study_hospital != principal.hospital:
        if principal.granted and study_uid in principal.granted:
            if action in (Action.QUERY, Action.READ):
                return Decision(True, principal, action, study_uid, "consent")
            return Decision(False, principal, action, study_uid, "consent allows viewing only")
        return Decision(False, principal, action, study_uid, "study of another hospital")
    return Decision(
        True,
        principal,
        action,
        study_uid,
        "granted",
        None,
        hospital=principal.hospital,
        also=principal.granted if action is Action.QUERY else None,
    )


def authorize(
    audit: AuditLog,
    principal: Principal,
    action: Action,
    study_uid: str | None = None,
    *,
    detail: str = "",
    study_hospital: int | None = None,
) -> Decision:
    """Decide, audit the decision, and raise :class:`AccessDenied` when refused."""
    decision = decide(principal, action, study_uid, study_hospital)
    if decision.allowed and decision.reason == "operator":
        detail = f"operator read; {detail}".strip("; ")
    elif decision.allowed and decision.reason == "consent":
        detail = f"consent of the patient; {detail}".strip("; ")
    audit.record(
        principal=principal.label,
        action=str(action),
        resource=study_uid or "",
        outcome="allow" if decision.allowed else "deny",
        detail=detail if decision.allowed else f"{decision.reason}; {detail}".strip("; "),
        client=principal.client,
        hospital=study_hospital if study_hospital is not None else principal.hospital,
    )
    if not decision.allowed:
        raise AccessDenied(decision)
    return decision

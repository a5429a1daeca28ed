"""Access: who may read what (one authorisation function) and the audit trail of every decision."""

from cloudfilm.access.audit import AuditLog, verify_chain
from cloudfilm.access.policy import AccessDenied, Action, Decision, Principal, authorize

__all__ = [
    "AccessDenied",
    "Action",
    "AuditLog",
    "Decision",
    "Principal",
    "authorize",
    "verify_chain",
]

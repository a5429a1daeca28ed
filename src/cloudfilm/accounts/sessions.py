"""Console sessions: a random cookie, stored as its SHA-256, with a CSRF token and an expiry.

Filled in by the console's login (see console/); ``end_sessions`` is here because disabling a
user or resetting a password must end their sessions at once, from the command line too.
"""

from __future__ import annotations

from sqlalchemy import update

from cloudfilm.accounts.models import UserSession
from cloudfilm.storage.database import Database
from cloudfilm.storage.models import utcnow


def end_sessions(db: Database, user_pk: int) -> int:
    with db.write() as session:
        result = session.execute(
            update(UserSession)
            .where(UserSession.user_pk == user_pk, UserSession.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

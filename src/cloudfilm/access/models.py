"""Index tables owned by access control (kept out of storage.models: the index is about images).

Imported by the migrations environment so Alembic's autogenerate sees them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from cloudfilm.storage.models import Base, utcnow


class ApiToken(Base):
    """A machine credential for DICOMweb and the JSON API.

    Only the SHA-256 of the token is kept: a copy of the index (a backup, a replica) does not
    give anyone access. ``token_id`` is the public handle used to list and revoke it.
    """

    __tablename__ = "api_tokens"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[str] = mapped_column(String(32), unique=True)
    hospital_pk: Mapped[int | None] = mapped_column(
        ForeignKey("hospitals.pk"), index=True, nullable=True
    )
    """Whose token: it reads and writes only that hospital's data. None: a platform token
    (``operator`` scope), made only from the command line."""
    name: Mapped[str] = mapped_column(String(128), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(128), default="")
    """Comma-joined subset of ``read``, ``write``, ``admin``."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

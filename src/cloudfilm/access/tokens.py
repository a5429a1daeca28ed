"""API tokens: random machine credentials with scopes, stored only as their SHA-256.

A token is ``cf_`` followed by 32 random bytes (256 bits) in URL-safe base64. Its SHA-256 is the
lookup key: the index is searched by hash, so the time a lookup takes tells nothing about how
close a guess was to a real token, and the final comparison uses ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select

from cloudfilm.access.models import ApiToken
from cloudfilm.storage.database import Database
from cloudfilm.storage.models import utcnow

SCOPES = ("read", "write", "film", "consent", "admin", "operator")
"""``operator`` (every hospital, read-only and audited) only for tokens of no hospital."""
PREFIX = "cf_"


class TokenError(ValueError):
    """Bad arguments (unknown scope, empty name, unknown id)."""


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown about a token: never the token itself, never its hash."""

    token_id: str
    name: str
    scopes: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None
    hospital: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_scopes(text: str | list[str] | tuple[str, ...]) -> frozenset[str]:
    """``"read,write"`` -> {"read", "write"}; refuse unknown scopes rather than ignore them."""
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = frozenset(s.strip().lower() for s in items if s.strip())
    unknown = scopes - set(SCOPES)
    if unknown:
        raise TokenError(f"unknown scope(s) {', '.join(sorted(unknown))}; use {', '.join(SCOPES)}")
    if not scopes:
        raise TokenError("at least one scope is required")
    return scopes


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        token_id=row.token_id,
        name=row.name,
        scopes=frozenset(s for s in row.scopes.split(",") if s),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        hospital=row.hospital_pk,
    )


def create_token(
    db: Database, name: str, scopes: str | list[str], *, hospital: int | None
) -> tuple[TokenInfo, str]:
    """Create a token of one hospital (None: a platform token, which needs ``operator``);
    the plaintext is returned once and never stored."""
    wanted = parse_scopes(scopes)
    name = name.strip()
    if not name:
        raise TokenError("a token needs a name (who or what uses it)")
    if hospital is None and wanted != {"operator"} and wanted != {"operator", "read"}:
        raise TokenError("a token of no hospital is a platform token: scope 'operator' only")
    if hospital is None:
        wanted = wanted | {"read"}  # an operator reads (audited); it never writes
    if hospital is not None and "operator" in wanted:
        raise TokenError("scope 'operator' is for platform tokens (no --hospital)")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        token_id=secrets.token_hex(6),
        name=name[:128],
        token_hash=hash_token(token),
        scopes=",".join(s for s in SCOPES if s in wanted),
        created_at=utcnow(),
        hospital_pk=hospital,
    )
    with db.write() as session:
        session.add(row)
    return _info(row), token


def list_tokens(
    db: Database, *, include_revoked: bool = True, hospital: int | None = None
) -> list[TokenInfo]:
    """``hospital``: only that hospital's tokens (None: all)."""
    with db.read() as session:
        stmt = select(ApiToken).order_by(ApiToken.pk)
        if hospital is not None:
            stmt = stmt.where(ApiToken.hospital_pk == hospital)
        if not include_revoked:
            stmt = stmt.where(ApiToken.revoked_at.is_(None))
        return [_info(r) for r in session.execute(stmt).scalars()]


def revoke_token(db: Database, token_id: str, *, hospital: int | None = None) -> TokenInfo:
    """Revoke at once; revoking twice is harmless. Raises TokenError for an unknown id (or one
    of another hospital than ``hospital``, when given)."""
    with db.write() as session:
        row = session.execute(
            select(ApiToken).where(ApiToken.token_id == token_id.strip())
        ).scalar_one_or_none()
        if row is None or (hospital is not None and row.hospital_pk != hospital):
            raise TokenError(f"no token with id {token_id!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        info = _info(row)
    with _recent_lock:
        _recent.clear()  # at once in this process; others within RECHECK_SECONDS
    return info


RECHECK_SECONDS = 1.0
"""How long a process trusts an answer of the index about a token: a revocation (by
``cloudfilm token revoke`` in another process, or on another server) stops the token
everywhere within this time."""

_recent: dict[tuple[str, str], tuple[float, TokenInfo | None]] = {}
_recent_lock = threading.Lock()


class NotCached(Exception):
    """The answer needs the index (``lookup_token(..., cached_only=True)``)."""


def lookup_token(db: Database, token: str, *, cached_only: bool = False) -> TokenInfo | None:
    """The active token matching this plaintext, or None.

    This runs on every DICOMweb request: a viewer fetching a CT sends hundreds a second, and
    the index query (with its transaction) cost more than reading the frame itself. The answer
    is kept for ``RECHECK_SECONDS``, keyed by the token's hash (never the plaintext).
    """
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    digest = hash_token(token)
    key = (str(db.engine.url), digest)
    now = time.monotonic()
    hit = _recent.get(key)
    if hit is not None and now - hit[0] < RECHECK_SECONDS:
        return hit[1]
    if cached_only:
        raise NotCached
    info = _query_token(db, digest)
    with _recent_lock:
        if len(_recent) > 10000:
            _recent.clear()
        _recent[key] = (now, info)
    return info


def _query_token(db: Database, digest: str) -> TokenInfo | None:
    with db.engine.connect() as conn:
        row = conn.execute(_BY_HASH, {"digest": digest}).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest) or row.revoked_at:
        return None
    return TokenInfo(
        token_id=row.token_id,
        name=row.name,
        scopes=frozenset(s for s in row.scopes.split(",") if s),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        hospital=row.hospital_pk,
    )


_t = ApiToken.__table__.c
_BY_HASH = select(
    _t.token_id, _t.name, _t.token_hash, _t.scopes, _t.created_at, _t.revoked_at, _t.hospital_pk
).where(_t.token_hash == bindparam("digest"))

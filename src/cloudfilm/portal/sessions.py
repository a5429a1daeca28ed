"""Browser sessions of verified patients and of share visitors, and their principal.

The cookie holds a random session id; the index holds its SHA-256, what it was granted for
(a film, a phone number, a share), a CSRF token and an expiry. Every request looks the session
up again — and the share or film behind it — so expiry and revocation take effect on the very
next request, frames included: nothing is cached. The resolver plugs into
``app.state.principal_resolvers``; what the principal may do is decided by
``archive.authorize`` like for any other caller.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from fastapi import Request, Response
from sqlalchemy import select

from cloudfilm.access import Principal
from cloudfilm.http.problems import Problem
from cloudfilm.http.security import client_address
from cloudfilm.portal import keys
from cloudfilm.portal.films import aware
from cloudfilm.portal.models import Film, PortalSession, Share, ShareFilm
from cloudfilm.portal.persons import films_of_phone
from cloudfilm.storage.models import utcnow

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

COOKIE = "cf_sid"
CSRF_HEADER = "x-csrf-token"
PATIENT_SCOPES = frozenset({"read", "download", "manage"})


@dataclass
class SessionView:
    """A live session: who it is, the films it reaches, and its principal."""

    kind: str
    subject: str
    csrf: str
    films: list[Film]
    principal: Principal
    share: Share | None = None
    studies: frozenset[str] = field(default_factory=frozenset)

    def film(self, film_id: str) -> Film | None:
        return next((f for f in self.films if f.film_id == film_id), None)


class SessionRefused(Problem):
    """Cookie present but not (any more) good: expired, logged out, share revoked."""


def is_https(request: Request, archive: Archive) -> bool:
    # a trusted proxy's X-Forwarded-Proto is already in the scheme (see trusted_proxies);
    # anyone else's is not believed
    public = archive.settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https")


def start_session(
    archive: Archive, request: Request, response: Response, kind: str, subject: str
) -> str:
    """Create a session, set its cookie on ``response``; returns its CSRF token."""
    sid = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    seconds = archive.settings.session_seconds
    with archive.db.write() as session:
        session.add(
            PortalSession(
                sid_hash=keys.sha256_hex(sid),
                kind=kind,
                subject=subject,
                csrf=csrf,
                created_at=utcnow(),
                expires_at=utcnow() + timedelta(seconds=seconds),
            )
        )
    response.set_cookie(
        COOKIE,
        sid,
        max_age=seconds,
        path="/",
        httponly=True,
        secure=is_https(request, archive),
        samesite="lax",
    )
    return csrf


def end_session(archive: Archive, request: Request, response: Response) -> None:
    sid = request.cookies.get(COOKIE)
    if sid:
        with archive.db.write() as session:
            row = session.execute(
                select(PortalSession).where(PortalSession.sid_hash == keys.sha256_hex(sid))
            ).scalar_one_or_none()
            if row is not None and row.revoked_at is None:
                row.revoked_at = utcnow()
    response.delete_cookie(COOKIE, path="/")


def _films_where(archive: Archive, *conditions: object) -> list[Film]:
    with archive.db.read() as session:
        return list(
            session.execute(
                select(Film).where(Film.revoked_at.is_(None), *conditions).order_by(Film.pk.desc())
            ).scalars()
        )


def share_state(share: Share) -> str:
    """``active``, ``revoked`` or ``expired``."""
    if share.revoked_at is not None:
        return "revoked"
    if (aware(share.expires_at) or utcnow()) <= utcnow():
        return "expired"
    return "active"


def share_films(archive: Archive, share: Share) -> list[Film]:
    return _films_where(
        archive, Film.pk.in_(select(ShareFilm.film_pk).where(ShareFilm.share_pk == share.pk))
    )


def load_session(archive: Archive, request: Request) -> SessionView | None:
    """The session behind the request's cookie; None without a cookie.

    Raises :class:`SessionRefused` for a cookie that no longer grants anything; a refused share
    is written to the audit trail (the patient's history shows it).
    """
    sid = request.cookies.get(COOKIE)
    if not sid:
        return None
    if len(sid) > 100:
        raise SessionRefused(401, "session unknown")
    client = client_address(request)
    with archive.db.read() as session:
        row = session.execute(
            select(PortalSession).where(PortalSession.sid_hash == keys.sha256_hex(sid))
        ).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        raise SessionRefused(401, "the session has ended; open your link again")
    if (aware(row.expires_at) or utcnow()) <= utcnow():
        raise SessionRefused(401, "the session has expired; open your link again")
    share = None
    if row.kind == "film":
        films = _films_where(archive, Film.film_id == row.subject)
        principal_id, scopes = row.subject, PATIENT_SCOPES
    elif row.kind == "phone":
        films = _films_where(archive, films_of_phone(row.subject))
        principal_id, scopes = f"phone-{row.subject[:12]}", PATIENT_SCOPES
    else:
        with archive.db.read() as session:
            share = session.execute(
                select(Share).where(Share.share_id == row.subject)
            ).scalar_one_or_none()
        if share is None:
            raise SessionRefused(401, "share unknown")
        films = share_films(archive, share)
        state = share_state(share)
        if state != "active":
            for film in films:
                archive.audit.record(
                    principal=f"share:{share.share_id}", action="read", resource=film.study_uid,
                    outcome="deny", detail=f"share {state}", client=client,
                )  # fmt: skip
            raise SessionRefused(
                403,
                f"this share was {state} (此分享已{'撤销' if state == 'revoked' else '过期'})",
                title="Share " + state,
            )
        principal_id = share.share_id
        scopes = frozenset({"read", "download"} if share.allow_download else {"read"})
    studies = frozenset(f.study_uid for f in films)
    kind = "share" if row.kind == "share" else "patient"
    principal = Principal(kind=kind, id=principal_id, scopes=scopes, studies=studies, client=client)
    return SessionView(row.kind, row.subject, row.csrf, films, principal, share, studies)


def require_csrf(request: Request, view: SessionView) -> None:
    """Writes from pages carry the session's CSRF token in a header, from our own origin."""
    origin = request.headers.get("origin")
    if origin and origin.rstrip("/") != str(request.base_url).rstrip("/"):
        host = request.headers.get("host", "")
        if origin.split("://", 1)[-1] != host:
            raise Problem(403, "cross-site request refused")
    token = request.headers.get(CSRF_HEADER, "")
    if not token or not keys.same(token, view.csrf):
        raise Problem(403, "missing or wrong CSRF token; reload the page")


class CookieSessionResolver:
    """``app.state.principal_resolvers`` entry: the cookie session's principal."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def __call__(self, request: Request) -> Principal | None:
        view = load_session(self.archive, request)
        return view.principal if view is not None else None

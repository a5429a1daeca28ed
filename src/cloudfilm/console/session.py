"""Who is logged in to the console: the ``cf_console`` cookie, its session, its principal.

The cookie holds a random session id; the index holds its SHA-256 (``accounts.sessions``).
A session ends on logout, after ``IDLE_SECONDS`` without a request, ``ABSOLUTE_SECONDS`` after
login, or when its user (or the user's hospital) is disabled. A process trusts the index's
answer about a cookie for ``RECHECK_SECONDS`` — as for API tokens — so a revocation or a
disabled user stops everywhere within a second, and the viewer's hundreds of frame requests do
not cost a query each.

The same session is a principal for every door (:class:`ConsoleSessionResolver` in
``app.state.principal_resolvers``): DICOMweb, the viewer and the portal's API see the user's
``Principal`` and ask ``archive.authorize`` like for any other caller. Console pages use
:func:`require_view`, which also sends a user who must change their password to do so first.
"""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

from fastapi import Request, Response

from cloudfilm.access import Principal
from cloudfilm.accounts.hospitals import DIRECTORY, HospitalError, HospitalInfo
from cloudfilm.accounts.sessions import (
    TOUCH_SECONDS,
    LiveSession,
    create_session,
    find_session,
    revoke_session,
    sid_digest,
    touch_session,
)
from cloudfilm.accounts.users import UserInfo
from cloudfilm.http.security import WouldBlock, client_address
from cloudfilm.storage.models import utcnow

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

COOKIE = "cf_console"
IDLE_SECONDS = 30 * 60
ABSOLUTE_SECONDS = 12 * 3600
RECHECK_SECONDS = 1.0
"""How long a process trusts the index's answer about a cookie (see tokens.RECHECK_SECONDS)."""
LOGIN_PATH = "/"
PASSWORD_PATH = "/console/password"
HOME = "/console/worklist"


@dataclass(frozen=True)
class ConsoleView:
    """What a console page knows of who is looking at it."""

    user: UserInfo
    principal: Principal
    csrf: str
    hospital: HospitalInfo | None
    """The user's hospital; None for platform operators."""


class ConsoleRedirect(Exception):
    """Answer with a 303 to ``location`` (handled by install_console)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class ConsoleRefused(Exception):
    """Answer with the console's error page (handled by install_console)."""

    def __init__(self, status: int, key: str, view: ConsoleView | None = None) -> None:
        super().__init__(key)
        self.status = status
        self.key = key
        """A text key (templating.t) saying why."""
        self.view = view


# --- the index's answers, kept for a second ---------------------------------------------------

_recent: dict[tuple[str, str], tuple[float, LiveSession | None]] = {}
_recent_lock = threading.Lock()


def forget(digest: str | None = None) -> None:
    """Drop cached answers (all, or one cookie's) after a change made in this process."""
    with _recent_lock:
        if digest is None:
            _recent.clear()
        else:
            for key in [k for k in _recent if k[1] == digest]:
                del _recent[key]


def _alive(live: LiveSession) -> bool:
    now = utcnow()
    return live.expires_at > now and live.last_seen_at + timedelta(seconds=IDLE_SECONDS) > now


def live_session(
    archive: Archive, sid: str, *, cached_only: bool = False, fresh: bool = False
) -> LiveSession | None:
    """The live session of this cookie value, or None. ``cached_only``: raise WouldBlock
    rather than ask the index (the event loop); ``fresh``: ask the index whatever the cache
    holds."""
    if not sid or len(sid) > 100:
        return None
    digest = sid_digest(sid)
    key = (str(archive.db.engine.url), digest)
    now = time.monotonic()
    hit = _recent.get(key)
    if hit is not None and now - hit[0] < RECHECK_SECONDS and not fresh:
        return hit[1] if hit[1] is not None and _alive(hit[1]) else None
    if cached_only:
        raise WouldBlock
    live = find_session(archive.db, digest, idle_seconds=IDLE_SECONDS)
    if live is not None and (utcnow() - live.last_seen_at).total_seconds() >= TOUCH_SECONDS:
        touch_session(archive.db, live.pk)
    with _recent_lock:
        if len(_recent) > 10000:
            _recent.clear()
        _recent[key] = (now, live)
    return live


# --- cookies --------------------------------------------------------------------------------


def is_https(request: Request, archive: Archive) -> bool:
    """A trusted proxy's X-Forwarded-Proto is already in the scheme (uvicorn's proxy headers)."""
    return request.url.scheme == "https" or (archive.settings.public_url or "").startswith("https")


def start_session(archive: Archive, request: Request, response: Response, user: UserInfo) -> str:
    """Log ``user`` in: a new session (never the one the browser brought), its cookie on
    ``response``, an audit record. Returns the CSRF token."""
    old = request.cookies.get(COOKIE)
    if old and len(old) <= 100:
        revoke_session(archive.db, sid_digest(old))
        forget(sid_digest(old))
    sid, csrf = create_session(archive.db, user.pk, absolute_seconds=ABSOLUTE_SECONDS)
    response.set_cookie(
        COOKIE,
        sid,
        max_age=ABSOLUTE_SECONDS,
        path="/",
        httponly=True,
        secure=is_https(request, archive),
        samesite="lax",
    )
    archive.audit.record(
        principal=f"user:{user.username}", action="login", outcome="allow",
        detail="console", client=client_address(request), hospital=user.hospital,
    )  # fmt: skip
    return csrf


def end_session(archive: Archive, request: Request, response: Response) -> None:
    """Log out: the session is revoked in the index (every process within a second)."""
    sid = request.cookies.get(COOKIE)
    if sid and len(sid) <= 100:
        digest = sid_digest(sid)
        live = find_session(archive.db, digest, idle_seconds=IDLE_SECONDS)
        if revoke_session(archive.db, digest) and live is not None:
            archive.audit.record(
                principal=f"user:{live.user.username}", action="logout", outcome="allow",
                detail="console", client=client_address(request), hospital=live.user.hospital,
            )  # fmt: skip
        forget(digest)
    response.delete_cookie(COOKIE, path="/")


# --- pages ----------------------------------------------------------------------------------


_UNSET = object()


def _archive(request: Request) -> Archive:
    return request.app.state.archive


def current_session(request: Request) -> LiveSession | None:
    """The request's live console session (looked up once per request)."""
    cached = getattr(request.state, "console_live", _UNSET)
    if cached is not _UNSET:
        return cached  # type: ignore[no-any-return]
    live = live_session(_archive(request), request.cookies.get(COOKIE, ""))
    request.state.console_live = live
    return live


def console_view(request: Request) -> ConsoleView | None:
    """The logged-in user of this request, or None (no cookie, or the session has ended)."""
    live = current_session(request)
    if live is None:
        return None
    hospital = None
    if live.user.hospital is not None:
        try:
            hospital = DIRECTORY.get(_archive(request).db, live.user.hospital)
        except HospitalError:
            return None
    principal = live.user.principal(client_address(request))
    return ConsoleView(user=live.user, principal=principal, csrf=live.csrf, hospital=hospital)


def here(request: Request) -> str:
    """This page's path and query, for ``?next=``."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def require_view(request: Request, *, role_scope: str | None = None) -> ConsoleView:
    """The logged-in user, else a 303 to the login page (``/?next=<this page>``). A user who
    must change their password is sent to do so first; a role without ``role_scope`` gets 403.
    """
    view = console_view(request)
    if view is None:
        raise ConsoleRedirect(f"{LOGIN_PATH}?next={quote(here(request), safe='')}")
    if view.user.must_change_password and request.url.path != PASSWORD_PATH:
        # the cache may be a second behind a change made on another server process
        request.state.console_live = live_session(
            _archive(request), request.cookies.get(COOKIE, ""), fresh=True
        )
        view = console_view(request)
        if view is None:
            raise ConsoleRedirect(f"{LOGIN_PATH}?next={quote(here(request), safe='')}")
    if view.user.must_change_password and request.url.path != PASSWORD_PATH:
        raise ConsoleRedirect(f"{PASSWORD_PATH}?next={quote(here(request), safe='')}")
    if role_scope is not None and role_scope not in view.principal.scopes:
        raise ConsoleRefused(403, "console.err_role", view)
    return view


def check_csrf(request: Request, view: ConsoleView, form_value: str) -> None:
    """Every console POST carries the session's CSRF token (a hidden ``csrf`` field) and,
    when the browser says where it comes from, our own origin. Raises ConsoleRefused (403).

    ``Origin: null`` says nothing: browsers send it for every form POST of a page with
    ``Referrer-Policy: no-referrer`` (the console's), so only the token can decide then."""
    origin = request.headers.get("origin")
    if (
        origin
        and origin != "null"
        and origin.split("://", 1)[-1] != request.headers.get("host", "")
    ):
        raise ConsoleRefused(403, "console.err_csrf", view)
    if not form_value or not hmac.compare_digest(form_value.encode(), view.csrf.encode()):
        raise ConsoleRefused(403, "console.err_csrf", view)


def safe_next(target: str | None, default: str = HOME) -> str:
    """Only a path of this site (no scheme, no ``//host``, no backslash tricks)."""
    if (
        not target
        or not target.startswith("/")
        or target[1:2] in ("/", "\\")
        or any(ord(c) < 0x20 or c == "\\" for c in target)
        or target == LOGIN_PATH
        or target.startswith("/console/logout")
    ):
        return default
    return target


# --- the principal for every other door ---------------------------------------------------------


class ConsoleSessionResolver:
    """``app.state.principal_resolvers`` entry: the console cookie's user.

    A cookie that no longer grants anything (logged out, expired, user disabled) is not an
    error here: the next resolver may know the request, and without one the answer is 401.
    A user who must change their password gets nothing but the password page until they do.
    """

    inline_ok = True  # answers from the one-second cache on the event loop when it can

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def __call__(self, request: Request, *, inline: bool = False) -> Principal | None:
        sid = request.cookies.get(COOKIE)
        if not sid:
            return None
        live = live_session(self.archive, sid, cached_only=inline)
        if live is None or live.user.must_change_password:
            return None
        return live.user.principal(client_address(request))

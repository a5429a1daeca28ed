"""Logging in to the console (``/``), the second factor, logging out, changing one's password.

Failures are limited like the patients' code verification — the same counters and lockouts
(``portal.verify.checked``: per username and per client address, lockouts doubling) — and
every answer is the same whether or not the username exists: one wording, and a password is
checked (argon2id) even for an unknown user. A password is never logged, never put in a URL,
never echoed back into a page. The login form carries a token also set as a cookie, so another
site cannot log a browser in to an account of its choosing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from cloudfilm.accounts.sessions import end_sessions
from cloudfilm.accounts.users import (
    UserError,
    get_user,
    set_password,
    user_by_pk,
    verify_password,
    verify_totp,
)
from cloudfilm.archive import Archive
from cloudfilm.console.render import home_of, render_console
from cloudfilm.console.session import (
    PASSWORD_PATH,
    check_csrf,
    console_view,
    current_session,
    end_session,
    forget,
    is_https,
    require_view,
    safe_next,
    start_session,
)
from cloudfilm.console.texts import user_error
from cloudfilm.http.security import ArchiveDep, client_address
from cloudfilm.http.templating import lang_of, t
from cloudfilm.portal import keys
from cloudfilm.portal.verify import VerifyFailed, checked

router = APIRouter(include_in_schema=False)
PRE_COOKIE = "cf_console_pre"
MFA_SECONDS = 300
"""The second step must follow the first within five minutes."""
Field = Annotated[str, Form(max_length=256)]


def _login_key(login: str) -> str:
    """The throttle key of a username or phone as typed: hashed, since people sometimes type
    their password into the username field, and the key is stored."""
    return "console:" + hashlib.sha256(login.strip().lower().encode("utf-8")).hexdigest()[:40]


def _pre_token(request: Request) -> str:
    value = request.cookies.get(PRE_COOKIE, "")
    return value if 20 <= len(value) <= 64 else secrets.token_urlsafe(24)


def _with_pre(request: Request, archive: Archive, response: Response, pre: str) -> Response:
    response.set_cookie(
        PRE_COOKIE,
        pre,
        max_age=86400,
        path="/",
        httponly=True,
        secure=is_https(request, archive),
        samesite="lax",
    )
    return response


def _login_page(
    request: Request, archive: Archive, *, message: str = "", login: str = "", status: int = 200
) -> Response:
    pre = _pre_token(request)
    context = {
        "pre": pre,
        "next": safe_next(request.query_params.get("next") or _form_next(request), ""),
        "login": login,
        "message": message,
    }
    response = render_console(request, None, "console/login.html", context, status=status)
    return _with_pre(request, archive, response, pre)


def _form_next(request: Request) -> str:
    return str(getattr(request.state, "form_next", "") or "")


def _pre_ok(request: Request, pre: str) -> bool:
    cookie = request.cookies.get(PRE_COOKIE, "")
    return bool(cookie) and bool(pre) and hmac.compare_digest(cookie.encode(), pre.encode())


def _refusal(request: Request, exc: VerifyFailed) -> tuple[str, int]:
    lang = lang_of(request)
    if exc.status == 429:
        minutes = max(1, (exc.retry_after + 59) // 60)
        return t(lang, "console.locked", minutes=minutes), 429
    return t(lang, "console.bad_login"), 401


def _pending(archive: Archive, user_pk: int, pre: str) -> str:
    """The proof that the password step passed, for the second step: signed, bound to the
    browser's login cookie, good for MFA_SECONDS."""
    expires = int(time.time()) + MFA_SECONDS
    mac = keys.mac_hex(
        keys.server_secret(archive.settings), "console-mfa", str(user_pk), str(expires), pre
    )
    return f"{user_pk}.{expires}.{mac}"


def _pending_user(archive: Archive, token: str, pre: str) -> int | None:
    try:
        pk_text, exp_text, mac = token.split(".")
        pk, expires = int(pk_text), int(exp_text)
    except ValueError:
        return None
    want = keys.mac_hex(keys.server_secret(archive.settings), "console-mfa", pk_text, exp_text, pre)
    if expires < time.time() or not hmac.compare_digest(want.encode(), mac.encode()):
        return None
    return pk


def _logged_in(request: Request, archive: Archive, user_pk: int, target: str) -> Response:
    user = user_by_pk(archive.db, user_pk)
    assert user is not None
    home = home_of(user.principal().scopes)
    where = safe_next(target, home)
    if user.must_change_password:
        where = f"{PASSWORD_PATH}?next={quote(where, safe='')}"
    response = RedirectResponse(where, status_code=303)
    start_session(archive, request, response, user)
    response.delete_cookie(PRE_COOKIE, path="/")
    return response


@router.get("/")
def login_page(request: Request, archive: ArchiveDep) -> Response:
    view = console_view(request)
    if view is not None:
        home = home_of(view.principal.scopes)
        return RedirectResponse(safe_next(request.query_params.get("next"), home), 303)
    return _login_page(request, archive)


@router.post("/console/login")
def post_login(
    request: Request,
    archive: ArchiveDep,
    login: Field = "",
    password: Field = "",
    pre: Field = "",
    next: Field = "",
) -> Response:
    request.state.form_next = next
    lang = lang_of(request)
    if not _pre_ok(request, pre):
        return _login_page(request, archive, message=t(lang, "console.form_expired"), status=400)
    user = verify_password(archive.db, login, password) if login and password else None
    known = user or (get_user(archive.db, login) if login else None)
    try:
        checked(
            archive,
            subject_key=_login_key(login),
            client=client_address(request),
            resource=f"user:{known.username}" if known else "",
            principal=f"user:{user.username}" if user else "anonymous",
            matches=user is not None,
            what="console password",
        )
    except VerifyFailed as exc:
        message, status = _refusal(request, exc)
        return _login_page(request, archive, message=message, login=login, status=status)
    assert user is not None
    if user.totp:
        context = {
            "pending": _pending(archive, user.pk, pre),
            "pre": pre,
            "next": safe_next(next, ""),
            "message": "",
        }
        return render_console(request, None, "console/totp.html", context)
    return _logged_in(request, archive, user.pk, next)


@router.post("/console/login/totp")
def post_totp(
    request: Request,
    archive: ArchiveDep,
    code: Field = "",
    pending: Field = "",
    pre: Field = "",
    next: Field = "",
) -> Response:
    request.state.form_next = next
    lang = lang_of(request)
    user_pk = _pending_user(archive, pending, pre) if _pre_ok(request, pre) else None
    user = user_by_pk(archive.db, user_pk) if user_pk is not None else None
    if user is None or not user.active:
        return _login_page(request, archive, message=t(lang, "console.form_expired"), status=400)
    good = verify_totp(archive.db, user.pk, code)
    try:
        checked(
            archive,
            subject_key=f"console-totp:{user.pk}",
            client=client_address(request),
            resource=f"user:{user.username}",
            principal=f"user:{user.username}",
            matches=good,
            what="console second factor",
        )
    except VerifyFailed as exc:
        if exc.status == 429:
            message, status = _refusal(request, exc)
            return _login_page(request, archive, message=message, status=status)
        context = {
            "pending": pending,
            "pre": pre,
            "next": safe_next(next, ""),
            "message": t(lang, "console.bad_totp"),
        }
        return render_console(request, None, "console/totp.html", context, status=401)
    return _logged_in(request, archive, user.pk, next)


@router.post("/console/logout")
def post_logout(request: Request, archive: ArchiveDep, csrf: Field = "") -> Response:
    view = console_view(request)
    if view is not None:
        check_csrf(request, view, csrf)
    response = RedirectResponse("/", status_code=303)
    end_session(archive, request, response)
    return response


@router.get("/console/")
def console_home(request: Request) -> Response:
    view = require_view(request)
    return RedirectResponse(home_of(view.principal.scopes), status_code=303)


@router.get(PASSWORD_PATH)
def password_page(request: Request) -> Response:
    view = require_view(request)
    context = {"next": safe_next(request.query_params.get("next"), "")}
    return render_console(request, view, "console/password.html", context)


@router.post(PASSWORD_PATH)
def post_password(
    request: Request,
    archive: ArchiveDep,
    csrf: Field = "",
    current: Field = "",
    new: Field = "",
    repeat: Field = "",
    next: Field = "",
) -> Response:
    view = require_view(request)
    check_csrf(request, view, csrf)
    lang = lang_of(request)

    def again(key: str, status: int = 400, text: str | None = None) -> Response:
        context = {
            "next": safe_next(next, ""),
            "message": text or t(lang, key),
            "message_kind": "error",
        }
        return render_console(request, view, "console/password.html", context, status=status)

    good = verify_password(archive.db, view.user.username, current) is not None
    try:
        checked(
            archive,
            subject_key=_login_key(view.user.username),
            client=client_address(request),
            resource=f"user:{view.user.username}",
            principal=view.principal.label,
            matches=good,
            what="console password (to change it)",
        )
    except VerifyFailed as exc:
        if exc.status == 429:
            return again("", 429, _refusal(request, exc)[0])
        return again("console.bad_current", 401)
    if new != repeat:
        return again("console.pw_mismatch")
    if new == current:
        return again("console.pw_same")
    try:
        set_password(archive.db, view.user.pk, new, must_change=False)
    except UserError as exc:
        return again("", 400, user_error(lang, exc))
    live = current_session(request)
    end_sessions(archive.db, view.user.pk, keep=live.pk if live else None)
    forget()
    archive.audit.record(
        principal=view.principal.label,
        action="admin",
        resource=f"user:{view.user.username}",
        outcome="allow",
        detail="console: changed own password",
        client=view.principal.client,
        hospital=view.user.hospital,
    )
    return RedirectResponse(safe_next(next, home_of(view.principal.scopes)), status_code=303)

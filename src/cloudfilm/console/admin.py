"""Administration pages: a hospital's users, and (for platform operators) the hospitals.

``/console/admin/users``: list, add (role, initial password), reset a password, disable or
enable, give a second factor (the otpauth QR code, shown once). A password typed or made here
is shown once and must be changed at the first login; resetting or disabling ends the user's
sessions at once. ``/console/admin/hospitals``: list and add (operators only). AE titles and
API tokens are in ``admin_access``. Every change is a POST with the session's CSRF token.
"""

from __future__ import annotations

import secrets
from typing import Annotated

import pyotp
import segno
from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from cloudfilm.accounts.hospitals import HospitalError, create_hospital, list_hospitals
from cloudfilm.accounts.sessions import end_sessions
from cloudfilm.accounts.users import (
    ROLE_NAMES,
    ROLES,
    UserError,
    UserInfo,
    create_user,
    enable_totp,
    list_users,
    set_disabled,
    set_password,
    user_by_pk,
)
from cloudfilm.console import admin_access
from cloudfilm.console.admin_common import (
    admin_view,
    archive_of,
    back_to,
    done_message,
    guard,
    managed_hospital,
    page,
    picker_context,
)
from cloudfilm.console.session import ConsoleRefused, ConsoleView, forget, require_view
from cloudfilm.console.texts import user_error
from cloudfilm.http.params import RowPk
from cloudfilm.http.templating import lang_of, t

router = APIRouter(include_in_schema=False)
router.include_router(admin_access.router)
USERS = "/console/admin/users"
HOSPITALS = "/console/admin/hospitals"
Field = Annotated[str, Form(max_length=256)]
HOSPITAL_ROLES = tuple(r for r in ROLES if r != "operator")


def _roles(lang: str) -> list[dict[str, str]]:
    return [{"value": r, "label": ROLE_NAMES[r][1 if lang == "en" else 0]} for r in HOSPITAL_ROLES]


def _users_page(
    request: Request, view: ConsoleView, hospital: str | None, status: int = 200, **extra: object
) -> Response:
    target = managed_hospital(request, view, hospital)
    context: dict[str, object] = {
        **picker_context(request, view, target, USERS),
        **done_message(request),
    }
    if target is not None:
        guard(request, view, target.pk, "", "console: users")
        lang = lang_of(request)
        names = {r: ROLE_NAMES[r][1 if lang == "en" else 0] for r in ROLES}
        context.update(
            users=list_users(archive_of(request).db, hospital=target.pk),
            roles=_roles(lang),
            role_names=names,
        )
    context.update(extra)
    return page(request, view, "console/admin_users.html", context, status)


@router.get(USERS)
def users_page(request: Request) -> Response:
    view = admin_view(request)
    return _users_page(request, view, request.query_params.get("hospital"))


def _made_password(typed: str) -> str:
    return typed or secrets.token_urlsafe(12)


@router.post(USERS)
def add_user(
    request: Request,
    csrf: Field = "",
    hospital: Field = "",
    username: Field = "",
    display_name: Field = "",
    phone: Field = "",
    role: Field = "",
    password: Field = "",
) -> Response:
    view = admin_view(request, csrf)
    target = managed_hospital(request, view, hospital)
    if target is None:
        raise ConsoleRefused(404, "console.err_not_found", view)
    guard(request, view, target.pk, f"user:{username.strip()}"[:250], f"console: add user ({role})")
    lang = lang_of(request)
    if role not in HOSPITAL_ROLES:
        return _users_page(
            request,
            view,
            str(target.pk),
            400,
            message=t(lang, "console.bad_role"),
            message_kind="error",
        )
    initial = _made_password(password)
    try:
        user = create_user(
            archive_of(request).db,
            username=username,
            password=initial,
            role=role,
            hospital=target.pk,
            display_name=display_name,
            phone=phone or None,
            must_change_password=True,
        )
    except UserError as exc:
        return _users_page(
            request, view, str(target.pk), 400, message=user_error(lang, exc), message_kind="error"
        )
    return _users_page(
        request, view, str(target.pk), shown_user=user, shown_password=None if password else initial
    )


def _managed_user(request: Request, view: ConsoleView, pk: int, detail: str) -> UserInfo:
    """A user of a hospital the viewer manages (operators' own accounts are the command
    line's); the access check decides and records."""
    user = user_by_pk(archive_of(request).db, pk)
    if user is None or user.hospital is None:
        raise ConsoleRefused(404, "console.err_not_found", view)
    guard(request, view, user.hospital, f"user:{user.username}", f"console: {detail}")
    return user


@router.post(USERS + "/{pk}/password")
def reset_password(request: Request, pk: RowPk, csrf: Field = "", password: Field = "") -> Response:
    view = admin_view(request, csrf)
    user = _managed_user(request, view, pk, "reset password")
    db = archive_of(request).db
    new = _made_password(password)
    try:
        set_password(db, user.pk, new, must_change=True)
    except UserError as exc:
        return _users_page(
            request,
            view,
            str(user.hospital),
            400,
            message=user_error(lang_of(request), exc),
            message_kind="error",
        )
    end_sessions(db, user.pk)
    forget()
    return _users_page(
        request,
        view,
        str(user.hospital),
        shown_user=user,
        shown_password=None if password else new,
        reset=True,
    )


@router.post(USERS + "/{pk}/disable")
def disable_user(request: Request, pk: RowPk, csrf: Field = "") -> Response:
    view = admin_view(request, csrf)
    user = _managed_user(request, view, pk, "disable user")
    if user.pk == view.user.pk:
        raise ConsoleRefused(400, "console.err_self", view)
    db = archive_of(request).db
    set_disabled(db, user.pk, True)
    end_sessions(db, user.pk)
    forget()
    target = managed_hospital(request, view, str(user.hospital))
    assert target is not None
    return back_to(USERS, target, "console.done_disabled")


@router.post(USERS + "/{pk}/enable")
def enable_user(request: Request, pk: RowPk, csrf: Field = "") -> Response:
    view = admin_view(request, csrf)
    user = _managed_user(request, view, pk, "enable user")
    set_disabled(archive_of(request).db, user.pk, False)
    forget()
    target = managed_hospital(request, view, str(user.hospital))
    assert target is not None
    return back_to(USERS, target, "console.done_enabled")


@router.post(USERS + "/{pk}/totp")
def user_totp(request: Request, pk: RowPk, csrf: Field = "") -> Response:
    """A new second-factor secret: its QR code (and the secret, for typing) shown once."""
    view = admin_view(request, csrf)
    user = _managed_user(request, view, pk, "new second factor")
    uri = enable_totp(archive_of(request).db, user.pk)
    qr = segno.make(uri, error="m").svg_data_uri(scale=5, border=2)
    secret = pyotp.parse_uri(uri).secret  # type: ignore[attr-defined]
    spaced = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    return _users_page(
        request, view, str(user.hospital), totp_user=user, totp_qr=qr, totp_secret=spaced
    )


# --- hospitals (platform operators) ------------------------------------------------------------


def _hospitals_page(request: Request, view: ConsoleView, status: int = 200, **extra: object):  # type: ignore[no-untyped-def]
    guard(request, view, None, "", "console: hospitals")
    context = {"hospitals": list_hospitals(archive_of(request).db), **done_message(request)}
    context.update(extra)
    return page(request, view, "console/admin_hospitals.html", context, status)


@router.get(HOSPITALS)
def hospitals_page(request: Request) -> Response:
    view = require_view(request, role_scope="operator")
    return _hospitals_page(request, view)


@router.post(HOSPITALS)
def add_hospital(
    request: Request,
    csrf: Field = "",
    code: Field = "",
    name: Field = "",
    name_latin: Field = "",
    region_code: Field = "",
    sms_signature: Field = "",
) -> Response:
    from cloudfilm.console.session import check_csrf

    view = require_view(request, role_scope="operator")
    check_csrf(request, view, csrf)
    guard(request, view, None, f"hospital:{code.strip()}"[:250], "console: add hospital")
    try:
        info = create_hospital(
            archive_of(request).db,
            code,
            name,
            name_latin=name_latin,
            region_code=region_code,
            sms_signature=sms_signature,
        )
    except HospitalError as exc:
        message = user_error(lang_of(request), exc)
        return _hospitals_page(request, view, 400, message=message, message_kind="error")
    return back_to(HOSPITALS, info, "console.done_hospital_added")

"""Administration pages for a hospital's doors: its AE titles and its API tokens.

``/console/admin/aes``: the calling AE titles its modalities use (``accounts.aes``: list,
register, disable; DIMSE processes see a change within two seconds). ``/console/admin/tokens``:
its API tokens (``access.tokens``, always with ``hospital=``: list, create — the token is shown
once, only its hash is kept — and revoke, which stops it everywhere within a second). Tokens
made here carry ``read``, ``write`` or ``film``; platform and ``admin`` tokens are the command
line's.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from cloudfilm.access.tokens import TokenError, create_token, list_tokens, revoke_token
from cloudfilm.accounts.aes import SERVICES, AeError, disable_ae, list_aes, register_ae
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
from cloudfilm.console.session import ConsoleRefused, ConsoleView
from cloudfilm.console.texts import user_error
from cloudfilm.http.params import RowPk
from cloudfilm.http.templating import lang_of

router = APIRouter(include_in_schema=False)
AES = "/console/admin/aes"
TOKENS = "/console/admin/tokens"
TOKEN_SCOPES = ("read", "write", "film")
Field = Annotated[str, Form(max_length=256)]
Choices = Annotated[list[str], Form()]


def _target(request: Request, view: ConsoleView, hospital: str | None):  # type: ignore[no-untyped-def]
    target = managed_hospital(request, view, hospital)
    if target is None:
        raise ConsoleRefused(404, "console.err_not_found", view)
    return target


# --- AE titles ----------------------------------------------------------------------------------


def _aes_page(
    request: Request, view: ConsoleView, hospital: str | None, status: int = 200, **extra: object
) -> Response:
    target = managed_hospital(request, view, hospital)
    context: dict[str, object] = {
        **picker_context(request, view, target, AES),
        **done_message(request),
        "services": SERVICES,
    }
    if target is not None:
        guard(request, view, target.pk, "", "console: AE titles")
        context["aes"] = list_aes(archive_of(request).db, hospital=target.pk)
    context.update(extra)
    return page(request, view, "console/admin_aes.html", context, status)


@router.get(AES)
def aes_page(request: Request) -> Response:
    view = admin_view(request)
    return _aes_page(request, view, request.query_params.get("hospital"))


@router.post(AES)
def add_ae(
    request: Request,
    csrf: Field = "",
    hospital: Field = "",
    ae_title: Field = "",
    host: Field = "",
    description: Field = "",
    services: Choices = [],  # noqa: B006  (FastAPI copies defaults)
) -> Response:
    view = admin_view(request, csrf)
    target = _target(request, view, hospital)
    guard(request, view, target.pk, f"ae:{ae_title.strip()}"[:250], "console: register AE")
    try:
        register_ae(
            archive_of(request).db,
            target.pk,
            ae_title,
            host=host,
            services=services,
            description=description,
        )
    except AeError as exc:
        return _aes_page(
            request,
            view,
            str(target.pk),
            400,
            message=user_error(lang_of(request), exc),
            message_kind="error",
        )
    return back_to(AES, target, "console.done_ae_added")


@router.post(AES + "/{pk}/disable")
def disable(request: Request, pk: RowPk, csrf: Field = "", hospital: Field = "") -> Response:
    view = admin_view(request, csrf)
    target = _target(request, view, hospital)
    guard(request, view, target.pk, f"ae:{pk}", "console: disable AE")
    try:
        disable_ae(archive_of(request).db, pk, hospital=target.pk)
    except AeError:
        raise ConsoleRefused(404, "console.err_not_found", view) from None
    return back_to(AES, target, "console.done_ae_disabled")


# --- API tokens ---------------------------------------------------------------------------------


def _tokens_page(
    request: Request, view: ConsoleView, hospital: str | None, status: int = 200, **extra: object
) -> Response:
    target = managed_hospital(request, view, hospital)
    context: dict[str, object] = {
        **picker_context(request, view, target, TOKENS),
        **done_message(request),
        "scopes": TOKEN_SCOPES,
    }
    if target is not None:
        guard(request, view, target.pk, "", "console: API tokens")
        context["tokens"] = list_tokens(archive_of(request).db, hospital=target.pk)
    context.update(extra)
    return page(request, view, "console/admin_tokens.html", context, status)


@router.get(TOKENS)
def tokens_page(request: Request) -> Response:
    view = admin_view(request)
    return _tokens_page(request, view, request.query_params.get("hospital"))


@router.post(TOKENS)
def add_token(
    request: Request,
    csrf: Field = "",
    hospital: Field = "",
    name: Field = "",
    scopes: Choices = [],  # noqa: B006
) -> Response:
    view = admin_view(request, csrf)
    target = _target(request, view, hospital)
    guard(request, view, target.pk, "", f"console: create token {name.strip()[:60]!r}")
    lang = lang_of(request)
    if not set(scopes) <= set(TOKEN_SCOPES):
        return _tokens_page(
            request,
            view,
            str(target.pk),
            400,
            message=user_error(lang, TokenError("scopes: read, write, film")),
            message_kind="error",
        )
    try:
        info, plaintext = create_token(archive_of(request).db, name, scopes, hospital=target.pk)
    except TokenError as exc:
        return _tokens_page(
            request, view, str(target.pk), 400, message=user_error(lang, exc), message_kind="error"
        )
    return _tokens_page(request, view, str(target.pk), new_token=info, plaintext=plaintext)


@router.post(TOKENS + "/{token_id}/revoke")
def revoke(request: Request, token_id: str, csrf: Field = "", hospital: Field = "") -> Response:
    view = admin_view(request, csrf)
    target = _target(request, view, hospital)
    guard(request, view, target.pk, f"token:{token_id[:40]}", "console: revoke token")
    try:
        revoke_token(archive_of(request).db, token_id, hospital=target.pk)
    except TokenError:
        raise ConsoleRefused(404, "console.err_not_found", view) from None
    return back_to(TOKENS, target, "console.done_token_revoked")

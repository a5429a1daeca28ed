"""What every administration page shares: whose hospital it manages, and the access check.

A hospital admin manages their own hospital; a platform operator picks one (``?hospital=<pk>``
on pages, a hidden ``hospital`` field in forms). Every page view and every change is decided
by the one access check — ``access.authorize`` with ``Action.ADMIN`` and the managed hospital
as the owner of what is touched — so it is audited, and an admin of hospital A asking about
hospital B is refused there ("of another hospital"), not by a rule of this module.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from cloudfilm.access import AccessDenied, Action, authorize
from cloudfilm.accounts.hospitals import DIRECTORY, HospitalError, HospitalInfo
from cloudfilm.archive import Archive
from cloudfilm.console.render import render_console
from cloudfilm.console.session import ConsoleRefused, ConsoleView, check_csrf, require_view
from cloudfilm.http.params import id_int

DONE_KEYS = frozenset(
    {
        "console.done_user_added",
        "console.done_disabled",
        "console.done_enabled",
        "console.done_ae_added",
        "console.done_ae_disabled",
        "console.done_token_revoked",
        "console.done_hospital_added",
    }
)
"""``?done=`` may only name one of these texts (a link cannot put words on our page)."""


def archive_of(request: Request) -> Archive:
    return request.app.state.archive


def admin_view(request: Request, csrf: str | None = None) -> ConsoleView:
    """The logged-in admin (or operator); with ``csrf``, a POST's token is checked too."""
    view = require_view(request, role_scope="admin")
    if csrf is not None:
        check_csrf(request, view, csrf)
    return view


def _pk(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    number = id_int(value)
    return -1 if number is None else number  # no such hospital (the check records the ask)


def managed_hospital(request: Request, view: ConsoleView, value: str | None) -> HospitalInfo | None:
    """The hospital this page manages: the admin's own, or the one the operator picked (None
    when an operator has not picked one yet). A hospital other than the admin's own is passed
    on as asked, for the access check to refuse (and record)."""
    wanted = _pk(value)
    if wanted is None:
        wanted = view.user.hospital
    if wanted is None:
        return None
    try:
        return DIRECTORY.get(archive_of(request).db, wanted)
    except HospitalError:
        if view.user.hospital is not None and wanted != view.user.hospital:
            guard(request, view, wanted, "", "console: hospital picked")  # refused, recorded
        raise ConsoleRefused(404, "console.err_not_found", view) from None


def guard(
    request: Request, view: ConsoleView, hospital: int | None, resource: str, detail: str
) -> None:
    """The one access check for an administrative act on ``hospital``'s ``resource``."""
    try:
        authorize(
            archive_of(request).audit,
            view.principal,
            Action.ADMIN,
            resource or None,
            detail=detail,
            study_hospital=hospital,
        )
    except AccessDenied:
        raise ConsoleRefused(403, "console.err_hospital", view) from None


def picker_context(
    request: Request, view: ConsoleView, target: HospitalInfo | None, path: str
) -> dict[str, Any]:
    """The operator's hospital choice on the page at ``path`` (hospital admins get none)."""
    operator = view.user.hospital is None
    return {
        "operator": operator,
        "hospitals": DIRECTORY.all(archive_of(request).db) if operator else [],
        "target": target,
        "path": path,
    }


def done_message(request: Request) -> dict[str, Any]:
    key = request.query_params.get("done", "")
    if key not in DONE_KEYS:
        return {}
    from cloudfilm.http.templating import lang_of, t

    return {"message": t(lang_of(request), key), "message_kind": "ok"}


def back_to(path: str, hospital: HospitalInfo, done: str) -> Response:
    return RedirectResponse(f"{path}?hospital={hospital.pk}&done={done}", status_code=303)


def page(
    request: Request, view: ConsoleView, template: str, context: dict[str, Any], status: int = 200
) -> Response:
    return render_console(request, view, template, context, status=status)

"""``/console/desk?study=<uid>``: the film desk of one study.

The study's film: issue it once the report is in, print the paper report (the PDF carries the
QR code and the access code: ``/api/films/{id}/printable.pdf``, which the console cookie
authenticates), show its QR code, reissue the link and code when the paper was lost (the old
ones stop at once). A doctor-assisted share: after verifying the patient in person, a share
link for another doctor, recorded under the logged-in user's own name
(``portal.shares.assisting_user``); its link and QR are shown once, on the answer to the POST.

Every view asks the access check for ``film`` on the study, every share for ``consent``; every
POST carries the session's CSRF token. The portal's functions do the work, as for the API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from cloudfilm.access import Action
from cloudfilm.console.data_common import archive_of, authorized, link, sex_age, svg_data_uri
from cloudfilm.console.render import render_console, scope_of
from cloudfilm.console.session import ConsoleRefused, ConsoleView, check_csrf, require_view
from cloudfilm.console.worklist import study_row
from cloudfilm.http.templating import lang_of, t
from cloudfilm.portal import films as films_mod
from cloudfilm.portal.models import Film
from cloudfilm.portal.printable import qr_svg_file
from cloudfilm.portal.reports import current_report
from cloudfilm.portal.shares import (
    MAX_DAYS,
    ShareError,
    ShareInfo,
    assisting_user,
    create_share,
    list_shares,
)

router = APIRouter(include_in_schema=False)
PATH = "/console/desk"
Field = Annotated[str, Form(max_length=256)]
DONE = {"issued": "console_desk_issued", "reissued": "console_desk_reissued"}
"""``?done=`` names one of these texts only (a link cannot put words on our page)."""


def _view(request: Request, csrf: str | None = None) -> ConsoleView:
    view = require_view(request, role_scope=scope_of(PATH))
    if csrf is not None:
        check_csrf(request, view, csrf)
    return view


def _study_uid(value: str) -> str:
    uid = value.strip()
    if len(uid) > 64 or any(c not in "0123456789." for c in uid):
        return ""
    return uid


def _desk(
    request: Request,
    view: ConsoleView,
    study_uid: str,
    action: Action = Action.FILM,
    detail: str = "console desk",
    *,
    status: int = 200,
    **extra: Any,
) -> Response:
    archive = archive_of(request)
    lang = lang_of(request)
    context: dict[str, Any] = {"study": None, "film": None, "new_share": None, **extra}
    if not study_uid:
        return render_console(request, view, "console/desk.html", context, status=status)
    decision = authorized(request, view, action, study_uid, detail)
    row = study_row(archive, decision, study_uid)
    if row is None:
        raise ConsoleRefused(404, "console.err_not_found", view)
    film = films_mod.film_for_study(archive, study_uid)
    shares: list[ShareInfo] = list_shares(archive, [film]) if film is not None else []
    done = DONE.get(request.query_params.get("done", ""))
    if done and "message" not in extra:
        context.update(message=t(lang, done), message_kind="ok")
    context.update(
        study=row,
        sex_age=sex_age(lang, row.sex, row.age),
        report=current_report(archive, study_uid) is not None,
        film=film,
        shares=shares,
        max_days=MAX_DAYS,
        assisted_name=f"{view.principal.name} ({view.principal.id})",
        can_link=bool({"consent", "admin"} & view.principal.scopes),
        link_done=request.query_params.get("done", "") if done is None else "",
    )
    return render_console(request, view, "console/desk.html", context, status=status)


@router.get(PATH)
def desk_page(request: Request) -> Response:
    view = _view(request)
    return _desk(request, view, _study_uid(request.query_params.get("study", "")))


def _film_or_refuse(request: Request, view: ConsoleView, study_uid: str) -> Film:
    film = films_mod.film_for_study(archive_of(request), study_uid)
    if film is None or film.revoked_at is not None:
        raise ConsoleRefused(404, "console.err_not_found", view)
    return film


def _back(study_uid: str, done: str) -> Response:
    return RedirectResponse(link(PATH, {"study": study_uid, "done": done}), status_code=303)


@router.post(f"{PATH}/issue")
def issue(request: Request, csrf: Field = "", study: Field = "") -> Response:
    view = _view(request, csrf)
    uid = _study_uid(study)
    if not uid:
        raise ConsoleRefused(404, "console.err_not_found", view)
    authorized(request, view, Action.FILM, uid, "console desk: issue film")
    archive = archive_of(request)
    if current_report(archive, uid) is None:
        message = t(lang_of(request), "console_desk_no_report")
        return _desk(request, view, uid, status=409, message=message, message_kind="error")
    try:
        films_mod.issue_film(archive, uid)
    except LookupError:
        raise ConsoleRefused(404, "console.err_not_found", view) from None
    return _back(uid, "issued")


@router.post(f"{PATH}/reissue")
def reissue(request: Request, csrf: Field = "", study: Field = "") -> Response:
    view = _view(request, csrf)
    uid = _study_uid(study)
    authorized(request, view, Action.FILM, uid or None, "console desk: reissue film")
    film = _film_or_refuse(request, view, uid)
    films_mod.reissue_film(archive_of(request), film)
    return _back(uid, "reissued")


@router.post(f"{PATH}/share")
def share(
    request: Request,
    csrf: Field = "",
    study: Field = "",
    days: Field = "7",
    code: Field = "",
    label: Field = "",
    allow_download: Field = "",
) -> Response:
    view = _view(request, csrf)
    uid = _study_uid(study)
    if not uid:
        raise ConsoleRefused(404, "console.err_not_found", view)
    lang = lang_of(request)
    authorized(request, view, Action.CONSENT, uid, "console desk: assisted share")
    archive = archive_of(request)
    film = _film_or_refuse(request, view, uid)
    try:
        n_days = int(days.strip())
    except ValueError:
        n_days = 0
    if not 1 <= n_days <= MAX_DAYS:
        return _desk(
            request, view, uid, detail="console desk: assisted share refused",
            status=400, message=t(lang, "console_desk_bad_days"), message_kind="error",
        )  # fmt: skip
    try:
        assisted = assisting_user(archive, view.principal, film.hospital_pk, "")
        info = create_share(
            archive, [film], days=n_days, code=code, allow_download=allow_download == "1",
            label=label, created_by=view.principal.label, assisted_by=assisted,
        )  # fmt: skip
    except ShareError as exc:
        return _desk(
            request, view, uid, detail="console desk: assisted share refused",
            status=400, message=t(lang, "console_bad_term", detail=str(exc)),
            message_kind="error",
        )  # fmt: skip
    new_share = {"link": info.link, "qr": svg_data_uri(qr_svg_file(info.link)), "info": info}
    return _desk(
        request, view, uid, detail=f"console desk: share {info.share_id} shown",
        new_share=new_share, message=t(lang, "console_desk_share_made"), message_kind="ok",
    )  # fmt: skip

"""The patient pages: server-rendered HTML for 375-px phones, Chinese first, a little JS.

``/f/{token}`` the film link (verification), ``/s/{token}`` a share link, ``/p/`` the films of
the session, ``/p/films/{id}`` a film (report, images, downloads), ``…/share`` and
``…/history`` for the patient only. Pages decide nothing themselves: each asks
``archive.authorize`` with the session's principal. URLs carry no PHI (random ids only).
The HTML is in ``templates/`` (Jinja2, escaped by default: ``cloudfilm.http.templating``);
these functions only gather what a page shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cloudfilm.access import AccessDenied, Action
from cloudfilm.http.problems import Problem
from cloudfilm.http.security import ArchiveDep
from cloudfilm.http.templating import render
from cloudfilm.portal import films as films_mod
from cloudfilm.portal.history import film_history
from cloudfilm.portal.i18n import LANG_COOKIE, lang_of, t
from cloudfilm.portal.reports import current_report, study_summary
from cloudfilm.portal.sessions import SessionView, load_session
from cloudfilm.portal.shares import list_shares, share_by_token

router = APIRouter(include_in_schema=False)
TEMPLATES = Path(__file__).with_name("templates")
_STATIC = {"portal.css": "text/css; charset=utf-8", "portal.js": "text/javascript; charset=utf-8"}


class PageError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_page(request: Request, status: int, message: str) -> Response:
    return render(request, "portal/error.html", {"message": message}, status=status)


def _session(request: Request, archive: Any, *, required: bool = True) -> SessionView | None:
    try:
        view = load_session(archive, request)
    except Problem as exc:
        raise PageError(exc.status, exc.detail) from None
    if view is None and required:
        raise PageError(401, t(lang_of(request), "need_login"))
    return view


def _film_in(view: SessionView, film_id: str) -> Any:
    film = view.film(film_id)
    if film is None:
        raise PageError(404, "not found")
    return film


def _managed_film(request: Request, archive: Any, film_id: str) -> tuple[SessionView, Any]:
    """The session and one of its films, for pages that manage it (share, history)."""
    view = _session(request, archive)
    assert view is not None
    film = _film_in(view, film_id)
    _guard(request, archive, view, Action.MANAGE, film.study_uid)
    return view, film


def _guard(request: Request, archive: Any, view: SessionView, action: Action, study: str) -> None:
    try:
        archive.authorize(view.principal, action, study, detail=f"page {request.url.path[:40]}")
    except AccessDenied:
        raise PageError(403, t(lang_of(request), "denied_page")) from None


# --- links ---------------------------------------------------------------------------------


@router.get("/f/{token}")
def film_link_page(token: str, request: Request, archive: ArchiveDep) -> Response:
    if films_mod.film_by_token(archive, token) is None:
        return error_page(request, 404, t(lang_of(request), "bad_link"))
    return render(request, "portal/film_link.html", {"token": token})


@router.get("/s/{token}")
def share_link_page(token: str, request: Request, archive: ArchiveDep) -> Response:
    share = share_by_token(archive, token)
    if share is None:
        return error_page(request, 404, t(lang_of(request), "bad_link"))
    context = {"token": token, "needs_code": share.code_hash is not None}
    return render(request, "portal/share_link.html", context)


@router.get("/p/lang/{lang}")
def set_lang(lang: str, request: Request) -> Response:
    target = request.query_params.get("next", "/p/")
    if not target.startswith("/") or target[1:2] in ("/", "\\"):  # no other host
        target = "/p/"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(LANG_COOKIE, "en" if lang == "en" else "zh", max_age=365 * 86400,
                        samesite="lax", path="/")  # fmt: skip
    return response


@router.get("/p/static/{name}")
def static(name: str) -> Response:
    if name not in _STATIC:
        return Response("Not Found", status_code=404, media_type="text/plain")
    body = (TEMPLATES / name).read_bytes()
    return Response(body, media_type=_STATIC[name], headers={"Cache-Control": "no-cache"})


@router.get("/p/login")
def login_page(request: Request) -> Response:
    return render(request, "portal/login.html", {})


# --- the session's pages ------------------------------------------------------------------------


def _handle(request: Request, fn: Any) -> Response:
    try:
        return fn()
    except PageError as exc:
        if exc.status == 401 and request.url.path == "/p/":
            return RedirectResponse("/p/login", status_code=303)
        return error_page(request, exc.status, exc.message)


def _exam(archive: Any, study_uid: str, r: Any) -> dict[str, str]:
    """What the pages say about an exam: the report's (``r``) words first, else the index's."""
    facts = study_summary(archive, study_uid)
    return {
        "hospital": (r.hospital if r else "") or facts.get("institution", ""),
        "patient": (r.patient_name if r else "") or facts.get("patient_name", ""),
        "name": (r.exam_name if r else "") or facts.get("description", ""),
        "date": (r.exam_date if r else "") or facts.get("study_date", ""),
        "body_part": (r.body_part if r else "") or facts.get("body_part", ""),
        "series": facts.get("num_series", "0"),
        "instances": facts.get("num_instances", "0"),
        "index_id": facts.get("index_id", ""),
    }


@router.get("/p/")
def films_page(request: Request, archive: ArchiveDep) -> Response:
    def build() -> Response:
        view = _session(request, archive)
        assert view is not None
        films = []
        for film in view.films:
            _guard(request, archive, view, Action.READ, film.study_uid)
            exam = _exam(archive, film.study_uid, current_report(archive, film.study_uid))
            films.append(
                {"film_id": film.film_id, "exam": exam["name"], "date": exam["date"],
                 "hospital": exam["hospital"]}
            )  # fmt: skip
        context = {"films": films, "csrf": view.csrf, "consent_link": view.kind == "phone"}
        return render(request, "portal/films.html", context)

    return _handle(request, build)


@router.get("/p/films/{film_id}")
def film_page(film_id: str, request: Request, archive: ArchiveDep) -> Response:
    def build() -> Response:
        view = _session(request, archive)
        assert view is not None
        film = _film_in(view, film_id)
        _guard(request, archive, view, Action.READ, film.study_uid)
        report = current_report(archive, film.study_uid)
        exam = _exam(archive, film.study_uid, report)
        exam["hospital"] = exam["hospital"] or archive.settings.hospital_name
        context = {
            "film": film,
            "exam": exam,
            "report": report,
            "owner": view.kind != "share",
            "can_download": "download" in view.principal.scopes,
            "several_films": len(view.films) > 1,
            "csrf": view.csrf,
        }
        return render(request, "portal/film.html", context)

    return _handle(request, build)


@router.get("/p/films/{film_id}/share")
def share_page(film_id: str, request: Request, archive: ArchiveDep) -> Response:
    def build() -> Response:
        view, film = _managed_film(request, archive, film_id)
        choices = []
        if len(view.films) > 1:  # a phone session: several films may go in one share
            for f in view.films:
                report = current_report(archive, f.study_uid)
                name = (report.exam_name if report else "") or study_summary(
                    archive, f.study_uid
                ).get("description", f.film_id)
                choices.append({"film_id": f.film_id, "name": name})
        context = {
            "film": film,
            "choices": choices,
            "shares": list_shares(archive, [film]),
            "csrf": view.csrf,
        }
        return render(request, "portal/share.html", context)

    return _handle(request, build)


@router.get("/p/films/{film_id}/history")
def history_page(film_id: str, request: Request, archive: ArchiveDep) -> Response:
    def build() -> Response:
        view, film = _managed_film(request, archive, film_id)
        context = {"film": film, "entries": film_history(archive, film), "csrf": view.csrf}
        return render(request, "portal/history.html", context)

    return _handle(request, build)

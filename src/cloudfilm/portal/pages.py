"""The patient pages: server-rendered HTML for 375-px phones, Chinese first, a little JS.

``/f/{token}`` the film link (verification), ``/s/{token}`` a share link, ``/p/`` the films of
the session, ``/p/films/{id}`` a film (report, images, downloads), ``…/share`` and
``…/history`` for the patient only. Pages decide nothing themselves: each asks
``archive.authorize`` with the session's principal. URLs carry no PHI (random ids only).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from string import Template
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cloudfilm.access import AccessDenied, Action
from cloudfilm.http.problems import Problem
from cloudfilm.http.security import ArchiveDep
from cloudfilm.portal import films as films_mod
from cloudfilm.portal.history import film_history
from cloudfilm.portal.i18n import LANG_COOKIE, lang_of, t
from cloudfilm.portal.reports import current_report, study_summary
from cloudfilm.portal.sessions import SessionView, load_session
from cloudfilm.portal.shares import list_shares, share_by_token

router = APIRouter(include_in_schema=False)
TEMPLATES = Path(__file__).with_name("templates")
_BASE = Template((TEMPLATES / "base.html").read_text(encoding="utf-8"))
_STATIC = {"portal.css": "text/css; charset=utf-8", "portal.js": "text/javascript; charset=utf-8"}
e = html.escape
BEIJING = timezone(timedelta(hours=8))
"""Times are shown in China Standard Time: the patients and hospitals are there."""


def local(when: datetime | str) -> str:
    dt = datetime.fromisoformat(when) if isinstance(when, str) else when
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


def day(text: str) -> str:
    """DICOM dates (20240315) as people write them (2024-03-15)."""
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


class PageError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def page(request: Request, title: str, body: str, *, csrf: str = "", status: int = 200) -> Response:
    lang = lang_of(request)
    other = "zh" if lang == "en" else "en"
    path = request.url.path
    switch = f'<a class="lang" href="/p/lang/{other}?next={e(path)}">{t(lang, "switch")}</a>'
    text = _BASE.substitute(
        lang="en" if lang == "en" else "zh-CN", title=e(title), app=t(lang, "app"),
        switch=switch, body=body, csrf=e(csrf),
    )  # fmt: skip
    headers = {"Cache-Control": "no-store"}
    return HTMLResponse(text, status_code=status, headers=headers)


def error_page(request: Request, status: int, message: str) -> Response:
    lang = lang_of(request)
    body = (
        f'<section class="card"><h1>{t(lang, "error")}</h1>'
        f'<p class="msg">{e(message)}</p></section>'
    )
    return page(request, t(lang, "error"), body, status=status)


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
    lang = lang_of(request)
    film = films_mod.film_by_token(archive, token)
    if film is None:
        return error_page(request, 404, t(lang, "bad_link"))
    body = f"""<section class="card"><h1>{t(lang, "verify_title")}</h1>
<p>{t(lang, "verify_help")}</p>
<form class="api" data-api="/api/verify" data-token="{e(token)}">
<label>{t(lang, "code")}<input name="code" inputmode="numeric" autocomplete="one-time-code"
 maxlength="6" pattern="[0-9]{{6}}" required></label>
<button type="submit">{t(lang, "verify")}</button><p class="msg" role="alert"></p></form>
<p class="small"><a href="/p/login">{t(lang, "login_title")}</a></p></section>"""
    return page(request, t(lang, "verify_title"), body)


@router.get("/s/{token}")
def share_link_page(token: str, request: Request, archive: ArchiveDep) -> Response:
    lang = lang_of(request)
    share = share_by_token(archive, token)
    if share is None:
        return error_page(request, 404, t(lang, "bad_link"))
    if share.code_hash is None:
        form = f"""<form class="api auto" data-api="/api/shares/open" data-token="{e(token)}">
<p>{t(lang, "opening")}</p><button type="submit">{t(lang, "open_share")}</button>
<p class="msg" role="alert"></p></form>"""
    else:
        form = f"""<form class="api" data-api="/api/shares/open" data-token="{e(token)}">
<label>{t(lang, "share_code_title")}<input name="code" inputmode="numeric" maxlength="8"
 required></label><button type="submit">{t(lang, "open_share")}</button>
<p class="msg" role="alert"></p></form>"""
    body = f'<section class="card"><h1>{t(lang, "shared_view")}</h1>{form}</section>'
    return page(request, t(lang, "shared_view"), body)


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
    lang = lang_of(request)
    body = f"""<section class="card"><h1>{t(lang, "login_title")}</h1>
<form class="api" data-api="/api/patient/otp" data-keep="1">
<label>{t(lang, "phone")}<input name="phone" inputmode="tel" autocomplete="tel" required></label>
<button type="submit">{t(lang, "send_code")}</button><p class="msg" role="alert"></p></form>
<form class="api" data-api="/api/patient/otp/verify" data-phone-from="1">
<label>{t(lang, "sms_code")}<input name="code" inputmode="numeric" maxlength="6" required></label>
<button type="submit">{t(lang, "login")}</button><p class="msg" role="alert"></p></form>
</section>"""
    return page(request, t(lang, "login_title"), body)


# --- the session's pages ------------------------------------------------------------------------


def _handle(request: Request, fn: Any) -> Response:
    try:
        return fn()
    except PageError as exc:
        if exc.status == 401 and request.url.path == "/p/":
            return RedirectResponse("/p/login", status_code=303)
        return error_page(request, exc.status, exc.message)


@router.get("/p/")
def films_page(request: Request, archive: ArchiveDep) -> Response:
    def build() -> Response:
        lang = lang_of(request)
        view = _session(request, archive)
        assert view is not None
        items = []
        for film in view.films:
            _guard(request, archive, view, Action.READ, film.study_uid)
            report = current_report(archive, film.study_uid)
            facts = study_summary(archive, film.study_uid)
            exam = (report.exam_name if report else "") or facts.get("description", "")
            date = day((report.exam_date if report else "") or facts.get("study_date", ""))
            hosp = (report.hospital if report else "") or facts.get("institution", "")
            items.append(
                f'<li><a class="film" href="/p/films/{film.film_id}"><b>{e(exam or "—")}</b>'
                f"<span>{e(date)}</span><span>{e(hosp)}</span></a></li>"
            )
        inner = "".join(items) or f'<li class="empty">{t(lang, "no_films")}</li>'
        body = f'<section class="card"><h1>{t(lang, "films")}</h1><ul class="films">{inner}</ul>'
        body += _logout(lang) + "</section>"
        return page(request, t(lang, "films"), body, csrf=view.csrf)

    return _handle(request, build)


def _logout(lang: str) -> str:
    return (
        f'<form class="api" data-api="/api/logout"><button class="link" type="submit">'
        f"{t(lang, 'logout')}</button></form>"
    )


def _row(label: str, value: str) -> str:
    return f"<tr><th>{label}</th><td>{e(value or '—')}</td></tr>"


@router.get("/p/films/{film_id}")
def film_page(film_id: str, request: Request, archive: ArchiveDep) -> Response:
    def build() -> Response:
        lang = lang_of(request)
        view = _session(request, archive)
        assert view is not None
        film = _film_in(view, film_id)
        _guard(request, archive, view, Action.READ, film.study_uid)
        report = current_report(archive, film.study_uid)
        facts = study_summary(archive, film.study_uid)
        owner = view.kind != "share"
        can_download = "download" in view.principal.scopes
        parts = [f'<section class="card"><h1>{t(lang, "basic")}</h1><table class="facts">']
        r = report
        parts += [
            _row(t(lang, "hospital"), (r.hospital if r else "") or facts.get("institution", "")
                 or archive.settings.hospital_name),
            _row(t(lang, "patient"),
                 (r.patient_name if r else "") or facts.get("patient_name", "")),
            _row(t(lang, "exam"), (r.exam_name if r else "") or facts.get("description", "")),
            _row(t(lang, "date"), day((r.exam_date if r else "") or facts.get("study_date", ""))),
            _row(t(lang, "body_part"), (r.body_part if r else "") or facts.get("body_part", "")),
            _row(t(lang, "images"), t(lang, "n_images", series=facts.get("num_series", "0"),
                                      instances=facts.get("num_instances", "0"))),
        ]  # fmt: skip
        parts.append("</table></section>")
        if r is None:
            parts.append(f'<section class="card"><p>{t(lang, "no_report")}</p></section>')
        else:
            if r.version > 1:
                parts.append(f'<p class="note">{t(lang, "corrected", v=r.version)}</p>')
            parts.append(
                f'<section class="card report"><h2>{t(lang, "findings")}</h2>'
                f'<p class="text" id="findings">{e(r.findings or "—")}</p>'
                f'<h2>{t(lang, "impression")}</h2><p class="text" id="impression">'
                f'{e(r.impression or "—")}</p><p class="small">{t(lang, "doctors")}: '
                f"{e(r.reporting_doctor or '—')} / {e(r.reviewing_doctor or '—')}</p></section>"
            )
        actions = [
            f'<a class="btn primary" id="view-images" href="/viewer/?study={e(film.study_uid)}">'
            f"{t(lang, 'view_images')}</a>",
        ]
        if r is not None:
            actions.append(
                f'<a class="btn" id="view-report" href="/api/films/{film.film_id}/report.pdf">'
                f"{t(lang, 'view_report')}</a>"
            )
        if can_download:
            actions.append(
                f'<a class="btn" id="download-zip" href="/api/films/{film.film_id}/download.zip"'
                f" download>{t(lang, 'download_zip')}</a>"
            )
            actions.append(
                f'<a class="btn" id="download-jpeg" href="/api/films/{film.film_id}/'
                f'key-images.zip" download>{t(lang, "download_jpeg")}</a>'
            )
        if owner:
            actions.append(
                f'<a class="btn" id="share" href="/p/films/{film.film_id}/share">'
                f"{t(lang, 'share')}</a>"
            )
            actions.append(
                f'<a class="btn" id="history" href="/p/films/{film.film_id}/history">'
                f"{t(lang, 'history')}</a>"
            )
        parts.append(f'<section class="actions">{"".join(actions)}</section>')
        if len(view.films) > 1:
            parts.append(f'<p><a href="/p/">{t(lang, "back")}</a></p>')
        parts.append(f'<p class="small">{t(lang, "disclaimer")}</p>')
        if owner:
            parts.append(_logout(lang))
        title = t(lang, "app") if owner else t(lang, "shared_view")
        return page(request, title, "".join(parts), csrf=view.csrf)

    return _handle(request, build)


@router.get("/p/films/{film_id}/share")
def share_page(film_id: str, request: Request, archive: ArchiveDep) -> Response:
    def build() -> Response:
        lang = lang_of(request)
        view, film = _managed_film(request, archive, film_id)
        others = ""
        if len(view.films) > 1:  # a phone session: several films may go in one share
            boxes = []
            for f in view.films:
                report = current_report(archive, f.study_uid)
                name = (report.exam_name if report else "") or study_summary(
                    archive, f.study_uid
                ).get("description", f.film_id)
                checked = " checked disabled" if f.film_id == film.film_id else ""
                boxes.append(
                    f'<label class="inline"><input type="checkbox" name="film" '
                    f'value="{f.film_id}"{checked}>{e(name)}</label>'
                )
            others = (
                f"<fieldset><legend>{t(lang, 'which_films')}</legend>{''.join(boxes)}</fieldset>"
            )
        form = f"""<section class="card"><h1>{t(lang, "new_share")}</h1>
<form class="share-form" data-film="{film.film_id}">{others}
<fieldset><legend>{t(lang, "expiry")}</legend>
<label class="inline"><input type="radio" name="days" value="1">{t(lang, "d1")}</label>
<label class="inline"><input type="radio" name="days" value="7" checked>{t(lang, "d7")}</label>
<label class="inline"><input type="radio" name="days" value="30">{t(lang, "d30")}</label>
<label class="inline"><input type="radio" name="days" value="custom">{t(lang, "custom")}
<input name="custom_days" type="number" min="1" max="365" class="short"></label></fieldset>
<label>{t(lang, "label")}<input name="label" maxlength="64"></label>
<label>{t(lang, "extra_code")}<input name="code" inputmode="numeric" maxlength="8"></label>
<label class="inline"><input type="checkbox" name="allow_download">{t(lang, "allow_download")}
</label><button type="submit">{t(lang, "create_share")}</button>
<p class="msg" role="alert"></p></form><div class="share-result" hidden>
<input class="share-link" readonly><button type="button" class="copy">{t(lang, "copy")}</button>
<div class="qr"></div></div></section>"""
        rows = []
        for s in list_shares(archive, [film]):
            state = t(lang, f"state_{s.state}")
            mode = t(lang, "can_download") if s.allow_download else t(lang, "view_only")
            revoke = (
                f'<button class="revoke" data-share="{s.share_id}">{t(lang, "revoke")}</button>'
                if s.state == "active"
                else ""
            )
            assisted = (
                f'<span class="small">{t(lang, "assisted", who=e(s.assisted_by))}</span>'
                if s.assisted_by
                else ""
            )
            rows.append(
                f'<li class="share {s.state}" data-share="{s.share_id}"><b>{e(s.label or "—")}'
                f"</b> <span>{state} · {mode} · {t(lang, 'expires')} "
                f"{local(s.expires_at)}</span>{assisted}"
                f'<input class="share-link" readonly value="{e(s.link)}">{revoke}</li>'
            )
        listing = "".join(rows) or f'<li class="empty">{t(lang, "no_shares")}</li>'
        body = form + (
            f'<section class="card"><h2>{t(lang, "your_shares")}</h2><ul class="shares">'
            f"{listing}</ul></section>"
            f'<p><a href="/p/films/{film.film_id}">{t(lang, "back")}</a></p>'
        )
        return page(request, t(lang, "share"), body, csrf=view.csrf)

    return _handle(request, build)


@router.get("/p/films/{film_id}/history")
def history_page(film_id: str, request: Request, archive: ArchiveDep) -> Response:
    def build() -> Response:
        lang = lang_of(request)
        view, film = _managed_film(request, archive, film_id)
        rows = []
        for h in film_history(archive, film):
            who = h["who_en"] if lang == "en" else h["who_zh"]
            what = h["what_en"] if lang == "en" else h["what_zh"]
            if h["outcome"] != "allow":
                what += f' · <b class="deny">{t(lang, "denied")}</b>'
            count = t(lang, "times", n=h["count"]) if h["count"] > 1 else ""
            rows.append(
                f'<tr class="{h["who_kind"]} {h["outcome"]}">'
                f"<td>{e(local(h['at']))}</td>"
                f"<td>{e(who)}</td><td>{what} {count}</td></tr>"
            )
        table = "".join(rows) or f'<tr><td colspan="3">{t(lang, "no_history")}</td></tr>'
        body = (
            f'<section class="card"><h1>{t(lang, "history")}</h1><table class="history"><tr>'
            f"<th>{t(lang, 'when')}</th><th>{t(lang, 'who')}</th><th>{t(lang, 'what')}"
            f"</th></tr>{table}</table></section>"
            f'<p><a href="/p/films/{film.film_id}">{t(lang, "back")}</a></p>'
        )
        return page(request, t(lang, "history"), body, csrf=view.csrf)

    return _handle(request, build)

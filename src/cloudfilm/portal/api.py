"""Our own JSON API for reports, films, verification and shares (``/api/...``).

No DICOM standard covers these, so they are plain JSON with RFC 9457 problems. Every endpoint
that reveals or changes something asks ``archive.authorize`` with the caller's principal (an API
token of the hospital, or the cookie session of a patient or a share visitor); cookie writes also
need the session's CSRF token.
"""

from __future__ import annotations

import io
import zipfile
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from cloudfilm.access import Action, Principal
from cloudfilm.http.problems import Problem
from cloudfilm.http.security import ArchiveDep, PrincipalDep, client_address
from cloudfilm.portal import films as films_mod
from cloudfilm.portal.history import film_history
from cloudfilm.portal.models import Film
from cloudfilm.portal.printable import qr_svg, qr_svg_file, report_pdf
from cloudfilm.portal.reports import (
    MAX_PDF_BYTES,
    ReportError,
    ReportFields,
    current_report,
    fields_from_text,
    pdf_text,
    save_report,
    study_summary,
)
from cloudfilm.portal.sessions import load_session, require_csrf, start_session
from cloudfilm.portal.shares import (
    ShareError,
    assisting_user,
    create_share,
    list_shares,
    revoke_share,
)
from cloudfilm.portal.verify import VerifyFailed, verify_film
from cloudfilm.portal.zipdl import stream_zip, study_entries
from cloudfilm.regional import identifiers as ids
from cloudfilm.regional.identifiers import Identifier

router = APIRouter(prefix="/api", tags=["cloud film"])
NO_STORE = {"Cache-Control": "no-store"}


def verify_problem(exc: VerifyFailed) -> Problem:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
    return Problem(exc.status, exc.en, headers=headers, zh=exc.zh, en=exc.en)


def film_or_404(archive: Any, film_id: str) -> Film:
    film = films_mod.get_film(archive, film_id)
    if film is None or film.revoked_at is not None:
        raise Problem(404, "no such film")
    return film


def _cookie_write_check(request: Request, archive: Any, principal: Principal) -> None:
    if principal.kind in ("patient", "share"):
        view = load_session(archive, request)
        if view is None:
            raise Problem(401, "session required")
        require_csrf(request, view)


# --- reports in ------------------------------------------------------------------------------


def report_identifiers(values: dict[str, Any]) -> list[Identifier]:
    """``national_id`` and ``insurance_card`` of a report: they link the patient record to a
    person (regional sharing); a malformed one is refused rather than silently dropped."""
    found = []
    for kind, name in ((ids.NATIONAL_ID, "national_id"), (ids.INSURANCE, "insurance_card")):
        value = values.get(name)
        if value:
            try:
                found.append(ids.parse(kind, str(value)))
            except ids.BadIdentifier as exc:
                raise Problem(400, f"{name}: {exc}") from None
    return found


@router.post("/reports", status_code=201, summary="Send a report (JSON, or a PDF + its keys)")
async def post_report(request: Request, archive: ArchiveDep, principal: PrincipalDep) -> Any:
    """JSON body with the report fields, or ``multipart/form-data`` with ``pdf`` (the virtual
    printer's file) and the keys to match it (study_uid / accession_number / exam_number);
    fields given in the form win over those read from the PDF."""
    archive.authorize(principal, Action.WRITE, None, detail="report in")
    assert principal.hospital is not None  # the access check lets no one else write
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    pdf: bytes | None = None
    if ctype == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise Problem(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise Problem(400, "the body must be a JSON object")
        given, source = ReportFields.from_mapping(body), "json"
        identifiers = report_identifiers(body)
    elif ctype == "multipart/form-data":
        # the context closes the spooled temporary file behind the upload, also on errors
        async with request.form(max_part_size=MAX_PDF_BYTES) as form:
            upload = form.get("pdf")
            if upload is None or isinstance(upload, str):
                raise Problem(400, "multipart reports need a 'pdf' file part")
            pdf = await upload.read()
            values = {k: v for k, v in form.items() if isinstance(v, str)}
        identifiers = report_identifiers(values)
        if not pdf.startswith(b"%PDF"):
            raise Problem(415, "the 'pdf' part is not a PDF")
        try:
            extracted = fields_from_text(pdf_text(pdf))
        except ReportError as exc:
            raise Problem(422, str(exc)) from None
        given, source = ReportFields.from_mapping(values).merged_over(extracted), "pdf"
    else:
        raise Problem(415, "send application/json or multipart/form-data with a 'pdf' part")
    try:
        row = save_report(
            archive, given, source=source, hospital=principal.hospital, pdf=pdf,
            identifiers=identifiers,
        )  # fmt: skip
    except ReportError as exc:
        raise Problem(422, str(exc)) from None
    issuer = getattr(request.app.state, "film_issuer", None)
    if issuer is not None:
        issuer.wake.set()
    fields = {n: getattr(row, n) for n in ReportFields.names() if n not in ("study_uid", "phone")}
    return {
        "report_id": row.report_id,
        "version": row.version,
        "source": source,
        "matched_study_uid": row.study_uid,
        "fields": fields,
    }


# --- films --------------------------------------------------------------------------------


class IssueIn(BaseModel):
    study_uid: str = Field(pattern=r"^[0-9.]{1,64}$")


@router.post("/films", summary="Issue the film of a study now (hospital desk)")
def post_film(body: IssueIn, archive: ArchiveDep, principal: PrincipalDep) -> Any:
    archive.authorize(principal, Action.FILM, body.study_uid, detail="issue film")
    if current_report(archive, body.study_uid) is None:
        raise Problem(409, "the study has no report yet; a film is issued with its report")
    film, _created = films_mod.issue_film(archive, body.study_uid)
    link = films_mod.film_link(archive, film)
    return JSONResponse(
        {"film_id": film.film_id, "link": link.link, "access_code": link.code},
        headers=NO_STORE,
    )


@router.get("/films", summary="The film of a study (hospital systems)")
def get_film_of_study(study_uid: str, archive: ArchiveDep, principal: PrincipalDep) -> Any:
    archive.authorize(principal, Action.FILM, study_uid, detail="film lookup")
    film = films_mod.film_for_study(archive, study_uid)
    if film is None:
        raise Problem(404, "no film for this study yet")
    link = films_mod.film_link(archive, film)
    return JSONResponse(
        {
            "film_id": film.film_id,
            "link": link.link,
            "access_code": link.code,
            "issued_at": film.issued_at.isoformat(),
            "notified_at": film.notified_at.isoformat() if film.notified_at else None,
        },
        headers=NO_STORE,
    )


@router.get("/films/{film_id}/qr.svg", summary="QR code of the film link")
def film_qr(film_id: str, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    film = film_or_404(archive, film_id)
    action = Action.MANAGE if principal.kind == "patient" else Action.FILM
    archive.authorize(principal, action, film.study_uid, detail="film qr")
    svg = qr_svg_file(films_mod.film_link(archive, film).link)
    return Response(svg, media_type="image/svg+xml", headers=NO_STORE)


@router.get("/films/{film_id}/printable.pdf", summary="Paper report with QR and access code")
def film_printable(film_id: str, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    film = film_or_404(archive, film_id)
    archive.authorize(principal, Action.FILM, film.study_uid, detail="printable report")
    report = current_report(archive, film.study_uid)
    if report is None:
        raise Problem(404, "the study has no report")
    link = films_mod.film_link(archive, film)
    name = films_mod.hospital_name(archive, film.hospital_pk)
    index_id = study_summary(archive, film.study_uid).get("index_id", "")
    pdf = report_pdf(report, name, link=link.link, code=link.code, index_id=index_id)
    return Response(pdf, media_type="application/pdf", headers=NO_STORE)


@router.get("/films/{film_id}/report.pdf", summary="The original report")
def film_report_pdf(film_id: str, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    """The reporting system's own PDF, byte for byte; a rendering of the report fields when
    the report came as JSON or SR (no access code on it: share visitors read it too)."""
    film = film_or_404(archive, film_id)
    archive.authorize(principal, Action.READ, film.study_uid, detail="report pdf")
    report = current_report(archive, film.study_uid)
    if report is None:
        raise Problem(404, "the study has no report")
    if report.pdf_key:
        body = archive.blobs.get(report.pdf_key)
    else:
        index_id = study_summary(archive, film.study_uid).get("index_id", "")
        body = report_pdf(
            report, films_mod.hospital_name(archive, film.hospital_pk), index_id=index_id
        )
    headers = {"Cache-Control": "private, no-store", "Content-Disposition": "inline"}
    return Response(body, media_type="application/pdf", headers=headers)


@router.get("/films/{film_id}/download.zip", summary="Original DICOM with DICOMDIR, streamed")
def film_zip(film_id: str, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    film = film_or_404(archive, film_id)
    archive.authorize(principal, Action.DOWNLOAD, film.study_uid, detail="zip download")
    entries, facts = study_entries(archive, film.study_uid)
    if not entries:
        raise Problem(404, "the study has no images")
    headers = {
        "Content-Disposition": f'attachment; filename="cloudfilm-{film.film_id}.zip"',
        "Cache-Control": "private, no-store",
    }
    return StreamingResponse(
        stream_zip(archive, entries, facts), media_type="application/zip", headers=headers
    )


@router.get("/films/{film_id}/key-images.zip", summary="The middle image of each series, JPEG")
def film_key_images(
    film_id: str, request: Request, archive: ArchiveDep, principal: PrincipalDep
) -> Response:
    from cloudfilm.dicomweb.rendered import render_instance
    from cloudfilm.dicomweb.resources import find_instances
    from cloudfilm.imaging.render import RenderOptions

    film = film_or_404(archive, film_id)
    archive.authorize(principal, Action.DOWNLOAD, film.study_uid, detail="key images")
    refs = find_instances(archive, film.study_uid, with_meta=True)
    by_series: dict[str, list[Any]] = {}
    for ref in refs:
        if ref.rows:
            by_series.setdefault(ref.series_uid, []).append(ref)
    options = RenderOptions(media_type="image/jpeg", window=None, viewport=None, quality=90)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for n, series in enumerate(by_series.values(), start=1):
            ref = series[len(series) // 2]
            try:
                jpeg = render_instance(request.app.state.pixels, ref, 1, options)
            except Problem:
                continue
            zf.writestr(f"series{n:02d}.jpg", jpeg)
    headers = {
        "Content-Disposition": f'attachment; filename="cloudfilm-{film.film_id}-images.zip"',
        "Cache-Control": "private, no-store",
    }
    return Response(buf.getvalue(), media_type="application/zip", headers=headers)


@router.get("/films/{film_id}/history", summary="Who looked at this film (the patient only)")
def film_history_api(film_id: str, archive: ArchiveDep, principal: PrincipalDep) -> Any:
    film = film_or_404(archive, film_id)
    archive.authorize(principal, Action.MANAGE, film.study_uid, detail="access history")
    return JSONResponse({"entries": film_history(archive, film)}, headers=NO_STORE)


# --- verification ---------------------------------------------------------------------------


class VerifyIn(BaseModel):
    token: str = Field(max_length=100)
    code: str = Field(max_length=32)


@router.post("/verify", summary="Verify a film link with its access code or phone suffix")
def post_verify(body: VerifyIn, request: Request, archive: ArchiveDep) -> Any:
    try:
        film = verify_film(archive, body.token, body.code, client_address(request))
    except VerifyFailed as exc:
        raise verify_problem(exc) from None
    response = JSONResponse({"film_id": film.film_id, "next": f"/p/films/{film.film_id}"})
    start_session(archive, request, response, "film", film.film_id)
    return response


# --- shares ---------------------------------------------------------------------------------


NO_NUL = r"^[^\x00]*$"
"""Text that reaches the index: PostgreSQL takes no NUL character."""


class ShareIn(BaseModel):
    film_ids: list[Annotated[str, Field(pattern=NO_NUL)]] = Field(min_length=1, max_length=50)
    days: float | None = Field(default=None, gt=0, le=365)
    expires_at: datetime | None = None
    code: str = Field(default="", max_length=16, pattern=NO_NUL)
    allow_download: bool = False
    label: str = Field(default="", max_length=64, pattern=NO_NUL)
    assisted_by: str = Field(default="", max_length=128, pattern=NO_NUL)


@router.post("/shares", status_code=201, summary="Share films with a doctor")
def post_share(
    body: ShareIn, request: Request, archive: ArchiveDep, principal: PrincipalDep
) -> Any:
    _cookie_write_check(request, archive, principal)
    films = [film_or_404(archive, fid) for fid in dict.fromkeys(body.film_ids)]
    patient = principal.kind == "patient"
    for film in films:
        # the patient consents; a hospital's film desk records consent given in person
        action = Action.MANAGE if patient else Action.CONSENT
        archive.authorize(principal, action, film.study_uid, detail="create share")
    try:
        assisted = (
            ""
            if patient
            else assisting_user(archive, principal, films[0].hospital_pk, body.assisted_by)
        )
        info = create_share(
            archive, films, days=body.days, expires_at=body.expires_at, code=body.code,
            allow_download=body.allow_download, label=body.label, created_by=principal.label,
            assisted_by=assisted,
        )  # fmt: skip
    except ShareError as exc:
        raise Problem(400, str(exc)) from None
    out = info.as_json()
    out["qr_svg"] = qr_svg(info.link)
    return JSONResponse(out, status_code=201, headers=NO_STORE)


@router.get("/shares", summary="The shares of the caller's films")
def get_shares(
    request: Request, archive: ArchiveDep, principal: PrincipalDep
) -> Annotated[Any, "list"]:
    view = load_session(archive, request)
    if view is None or view.kind == "share":
        raise Problem(403, "only the patient lists the shares of a film")
    for film in view.films:
        archive.authorize(principal, Action.MANAGE, film.study_uid, detail="list shares")
    return JSONResponse(
        {"shares": [s.as_json() for s in list_shares(archive, view.films)]}, headers=NO_STORE
    )


@router.delete("/shares/{share_id}", summary="Revoke a share at once")
def delete_share(
    share_id: str, request: Request, archive: ArchiveDep, principal: PrincipalDep
) -> Any:
    view = load_session(archive, request)
    if view is None or view.kind == "share":
        raise Problem(403, "only the patient revokes a share")
    require_csrf(request, view)
    for film in view.films:
        archive.authorize(principal, Action.MANAGE, film.study_uid, detail=f"revoke {share_id}")
    try:
        info = revoke_share(archive, share_id, view.films, principal.label)
    except ShareError as exc:
        raise Problem(404, str(exc)) from None
    return JSONResponse(info.as_json(), headers=NO_STORE)

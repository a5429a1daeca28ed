"""IHE Invoke Image Display (IID, RAD-106): the HIS or EMR opens a study's images by URL.

``GET /iid`` (also ``/IHEInvokeImageDisplay``) with the profile's parameters:

- ``requestType=STUDY``: ``studyUID`` (one or more, comma-separated) or ``accessionNumber``
  (one or more, comma-separated; matched within the user's hospital), ``patientID`` optional
  (then the studies must be that patient's);
- ``requestType=PATIENT``: ``patientID`` (HL7 CX ``id^^^namespace&oid&ISO`` or a plain ID),
  optionally ``lowerDateTime``, ``upperDateTime``, ``mostRecentResults``,
  ``modalitiesInStudy``;
- both: ``viewerType`` (``IHE_BIR`` or absent; any other opens the same viewer),
  ``diagnosticQuality`` and ``keyImagesOnly`` (``true``/``false``; the viewer always loads the
  original pixels, and the whole study, as no key-image selections are kept).

The answer is a redirect to the zero-footprint viewer (``/viewer/?study=…``), which the
console cookie authenticates. Not logged in: the console login, coming back here after it.
Each study goes through the one access check (``Action.READ``, audited): a study of another
hospital without the patient's consent is a 403 page, an unknown one a 404 page.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cloudfilm.access import AccessDenied, Action, Principal
from cloudfilm.console.session import ConsoleRefused, ConsoleView, require_view
from cloudfilm.http.templating import add_texts
from cloudfilm.storage.query import Query, QueryError, run_query

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

router = APIRouter(include_in_schema=False)
MAX_STUDIES = 20
_UID = re.compile(r"^[0-9.]{1,64}$")
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})")
_BOOL = {"true", "false"}

add_texts(
    {
        "iid.bad_request": (
            "影像调阅请求的参数不正确（requestType、studyUID、accessionNumber、patientID）。",
            "The image display request's parameters are not right "
            "(requestType, studyUID, accessionNumber, patientID).",
        ),
        "iid.refused": (
            "该检查属于其他医院，且没有患者的授权。",
            "This exam belongs to another hospital and the patient has not consented.",
        ),
        "iid.not_found": ("未找到该检查。", "No such exam."),
    }
)


class _Bad(Exception):
    """A parameter the profile does not allow: the 400 page."""


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _flag(request: Request, name: str) -> None:
    value = request.query_params.get(name)
    if value is not None and value.lower() not in _BOOL:
        raise _Bad(name)


def _patient(cx: str) -> tuple[str, set[str]]:
    """(Patient ID, names its issuer may go by) from an HL7 CX value or a plain ID."""
    parts = cx.split("^")
    issuer = parts[3] if len(parts) > 3 else ""
    names = {p for p in issuer.split("&")[:2] if p}
    if not parts[0] or len(parts[0]) > 64 or "\\" in parts[0] or "*" in parts[0]:
        raise _Bad("patientID")
    return parts[0], names


def _date(value: str | None) -> str:
    if not value:
        return ""
    m = _DATE.match(value.strip())
    if not m:
        raise _Bad("date")
    return "".join(m.groups())


def _search(
    archive: Archive, principal: Principal, keys: dict[str, str], detail: str
) -> list[dict[str, object]]:
    """Studies matching ``keys`` that the access check lets this user search (newest first)."""
    decision = archive.authorize(principal, Action.QUERY, None, detail)
    q = Query(
        level="STUDY",
        keys=keys,
        limit=MAX_STUDIES,
        allowed_studies=decision.studies,
        hospital=decision.hospital,
        also_studies=decision.also,
    )
    with archive.db.read() as session:
        try:
            return run_query(session, q).rows
        except QueryError:
            raise _Bad("query") from None


def _issuer_ok(row: dict[str, object], issuers: set[str]) -> bool:
    held = str(row.get("IssuerOfPatientID") or "")
    return not issuers or not held or held in issuers


def _read_all(archive: Archive, view: ConsoleView, uids: list[str]) -> None:
    """Each study through the one access check (audited): another hospital's is refused."""
    for uid in uids:
        try:
            archive.authorize(view.principal, Action.READ, uid, "IHE IID")
        except AccessDenied:
            raise ConsoleRefused(403, "iid.refused", view) from None


def _studies(request: Request, view: ConsoleView) -> list[str]:
    archive: Archive = request.app.state.archive
    qp = request.query_params
    kind = (qp.get("requestType") or "").upper()
    for name in ("diagnosticQuality", "keyImagesOnly"):
        _flag(request, name)
    pid, issuers = _patient(qp["patientID"]) if qp.get("patientID") else ("", set())
    principal = view.principal
    if kind == "STUDY":
        uids, accessions = _list(qp.get("studyUID")), _list(qp.get("accessionNumber"))
        if not (uids or accessions) or len(uids) + len(accessions) > MAX_STUDIES:
            raise _Bad("studyUID")
        if any(not _UID.match(u) for u in uids) or any(len(a) > 64 for a in accessions):
            raise _Bad("studyUID")
        if accessions:
            keys = {"AccessionNumber": "\\".join(a.replace("\\", "") for a in accessions)}
            if pid:
                keys["PatientID"] = pid
            rows = _search(archive, principal, keys, "IHE IID accession")
            uids += [str(r["StudyInstanceUID"]) for r in rows if _issuer_ok(r, issuers)]
            if not uids:
                raise ConsoleRefused(404, "iid.not_found", view)
        uids = list(dict.fromkeys(uids))
        _read_all(archive, view, uids)
        keys = {"StudyInstanceUID": "\\".join(uids)}
        if pid:
            keys["PatientID"] = pid
        found = {
            str(r["StudyInstanceUID"])
            for r in _search(archive, principal, keys, "IHE IID study")
            if _issuer_ok(r, issuers)
        }
        if any(u not in found for u in uids):
            raise ConsoleRefused(404, "iid.not_found", view)
        return uids
    if kind == "PATIENT":
        if not pid:
            raise _Bad("patientID")
        keys = {"PatientID": pid}
        lo, hi = _date(qp.get("lowerDateTime")), _date(qp.get("upperDateTime"))
        if lo or hi:
            keys["StudyDate"] = f"{lo}-{hi}"
        modalities = [m.upper() for m in _list(qp.get("modalitiesInStudy"))]
        if any(not re.fullmatch(r"[A-Z0-9]{1,16}", m) for m in modalities):
            raise _Bad("modalitiesInStudy")
        if modalities:
            keys["ModalitiesInStudy"] = "\\".join(modalities)
        most = qp.get("mostRecentResults") or "0"
        if not most.isdigit():
            raise _Bad("mostRecentResults")
        rows = [
            r for r in _search(archive, principal, keys, "IHE IID patient")
            if _issuer_ok(r, issuers)
        ]  # fmt: skip
        uids = [str(r["StudyInstanceUID"]) for r in rows][: int(most) or MAX_STUDIES]
        if not uids:
            raise ConsoleRefused(404, "iid.not_found", view)
        _read_all(archive, view, uids)
        return uids
    raise _Bad("requestType")


@router.get("/iid")
@router.get("/IHEInvokeImageDisplay")
def invoke_image_display(request: Request) -> Response:
    view = require_view(request, role_scope="read")
    try:
        uids = _studies(request, view)
    except _Bad:
        raise ConsoleRefused(400, "iid.bad_request", view) from None
    query = urlencode([("study", uid) for uid in uids])
    return RedirectResponse(f"/viewer/?{query}", status_code=303)

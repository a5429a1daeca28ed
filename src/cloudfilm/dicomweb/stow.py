"""STOW-RS (PS3.18 10.5): store instances sent as multipart/related application/dicom.

The body is read part by part (never whole); each part goes through the one ingest function in
the thread pool. A bad part fails alone and is listed in FailedSOPSequence with its reason; the
good parts are stored. Status: 200 all stored, 202 some failed or warned, 409 none stored
(413 when every failure was an oversize part), 415 when the body is not DICOM multipart.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import pydicom
from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from cloudfilm.access import AccessDenied, Action, Principal
from cloudfilm.archive import Archive
from cloudfilm.dicomweb.json import dataset
from cloudfilm.dicomweb.multipart import MultipartError, Part, parse_content_type, read_parts
from cloudfilm.dicomweb.resources import base_url
from cloudfilm.dicomweb.wado import UID
from cloudfilm.http.decoding import BodyDecodingError, check_encoding, decoded
from cloudfilm.http.problems import Problem
from cloudfilm.http.security import ArchiveDep, PrincipalDep
from cloudfilm.ingest import Rejected, RejectReason
from cloudfilm.metrics import instruments

log = logging.getLogger(__name__)
router = APIRouter(prefix="/dicom-web", tags=["STOW-RS"])

DICOM_JSON = "application/dicom+json"
# PS3.18 Table 10.5.3-2 / PS3.4 C-STORE status codes used as FailureReason / WarningReason
FAIL_PROCESSING = 0x0110
FAIL_STUDY_MISMATCH = 0xA901
FAIL_NOT_AUTHORISED = 0x0124
FAIL_MEDIA_TYPE = 0xC000
WARN_KEPT_FIRST = 0xB006
"""Elements discarded: the instance was already stored with other content; the first is kept."""


@dataclass
class Outcome:
    sop_class_uid: str
    sop_instance_uid: str
    failure: int | None = None
    warning: int | None = None
    message: str = ""
    too_large: bool = False
    study_uid: str = ""
    sha256: str = ""


IN_FLIGHT = 3
"""Parts being stored at once while the next ones are read: the network, the blob fsyncs and
the index commits overlap, and memory stays bounded (a few parts)."""


def as_part10(data: bytes) -> bytes:
    """Add the 128-byte preamble and 'DICM' when a sender left them out.

    pydicom's ``dcmwrite`` of a plain Dataset (what dicomweb-client sends) writes the file meta
    group without the preamble. The data set and its meta information are unchanged; only the
    fixed Part-10 header a file needs is put in front.
    """
    if data[128:132] == b"DICM":
        return data
    if data[:4] == b"DICM":
        return bytes(128) + data
    if data[:2] == b"\x02\x00" and data[4:6].isalpha():  # file meta, explicit VR LE
        return bytes(128) + b"DICM" + data
    return data


def _peek_uids(data: bytes) -> tuple[str, str, str]:
    """(study, SOP class, SOP instance) without parsing the whole instance ('' when unreadable)."""
    try:
        ds = pydicom.dcmread(
            io.BytesIO(data),
            stop_before_pixels=True,
            specific_tags=["StudyInstanceUID", "SOPClassUID", "SOPInstanceUID"],
        )
        return (
            str(ds.get("StudyInstanceUID", "") or ""),
            str(ds.get("SOPClassUID", "") or ""),
            str(ds.get("SOPInstanceUID", "") or ""),
        )
    except Exception:
        return "", "", ""


def _store_part(
    archive: Archive,
    principal: Principal,
    part: Part,
    target_study: str | None,
    source: str,
    uids: tuple[str, str, str],
) -> Outcome:
    """Runs in the thread pool: check, authorise and ingest one part (``uids``: _peek_uids of
    its body, already made Part-10 by the caller)."""
    study, sop_class, sop_uid = uids
    ctype = parse_content_type(part.content_type)[0] if part.content_type else "application/dicom"
    if ctype != "application/dicom":
        return Outcome(sop_class, sop_uid, FAIL_MEDIA_TYPE, message=f"part of type {ctype}")
    if part.oversize:  # never handed to ingest: counted here as ingest would have refused it
        instruments.instance_rejected(source, RejectReason.TOO_LARGE.code, part.size)
        return Outcome(
            sop_class,
            sop_uid,
            RejectReason.TOO_LARGE.dimse_status,
            message=f"part of {part.size} bytes exceeds {archive.settings.max_instance_bytes}",
            too_large=True,
        )
    if target_study is not None and study and study != target_study:
        return Outcome(sop_class, sop_uid, FAIL_STUDY_MISMATCH, message="other study")
    try:
        archive.authorize(principal, Action.WRITE, study or None, detail=f"stow {sop_uid}")
    except AccessDenied as exc:
        return Outcome(sop_class, sop_uid, FAIL_NOT_AUTHORISED, message=str(exc))
    assert principal.hospital is not None  # the access check lets no one else write
    try:
        result = archive.ingest(part.body, hospital=principal.hospital, source=source)
    except Rejected as exc:
        return Outcome(
            sop_class,
            sop_uid,
            exc.reason.dimse_status,
            message=exc.message,
            too_large=exc.reason is RejectReason.TOO_LARGE,
        )
    except Exception as exc:  # never lose the other parts' answers over one failure
        log.exception("ingest failed for a STOW-RS part")
        return Outcome(sop_class, sop_uid, FAIL_PROCESSING, message=str(exc))
    return Outcome(
        result.sop_class_uid,
        result.sop_instance_uid,
        warning=WARN_KEPT_FIRST if result.is_warning else None,
        study_uid=study,
        sha256=result.sha256,
    )


PRIVATE_CREATOR = "CLOUDFILM 1.0"


def stored_sha256(sha: str) -> dict[str, Any]:
    """The private element (0009,1001) "CLOUDFILM 1.0": the SHA-256 of the bytes the archive
    holds for the instance. PS3.18 has no place for it, and a sender that must delete its copy
    only once the archive holds exactly those bytes (the edge gateway) needs it; a private
    block is how PS3.5 lets a response carry what the standard does not define."""
    return {
        "00090010": {"vr": "LO", "Value": [PRIVATE_CREATOR]},
        "00091001": {"vr": "LO", "Value": [sha]},
    }


def _response_body(outcomes: list[Outcome], base: str, study_of: dict[str, str]) -> dict[str, Any]:
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    body: dict[str, Any] = {}
    studies = {study_of[o.sop_instance_uid] for o in stored if o.sop_instance_uid in study_of}
    if len(studies) == 1:
        body.update(dataset([("RetrieveURL", f"{base}/studies/{studies.pop()}")]))
    if failed:
        body["00081198"] = {
            "vr": "SQ",
            "Value": [
                dataset(
                    [
                        ("ReferencedSOPClassUID", o.sop_class_uid),
                        ("ReferencedSOPInstanceUID", o.sop_instance_uid),
                        ("FailureReason", o.failure),
                    ]
                )
                for o in failed
            ],
        }
    if stored:
        items = []
        for o in stored:
            pairs: list[tuple[str, Any]] = [
                ("ReferencedSOPClassUID", o.sop_class_uid),
                ("ReferencedSOPInstanceUID", o.sop_instance_uid),
            ]
            study = study_of.get(o.sop_instance_uid)
            if study:
                pairs.append(
                    ("RetrieveURL", f"{base}/studies/{study}/instances/{o.sop_instance_uid}")
                )
            if o.warning is not None:
                pairs.append(("WarningReason", o.warning))
            item = dataset(pairs)
            if o.sha256:
                item.update(stored_sha256(o.sha256))
            items.append(dict(sorted(item.items())))
        body["00081199"] = {"vr": "SQ", "Value": items}
    return dict(sorted(body.items()))


async def _stow(
    request: Request, archive: Archive, principal: Principal, target_study: str | None
) -> Response:
    # Fail fast on a refused principal, before looking at (or reading) the body.
    await run_in_threadpool(
        archive.authorize, principal, Action.WRITE, target_study, detail="stow request"
    )
    media, params = parse_content_type(request.headers.get("content-type", ""))
    if media != "multipart/related":
        raise Problem(
            415,
            'STOW-RS takes multipart/related; type="application/dicom" '
            f"(got {media or 'no content type'})",
        )
    inner = params.get("type", "application/dicom").lower()
    if inner != "application/dicom":
        raise Problem(415, f"only application/dicom parts are supported (type={inner})")
    encoding = check_encoding(request.headers.get("content-encoding"))
    source = f"stow:{principal.label}@{principal.client}"
    outcomes: list[Outcome] = []
    study_of: dict[str, str] = {}
    limit = archive.settings.max_instance_bytes
    pending: deque[tuple[str, asyncio.Future[Outcome]]] = deque()

    async def settle(n: int) -> None:
        while len(pending) > n:
            outcome = await pending.popleft()[1]
            if outcome.failure is None:
                study_of[outcome.sop_instance_uid] = outcome.study_uid
            outcomes.append(outcome)

    bad_body: MultipartError | BodyDecodingError | None = None
    body_stream = decoded(request.stream(), encoding)
    try:
        async for part in read_parts(body_stream, params.get("boundary", ""), limit):
            if not part.oversize:
                part.body = as_part10(part.body)
            uids = _peek_uids(part.body)
            if uids[2] and any(sop == uids[2] for sop, _ in pending):
                await settle(0)  # the same instance twice: the earlier part is stored first
            task = run_in_threadpool(
                _store_part, archive, principal, part, target_study, source, uids
            )
            pending.append((uids[2], asyncio.ensure_future(task)))
            await settle(IN_FLIGHT - 1)
    except (MultipartError, BodyDecodingError) as exc:
        bad_body = exc
    finally:
        await settle(0)  # answers (in order) for every part already handed over
    if bad_body is not None:
        if not outcomes:
            raise Problem(400, f"malformed multipart body: {bad_body}") from None
        log.warning("STOW-RS body ended badly after %d part(s): %s", len(outcomes), bad_body)
    if not outcomes:
        raise Problem(400, "the request contains no instance")
    failed = [o for o in outcomes if o.failure is not None]
    warned = any(o.warning is not None for o in outcomes)
    if len(failed) == len(outcomes):
        status = 413 if all(o.too_large for o in failed) else 409
    elif failed or warned:
        status = 202
    else:
        status = 200
    import json

    body = _response_body(outcomes, base_url(request, archive), study_of)
    headers = {}
    if failed:
        reasons = "; ".join(f"{o.sop_instance_uid or '?'}: {o.message}" for o in failed[:5])
        headers["Warning"] = f'299 cloudfilm "{_latin1(reasons)[:500]}"'
    return Response(
        json.dumps(body, ensure_ascii=False).encode("utf-8"),
        status_code=status,
        media_type=DICOM_JSON,
        headers=headers,
    )


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1").replace('"', "'")


STOW_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "all instances stored", "content": {DICOM_JSON: {}}},
    202: {"description": "some instances failed or stored with warnings"},
    409: {"description": "no instance stored"},
    413: {"description": "every instance exceeded the size limit"},
    415: {"description": "not multipart/related application/dicom"},
}


@router.post("/studies", responses=STOW_DOC, summary="Store instances (STOW-RS)")
async def store_instances(
    request: Request, archive: ArchiveDep, principal: PrincipalDep
) -> Response:
    return await _stow(request, archive, principal, None)


@router.post("/studies/{study}", responses=STOW_DOC, summary="Store instances of one study")
async def store_study_instances(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study: UID
) -> Response:
    return await _stow(request, archive, principal, study)

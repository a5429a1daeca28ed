"""WADO-RS (PS3.18 10.4): instances, metadata, frames and bulk data.

Every endpoint is a plain ``def``: FastAPI runs it in the thread pool, so index queries and file
reads never block the event loop, and bodies are streamed from sync generators.
"""

from __future__ import annotations

import io
from typing import Annotated

import pydicom
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from cloudfilm.access import Action
from cloudfilm.archive import Archive
from cloudfilm.dicomweb.json import bulk_path, instance_metadata_json
from cloudfilm.dicomweb.multipart import (
    closing,
    multipart_content_type,
    new_boundary,
    part_header,
    stream_parts,
)
from cloudfilm.dicomweb.negotiate import (
    Choice,
    choose_simple,
    frame_chooser,
    instance_chooser,
    require,
)
from cloudfilm.dicomweb.pixels import PixelService, parse_frame_list
from cloudfilm.dicomweb.resources import (
    InstanceRef,
    authorize_read,
    base_url,
    cached_instance_ref,
    find_instances,
    instance_ref,
    read_blob,
)
from cloudfilm.http.caching import cache_headers, make_etag, not_modified
from cloudfilm.http.problems import Problem
from cloudfilm.http.security import ArchiveDep, PrincipalDep, WouldBlock, resolve_principal
from cloudfilm.imaging.transcode import BYTE_RANGE_OK, ELE, JPEG_BASELINE, NATIVE

router = APIRouter(prefix="/dicom-web", tags=["WADO-RS"])

UID = Annotated[str, Path(pattern=r"^[0-9.]{1,64}$", description="a DICOM UID")]
JSON_TYPES = ("application/dicom+json", "application/json")
MULTIPART_DOC = {
    200: {
        "description": "multipart/related of application/dicom parts",
        "content": {'multipart/related; type="application/dicom"': {}},
    }
}


def _pixels(request: Request) -> PixelService:
    return request.app.state.pixels


def _not_modified(headers: dict[str, str]) -> Response:
    return Response(status_code=304, headers=headers)


# -- instances ----------------------------------------------------------------------------
def _retrieve(
    request: Request,
    archive: Archive,
    principal,  # type: ignore[no-untyped-def]
    study: str,
    series: str | None = None,
    sop: str | None = None,
) -> Response:
    # Whole originals leave with the caller: a download (a view-only share may not).
    archive.authorize(principal, Action.DOWNLOAD, study, detail="retrieve")
    accept = request.headers.get("accept")
    refs = find_instances(archive, study, series, sop, with_meta=JPEG_BASELINE in (accept or ""))
    chooser = instance_chooser(accept, single_allowed=sop is not None)
    choices = [require(chooser(r.transfer_syntax_uid, r.bits_allocated), r.sop_uid) for r in refs]
    etag = make_etag(
        "dicom",
        *(
            f"{r.sha256}:{c.transfer_syntax}:{c.multipart}"
            for r, c in zip(refs, choices, strict=True)
        ),
    )
    headers = cache_headers(archive, etag, immutable=sop is not None)
    if not_modified(request, etag):
        return _not_modified(headers)
    svc = _pixels(request)
    base = base_url(request, archive)
    if sop is not None and not choices[0].multipart:
        ref, choice = refs[0], choices[0]
        if choice.transfer_syntax == ref.transfer_syntax_uid:
            headers["Content-Length"] = str(ref.size)
            body = archive.blobs.open_stream(ref.blob_key)
            return StreamingResponse(body, media_type="application/dicom", headers=headers)
        data = svc.instance_bytes(ref, choice.transfer_syntax)
        return Response(data, media_type="application/dicom", headers=headers)

    boundary = new_boundary()
    syntaxes = {c.transfer_syntax for c in choices}
    ctype = multipart_content_type(
        "application/dicom", boundary, syntaxes.pop() if len(syntaxes) == 1 else None
    )
    as_stored = all(
        c.transfer_syntax == r.transfer_syntax_uid for r, c in zip(refs, choices, strict=True)
    )

    def part_type(c: Choice) -> str:
        return f"application/dicom; transfer-syntax={c.transfer_syntax}"

    if as_stored:
        headers["Content-Length"] = str(
            sum(
                len(part_header(boundary, part_type(c), f"{base}/{r.path()}")) + r.size + 2
                for r, c in zip(refs, choices, strict=True)
            )
            + len(closing(boundary))
        )

    def parts():  # type: ignore[no-untyped-def]
        for r, c in zip(refs, choices, strict=True):
            if c.transfer_syntax == r.transfer_syntax_uid:
                chunks = archive.blobs.open_stream(r.blob_key)
            else:
                chunks = iter([svc.instance_bytes(r, c.transfer_syntax)])
            yield part_type(c), chunks, f"{base}/{r.path()}"

    return StreamingResponse(stream_parts(boundary, parts()), media_type=ctype, headers=headers)


@router.get("/studies/{study}", responses=MULTIPART_DOC, summary="Retrieve a study")
def retrieve_study(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study: UID
) -> Response:
    return _retrieve(request, archive, principal, study)


@router.get(
    "/studies/{study}/series/{series}", responses=MULTIPART_DOC, summary="Retrieve a series"
)
def retrieve_series(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study: UID, series: UID
) -> Response:
    return _retrieve(request, archive, principal, study, series)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}",
    responses=MULTIPART_DOC,
    summary="Retrieve an instance",
)
def retrieve_instance(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study: UID,
    series: UID,
    sop: UID,
) -> Response:
    return _retrieve(request, archive, principal, study, series, sop)


# -- metadata -----------------------------------------------------------------------------
def _metadata(
    request: Request,
    archive: Archive,
    principal,  # type: ignore[no-untyped-def]
    study: str,
    series: str | None = None,
    sop: str | None = None,
) -> Response:
    media = choose_simple(request.headers.get("accept"), JSON_TYPES)
    authorize_read(archive, principal, study, "metadata")
    refs = find_instances(archive, study, series, sop, with_meta=True)
    base = base_url(request, archive)
    etag = make_etag("meta", base, *(r.sha256 for r in refs))
    headers = cache_headers(archive, etag, immutable=False)
    if not_modified(request, etag):
        return _not_modified(headers)
    body = (
        "["
        + ",".join(instance_metadata_json(r.meta_json or "{}", f"{base}/{r.path()}") for r in refs)
        + "]"
    )
    return Response(body.encode("utf-8"), media_type=media, headers=headers)


@router.get("/studies/{study}/metadata", summary="Metadata of every instance of a study")
def study_metadata(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study: UID
) -> Response:
    return _metadata(request, archive, principal, study)


@router.get("/studies/{study}/series/{series}/metadata", summary="Metadata of a series")
def series_metadata(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study: UID, series: UID
) -> Response:
    return _metadata(request, archive, principal, study, series)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/metadata", summary="Metadata of an instance"
)
def instance_metadata(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study: UID,
    series: UID,
    sop: UID,
) -> Response:
    return _metadata(request, archive, principal, study, series, sop)


# -- frames -------------------------------------------------------------------------------
def frames_response(
    request: Request,
    archive: Archive,
    ref: InstanceRef,
    numbers: list[int],
    *,
    location: str,
    whole_value: bool = False,
) -> Response:
    """Frames of one instance, negotiated; ``whole_value`` joins native frames in one part."""
    svc = _pixels(request)
    svc.check_frames(ref, numbers)
    chooser = frame_chooser(request.headers.get("accept"), single_allowed=len(numbers) == 1)
    choice = require(chooser(ref.transfer_syntax_uid, ref.bits_allocated), "these frames")
    etag = make_etag("frames", ref.sha256, choice.transfer_syntax, choice.multipart, *numbers)
    headers = cache_headers(archive, etag, immutable=True)
    if not_modified(request, etag):
        return _not_modified(headers)
    frames = svc.frames(ref, numbers, choice.transfer_syntax)
    part_type = f"{choice.media_type}; transfer-syntax={choice.transfer_syntax}"
    if not choice.multipart:
        return Response(frames[0], media_type=part_type, headers=headers)
    boundary = new_boundary()
    if whole_value and choice.transfer_syntax in NATIVE:
        parts = [(part_type, [b"".join(frames)], location)]
    else:
        parts = [
            (part_type, [f], f"{location}/{n}" if not whole_value else location)
            for n, f in zip(numbers, frames, strict=True)
        ]
    body = b"".join(stream_parts(boundary, parts))
    ctype = multipart_content_type(choice.media_type, boundary, choice.transfer_syntax)
    return Response(body, media_type=ctype, headers=headers)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frame_list}",
    summary="Retrieve frames (octet-stream or compressed media types)",
)
async def retrieve_frames(
    request: Request,
    archive: ArchiveDep,
    study: UID,
    series: UID,
    sop: UID,
    frame_list: str,
) -> Response:
    # The hottest endpoint (a viewer asks once per slice). When everything it needs is at hand
    # in this process (the token checked within the last second, the instance row cached, a
    # native frame in a local file), it is answered right here on the event loop: one pread,
    # no thread hop (the hop and its lock contention cost more than the read). Otherwise the
    # same code runs in the thread pool, where it may wait for the index or a decoder.
    try:
        return _frames(request, archive, study, series, sop, frame_list, inline=True)
    except WouldBlock:
        pass
    return await run_in_threadpool(_frames, request, archive, study, series, sop, frame_list)


def _frames(
    request: Request,
    archive: Archive,
    study: str,
    series: str,
    sop: str,
    frame_list: str,
    *,
    inline: bool = False,
) -> Response:
    principal = resolve_principal(request, inline=inline)
    numbers = parse_frame_list(frame_list)
    if inline:
        cached = cached_instance_ref(archive, study, series, sop)
        if cached is None or not _servable_inline(request, archive, cached, numbers):
            raise WouldBlock  # before anything is audited: the retry decides afresh
        try:
            owner = archive.study_owner(study, cached_only=True)  # the access check needs it
        except LookupError:
            raise WouldBlock from None
        if archive.needs_grants(principal, owner, Action.READ):
            raise WouldBlock  # a consent grant is read from the index, every time
    authorize_read(archive, principal, study, f"frames {frame_list[:64]}")
    ref = instance_ref(archive, study, series, sop)
    location = f"{base_url(request, archive)}/{ref.path()}/frames"
    return frames_response(request, archive, ref, numbers, location=location)


def _servable_inline(
    request: Request, archive: Archive, ref: InstanceRef, numbers: list[int]
) -> bool:
    """Native frames cut from a local file by byte range: no decoding, no index. An encrypted
    folder qualifies too (``ranges_inline``: a pread and ~0.15 ms of AES-GCM per 512 KiB
    frame, less than the thread hop it saves; bench/encryption.py)."""
    if ref.transfer_syntax_uid not in BYTE_RANGE_OK or (
        archive.blobs.local_path(ref.blob_key) is None
        and not getattr(archive.blobs, "ranges_inline", False)
    ):
        return False
    chooser = frame_chooser(request.headers.get("accept"), single_allowed=len(numbers) == 1)
    choice = chooser(ref.transfer_syntax_uid, ref.bits_allocated)
    return choice is not None and choice.transfer_syntax == ELE


# -- bulk data ----------------------------------------------------------------------------
@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/bulkdata/{path:path}",
    summary="Retrieve a bulk data value named by a BulkDataURI",
)
def retrieve_bulkdata(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study: UID,
    series: UID,
    sop: UID,
    path: str,
) -> Response:
    try:
        steps = bulk_path(path)
    except ValueError as exc:
        raise Problem(400, f"invalid bulk data path: {exc}") from None
    authorize_read(archive, principal, study, f"bulkdata {path[:64]}")
    ref = instance_ref(archive, study, series, sop)
    location = f"{base_url(request, archive)}/{ref.path()}/bulkdata/{path}"
    if steps == ["7FE00010"]:
        numbers = list(range(1, ref.frames + 1))
        return frames_response(request, archive, ref, numbers, location=location, whole_value=True)
    value = _element_bytes(read_blob(archive, ref), steps)
    choose_simple(request.headers.get("accept"), ("application/octet-stream",))
    etag = make_etag("bulk", ref.sha256, path)
    headers = cache_headers(archive, etag, immutable=True)
    if not_modified(request, etag):
        return _not_modified(headers)
    ranges = request.headers.get("accept", "")
    if "multipart/related" not in ranges:
        return Response(value, media_type="application/octet-stream", headers=headers)
    boundary = new_boundary()
    body = b"".join(stream_parts(boundary, [("application/octet-stream", [value], location)]))
    return Response(
        body,
        media_type=multipart_content_type("application/octet-stream", boundary),
        headers=headers,
    )


def _element_bytes(data: bytes, steps: list[int | str]) -> bytes:
    """The raw value of the element at ``steps`` (tag, item, tag, …) in a stored file."""
    ds = pydicom.dcmread(io.BytesIO(data))
    current = ds
    try:
        for i in range(0, len(steps) - 1, 2):
            seq = current[int(str(steps[i]), 16)].value
            current = seq[int(steps[i + 1])]
        elem = current.get_item(int(str(steps[-1]), 16))
    except (KeyError, IndexError, TypeError, ValueError):
        raise Problem(404, "no bulk data at this path") from None
    if elem is None:
        raise Problem(404, "no bulk data at this path")
    value = elem.value
    if isinstance(value, bytes):
        return value
    raise Problem(404, "the element at this path is not bulk data")

"""Rendered resources and thumbnails (PS3.18 8.3.5, 10.4.1.1.3): consumer images of the pixels.

Native little-endian instances are rendered from one byte-range read plus the cached metadata;
other syntaxes are decoded from the stored file. Query parameters: ``window=center,width[,fn]``
(else the file's window), ``viewport=width,height``, ``quality=1..100``. Multi-frame instances
render their first frame at instance level; any frame through ``/frames/{n}/rendered``.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydicom.dataset import Dataset

from cloudfilm.archive import Archive
from cloudfilm.dicomweb.multipart import multipart_content_type, new_boundary, stream_parts
from cloudfilm.dicomweb.negotiate import choose_simple
from cloudfilm.dicomweb.pixels import PixelService, parse_frame_list
from cloudfilm.dicomweb.resources import InstanceRef, authorize_read, find_instances, instance_ref
from cloudfilm.dicomweb.wado import UID
from cloudfilm.http.caching import cache_headers, make_etag, not_modified
from cloudfilm.http.problems import Problem
from cloudfilm.http.security import ArchiveDep, PrincipalDep
from cloudfilm.imaging.render import (
    RENDER_MEDIA_TYPES,
    THUMBNAIL_SIZE,
    RenderError,
    RenderOptions,
    Window,
    decode_frame,
    native_frame_array,
    parse_viewport,
    parse_window,
    render,
)
from cloudfilm.imaging.transcode import BYTE_RANGE_OK, ELE

log = logging.getLogger(__name__)
router = APIRouter(prefix="/dicom-web", tags=["WADO-RS rendered"])

WindowQ = Annotated[str | None, Query(description="center,width[,linear|linear-exact|sigmoid]")]
ViewportQ = Annotated[str | None, Query(description="width,height to fit the image in")]
QualityQ = Annotated[int, Query(ge=1, le=100, description="JPEG quality")]
IMAGE_DOC = {200: {"content": {m: {} for m in RENDER_MEDIA_TYPES}}}


def options_from(
    request: Request,
    window: str | None,
    viewport: str | None,
    quality: int,
    *,
    thumbnail: bool = False,
) -> RenderOptions:
    media = choose_simple(request.headers.get("accept"), RENDER_MEDIA_TYPES)
    try:
        win = parse_window(window) if window else None
        vp = parse_viewport(viewport) if viewport else None
    except ValueError as exc:
        raise Problem(400, str(exc)) from None
    if thumbnail and vp is None:
        vp = (THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    return RenderOptions(media_type=media, window=win, viewport=vp, quality=quality)


def render_instance(
    svc: PixelService, ref: InstanceRef, frame: int, options: RenderOptions
) -> bytes:
    """One frame (1-based) of one instance as an image."""
    svc.check_frames(ref, [frame])
    try:
        if ref.transfer_syntax_uid in BYTE_RANGE_OK and ref.pixel_data_offset is not None:
            ds = Dataset.from_json(ref.meta, bulk_data_uri_handler=lambda *_: b"")
            if int(ds.get("BitsAllocated", 0) or 0) in (8, 16, 32):
                raw = svc.frames(ref, [frame], ELE)[0]
                return render(ds, native_frame_array(ds, raw), frame - 1, options)
        data = svc.instance_bytes(ref, ref.transfer_syntax_uid)
        ds, arr = decode_frame(data, frame - 1)
        return render(ds, arr, frame - 1, options)
    except RenderError as exc:
        raise Problem(404 if "no pixel data" in str(exc) else 422, str(exc)) from None
    except Problem:
        raise
    except Exception as exc:  # a codec failing on damaged data
        log.warning("cannot render %s frame %d: %s", ref.sop_uid, frame, exc)
        raise Problem(422, f"cannot render this image: {exc}") from None


def _image_response(
    request: Request,
    archive: Archive,
    refs_frames: list[tuple[InstanceRef, int]],
    options: RenderOptions,
) -> Response:
    etag = make_etag("render", options, *(f"{r.sha256}:{f}" for r, f in refs_frames))
    headers = cache_headers(archive, etag, immutable=True)
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    svc: PixelService = request.app.state.pixels
    images = [render_instance(svc, r, f, options) for r, f in refs_frames]
    if len(images) == 1:
        return Response(images[0], media_type=options.media_type, headers=headers)
    boundary = new_boundary()
    body = b"".join(stream_parts(boundary, [(options.media_type, [i], None) for i in images]))
    return Response(
        body, media_type=multipart_content_type(options.media_type, boundary), headers=headers
    )


def _representative(refs: list[InstanceRef]) -> InstanceRef:
    """The middle image of the first series with pixels: what a person would pick."""
    with_pixels = [r for r in refs if r.rows]
    if not with_pixels:
        raise Problem(404, "nothing in this resource has pixel data")
    first_series = [r for r in with_pixels if r.series_uid == with_pixels[0].series_uid]
    return first_series[len(first_series) // 2]


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/rendered",
    responses=IMAGE_DOC,
    summary="Instance rendered as JPEG/PNG/GIF (first frame of a multi-frame)",
)
def instance_rendered(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study: UID,
    series: UID,
    sop: UID,
    window: WindowQ = None,
    viewport: ViewportQ = None,
    quality: QualityQ = 90,
) -> Response:
    options = options_from(request, window, viewport, quality)
    authorize_read(archive, principal, study, "rendered")
    ref = instance_ref(archive, study, series, sop)
    return _image_response(request, archive, [(ref, 1)], options)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frame_list}/rendered",
    responses=IMAGE_DOC,
    summary="Frames rendered (one image, or multipart for several frames)",
)
def frames_rendered(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study: UID,
    series: UID,
    sop: UID,
    frame_list: str,
    window: WindowQ = None,
    viewport: ViewportQ = None,
    quality: QualityQ = 90,
) -> Response:
    numbers = parse_frame_list(frame_list)
    options = options_from(request, window, viewport, quality)
    authorize_read(archive, principal, study, f"rendered frames {frame_list[:64]}")
    ref = instance_ref(archive, study, series, sop)
    return _image_response(request, archive, [(ref, n) for n in numbers], options)


def _thumbnail(
    request: Request,
    archive: Archive,
    principal,  # type: ignore[no-untyped-def]
    study: str,
    series: str | None = None,
    sop: str | None = None,
    frame: int = 1,
    viewport: str | None = None,
) -> Response:
    options = options_from(request, None, viewport, 80, thumbnail=True)
    authorize_read(archive, principal, study, "thumbnail")
    refs = find_instances(archive, study, series, sop, with_meta=True)
    return _image_response(request, archive, [(_representative(refs), frame)], options)


@router.get("/studies/{study}/thumbnail", responses=IMAGE_DOC, summary="Study thumbnail")
def study_thumbnail(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study: UID,
    viewport: ViewportQ = None,
) -> Response:
    return _thumbnail(request, archive, principal, study, viewport=viewport)


@router.get(
    "/studies/{study}/series/{series}/thumbnail", responses=IMAGE_DOC, summary="Series thumbnail"
)
def series_thumbnail(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study: UID,
    series: UID,
    viewport: ViewportQ = None,
) -> Response:
    return _thumbnail(request, archive, principal, study, series, viewport=viewport)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/thumbnail",
    responses=IMAGE_DOC,
    summary="Instance thumbnail",
)
def instance_thumbnail(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study: UID,
    series: UID,
    sop: UID,
    viewport: ViewportQ = None,
) -> Response:
    return _thumbnail(request, archive, principal, study, series, sop, viewport=viewport)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/thumbnail",
    responses=IMAGE_DOC,
    summary="Frame thumbnail",
)
def frame_thumbnail(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    study: UID,
    series: UID,
    sop: UID,
    frame: str,
    viewport: ViewportQ = None,
) -> Response:
    numbers = parse_frame_list(frame)
    if len(numbers) != 1:
        raise Problem(400, "a thumbnail is of one frame")
    return _thumbnail(request, archive, principal, study, series, sop, numbers[0], viewport)


def window_from_uri(center: str | None, width: str | None) -> Window | None:
    """WADO-URI's separate windowCenter / windowWidth parameters."""
    if center is None and width is None:
        return None
    if center is None or width is None:
        raise Problem(400, "windowCenter and windowWidth go together")
    try:
        return parse_window(f"{center},{width}")
    except ValueError as exc:
        raise Problem(400, str(exc)) from None

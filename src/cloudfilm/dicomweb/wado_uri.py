"""WADO-URI (PS3.18 9): ``/wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…``.

For legacy viewers and for links in reports. ``contentType`` defaults to image/jpeg (a rendered
image, as the standard says for single-frame images); ``application/dicom`` returns the instance,
in ``transferSyntax`` (default Explicit VR Little Endian) when we can produce it.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from cloudfilm.access import Action
from cloudfilm.dicomweb.pixels import PixelService
from cloudfilm.dicomweb.rendered import _image_response, window_from_uri
from cloudfilm.dicomweb.resources import authorize_read, instance_ref
from cloudfilm.http.caching import cache_headers, make_etag, not_modified
from cloudfilm.http.problems import Problem
from cloudfilm.http.security import ArchiveDep, PrincipalDep
from cloudfilm.imaging.render import RENDER_MEDIA_TYPES, RenderOptions
from cloudfilm.imaging.transcode import ELE, can_produce

router = APIRouter(tags=["WADO-URI"])
_UID = re.compile(r"^[0-9.]{1,64}$")


def _int_param(request: Request, name: str, lo: int, hi: int) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise Problem(400, f"{name} must be an integer") from None
    if not lo <= number <= hi:
        raise Problem(400, f"{name} must be between {lo} and {hi}")
    return number


def _content_type(value: str | None) -> str:
    if not value:
        return "image/jpeg"
    for item in value.split(","):
        media = item.split(";")[0].strip().lower()
        if media in ("*/*", "image/*"):
            return "image/jpeg"
        if media == "application/dicom" or media in RENDER_MEDIA_TYPES:
            return media
    raise Problem(406, f"contentType {value!r} is not available (application/dicom, image/*)")


@router.get("/wado", summary="WADO-URI retrieval of one instance")
@router.get("/dicom-web/wado", include_in_schema=False)
def wado_uri(request: Request, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    q = request.query_params
    if q.get("requestType") != "WADO":
        raise Problem(400, "requestType=WADO is required")
    uids = {}
    for name in ("studyUID", "seriesUID", "objectUID"):
        value = q.get(name, "")
        if not _UID.match(value):
            raise Problem(400, f"{name} is required and must be a UID")
        uids[name] = value
    media = _content_type(q.get("contentType"))
    if media == "application/dicom":  # the original file: a download (see wado._retrieve)
        archive.authorize(principal, Action.DOWNLOAD, uids["studyUID"], detail="wado-uri")
    else:
        authorize_read(archive, principal, uids["studyUID"], "wado-uri")
    ref = instance_ref(archive, uids["studyUID"], uids["seriesUID"], uids["objectUID"])
    svc: PixelService = request.app.state.pixels
    if media == "application/dicom":
        wanted = q.get("transferSyntax") or ELE
        if not _UID.match(wanted):
            raise Problem(400, "transferSyntax must be a UID")
        if not can_produce(ref.transfer_syntax_uid, wanted, ref.bits_allocated):
            if q.get("transferSyntax"):
                raise Problem(406, f"cannot provide transfer syntax {wanted}")
            wanted = ref.transfer_syntax_uid
        etag = make_etag("wado-uri", ref.sha256, wanted)
        headers = cache_headers(archive, etag, immutable=True)
        if not_modified(request, etag):
            return Response(status_code=304, headers=headers)
        if wanted == ref.transfer_syntax_uid:
            headers["Content-Length"] = str(ref.size)
            return StreamingResponse(
                archive.blobs.open_stream(ref.blob_key),
                media_type="application/dicom",
                headers=headers,
            )
        return Response(
            svc.instance_bytes(ref, wanted), media_type="application/dicom", headers=headers
        )
    rows = _int_param(request, "rows", 1, 4096)
    columns = _int_param(request, "columns", 1, 4096)
    frame = _int_param(request, "frameNumber", 1, 100000) or 1
    quality = _int_param(request, "imageQuality", 1, 100) or 90
    viewport = None
    if rows or columns:
        viewport = (columns or 4096, rows or 4096)
    options = RenderOptions(
        media_type=media,
        window=window_from_uri(q.get("windowCenter"), q.get("windowWidth")),
        viewport=viewport,
        quality=quality,
    )
    return _image_response(request, archive, [(ref, frame)], options)

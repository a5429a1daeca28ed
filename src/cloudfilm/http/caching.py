"""Validators and cache lifetimes for DICOMweb resources.

Instances, frames and rendered images are immutable once stored (content-addressed blobs; the
ETag is derived from the SHA-256 of the stored bytes), so a client may keep them for a year.
Only under the ``replace`` duplicate policy can the bytes behind a SOP Instance UID change;
then they must be revalidated. Search results and metadata change as instances arrive, so they
are always revalidated (cheaply, with If-None-Match → 304).
"""

from __future__ import annotations

import hashlib

from fastapi import Request

from cloudfilm.archive import Archive

IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"


def make_etag(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:  # bytes as they are: str() of a response body would be its escaped repr
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\x1f")
    return f'"{h.hexdigest()[:32]}"'


def _normalise(tag: str) -> str:
    tag = tag.strip()
    if tag.startswith("W/"):
        tag = tag[2:]
    tag = tag.strip('"')
    for suffix in ("-br", "-gzip"):
        if tag.endswith(suffix):
            tag = tag[: -len(suffix)]
    return tag


def not_modified(request: Request, etag: str) -> bool:
    """True when the client's If-None-Match already names this representation."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    mine = _normalise(etag)
    return any(_normalise(t) == mine for t in header.split(","))


def cache_control_for_stored(archive: Archive) -> str:
    return REVALIDATE if archive.settings.duplicate_policy == "replace" else IMMUTABLE


def cache_headers(archive: Archive, etag: str, *, immutable: bool) -> dict[str, str]:
    control = cache_control_for_stored(archive) if immutable else REVALIDATE
    return {"ETag": etag, "Cache-Control": control}

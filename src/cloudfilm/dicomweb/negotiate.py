"""Accept-header negotiation for DICOMweb (PS3.18 8.7): media types and transfer syntaxes.

A DICOMweb Accept header can list several acceptable representations, e.g.
``multipart/related; type="image/jls"; transfer-syntax=1.2.840.10008.1.2.4.80, multipart/related;
type="application/octet-stream"; transfer-syntax=*``. We pick, per instance, the first
acceptable representation (by q, then order) that we can give without decoding, else the first
one we can produce by transcoding. Nothing acceptable → 406.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from cloudfilm.http.problems import Problem
from cloudfilm.imaging.transcode import (
    ELE,
    FRAME_MEDIA_TYPES,
    MEDIA_TYPE_ALIASES,
    MEDIA_TYPE_OF,
    NATIVE,
    can_produce,
)


@dataclass(frozen=True)
class MediaRange:
    type: str
    params: dict[str, str] = field(default_factory=dict, hash=False)
    q: float = 1.0

    @property
    def multipart(self) -> bool:
        return self.type == "multipart/related"

    @property
    def inner(self) -> str:
        """The media type of the parts (or of the body when not multipart)."""
        inner = self.params.get("type", "") if self.multipart else self.type
        inner = inner.lower()
        return MEDIA_TYPE_ALIASES.get(inner, inner)


def _split(header: str, sep: str) -> list[str]:
    out, buf, quoted = [], [], False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    out.append("".join(buf))
    return [s.strip() for s in out if s.strip()]


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges by descending q, ties in the client's order; ``*/*`` when absent."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    if len(header) > 2048:
        return _parse_accept(header)
    # A viewer sends the same Accept header with every frame request: parse it once.
    return list(_parse_accept_cached(header))


@lru_cache(maxsize=256)
def _parse_accept_cached(header: str) -> tuple[MediaRange, ...]:
    return tuple(_parse_accept(header))


def _parse_accept(header: str) -> list[MediaRange]:
    ranges: list[MediaRange] = []
    for item in _split(header, ","):
        parts = _split(item, ";")
        mtype = parts[0].lower()
        params: dict[str, str] = {}
        q = 1.0
        for p in parts[1:]:
            name, _, value = p.partition("=")
            name, value = name.strip().lower(), value.strip().strip('"')
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            else:
                params[name] = value
        if q > 0:
            ranges.append(MediaRange(mtype, params, q))
    ranges.sort(key=lambda r: -r.q)
    return ranges


def choose_simple(header: str | None, offered: tuple[str, ...]) -> str:
    """For single representations (JSON, rendered images): the first offered type accepted."""
    for r in parse_accept(header):
        t = r.inner if r.multipart else r.type
        if t in ("*/*", ""):
            return offered[0]
        if t.endswith("/*"):
            for o in offered:
                if o.startswith(t[:-1]):
                    return o
        if t in offered:
            return t
    raise Problem(406, f"none of the acceptable media types is available; offered: {offered}")


@dataclass(frozen=True)
class Choice:
    multipart: bool
    media_type: str
    transfer_syntax: str


Chooser = Callable[[str, int | None], Choice | None]


def _instance_ts(r: MediaRange, stored: str, bits: int | None) -> str | None:
    wanted = r.params.get("transfer-syntax", ELE)
    if wanted == "*":
        return stored
    return wanted if can_produce(stored, wanted, bits) else None


def instance_chooser(header: str | None, *, single_allowed: bool) -> Chooser:
    """For /studies, /series, /instances retrieval: representation per stored syntax."""
    ranges = parse_accept(header)

    def choose(stored: str, bits: int | None) -> Choice | None:
        for r in ranges:
            multipart = r.multipart or not single_allowed
            if r.type in ("*/*", "multipart/*") or (r.multipart and r.inner in ("", "*/*")):
                ts = ELE if can_produce(stored, ELE, bits) else stored
                return Choice(True, "application/dicom", ts)
            if r.inner != "application/dicom" or not (r.multipart or r.type == "application/dicom"):
                continue
            ts = _instance_ts(r, stored, bits)
            if ts is not None:
                return Choice(multipart, "application/dicom", ts)
        return None

    return choose


def frame_chooser(header: str | None, *, single_allowed: bool) -> Chooser:
    """For /frames and pixel bulk data: a media type and syntax per stored syntax.

    ``transfer-syntax=*`` (OHIF's default) means "as stored": compressed frames go out as they
    are, labelled with their real syntax in each part's Content-Type.
    """
    ranges = parse_accept(header)

    def choose(stored: str, bits: int | None) -> Choice | None:
        stored_media = MEDIA_TYPE_OF.get(stored, "application/octet-stream")
        as_stored = ELE if stored in NATIVE else stored
        for r in ranges:
            inner = r.inner
            multipart = r.multipart or not single_allowed
            if inner in ("*/*", "", "multipart/*") or r.type in ("*/*", "multipart/*"):
                return Choice(True, stored_media, as_stored)
            wanted = r.params.get("transfer-syntax")
            if inner == "image/*":
                if stored_media.startswith("image/"):
                    return Choice(multipart, stored_media, stored)
                continue
            if inner not in FRAME_MEDIA_TYPES:
                continue
            if wanted == "*":
                if inner == "application/octet-stream" or inner == stored_media:
                    return Choice(multipart, inner, as_stored)
                continue
            syntaxes = FRAME_MEDIA_TYPES[inner]
            if wanted is None:
                wanted = as_stored if as_stored in syntaxes else syntaxes[0]
            if wanted not in syntaxes:
                continue
            if wanted == as_stored or can_produce(stored, wanted, bits):
                return Choice(multipart, inner, wanted)
        return None

    return choose


def require(choice: Choice | None, what: str) -> Choice:
    if choice is None:
        raise Problem(406, f"cannot provide {what} in any of the acceptable representations")
    return choice

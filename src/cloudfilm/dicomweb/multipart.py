"""multipart/related (RFC 2387) as DICOMweb uses it: a streaming reader for STOW-RS bodies and
a streaming writer for WADO-RS responses.

The reader never holds more than the current part (plus one read chunk): a STOW of a 2 GB study
uses memory for one instance at a time. A part larger than the limit is drained without being
kept, and reported with its first bytes so the caller can still name the instance it was.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field

HEAD_KEEP = 64 * 1024


class MultipartError(ValueError):
    """The body is not valid multipart/related."""


@dataclass
class Part:
    headers: dict[str, str]
    body: bytes
    oversize: bool = False
    """True when the part exceeded the limit: ``body`` then holds only its first bytes."""
    size: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """``multipart/related; type="application/dicom"; boundary=x`` → (media type, params)."""
    parts = [p.strip() for p in value.split(";")]
    params: dict[str, str] = {}
    for p in parts[1:]:
        name, _, v = p.partition("=")
        if name:
            params[name.strip().lower()] = v.strip().strip('"')
    return parts[0].lower(), params


def _headers(block: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.split(b"\r\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise MultipartError(f"malformed part header line {line[:80]!r}")
        out[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return out


async def read_parts(
    chunks: AsyncIterator[bytes], boundary: str, max_part_bytes: int
) -> AsyncIterator[Part]:
    """Yield each part of a multipart body as it completes."""
    if not boundary or len(boundary) > 200:
        raise MultipartError("missing or invalid boundary")
    delim = b"--" + boundary.encode("latin-1")
    next_delim = b"\r\n" + delim
    buf = bytearray()
    state = "preamble"
    headers: dict[str, str] = {}
    body = bytearray()
    size = 0
    oversize = False
    done = False
    finished_any = False

    def append(data: bytearray) -> None:
        nonlocal size, oversize
        size += len(data)
        if oversize:
            return
        if size > max_part_bytes:
            oversize = True
            room = HEAD_KEEP - len(body)
            if room > 0:
                body.extend(data[:room])
            del body[HEAD_KEEP:]
        else:
            body.extend(data)

    async for chunk in chunks:
        if done:
            continue  # epilogue: ignored
        buf += chunk
        while True:
            if state == "preamble":
                idx = buf.find(delim)
                if idx < 0:
                    if len(buf) > 64 * 1024:
                        raise MultipartError("no boundary found at the start of the body")
                    break
                end = idx + len(delim)
                if len(buf) < end + 2:
                    break
                if buf[end : end + 2] == b"--":
                    done = True
                    break
                del buf[:end]
                state = "after-delim"
            if state == "after-delim":
                # skip transport padding up to CRLF
                idx = buf.find(b"\r\n")
                if idx < 0:
                    break
                del buf[: idx + 2]
                state = "headers"
            if state == "headers":
                idx = buf.find(b"\r\n\r\n")
                if buf.startswith(b"\r\n"):
                    headers, idx_end = {}, 2
                elif idx < 0:
                    if len(buf) > 16 * 1024:
                        raise MultipartError("part headers too long")
                    break
                else:
                    headers, idx_end = _headers(bytes(buf[:idx])), idx + 4
                del buf[:idx_end]
                body.clear()
                size, oversize = 0, False
                state = "body"
            if state == "body":
                idx = buf.find(next_delim)
                if idx < 0:
                    take = len(buf) - len(next_delim) - 1
                    if take > 0:
                        append(buf[:take])
                        del buf[:take]
                    break
                end = idx + len(next_delim)
                if len(buf) < end + 2:
                    break  # need to know whether this is the closing delimiter
                append(buf[:idx])
                closing = buf[end : end + 2] == b"--"
                del buf[:end]
                finished_any = True
                yield Part(headers, bytes(body), oversize, size)
                body.clear()
                size, oversize = 0, False
                if closing:
                    done = True
                    break
                state = "after-delim"
    if not done:
        if state == "preamble" and not finished_any:
            raise MultipartError("the body has no multipart parts")
        raise MultipartError("the body ended before the closing boundary")


_BOUNDARY_PREFIX = f"cloudfilm-{secrets.token_hex(10)}"
_boundaries = itertools.count()


def new_boundary() -> str:
    """Unguessable (a random per-process prefix) and unique; a counter instead of fresh
    randomness per response, which cost a few percent of the frame path."""
    return f"{_BOUNDARY_PREFIX}-{next(_boundaries):x}"


def part_header(boundary: str, content_type: str, location: str | None = None) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    if location:
        lines.append(f"Content-Location: {location}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("latin-1")


def stream_parts(
    boundary: str, parts: Iterable[tuple[str, Iterable[bytes], str | None]]
) -> Iterator[bytes]:
    """Body chunks for (content type, body chunks, location) parts, each part CRLF-terminated."""
    any_part = False
    for content_type, chunks, location in parts:
        any_part = True
        yield part_header(boundary, content_type, location)
        yield from chunks
        yield b"\r\n"
    if not any_part:
        return
    yield closing(boundary)


def multipart_content_type(inner: str, boundary: str, transfer_syntax: str | None = None) -> str:
    value = f'multipart/related; type="{inner}"; boundary={boundary}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value

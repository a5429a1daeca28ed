"""Request bodies sent with ``Content-Encoding`` (gzip, zstd, br, deflate), decoded as they
stream in.

The edge gateway compresses its STOW-RS uploads: uncompressed CT and MR shrink to a half or a
third, and a hospital's uplink is the bottleneck. Decoding is incremental and bounded: no
step hands more than ``STEP`` bytes to the multipart reader at once, so a small body that
inflates to gigabytes costs memory only as fast as the reader (which enforces the per-instance
size limit) consumes it. The received instance is the *decoded* bytes: what the modality sent.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

import brotli
import zstandard

from cloudfilm.http.problems import Problem

STEP = 1024 * 1024
ZSTD_SLICE = 16 * 1024
"""zstd's streaming decoder has no output limit per call: feed it small slices instead."""
SUPPORTED = ("gzip", "x-gzip", "deflate", "zstd", "br", "identity")


class BodyDecodingError(ValueError):
    """The body does not decode as its Content-Encoding says."""


def check_encoding(header: str | None) -> str:
    """The one encoding of a request body ('identity' when none), or a 415 problem."""
    encoding = (header or "identity").strip().lower() or "identity"
    if encoding not in SUPPORTED:
        raise Problem(
            415,
            f"Content-Encoding {encoding!r} is not supported; send gzip, zstd, br, deflate or none",
            headers={"Accept-Encoding": "gzip, zstd, br, deflate"},
        )
    return encoding


async def decoded(stream: AsyncIterator[bytes], encoding: str) -> AsyncIterator[bytes]:
    if encoding == "identity":
        async for chunk in stream:
            yield chunk
        return
    try:
        if encoding in ("gzip", "x-gzip", "deflate"):
            # 47: gzip or zlib header, detected; deflate senders differ on the header
            inflater = zlib.decompressobj(47 if encoding != "deflate" else 15)
            async for chunk in stream:
                data = chunk
                while data:
                    out = inflater.decompress(data, STEP)
                    data = inflater.unconsumed_tail
                    if out:
                        yield out
            tail = inflater.flush()
            if not inflater.eof:
                raise BodyDecodingError(f"{encoding} body ends before its end marker")
            if tail:
                yield tail
        elif encoding == "zstd":
            zd = zstandard.ZstdDecompressor().decompressobj()
            async for chunk in stream:
                for i in range(0, len(chunk), ZSTD_SLICE):
                    out = zd.decompress(chunk[i : i + ZSTD_SLICE])
                    if out:
                        yield out
            if not zd.eof:
                raise BodyDecodingError("zstd body ends before the end of its frame")
        else:  # br
            br = brotli.Decompressor()
            async for chunk in stream:
                for i in range(0, len(chunk), ZSTD_SLICE):
                    out = br.process(chunk[i : i + ZSTD_SLICE])
                    if out:
                        yield out
            if not br.is_finished():
                raise BodyDecodingError("br body ends before its end")
    except (zlib.error, zstandard.ZstdError, brotli.error) as exc:
        raise BodyDecodingError(f"the {encoding} body does not decode: {exc}") from exc

"""gzip / Brotli for JSON responses only.

Starlette's GZipMiddleware would also squeeze DICOM, JPEG and frame bytes, which are either
already compressed or cost CPU for little gain on the hot retrieval path; metadata and search
results are JSON and shrink 5-20×, so those (and only those) are compressed, streaming.
"""

from __future__ import annotations

import zlib
from typing import Any

import brotli
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COMPRESSIBLE = ("application/json", "application/dicom+json", "application/problem+json")
MIN_SIZE = 512


def choose_encoding(accept_encoding: str) -> str | None:
    """``br`` over ``gzip`` when both are acceptable (q=0 excludes)."""
    offered: dict[str, float] = {}
    for item in accept_encoding.split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        offered[name.strip().lower()] = q
    for enc in ("br", "gzip"):
        if offered.get(enc, offered.get("*", 0.0)) > 0:
            return enc
    return None


class _Compressor:
    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding == "br":
            self._br = brotli.Compressor(quality=4)
        else:
            self._gz = zlib.compressobj(6, zlib.DEFLATED, 31)

    def compress(self, data: bytes) -> bytes:
        if self.encoding == "br":
            return self._br.process(data)
        return self._gz.compress(data)

    def finish(self) -> bytes:
        if self.encoding == "br":
            return self._br.finish()
        return self._gz.flush()


class JSONCompressionMiddleware:
    def __init__(self, app: ASGIApp, minimum_size: int = MIN_SIZE) -> None:
        self.app = app
        self.minimum_size = minimum_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        encoding = choose_encoding(Headers(scope=scope).get("accept-encoding", ""))
        if encoding is None:
            await self.app(scope, receive, send)
            return
        await _Responder(self.app, encoding, self.minimum_size)(scope, receive, send)


class _Responder:
    def __init__(self, app: ASGIApp, encoding: str, minimum_size: int) -> None:
        self.app = app
        self.encoding = encoding
        self.minimum_size = minimum_size
        self.start: Message | None = None
        self.active = False
        self.decided = False
        self.compressor: _Compressor | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.send = send
        await self.app(scope, receive, self.wrapped_send)

    async def wrapped_send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.start = message
            headers = Headers(raw=message["headers"])
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            self.active = (
                ctype in COMPRESSIBLE
                and "content-encoding" not in headers
                and message["status"] not in (204, 304)
            )
            if not self.active:
                await self.send(message)
                self.decided = True
            return
        if kind != "http.response.body" or not self.active:
            await self._flush_start()
            await self.send(message)
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if not self.decided:
            self.decided = True
            if not more and len(body) < self.minimum_size:
                self.active = False
                await self.send(self.start)  # type: ignore[arg-type]
                await self.send(message)
                return
            self.compressor = _Compressor(self.encoding)
            await self._send_compressed_start()
        assert self.compressor is not None
        out = self.compressor.compress(body)
        if not more:
            out += self.compressor.finish()
        if out or not more:
            await self.send({"type": "http.response.body", "body": out, "more_body": more})

    async def _flush_start(self) -> None:
        if not self.decided and self.start is not None:
            self.decided = True
            await self.send(self.start)

    async def _send_compressed_start(self) -> None:
        assert self.start is not None
        headers = MutableHeaders(raw=self.start["headers"])
        del headers["content-length"]
        headers["content-encoding"] = self.encoding
        headers.add_vary_header("Accept-Encoding")
        etag = headers.get("etag")
        if etag and etag.endswith('"'):
            # A different representation needs a different validator (RFC 9110 8.8.3).
            headers["etag"] = f'{etag[:-1]}-{self.encoding}"'
        start: dict[str, Any] = dict(self.start)
        start["headers"] = headers.raw
        await self.send(start)

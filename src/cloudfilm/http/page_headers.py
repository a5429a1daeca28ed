"""Security headers for server-rendered page families (the patient portal, the console).

One middleware class, configured per family with the paths it covers and its Content Security
Policy: CSP and no framing on HTML (a patient's page or an admin's button must not be framed),
no referrer (URLs carry grant tokens), nosniff, and HSTS behind TLS. DICOMweb and the viewer set
their own headers, so paths outside the family are left untouched.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudfilm.archive import Archive


class PageHeaders:
    def __init__(
        self, app: ASGIApp, archive: Archive, covers: Callable[[str], bool], csp: str
    ) -> None:
        self.app = app
        self.covers = covers
        self.csp = csp
        self.https = (archive.settings.public_url or "").startswith("https")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not self.covers(path):
            await self.app(scope, receive, send)
            return
        https = self.https or scope.get("scheme") == "https"

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", self.csp)
                    headers.setdefault("X-Frame-Options", "DENY")
                if https:
                    headers.setdefault("Strict-Transport-Security", "max-age=31536000")
            await send(message)

        await self.app(scope, receive, wrapped)

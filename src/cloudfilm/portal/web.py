"""Wiring the cloud film into the HTTP app: routers, the cookie principal, headers, issuer.

``install_portal`` is called once by ``cloudfilm.http.app.create_app``. The security headers
apply to the portal's paths only (``/f/ /s/ /p/ /api/``): the viewer and DICOMweb set their own.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudfilm.archive import Archive

PORTAL_PREFIXES = ("/f/", "/s/", "/p/", "/api/")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class PortalHeaders:
    """CSP, framing, referrer and (behind TLS) HSTS on the portal's responses."""

    def __init__(self, app: ASGIApp, archive: Archive) -> None:
        self.app = app
        self.https = (archive.settings.public_url or "").startswith("https")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(PORTAL_PREFIXES):
            await self.app(scope, receive, send)
            return
        https = self.https or scope.get("scheme") == "https"

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", CSP)
                    headers.setdefault("X-Frame-Options", "DENY")
                if https:
                    headers.setdefault("Strict-Transport-Security", "max-age=31536000")
            await send(message)

        await self.app(scope, receive, wrapped)


def install_portal(app: FastAPI, archive: Archive, *, start_issuer: bool = True) -> None:
    from cloudfilm.portal import api, login, pages
    from cloudfilm.portal.films import FilmIssuer
    from cloudfilm.portal.sessions import CookieSessionResolver

    app.include_router(login.router)  # /api/shares/open before /api/shares/{id}
    app.include_router(api.router)
    app.include_router(pages.router)
    app.state.principal_resolvers.append(CookieSessionResolver(archive))
    app.add_middleware(PortalHeaders, archive=archive)
    issuer = FilmIssuer(archive)
    app.state.film_issuer = issuer
    app.state.film_notifier = issuer.notifier
    if start_issuer:
        issuer.start()

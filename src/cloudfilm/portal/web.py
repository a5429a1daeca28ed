"""Wiring the cloud film into the HTTP app: routers, the cookie principal, headers, issuer.

``install_portal`` is called once by ``cloudfilm.http.app.create_app``. The security headers
apply to the portal's paths only (``/f/ /s/ /p/ /api/``): the viewer and DICOMweb set their own.
"""

from __future__ import annotations

from fastapi import FastAPI

from cloudfilm.archive import Archive
from cloudfilm.http.page_headers import PageHeaders

PORTAL_PREFIXES = ("/f/", "/s/", "/p/", "/api/")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _portal_path(path: str) -> bool:
    return path.startswith(PORTAL_PREFIXES)


def install_portal(app: FastAPI, archive: Archive, *, start_issuer: bool = True) -> None:
    from cloudfilm.portal import api, consent_pages, login, pages
    from cloudfilm.portal.films import FilmIssuer
    from cloudfilm.portal.sessions import CookieSessionResolver

    app.include_router(login.router)  # /api/shares/open before /api/shares/{id}
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(consent_pages.router)  # /c/{token}, /p/consent
    app.state.principal_resolvers.append(CookieSessionResolver(archive))
    app.add_middleware(PageHeaders, archive=archive, covers=_portal_path, csp=CSP)
    issuer = FilmIssuer(archive)
    app.state.film_issuer = issuer
    app.state.film_notifier = issuer.notifier
    if start_issuer:
        issuer.start()
        app.router.on_shutdown.append(issuer.stop)

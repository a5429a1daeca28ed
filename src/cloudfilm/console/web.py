"""Wiring the hospital console into the HTTP app: its pages, its cookie principal, its
static files, its headers, and how its refusals are answered (HTML pages, not problem+json).

``install_console`` is called once by ``cloudfilm.http.app.create_app``, before the portal:
the console cookie's resolver answers from its one-second cache on the event loop, and a
logged-in hospital user is that user even if the browser also holds a patient's cookie.
The page modules are listed in ``PAGES``: a new console page family is one line there.
"""

from __future__ import annotations

import importlib
import mimetypes
import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from cloudfilm.archive import Archive
from cloudfilm.console.render import render_console
from cloudfilm.console.session import ConsoleRedirect, ConsoleRefused, ConsoleSessionResolver
from cloudfilm.http.compression import choose_encoding
from cloudfilm.http.page_headers import PageHeaders
from cloudfilm.http.templating import lang_of, t

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "console"
PAGES = (
    "cloudfilm.console.login",
    "cloudfilm.console.admin",
    "cloudfilm.console.data_pages",
    "cloudfilm.console.pages_regional",
    "cloudfilm.console.pages_fixity",
    "cloudfilm.console.pages_retention",
)
"""Modules with a ``router`` of console pages, included in this order."""
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
"""Inline styles are allowed for the charts' tooltips (ECharts writes style attributes)."""


def _console_path(path: str) -> bool:
    return path == "/" or path.startswith("/console/")


class ConsoleStatic(StaticFiles):
    """The Vite build of web/console (console.css, console.js), with its precompressed
    ``.br`` / ``.gz`` siblings when the browser takes them. Names are fixed (not content
    hashes), so browsers revalidate (``no-cache``: a 304 once the ETag matches). Before the
    first build the folder may not exist: then 404, and pages still work unstyled."""

    async def check_config(self) -> None:
        return None

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        path = str(full_path)
        media = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if media.startswith("text/") or media.endswith("javascript"):
            media += "; charset=utf-8"
        request_headers = Headers(scope=scope)
        encoding = choose_encoding(request_headers.get("accept-encoding", ""))
        response: Response | None = None
        suffix = {"br": ".br", "gzip": ".gz"}.get(encoding or "")
        if suffix and os.path.isfile(path + suffix):
            pre = os.stat(path + suffix)
            if pre.st_mtime >= stat_result.st_mtime:
                response = FileResponse(path + suffix, stat_result=pre, media_type=media)
                response.headers["Content-Encoding"] = encoding or ""
        if response is None:
            response = FileResponse(path, stat_result=stat_result, media_type=media)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["Vary"] = "Accept-Encoding"
        if self.is_not_modified(response.headers, request_headers):
            return Response(status_code=304, headers={
                k: v for k, v in response.headers.items()
                if k.lower() in ("etag", "cache-control", "vary", "last-modified")
            })  # fmt: skip
        return response


def install_console(app: FastAPI, archive: Archive) -> None:
    for name in PAGES:
        app.include_router(importlib.import_module(name).router)
    app.mount("/console/static", ConsoleStatic(directory=STATIC_DIR, check_dir=False))
    app.state.principal_resolvers.append(ConsoleSessionResolver(archive))
    app.add_middleware(PageHeaders, archive=archive, covers=_console_path, csp=CSP)

    @app.exception_handler(ConsoleRedirect)
    async def _redirect(request: Request, exc: ConsoleRedirect) -> Response:
        return RedirectResponse(exc.location, status_code=303)

    @app.exception_handler(ConsoleRefused)
    async def _refused(request: Request, exc: ConsoleRefused) -> Response:
        context = {"error": t(lang_of(request), exc.key)}
        return render_console(request, exc.view, "console/error.html", context, exc.status)

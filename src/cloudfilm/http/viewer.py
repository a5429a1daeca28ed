"""The zero-footprint viewer, served at /viewer/ (web/, built by Vite into cloudfilm/static/viewer).

``/viewer/`` (with any query, e.g. ``?study=<uid>``) answers index.html, never cached, so a new
build is picked up at once; ``/viewer/assets/*`` are content-hashed by Vite and cached for a
year. Text assets and the WASM codecs are sent brotli- or gzip-compressed (compressed once per
file at build time, else once at run time and kept in memory). Without a build the viewer
answers a clear 503 page.

The viewer reads only through DICOMweb on the same origin and needs no cross-origin isolation
(Cornerstone3D uses no SharedArrayBuffer), so no COOP/COEP headers are set.
"""

from __future__ import annotations

import gzip
import mimetypes
import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cloudfilm.http.templating import env

VIEWER_DIR = Path(__file__).resolve().parent.parent / "static" / "viewer"

_MIME = {
    ".wasm": "application/wasm",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".map": "application/json",
}
_COMPRESSIBLE = {".wasm", ".js", ".mjs", ".css", ".html", ".json", ".svg", ".map"}
_IMMUTABLE = "public, max-age=31536000, immutable"
_SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _Compressed:
    """Compressed bodies, made once per (file, mtime, encoding)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, float, str], bytes] = {}
        self._lock = threading.Lock()

    def get(self, path: Path, encoding: str) -> bytes:
        st = path.stat()
        key = (str(path), st.st_mtime, encoding)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        raw = path.read_bytes()
        if encoding == "br":
            import brotli

            body = brotli.compress(raw, quality=6)
        else:
            body = gzip.compress(raw, compresslevel=6)
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items() if k[0] != str(path)}
            self._cache[key] = body
        return body


def _encoding(request: Request) -> str | None:
    accept = request.headers.get("accept-encoding", "")
    tokens = {p.split(";")[0].strip().lower() for p in accept.split(",")}
    if "br" in tokens:
        return "br"
    if "gzip" in tokens:
        return "gzip"
    return None


def mount_viewer(app: FastAPI, directory: Path | None = None) -> None:
    """Serve the built viewer at /viewer/ on ``app``."""
    root = (directory or VIEWER_DIR).resolve()
    compressed = _Compressed()

    def built() -> bool:
        return (root / "index.html").is_file()

    def not_built() -> HTMLResponse:
        page = env.get_template("http/viewer_not_built.html").render()
        headers = {"Cache-Control": "no-store", "Retry-After": "60"}
        return HTMLResponse(page, status_code=503, headers=headers)

    def send(request: Request, path: Path, cache_control: str) -> Response:
        suffix = path.suffix.lower()
        media = (
            _MIME.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        )
        headers = {"Cache-Control": cache_control, "Vary": "Accept-Encoding", **_SECURITY}
        enc = _encoding(request) if suffix in _COMPRESSIBLE else None
        if enc and path.stat().st_size > 1024:
            pre = path.with_name(path.name + (".br" if enc == "br" else ".gz"))
            if pre.is_file() and pre.stat().st_mtime >= path.stat().st_mtime:
                body = pre.read_bytes()  # made by the Vite build
            else:
                body = compressed.get(path, enc)
            headers["Content-Encoding"] = enc
        else:
            body = path.read_bytes()
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return Response(status_code=200, headers=headers, media_type=media)
        return Response(body, headers=headers, media_type=media)

    @app.api_route("/viewer", methods=["GET", "HEAD"], include_in_schema=False)
    def viewer_redirect(request: Request) -> Response:
        query = request.url.query
        return RedirectResponse(f"/viewer/{'?' + query if query else ''}", status_code=308)

    @app.api_route("/viewer/", methods=["GET", "HEAD"], include_in_schema=False)
    def viewer_index(request: Request) -> Response:
        if not built():
            return not_built()
        return send(request, root / "index.html", "no-cache")

    @app.api_route("/viewer/{file_path:path}", methods=["GET", "HEAD"], include_in_schema=False)
    def viewer_file(file_path: str, request: Request) -> Response:
        if not built():
            return not_built()
        target = (root / file_path).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            return Response(
                "Not Found", status_code=404, media_type="text/plain", headers=_SECURITY
            )
        if target.name == "index.html":
            return send(request, target, "no-cache")
        hashed = target.is_relative_to(root / "assets")
        return send(request, target, _IMMUTABLE if hashed else "public, max-age=3600")

"""Per-request counts and latency, labelled by the route template that answered.

A pure ASGI middleware (no per-request objects beyond one closure): the frame path answers
hundreds of requests a second and is benchmarked. The label is the template the router
matched (``/dicom-web/studies/{study}``), read from the scope after the call; a raw path would
make one series per UID. Mounted apps (static files) get their mount point, anything the
router did not match ``unmatched``.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudfilm.metrics import instruments

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def route_template(scope: Scope, root_path: str) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    mounted = scope.get("root_path", "")
    if scope.get("endpoint") is not None and mounted != root_path:
        return f"{mounted}/{{path}}"
    return "unmatched"


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        """(method, route, status) -> (counter child, histogram child): ``labels()`` checks
        and locks on every call; the set of keys is small and fixed by the routes."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = [500]  # an exception that escapes is answered 500 further out

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self._count(scope, root_path, status[0], time.perf_counter() - started)

    @instruments.never_raises
    def _count(self, scope: Scope, root_path: str, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "other"
        code = status // 100
        status_class = STATUS_CLASSES[code - 1] if 1 <= code <= 5 else "other"
        key = (method, route_template(scope, root_path), status_class)
        children = self._children.get(key)
        if children is None:
            made = instruments.get()
            children = (made.http_requests.labels(*key), made.http_duration.labels(*key[:2]))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

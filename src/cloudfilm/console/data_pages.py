"""The console's data pages, for ``console.web.install_console``: the worklist, the film desk,
the statistics dashboard and the audit search (their back-ends: ``worklist``, ``stats``,
``audit_search``). ``router`` includes every router of ``ROUTERS``."""

from __future__ import annotations

from fastapi import APIRouter

from cloudfilm.console import pages_audit, pages_desk, pages_stats, pages_worklist

ROUTERS: list[APIRouter] = [
    pages_worklist.router,
    pages_desk.router,
    pages_stats.router,
    pages_audit.router,
]
router = APIRouter(include_in_schema=False)
for _r in ROUTERS:
    router.include_router(_r)

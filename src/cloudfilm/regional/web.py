"""Regional sharing's HTTP doors, installed on the archive's app (see http/app.py).

Each module below owns one door and its router; add yours to ``ROUTERS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

if TYPE_CHECKING:
    from cloudfilm.archive import Archive


def install_regional(app: FastAPI, archive: Archive, *, background: bool = True) -> None:
    """``background``: start the workers (the index feed's webhook push) in this process."""
    from cloudfilm.regional import feed_web, iid, similar_api

    routers: list = [feed_web.router, iid.router, similar_api.router]
    for router in routers:
        app.include_router(router)
    app.state.index_pusher = None
    if background and archive.settings.index_webhook_url:
        from cloudfilm.regional.webhook import IndexPusher

        app.state.index_pusher = IndexPusher(archive)  # serve only: workers pass False
        app.state.index_pusher.start()
        app.router.on_shutdown.append(app.state.index_pusher.stop)  # gives its lease back

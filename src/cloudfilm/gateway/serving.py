"""A listening asyncio server on an event loop in a thread of its own.

The gateway is one process of several independent parts (DICOM door, HL7 listener, uploader,
status page); each network part runs its own loop so a slow peer of one never stalls another.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from cloudfilm.dimse.router import new_event_loop

ServerFactory = Callable[[asyncio.AbstractEventLoop], Coroutine[Any, Any, asyncio.AbstractServer]]


class ServingThread:
    def __init__(self, name: str, factory: ServerFactory) -> None:
        self.factory = factory
        self.loop = new_event_loop()
        self.server: asyncio.AbstractServer | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.ready = threading.Event()
        self.error: BaseException | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def start(self) -> None:
        """Returns once listening; raises what binding raised (a port in use, say)."""
        self.thread.start()
        self.ready.wait(30)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.server = self.loop.run_until_complete(self.factory(self.loop))
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        if self.thread.is_alive():
            if self.server is not None:
                self.loop.call_soon_threadsafe(self.server.close)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

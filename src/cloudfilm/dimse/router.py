"""Which receive path serves a new connection: the event-driven store path or pynetdicom.

pynetdicom's listener accepts every connection and hands it here. The router peeks at the
A-ASSOCIATE-RQ without consuming it (``MSG_PEEK``): an association that proposes only storage
and verification goes to :class:`StoreAssociation` on this process's event loop; anything else
(C-FIND, C-GET, C-MOVE, Storage Commitment, role selection) goes back to pynetdicom, which
reads the same bytes from the socket as if nobody had looked. A modality that only sends
images, by far the commonest caller, never meets pynetdicom's per-association threads.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any

from cloudfilm.dimse import negotiation, pdu
from cloudfilm.dimse.store_association import StoreAssociation
from cloudfilm.metrics.instruments import event_loop_association

if TYPE_CHECKING:
    from pynetdicom.pdu_primitives import A_ASSOCIATE
    from pynetdicom.transport import ThreadedAssociationServer

    from cloudfilm.dimse.handlers import Handlers

log = logging.getLogger(__name__)

PEEK_RETRY = 0.002
PEEK_RETRY_MAX = 0.1
"""A request that arrives in pieces is peeked at again after 2 ms, then less and less often."""


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.new_event_loop()


class StoreRouter:
    def __init__(self, server: ThreadedAssociationServer, handlers: Handlers) -> None:
        self.server = server
        self.handlers = handlers
        settings = handlers.settings
        self.settings = settings
        self.contexts = list(server.contexts)
        self.active = 0
        self.executor = ThreadPoolExecutor(
            max_workers=max(4, settings.max_associations), thread_name_prefix="c-store"
        )
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self._run, name="dicom-store-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.executor.shutdown(wait=True)

    # -- called by pynetdicom's acceptor thread -------------------------------------------
    def adopt(self, sock: socket.socket, address: Any) -> None:
        self.loop.call_soon_threadsafe(self._sniff, sock, address)

    # -- on the event loop ------------------------------------------------------------------
    def _sniff(self, sock: socket.socket, address: Any) -> None:
        sock.setblocking(False)
        started = time.monotonic()
        fd = sock.fileno()
        waiting = [True]
        want = [64 * 1024]  # most requests fit; a larger one says its length in the header
        delay = [PEEK_RETRY]

        def expire() -> None:
            """ARTIM for a connection that sends nothing at all: no reader event ever comes."""
            if waiting[0]:
                waiting[0] = False
                self.loop.remove_reader(fd)
                log.info("ARTIM timeout: no A-ASSOCIATE-RQ from %s", address[0])
                sock.close()

        artim = self.loop.call_later(self.settings.dicom_artim_timeout, expire)

        def decided() -> bool:
            if not waiting[0]:
                return False
            waiting[0] = False
            artim.cancel()
            return True

        def readable() -> None:
            self.loop.remove_reader(fd)
            attempt()

        def attempt() -> None:
            if not waiting[0]:
                return
            try:
                head = sock.recv(want[0], socket.MSG_PEEK)
            except BlockingIOError:
                head = None
            except OSError:
                if decided():
                    sock.close()
                return
            if head == b"":
                if decided():
                    sock.close()  # connected and went away
                return
            if head is not None and len(head) >= 6:
                pdu_type, length = pdu.HEADER.unpack_from(head)
                if pdu_type != pdu.A_ASSOCIATE_RQ_TYPE or length > pdu.MAX_ASSOCIATE_RQ:
                    if decided():
                        self._serve_here(sock, address, None)  # it answers with an abort
                    return
                if len(head) >= 6 + length:
                    if decided():
                        self._dispatch(sock, address, head[: 6 + length])
                    return
                want[0] = 6 + length  # peek no more than the request
            if time.monotonic() - started > self.settings.dicom_artim_timeout:
                expire()
                return
            if head is None:
                self.loop.add_reader(fd, readable)
            else:  # part of the PDU is there: the reader would fire at once, so poll
                self.loop.call_later(delay[0], attempt)
                delay[0] = min(delay[0] * 2, PEEK_RETRY_MAX)

        attempt()

    def _dispatch(self, sock: socket.socket, address: Any, request: bytes) -> None:
        decoded: A_ASSOCIATE | None
        try:
            decoded = pdu.decode_associate_rq(request)
            # a request the ACSE rules reject (application context, protocol version) gets
            # the standard's A-ASSOCIATE-RJ from the store path, whatever it proposes
            # ... and so does a calling AE title no hospital registered (PS3.8 A-ASSOCIATE-RJ
            # "calling AE title not recognised"), for both paths
            store_only = (
                negotiation.is_store_only(decoded)
                or negotiation.rejection(decoded) is not None
                or not self.handlers.known_title(negotiation._ae(decoded.calling_ae_title))
            )
        except pdu.ProtocolError:
            decoded, store_only = None, True  # the store path answers it with an abort
        if store_only:
            self._serve_here(sock, address, decoded)
        else:
            sock.setblocking(True)
            ThreadingMixIn.process_request(self.server, sock, address)  # type: ignore[arg-type]

    def _serve_here(self, sock: socket.socket, address: Any, request: A_ASSOCIATE | None) -> None:
        """``request``: the A-ASSOCIATE-RQ already decoded here (not decoded twice: a request
        with 128 contexts, as Orthanc sends, takes milliseconds to decode)."""
        settings = self.settings

        def protocol() -> StoreAssociation:
            return StoreAssociation(
                handlers=self.handlers,
                executor=self.executor,
                contexts=self.contexts,
                max_pdu=settings.dicom_max_pdu,
                max_instance_bytes=settings.max_instance_bytes,
                artim_timeout=settings.dicom_artim_timeout,
                idle_timeout=settings.dicom_idle_timeout,
                peer_host=str(address[0]),
                admit=self._admit,
                release=self._release,
                request=request,
                on_associate=event_loop_association,
            )

        async def start() -> None:
            try:
                await self.loop.connect_accepted_socket(protocol, sock)
            except OSError:
                sock.close()

        self.loop.create_task(start())

    def _admit(self) -> bool:
        """The association limit counts both paths' associations in this process."""
        others = sum(1 for a in self.server.active_associations if a.is_acceptor)
        if self.active + others + 1 > self.settings.max_associations:
            return False
        self.active += 1
        return True

    def _release(self) -> None:
        self.active -= 1

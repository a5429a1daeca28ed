"""One store-only association on the event loop: the DICOM upper layer (PS3.8) and the
C-STORE / C-ECHO service provider (PS3.7), without a thread of its own.

Why not pynetdicom here: its two polling threads per association and its PDU/PDV objects cost
about 4 ms an instance (measured, see docs/dimse.md), more than storing the instance does. This
protocol reads PDUs straight from the socket buffer, hashes each data fragment as it arrives
(overlapping the SHA-256 with the network), and hands the complete instance to the one ingest
function in a worker thread. An instance is only ever ingested whole: an abort, a reset or a
timeout before its last fragment leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Protocol

from cloudfilm.dimse import negotiation, pdu

if TYPE_CHECKING:
    from pynetdicom.pdu_primitives import A_ASSOCIATE
    from pynetdicom.presentation import PresentationContext

log = logging.getLogger(__name__)

NOT_AUTHORIZED = 0x0124
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700


class StoreHandlers(Protocol):
    """What the association asks of the service behind it: the archive's DIMSE handlers
    (ingest) or the edge gateway's door (spool). One receive path, two roles."""

    def known_title(self, ae: str) -> bool: ...

    def echo_allowed(self, ae: str, host: str) -> bool: ...

    def may_store(self, ae: str, host: str) -> int | None: ...

    def receive(
        self, data: bytes, ae: str, hospital: int, *, sha256: str | None = None
    ) -> tuple[int, str]: ...


class StoreAssociation(asyncio.Protocol):
    """States: waiting for the A-ASSOCIATE-RQ (ARTIM running), established, closing."""

    def __init__(
        self,
        *,
        handlers: StoreHandlers,
        executor: Executor,
        contexts: list[PresentationContext],
        max_pdu: int,
        max_instance_bytes: int,
        artim_timeout: float,
        idle_timeout: float,
        peer_host: str,
        admit: Callable[[], bool],
        release: Callable[[], None],
        request: A_ASSOCIATE | None = None,
        on_associate: Callable[[bool], None] | None = None,
    ) -> None:
        self.handlers = handlers
        self.executor = executor
        self.supported = contexts
        self.max_pdu = max_pdu
        self.max_instance = max_instance_bytes
        self.artim_timeout = artim_timeout
        self.idle_timeout = idle_timeout
        self.peer_host = peer_host
        self.admit = admit
        self.release = release
        self.decoded_request = request
        """The A-ASSOCIATE-RQ as the router decoded it while choosing the path."""
        self.on_associate = on_associate
        """Told whether each A-ASSOCIATE-RQ was accepted (the archive's metrics)."""
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.established = False
        self.closing = False
        self.busy = False
        """An instance is being stored: the peer waits for us, the idle timer must not run."""
        self.last_activity = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None
        self.accepted: negotiation.Accepted | None = None
        self.store_hospital: int | None = 0
        """0: not asked yet; None: may not store; else the hospital it stores for."""
        self.admitted = False
        self.release_requested = False
        # the message being received
        self.command = bytearray()
        self.command_context = 0
        self.pending: pdu.Command | None = None
        self.data: bytearray | None = None
        self.hasher: hashlib._Hash | None = None

    # -- transport events -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._arm(self.artim_timeout)

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self.closing:
            return
        buf = self.buffer
        buf += data
        pos, end = 0, len(buf)
        try:
            while end - pos >= 6 and not self.closing:
                pdu_type, length = pdu.HEADER.unpack_from(buf, pos)
                self._check_length(pdu_type, length)
                stop = pos + 6 + length
                if stop > end:
                    break
                with memoryview(buf) as view:
                    self._pdu(pdu_type, view[pos:stop])
                pos = stop
        except pdu.ProtocolError as exc:
            log.warning("aborting association from %s: %s", self.peer_host, exc)
            self._abort(exc.reason)
            return
        if pos:
            del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.closing = True
        self.data = None  # a half-received instance is dropped, never stored
        if self.admitted:
            self.admitted = False
            self.release()

    # -- timers -----------------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(seconds, self._timer_fired)

    def _timer_fired(self) -> None:
        self.timer = None
        if self.closing and self.transport is not None:
            self.transport.abort()  # ARTIM after release/abort: the peer did not close
            return
        if not self.established:
            log.info("ARTIM timeout: no A-ASSOCIATE-RQ from %s", self.peer_host)
            self.closing = True
            if self.transport is not None:
                self.transport.abort()
            return
        if self.busy:
            self._arm(self.idle_timeout)
            return
        quiet = time.monotonic() - self.last_activity
        if quiet >= self.idle_timeout:
            log.info("association from %s idle for %.0f s: aborted", self.peer_host, quiet)
            self._abort(pdu.REASON_NOT_SPECIFIED)
        else:
            self._arm(self.idle_timeout - quiet)

    # -- PDUs -------------------------------------------------------------------------------
    def _check_length(self, pdu_type: int, length: int) -> None:
        if pdu_type not in pdu.PDU_TYPES:
            raise pdu.ProtocolError(
                f"unknown PDU type {pdu_type:#04x}", pdu.REASON_UNRECOGNIZED_PDU
            )
        if pdu_type == pdu.P_DATA_TF_TYPE:
            limit = self.max_pdu if self.max_pdu else self.max_instance + (1 << 20)
            if length > limit:
                raise pdu.ProtocolError(f"P-DATA-TF of {length} bytes exceeds {limit}")
        elif pdu_type == pdu.A_ASSOCIATE_RQ_TYPE:
            if length > pdu.MAX_ASSOCIATE_RQ:
                raise pdu.ProtocolError(f"A-ASSOCIATE-RQ of {length} bytes")
        elif length > 1024:
            raise pdu.ProtocolError(f"PDU type {pdu_type:#04x} of {length} bytes")

    def _pdu(self, pdu_type: int, view: memoryview) -> None:
        if pdu_type == pdu.P_DATA_TF_TYPE and self.established:
            for context_id, control, fragment in pdu.pdvs(view[6:]):
                self._pdv(context_id, control, fragment)
        elif pdu_type == pdu.A_ASSOCIATE_RQ_TYPE and not self.established:
            self._associate(view)
        elif pdu_type == pdu.A_RELEASE_RQ_TYPE and self.established:
            if self.busy:
                self.release_requested = True  # answer the C-STORE first, then release
            else:
                self._send(pdu.release_rp())
                self._close_after_send()
        elif pdu_type == pdu.A_ABORT_TYPE:
            self.closing = True
            self.data = None
            if self.transport is not None:
                self.transport.close()
        else:
            raise pdu.ProtocolError(
                f"unexpected PDU type {pdu_type:#04x}", pdu.REASON_UNEXPECTED_PDU
            )

    def _associate(self, view: memoryview) -> None:
        request = self.decoded_request or pdu.decode_associate_rq(view)
        self.decoded_request = None
        refusal = negotiation.rejection(request)
        ae = negotiation._ae(request.calling_ae_title)
        if refusal is None and not self.handlers.known_title(ae):
            refusal = pdu.associate_rj(1, 1, 3)  # calling AE title not recognised
        if refusal is None:
            if not self.admit():
                refusal = pdu.associate_rj(2, 3, 2)  # transient, local limit exceeded
            else:
                self.admitted = True
        if self.on_associate is not None:
            self.on_associate(refusal is None)
        if refusal is not None:
            log.info("association from %s@%s rejected", ae, self.peer_host)
            self._send(refusal)
            self._close_after_send()
            return
        self.accepted = negotiation.accept(request, self.supported, self.max_pdu)
        self._send(self.accepted.ac)
        self.established = True
        self._arm(self.idle_timeout)

    # -- DIMSE messages ---------------------------------------------------------------------
    def _pdv(self, context_id: int, control: int, fragment: memoryview) -> None:
        assert self.accepted is not None
        if context_id not in self.accepted.contexts:
            raise pdu.ProtocolError(f"PDV on presentation context {context_id} not accepted")
        if control & 0x01:  # command fragment
            if self.pending is not None or self.busy:
                raise pdu.ProtocolError("command while a message is under way")
            if self.command and context_id != self.command_context:
                raise pdu.ProtocolError("command fragments on two presentation contexts")
            self.command_context = context_id
            self.command += fragment
            if len(self.command) > 65536:
                raise pdu.ProtocolError("command set larger than 64 kB")
            if control & 0x02:
                command = pdu.decode_command(self.command)
                self.command = bytearray()
                self._command(context_id, command)
            return
        if self.pending is None or self.data is None or context_id != self.command_context:
            raise pdu.ProtocolError("data set fragment without its command")
        self.data += fragment
        assert self.hasher is not None
        self.hasher.update(fragment)
        if len(self.data) > self.max_instance + 4096:
            raise pdu.ProtocolError("instance larger than the configured maximum")
        if control & 0x02:
            command, data, digest = self.pending, self.data, self.hasher.hexdigest()
            self.pending = self.data = self.hasher = None
            self._store(context_id, command, data, digest)

    def _command(self, context_id: int, command: pdu.Command) -> None:
        assert self.accepted is not None
        abstract, transfer = self.accepted.contexts[context_id]
        if command.command_field == pdu.C_ECHO_RQ:
            allowed = self.handlers.echo_allowed(self.accepted.calling_ae, self.peer_host)
            rsp = pdu.response(
                pdu.C_ECHO_RSP, command.message_id, 0 if allowed else NOT_AUTHORIZED, abstract
            )
            self._send_command(context_id, rsp)
            return
        if command.command_field == pdu.C_CANCEL_RQ:
            return  # nothing of ours is cancellable: each C-STORE is answered when stored
        if command.command_field != pdu.C_STORE_RQ or not command.has_data_set:
            raise pdu.ProtocolError(
                f"DIMSE command {command.command_field:#06x} on a store-only association",
                pdu.REASON_UNEXPECTED_PARAMETER,
            )
        sop_class = command.affected_sop_class or abstract
        meta = pdu.file_meta(sop_class, command.affected_sop_instance, transfer)
        self.pending = command
        self.data = bytearray(meta)
        self.hasher = hashlib.sha256(meta)

    def _store(self, context_id: int, command: pdu.Command, data: bytearray, digest: str) -> None:
        assert self.accepted is not None
        self.busy = True
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, self._ingest, command, bytes(data), digest)
        future.add_done_callback(lambda f: self._stored(context_id, command, f))

    def _ingest(self, command: pdu.Command, data: bytes, digest: str) -> tuple[int, str]:
        """In a worker thread: the same decision and ingest call as pynetdicom's handler."""
        assert self.accepted is not None
        if self.store_hospital == 0:
            self.store_hospital = self.handlers.may_store(self.accepted.calling_ae, self.peer_host)
        if self.store_hospital is None:
            return NOT_AUTHORIZED, "calling AE may not store here"
        return self.handlers.receive(
            data, self.accepted.calling_ae, self.store_hospital, sha256=digest
        )

    def _stored(self, context_id: int, command: pdu.Command, future: asyncio.Future) -> None:
        self.busy = False
        self.last_activity = time.monotonic()
        try:
            status, comment = future.result()
        except Exception:
            log.exception("C-STORE failed")
            status, comment = OUT_OF_RESOURCES, "out of resources: could not store"
        if self.closing:
            return  # the peer has gone; the instance is stored (or refused) all the same
        assert self.accepted is not None
        abstract, _ts = self.accepted.contexts[context_id]
        rsp = pdu.response(
            pdu.C_STORE_RSP,
            command.message_id,
            status,
            command.affected_sop_class or abstract,
            command.affected_sop_instance,
            comment,
        )
        self._send_command(context_id, rsp)
        if self.release_requested:
            self._send(pdu.release_rp())
            self._close_after_send()

    # -- sending ----------------------------------------------------------------------------
    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _send_command(self, context_id: int, command_set: bytes) -> None:
        assert self.accepted is not None
        for chunk in pdu.p_data(
            context_id, command_set, command=True, max_pdu=self.accepted.peer_max_pdu
        ):
            self._send(chunk)

    def _close_after_send(self) -> None:
        """Release answered or association rejected: the peer closes; ARTIM if it does not."""
        self.closing = True
        self._arm(self.artim_timeout)

    def _abort(self, reason: int) -> None:
        self._send(pdu.abort(reason))
        self.closing = True
        self.data = None
        if self.transport is not None:
            self.transport.close()

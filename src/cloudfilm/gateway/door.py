"""The gateway's DICOM door: C-ECHO and C-STORE of every storage class and transfer syntax.

Served by the archive's own event-driven receive path (``dimse/store_association.py``): one
receive path in the code base, two roles. The association asks this door the questions it
asks the archive's handlers (may this AE associate, echo, store? what status for these
bytes?); here "store" means "validate exactly as the archive would, then spool durably", so a
modality gets the archive's statuses for bad input at the door, not hours later from the cloud.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from pynetdicom import AE, AllStoragePresentationContexts
from pynetdicom.sop_class import Verification

from cloudfilm.config import caller_allowed
from cloudfilm.dimse.server import transfer_syntaxes
from cloudfilm.dimse.store_association import OUT_OF_RESOURCES, StoreAssociation
from cloudfilm.gateway.serving import ServingThread
from cloudfilm.gateway.spool import Spool, SpoolFull
from cloudfilm.ingest import Rejected, RejectReason
from cloudfilm.ingest.parse import parse_instance

if TYPE_CHECKING:
    from pynetdicom.presentation import PresentationContext

    from cloudfilm.gateway.metrics import GatewayMetrics
    from cloudfilm.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

SUCCESS = 0x0000
NOT_AUTHORIZED = 0x0124


def storage_contexts() -> list[PresentationContext]:
    """Verification and every storage SOP class in every transfer syntax, SCP role."""
    ae = AE()
    syntaxes = transfer_syntaxes()
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, syntaxes)
    return list(ae.supported_contexts)


class GatewayDoor:
    """What :class:`StoreAssociation` asks of its handlers, answered for the gateway."""

    def __init__(
        self, settings: GatewaySettings, spool: Spool, metrics: GatewayMetrics | None = None
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.metrics = metrics

    def known_title(self, ae: str) -> bool:
        callers = self.settings.allowed_callers
        return not callers or any(c.ae_title.strip() == ae.strip() for c in callers)

    def echo_allowed(self, ae: str, host: str) -> bool:
        return caller_allowed(self.settings.allowed_callers, ae, host, "echo")

    def may_store(self, ae: str, host: str) -> int | None:
        """1 (the gateway stores for its one hospital) or None; never 0 (that means "not
        asked yet" to the association)."""
        return 1 if caller_allowed(self.settings.allowed_callers, ae, host, "store") else None

    def receive(
        self, data: bytes, ae: str, hospital: int, *, sha256: str | None = None
    ) -> tuple[int, str]:
        status, comment = self._receive(data, ae, sha256)
        if self.metrics is not None:
            self.metrics.received(status, len(data))
        return status, comment

    def _receive(self, data: bytes, ae: str, sha256: str | None) -> tuple[int, str]:
        import hashlib

        if len(data) > self.settings.max_instance_bytes:
            reason = RejectReason.TOO_LARGE
            return reason.dimse_status, f"instance of {len(data)} bytes exceeds the limit"
        try:
            parsed = parse_instance(data)  # the archive's own checks: the same statuses
        except Rejected as exc:
            log.warning("C-STORE refused from %s: %s", ae, exc.message)
            return exc.reason.dimse_status, exc.message
        try:
            self.spool.add_instance(
                data,
                sha256=sha256 or hashlib.sha256(data).hexdigest(),
                study_uid=parsed.study_uid,
                series_uid=parsed.series_uid,
                sop_uid=parsed.sop_instance_uid,
                source=f"dimse:{ae}",
            )
        except SpoolFull as exc:
            log.error("C-STORE refused from %s: %s", ae, exc)
            return OUT_OF_RESOURCES, "out of resources: gateway spool full"
        except (OSError, sqlite3.Error) as exc:  # a full or failing disk: nothing acknowledged
            log.error("C-STORE from %s could not be spooled: %s", ae, exc)
            return OUT_OF_RESOURCES, "out of resources: gateway cannot write its spool"
        return SUCCESS, ""


class DicomDoor:
    """The listening socket, served on an event loop of its own."""

    def __init__(self, settings: GatewaySettings, door: GatewayDoor) -> None:
        self.settings = settings
        self.door = door
        self.contexts = storage_contexts()
        self.active = 0
        self.executor = ThreadPoolExecutor(
            max_workers=max(4, settings.max_associations), thread_name_prefix="gw-store"
        )
        self.serving = ServingThread(
            "gateway-dicom",
            lambda loop: loop.create_server(
                self._protocol, settings.dicom_host, settings.dicom_port, reuse_address=True
            ),
        )

    @property
    def port(self) -> int:
        return self.serving.port

    def start(self) -> None:
        self.serving.start()

    def stop(self) -> None:
        self.serving.stop()
        self.executor.shutdown(wait=True)

    def _protocol(self) -> StoreAssociation:
        s = self.settings
        return _Association(
            handlers=self.door,
            executor=self.executor,
            contexts=self.contexts,
            max_pdu=0,
            max_instance_bytes=s.max_instance_bytes,
            artim_timeout=s.dicom_artim_timeout,
            idle_timeout=s.dicom_idle_timeout,
            peer_host="",
            admit=self._admit,
            release=self._release,
        )

    def _admit(self) -> bool:
        if self.active + 1 > self.settings.max_associations:
            return False
        self.active += 1
        return True

    def _release(self) -> None:
        self.active -= 1


class _Association(StoreAssociation):
    """Learns the peer's address from the transport (the archive's router passes it in)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_host = str(peer[0])
        super().connection_made(transport)

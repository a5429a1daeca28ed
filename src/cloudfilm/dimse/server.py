"""The DICOM network server (pynetdicom): what modalities and PACS send to and query.

Accepts every standard storage SOP class in every transfer syntax pydicom knows (the bytes are
stored as received, so no codec is needed to accept them), and the Patient/Study Root
Query/Retrieve FIND, GET and MOVE models.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from cloudfilm.dimse.commitment import STORAGE_COMMITMENT, StorageCommitment
from cloudfilm.dimse.handlers import Handlers
from cloudfilm.dimse.router import StoreRouter
from cloudfilm.metrics.instruments import association

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

log = logging.getLogger(__name__)

# HTJ2K syntaxes are newer than some pynetdicom lists: accept them explicitly.
EXTRA_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
    "1.2.840.10008.1.2.4.204",
    "1.2.840.10008.1.2.4.205",
]


def transfer_syntaxes() -> list[str]:
    syntaxes = list(ALL_TRANSFER_SYNTAXES)
    for ts in EXTRA_TRANSFER_SYNTAXES:
        if ts not in syntaxes:
            syntaxes.append(ts)
    return syntaxes


class NoDelayAssociationServer(ThreadedAssociationServer):
    """Turns Nagle's algorithm off on every accepted connection.

    pynetdicom writes a response PDU in more than one ``send``; with Nagle on, the second
    waits for the peer's delayed ACK (~40 ms), which caps C-STORE near 25 instances/s.
    """

    reuse_port = False
    """Set by multi-process serving: every worker binds the same port, the kernel spreads
    new associations across them (SO_REUSEPORT)."""

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    router: StoreRouter | None = None
    """Set once the server runs: every accepted connection goes to it first (see router.py)."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = super().get_request()
        with contextlib.suppress(OSError):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.router is None:
            super().process_request(request, client_address)
        else:
            self.router.adopt(request, client_address)

    def shutdown(self) -> None:
        super().shutdown()
        if self.router is not None:
            self.router.close()


def build_ae(archive: Archive) -> AE:
    settings = archive.settings
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = settings.dicom_max_pdu  # 0: no limit, far fewer round trips
    ae.network_timeout = settings.dicom_idle_timeout
    ae.acse_timeout = settings.dicom_artim_timeout
    ae.dimse_timeout = 300
    syntaxes = transfer_syntaxes()
    ae.add_supported_context(Verification)
    for cx in AllStoragePresentationContexts:
        # SCP role for C-STORE from modalities; SCU role so C-GET can send back on the
        # requestor's association.
        ae.add_supported_context(cx.abstract_syntax, syntaxes, scp_role=True, scu_role=True)
    for sop in (
        PatientRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelGet,
        PatientRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelMove,
    ):
        ae.add_supported_context(sop, syntaxes)
    # Storage Commitment: the modality is SCU; we accept its (optional) role proposal as SCU
    # and never the SCP role (we send reports, we do not take them).
    ae.add_supported_context(STORAGE_COMMITMENT, scu_role=True, scp_role=False)
    # Unknown calling AE titles are refused by the router before pynetdicom sees them (the
    # registered titles change at run time; pynetdicom's require_calling_aet is fixed).
    return ae


def start_dicom_server(
    archive: Archive, *, reuse_port: bool = False, announce: bool = True
) -> ThreadedAssociationServer:
    """Start listening in background threads; returns the server (call ``shutdown()``)."""
    settings = archive.settings
    if not settings.allowed_callers and announce:
        log.warning(
            "no calling-AE allow-list configured: EVERY calling AE may echo, store, find, get "
            "and move (set CLOUDFILM_ALLOWED_CALLERS to restrict)"
        )
    ae = build_ae(archive)
    h = Handlers(archive)
    handlers = [
        (evt.EVT_C_ECHO, h.echo),
        (evt.EVT_C_STORE, h.store),
        (evt.EVT_C_FIND, h.find),
        (evt.EVT_C_GET, h.get),
        (evt.EVT_C_MOVE, h.move),
        (evt.EVT_N_ACTION, StorageCommitment(h).action),
        (evt.EVT_ACCEPTED, lambda event: association("pynetdicom", True)),
        (evt.EVT_REJECTED, lambda event: association("pynetdicom", False)),
    ]
    server_class = type(
        "CloudfilmAssociationServer", (NoDelayAssociationServer,), {"reuse_port": reuse_port}
    )
    server = ae.make_server(
        (settings.dicom_host, settings.dicom_port),
        evt_handlers=handlers,
        server_class=server_class,
    )
    ae._servers.append(server)  # as AE.start_server does, so server.shutdown() works
    if settings.dicom_store_path == "event-loop":
        server.router = StoreRouter(server, h)
    threading.Thread(target=server.serve_forever, name="dicom-acceptor", daemon=True).start()
    log.info(
        "DICOM %s listening on %s:%d", settings.ae_title, settings.dicom_host, settings.dicom_port
    )
    return server

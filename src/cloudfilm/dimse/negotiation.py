"""Association negotiation for the event-driven store path, on pynetdicom's own rules.

Which associations the store path takes (``is_store_only``), and the A-ASSOCIATE-AC or -RJ it
answers with. Presentation contexts are negotiated by pynetdicom's ``negotiate_as_acceptor``
against the very contexts the pynetdicom AE supports, so a peer gets the same answer whichever
path serves it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pynetdicom import (
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    AllStoragePresentationContexts,
)
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor
from pynetdicom.sop_class import Verification

from cloudfilm.dimse import pdu

IMPLEMENTATION_CLASS_UID = str(PYNETDICOM_IMPLEMENTATION_UID)
IMPLEMENTATION_VERSION = PYNETDICOM_IMPLEMENTATION_VERSION
"""The identifiers the pynetdicom path writes into association answers and file meta: the
same instance received by either path is stored as the same bytes (a re-send is a duplicate,
not a conflict)."""

VERIFICATION = str(Verification)
STORE_ONLY_SYNTAXES = frozenset(
    {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts} | {VERIFICATION}
)


def is_store_only(request: A_ASSOCIATE) -> bool:
    """Storage and verification contexts only, and no negotiation the store path lacks
    (role selection is for C-GET, user identity and extended negotiation for others)."""
    contexts = request.presentation_context_definition_list
    if not contexts:
        return False
    if any(str(cx.abstract_syntax) not in STORE_ONLY_SYNTAXES for cx in contexts):
        return False
    unsupported = (
        SCP_SCU_RoleSelectionNegotiation,
        UserIdentityNegotiation,
        SOPClassExtendedNegotiation,
    )
    return not any(isinstance(item, unsupported) for item in request.user_information or [])


@dataclass
class Accepted:
    """An accepted association: the AC to send and what the store path needs to serve it."""

    ac: bytes
    contexts: dict[int, tuple[str, str]]
    """Accepted context id -> (abstract syntax, transfer syntax)."""
    peer_max_pdu: int
    calling_ae: str
    called_ae: str


def peer_max_pdu(request: A_ASSOCIATE) -> int:
    for item in request.user_information or []:
        if isinstance(item, MaximumLengthNotification):
            return int(item.maximum_length_received or 0)
    return 0


def rejection(request: A_ASSOCIATE) -> bytes | None:
    """The A-ASSOCIATE-RJ the ACSE rules demand (PS3.8 7.1.1.7-9), or None."""
    version = getattr(request, "_cloudfilm_protocol_version", 1)
    if not version & 0x0001:
        return pdu.associate_rj(1, 2, 2)  # permanent, ACSE provider, protocol version
    if str(request.application_context_name) != pdu.APPLICATION_CONTEXT:
        return pdu.associate_rj(1, 1, 2)  # permanent, service user, application context
    return None


def accept(request: A_ASSOCIATE, supported: list[PresentationContext], max_pdu: int) -> Accepted:
    results, _roles = negotiate_as_acceptor(
        request.presentation_context_definition_list, supported, None
    )
    answer = A_ASSOCIATE()
    answer.application_context_name = pdu.APPLICATION_CONTEXT
    answer.calling_ae_title = request.calling_ae_title
    answer.called_ae_title = request.called_ae_title
    answer.result = 0x00
    answer.result_source = 0x01
    answer.presentation_context_definition_results_list = results
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION
    answer.user_information = [length, impl, version]
    contexts = {
        int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
        for cx in results
        if cx.result == 0x00 and cx.context_id is not None
    }
    return Accepted(
        ac=pdu.encode_associate_ac(answer),
        contexts=contexts,
        peer_max_pdu=peer_max_pdu(request),
        calling_ae=_ae(request.calling_ae_title),
        called_ae=_ae(request.called_ae_title),
    )


def _ae(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip()
    return str(value or "").strip()

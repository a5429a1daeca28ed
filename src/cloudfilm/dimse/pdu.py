"""DICOM Upper Layer PDUs (PS3.8 9.3) and DIMSE command sets (PS3.7 9.3, E) for the
event-driven store path.

Framing and the PDUs of every instance (P-DATA-TF, its PDVs, the C-STORE command set) are a few
``struct`` calls: they run hundreds of times a second. The rare and intricate PDUs (A-ASSOCIATE
request and accept, with their many items) are pynetdicom's own classes, so negotiation reads
and writes exactly what the pynetdicom path does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE

A_ASSOCIATE_RQ_TYPE = 0x01
A_ASSOCIATE_AC_TYPE = 0x02
A_ASSOCIATE_RJ_TYPE = 0x03
P_DATA_TF_TYPE = 0x04
A_RELEASE_RQ_TYPE = 0x05
A_RELEASE_RP_TYPE = 0x06
A_ABORT_TYPE = 0x07
PDU_TYPES = frozenset(range(1, 8))

HEADER = struct.Struct(">BxL")
PDV_HEADER = struct.Struct(">LBB")
_ELEMENT = struct.Struct("<HHL")
_US = struct.Struct("<H")

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
MAX_ASSOCIATE_RQ = 1 << 20
"""A larger A-ASSOCIATE-RQ is not a real peer's (even 128 contexts with 20 syntaxes each are
about 100 kB): refused before it costs memory."""

# A-ABORT reasons when the service provider aborts (PS3.8 9.3.8)
REASON_NOT_SPECIFIED = 0x00
REASON_UNRECOGNIZED_PDU = 0x01
REASON_UNEXPECTED_PDU = 0x02
REASON_UNRECOGNIZED_PARAMETER = 0x04
REASON_UNEXPECTED_PARAMETER = 0x05
REASON_INVALID_PARAMETER = 0x06


class ProtocolError(Exception):
    """The peer broke the protocol; the association is aborted with ``reason``."""

    def __init__(self, message: str, reason: int = REASON_INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


def decode_associate_rq(body: bytes | memoryview) -> A_ASSOCIATE:
    """The A-ASSOCIATE-RQ PDU (header included) as pynetdicom's primitive."""
    pdu = A_ASSOCIATE_RQ()
    try:
        pdu.decode(bytes(body))
        primitive = pdu.to_primitive()
    except Exception as exc:  # pynetdicom raises many types for malformed items
        raise ProtocolError(f"malformed A-ASSOCIATE-RQ: {exc}") from exc
    primitive._cloudfilm_protocol_version = pdu.protocol_version  # type: ignore[attr-defined]
    return primitive


def encode_associate_ac(primitive: A_ASSOCIATE) -> bytes:
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    return pdu.encode()


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4): result 1 permanent / 2 transient."""
    return HEADER.pack(A_ASSOCIATE_RJ_TYPE, 4) + bytes((0, result, source, reason))


def release_rp() -> bytes:
    return HEADER.pack(A_RELEASE_RP_TYPE, 4) + b"\x00\x00\x00\x00"


def abort(reason: int = REASON_NOT_SPECIFIED, source: int = 2) -> bytes:
    """A-ABORT; source 2 is the service provider (we found the fault), 0 the service user."""
    return HEADER.pack(A_ABORT_TYPE, 4) + bytes((0, 0, source, reason))


def p_data(context_id: int, payload: bytes, *, command: bool, max_pdu: int) -> Iterator[bytes]:
    """P-DATA-TF PDUs carrying one message part, each within the peer's Maximum Length."""
    # Maximum Length bounds the PDU's variable field: PDV item length (4), context id and
    # message control header (1 each), then the fragment.
    room = max(max_pdu - 6, 1) if max_pdu else max(len(payload), 1)
    view = memoryview(payload)
    offset = 0
    while True:
        chunk = view[offset : offset + room]
        offset += len(chunk)
        last = offset >= len(payload)
        control = (0x01 if command else 0x00) | (0x02 if last else 0x00)
        yield (
            HEADER.pack(P_DATA_TF_TYPE, len(chunk) + 6)
            + PDV_HEADER.pack(len(chunk) + 2, context_id, control)
            + bytes(chunk)
        )
        if last:
            return


def pdvs(body: memoryview) -> Iterator[tuple[int, int, memoryview]]:
    """(context id, control header, fragment) of each PDV in a P-DATA-TF body."""
    offset, end = 0, len(body)
    if end == 0:
        raise ProtocolError("P-DATA-TF without a PDV")
    while offset < end:
        if end - offset < 6:
            raise ProtocolError("truncated PDV item")
        length, context_id, control = PDV_HEADER.unpack_from(body, offset)
        if length < 2 or offset + 4 + length > end:
            raise ProtocolError(f"PDV item length {length} does not fit its PDU")
        if control & 0xFC:
            raise ProtocolError(f"invalid PDV message control header {control:#04x}")
        yield context_id, control, body[offset + 6 : offset + 4 + length]
        offset += 4 + length


# -- DIMSE command sets ----------------------------------------------------------------------

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
C_CANCEL_RQ = 0x0FFF
NO_DATA_SET = 0x0101


@dataclass(frozen=True)
class Command:
    """The fields of a request command set the store path uses (PS3.7 9.3.1.1, 9.3.5.1)."""

    command_field: int
    message_id: int
    has_data_set: bool
    affected_sop_class: str
    affected_sop_instance: str
    move_originator_ae: str


def decode_command(data: bytes | bytearray) -> Command:
    """A command set is always Implicit VR Little Endian, group 0000 only."""
    values: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < 8:
            raise ProtocolError("truncated command set")
        group, element, length = _ELEMENT.unpack_from(data, offset)
        offset += 8
        if group != 0x0000 or length > end - offset:
            raise ProtocolError(f"invalid command element ({group:04X},{element:04X})")
        values[element] = bytes(data[offset : offset + length])
        offset += length

    def us(element: int, default: int | None = None) -> int:
        raw = values.get(element)
        if raw is None or len(raw) != 2:
            if default is not None:
                return default
            raise ProtocolError(f"command element (0000,{element:04X}) missing or invalid")
        return int(_US.unpack(raw)[0])

    def text(element: int) -> str:
        return values.get(element, b"").decode("ascii", "replace").rstrip("\x00 ").strip()

    return Command(
        command_field=us(0x0100),
        message_id=us(0x0110, 0),
        has_data_set=us(0x0800, NO_DATA_SET) != NO_DATA_SET,
        affected_sop_class=text(0x0002),
        affected_sop_instance=text(0x1000),
        move_originator_ae=text(0x1030),
    )


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0, element, len(value)) + value


def _ui(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _lo(value: str) -> bytes:
    raw = value.encode("ascii", "replace")[:64]
    return raw + b" " if len(raw) % 2 else raw


def response(
    command_field: int,
    message_id: int,
    status: int,
    sop_class: str,
    sop_instance: str = "",
    error_comment: str = "",
) -> bytes:
    """A C-STORE-RSP or C-ECHO-RSP command set, elements in ascending tag order."""
    parts = [_element(0x0002, _ui(sop_class))]
    parts.append(_element(0x0100, _US.pack(command_field)))
    parts.append(_element(0x0120, _US.pack(message_id)))
    parts.append(_element(0x0800, _US.pack(NO_DATA_SET)))
    parts.append(_element(0x0900, _US.pack(status)))
    if error_comment:
        parts.append(_element(0x0902, _lo(error_comment)))
    if sop_instance:
        parts.append(_element(0x1000, _ui(sop_instance)))
    body = b"".join(parts)
    return _element(0x0000, struct.pack("<L", len(body))) + body


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble, prefix and File Meta Information (PS3.10 7.1) for a received data set.

    The same elements pynetdicom writes, so an instance's stored bytes do not depend on which
    receive path took it; only the implementation identifiers are ours.
    """
    from cloudfilm.dimse.negotiation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION

    def explicit(element: int, vr: bytes, value: bytes) -> bytes:
        if vr == b"OB":
            return struct.pack("<HH2s2xL", 2, element, vr, len(value)) + value
        return struct.pack("<HH2sH", 2, element, vr, len(value)) + value

    body = b"".join(
        (
            explicit(0x0001, b"OB", b"\x00\x01"),
            explicit(0x0002, b"UI", _ui(sop_class)),
            explicit(0x0003, b"UI", _ui(sop_instance)),
            explicit(0x0010, b"UI", _ui(transfer_syntax)),
            explicit(0x0012, b"UI", _ui(IMPLEMENTATION_CLASS_UID)),
            explicit(0x0013, b"SH", _lo(IMPLEMENTATION_VERSION)),
        )
    )
    group_length = explicit(0x0000, b"UL", struct.pack("<L", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body

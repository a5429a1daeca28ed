"""A DICOM upper-layer peer driven by hand, byte by byte, for the tests that a well-behaved
library cannot play: stopping mid-instance, aborting, resetting, going silent, sending PDUs the
standard forbids. Encodings follow PS3.8 section 9.3 (PDU structure) and Annex E (PDVs);
command sets are encoded with pydicom (implicit VR little endian, PS3.7 section 6.3.1).

Every socket operation has a timeout: a test built on this never hangs on a silent server.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF = 0x01, 0x02, 0x03, 0x04
A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x05, 0x06, 0x07
PDU_TYPES = {A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RQ}
PDU_TYPES |= {A_RELEASE_RP, A_ABORT}

ABORT_PDU = struct.pack(">BBIBBBB", A_ABORT, 0, 4, 0, 0, 0, 0)  # source: service user
RELEASE_RQ_PDU = struct.pack(">BBII", A_RELEASE_RQ, 0, 4, 0)


def pdu(kind: int, body: bytes, length: int | None = None) -> bytes:
    """A PDU; ``length`` lets a test lie about the size of the body."""
    return struct.pack(">BBI", kind, 0, len(body) if length is None else length) + body


def item(kind: int, body: bytes, length: int | None = None) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body) if length is None else length) + body


Context = tuple[int, str, list[str]]
"""(presentation context ID, abstract syntax, proposed transfer syntaxes)"""


def associate_rq(
    contexts: list[Context],
    *,
    called: str = "CLOUDFILM",
    calling: str = "RAWPEER",
    max_pdu: int = 16384,
    version: int = 1,
    application_context: str = APPLICATION_CONTEXT,
) -> bytes:
    body = struct.pack(">HH", version, 0)
    body += called.ljust(16).encode() + calling.ljust(16).encode() + bytes(32)
    body += item(0x10, application_context.encode())
    for cid, abstract, syntaxes in contexts:
        sub = item(0x30, abstract.encode()) + b"".join(item(0x40, ts.encode()) for ts in syntaxes)
        body += item(0x20, bytes([cid, 0, 0, 0]) + sub)
    user = item(0x51, struct.pack(">I", max_pdu))
    user += item(0x52, PYNETDICOM_IMPLEMENTATION_UID.encode())
    body += item(0x50, user)
    return pdu(A_ASSOCIATE_RQ, body)


def pdv(context_id: int, data: bytes, *, command: bool, last: bool) -> bytes:
    header = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    return struct.pack(">IBB", len(data) + 2, context_id, header) + data


def p_data(*pdvs: bytes) -> bytes:
    return pdu(P_DATA_TF, b"".join(pdvs))


def command_set(**elements: object) -> bytes:
    """A DIMSE command set with its group length, implicit VR little endian."""
    ds = Dataset()
    ds.CommandGroupLength = 0
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.CommandGroupLength = len(_encode(ds)) - 12  # the group length element itself
    return _encode(ds)


def _encode(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    return fp.getvalue()


def decode_command(data: bytes) -> Dataset:
    return read_dataset(DicomBytesIO(data), is_implicit_VR=True, is_little_endian=True)


def c_store_rq(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    return command_set(
        AffectedSOPClassUID=sop_class,
        CommandField=0x0001,
        MessageID=message_id,
        Priority=0,
        CommandDataSetType=0x0000,
        AffectedSOPInstanceUID=sop_instance,
    )


def c_echo_rq(message_id: int) -> bytes:
    return command_set(
        AffectedSOPClassUID=VERIFICATION,
        CommandField=0x0030,
        MessageID=message_id,
        CommandDataSetType=0x0101,
    )


def read_exact(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes, or fewer if the peer closed the connection first."""
    out = bytearray()
    while len(out) < n:
        try:
            chunk = sock.recv(min(n - len(out), 1 << 16))
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


def read_pdu(sock: socket.socket) -> tuple[int, bytes] | None:
    """The next whole PDU as (type, body), or None when the connection ends (a PDU cut short
    by the close also gives None). Raises TimeoutError when nothing comes in time."""
    head = read_exact(sock, 6)
    if len(head) < 6:
        return None
    kind, _, length = struct.unpack(">BBI", head)
    body = read_exact(sock, length)
    return (kind, body) if len(body) == length else None


@dataclass
class Accepted:
    """What an A-ASSOCIATE-AC said."""

    max_pdu: int | None = None
    contexts: dict[int, tuple[int, str]] = field(default_factory=dict)
    """context ID -> (result, transfer syntax)"""


def _items(data: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i + 4 <= len(data):
        kind, _, length = struct.unpack(">BBH", data[i : i + 4])
        out.append((kind, data[i + 4 : i + 4 + length]))
        i += 4 + length
    return out


def parse_ac(body: bytes) -> Accepted:
    ac = Accepted()
    for kind, value in _items(body[68:]):
        if kind == 0x21:
            ts = [v for k, v in _items(value[4:]) if k == 0x40]
            ac.contexts[value[0]] = (value[2], ts[0].decode().rstrip("\0 ") if ts else "")
        elif kind == 0x50:
            for k, v in _items(value):
                if k == 0x51:
                    ac.max_pdu = struct.unpack(">I", v)[0]
    return ac


def parse_rj(body: bytes) -> tuple[int, int, int]:
    """(result, source, reason/diagnostic) of an A-ASSOCIATE-RJ."""
    return body[1], body[2], body[3]


def parse_abort(body: bytes) -> tuple[int, int]:
    """(source, reason/diagnostic) of an A-ABORT."""
    return body[2], body[3]


def wait_closed(sock: socket.socket, bound: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took.
    Fails the test if the connection is still open after ``bound`` seconds."""
    start = time.monotonic()
    got = bytearray()
    while True:
        left = bound - (time.monotonic() - start)
        if left <= 0:
            raise AssertionError(f"server kept the connection open for {bound} s; sent {got!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            continue
        if not chunk:
            break
        got += chunk
    return bytes(got), time.monotonic() - start


def split_pdus(data: bytes) -> list[tuple[int, bytes]]:
    """Whole PDUs in ``data``; fails if anything is left over (a PDU cut short, garbage)."""
    out, i = [], 0
    while i < len(data):
        assert i + 6 <= len(data), f"truncated PDU header from the server: {data[i:]!r}"
        kind, _, length = struct.unpack(">BBI", data[i : i + 6])
        assert i + 6 + length <= len(data), f"PDU cut short by the server: {data[i:]!r}"
        out.append((kind, data[i + 6 : i + 6 + length]))
        i += 6 + length
    return out


def dataset_part(file_bytes: bytes) -> bytes:
    """The data set of a DICOM file: everything after the preamble and group 0002 (explicit VR
    little endian by definition, PS3.10 section 7.1)."""
    assert file_bytes[128:132] == b"DICM"
    i = 132
    while struct.unpack("<H", file_bytes[i : i + 2])[0] == 0x0002:
        vr = file_bytes[i + 4 : i + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            i += 12 + struct.unpack("<I", file_bytes[i + 8 : i + 12])[0]
        else:
            i += 8 + struct.unpack("<H", file_bytes[i + 6 : i + 8])[0]
    return file_bytes[i:]


class Peer:
    """One TCP connection to the server, spoken to in raw PDUs."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.accepted = Accepted()
        self.message_id = 0

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def receive(self) -> tuple[int, bytes] | None:
        self.sock.settimeout(self.timeout)
        return read_pdu(self.sock)

    def associate(self, contexts: list[Context], **kw: object) -> Accepted:
        self.send(associate_rq(contexts, **kw))  # type: ignore[arg-type]
        answer = self.receive()
        assert answer is not None and answer[0] == A_ASSOCIATE_AC, f"not accepted: {answer!r}"
        self.accepted = parse_ac(answer[1])
        return self.accepted

    def fragment_size(self, wanted: int | None) -> int:
        """The data bytes per PDV: as much as the server's maximum allows (PDU length = PDV
        item length + 4 = data + 6), or ``wanted`` if smaller."""
        limit = (self.accepted.max_pdu or 0) - 6
        if limit <= 0:
            return wanted or 1 << 30
        return min(limit, wanted) if wanted else limit

    def send_store(
        self,
        context_id: int,
        sop_class: str,
        sop_instance: str,
        data: bytes,
        *,
        fragment: int | None = None,
        stop_after: int | None = None,
    ) -> None:
        """A C-STORE-RQ: the command, then the data set in PDVs of ``fragment`` bytes. With
        ``stop_after``, only that many data set bytes are sent and the last one never is."""
        self.message_id += 1
        self.send(p_data(pdv(context_id, c_store_rq(self.message_id, sop_class, sop_instance),
                             command=True, last=True)))  # fmt: skip
        size = self.fragment_size(fragment)
        end = len(data) if stop_after is None else stop_after
        for start in range(0, end, size):
            chunk = data[start : min(start + size, end)]
            last = stop_after is None and start + size >= len(data)
            self.send(p_data(pdv(context_id, chunk, command=False, last=last)))

    def response(self) -> Dataset:
        """The next DIMSE response command set."""
        data = b""
        while True:
            answer = self.receive()
            assert answer is not None, "connection closed while waiting for a response"
            kind, body = answer
            assert kind == P_DATA_TF, f"expected P-DATA, got PDU type {kind:#x}: {body!r}"
            i = 0
            while i < len(body):
                length = struct.unpack(">I", body[i : i + 4])[0]
                header, value = body[i + 5], body[i + 6 : i + 4 + length]
                i += 4 + length
                assert header & 0x01, "a data set PDV where a command was expected"
                data += value
                if header & 0x02:
                    return decode_command(data)

    def store(self, context_id: int, sop_class: str, sop_instance: str, data: bytes,
              *, fragment: int | None = None) -> int:  # fmt: skip
        self.send_store(context_id, sop_class, sop_instance, data, fragment=fragment)
        return int(self.response().Status)

    def release(self) -> None:
        self.send(RELEASE_RQ_PDU)
        answer = self.receive()
        assert answer is not None and answer[0] == A_RELEASE_RP, f"release: {answer!r}"
        self.close()

    def reset(self) -> None:
        """Close with SO_LINGER (1, 0): the kernel sends RST, not FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


class PduRecorder:
    """A relay between a peer and the server that notes the type and length of every PDU the
    peer sends: the only way to see what fragment sizes a third-party sender really used."""

    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(30)
        self.port = self.listener.getsockname()[1]
        self.sent: list[tuple[int, int]] = []
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        client, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.server_port), timeout=30)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(30)
        back = threading.Thread(target=self._pump, args=(upstream, client), daemon=True)
        back.start()
        with contextlib.suppress(OSError):
            while (head := read_exact(client, 6)) and len(head) == 6:
                kind, _, length = struct.unpack(">BBI", head)
                self.sent.append((kind, length))
                upstream.sendall(head + read_exact(client, length))
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)
        back.join(30)
        client.close()
        upstream.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def p_data_lengths(self) -> list[int]:
        self._thread.join(30)
        self.listener.close()
        return [length for kind, length in self.sent if kind == P_DATA_TF]

"""The event-driven store path's PDU and command-set codec, against pynetdicom's own encoders,
and a bounded fuzz of its PDU parser (the protocol object fed arbitrary bytes, in arbitrary
chunks, on a real event loop with a real archive behind it)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode, encode_file_meta
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context

from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.dimse import pdu
from cloudfilm.dimse.handlers import Handlers
from cloudfilm.dimse.server import build_ae
from cloudfilm.dimse.store_association import StoreAssociation
from tests.factory import make_dataset, to_bytes

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"


@pytest.mark.parametrize("sop_uid", ["1.2.3.4.5", "1.2.3.4.56", "2.25." + "7" * 59])
def test_file_meta_is_byte_for_byte_what_pynetdicom_writes(sop_uid: str) -> None:
    """The same instance stored by either receive path must have the same bytes (a re-send
    is then a duplicate, not a conflicting copy)."""
    meta = FileMetaDataset()
    meta.FileMetaInformationGroupLength = 0
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = EXPLICIT
    meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    expected = b"\x00" * 128 + b"DICM" + encode_file_meta(meta)
    assert pdu.file_meta(CT, sop_uid, EXPLICIT) == expected


def test_a_c_store_rq_from_pynetdicom_decodes() -> None:
    primitive = C_STORE()
    primitive.MessageID = 4711
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.3.4.5.6.7"
    primitive.Priority = 2
    primitive.MoveOriginatorApplicationEntityTitle = "MOVER"
    primitive.MoveOriginatorMessageID = 3
    primitive.DataSet = BytesIO(b"\x00" * 8)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    command = pdu.decode_command(encode(message.command_set, True, True))
    assert command == pdu.Command(
        command_field=pdu.C_STORE_RQ,
        message_id=4711,
        has_data_set=True,
        affected_sop_class=CT,
        affected_sop_instance="1.2.3.4.5.6.7",
        move_originator_ae="MOVER",
    )


def test_a_c_store_rsp_reads_back_as_the_standard_says() -> None:
    raw = pdu.response(pdu.C_STORE_RSP, 12, 0xB000, CT, "1.2.3.4.5", "kept first")
    ds = read_dataset(DicomBytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandGroupLength == len(raw) - 12
    assert ds.CommandField == 0x8001
    assert ds.MessageIDBeingRespondedTo == 12
    assert ds.CommandDataSetType == 0x0101
    assert ds.Status == 0xB000
    assert ds.ErrorComment == "kept first"
    assert ds.AffectedSOPClassUID == CT
    assert ds.AffectedSOPInstanceUID == "1.2.3.4.5"
    tags = [int(elem.tag) for elem in ds]
    assert tags == sorted(tags)


@pytest.mark.parametrize("max_pdu", [0, 16, 4096, 16384])
def test_p_data_stays_within_the_peers_maximum_length(max_pdu: int) -> None:
    payload = bytes(range(256)) * 100
    chunks = list(pdu.p_data(3, payload, command=False, max_pdu=max_pdu))
    body = bytearray()
    for i, chunk in enumerate(chunks):
        pdu_type, length = pdu.HEADER.unpack_from(chunk)
        assert pdu_type == pdu.P_DATA_TF_TYPE and length == len(chunk) - 6
        assert max_pdu == 0 or length <= max_pdu
        ((context, control, fragment),) = list(pdu.pdvs(memoryview(chunk)[6:]))
        assert context == 3
        assert control == (0x02 if i == len(chunks) - 1 else 0x00)
        body += fragment
    assert bytes(body) == payload
    assert max_pdu != 0 or len(chunks) == 1


# -- fuzzing the parser ------------------------------------------------------------------------


class Transport(asyncio.Transport):
    """asyncio's transport interface, recording what the protocol sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "wrote after closing"
        self.sent += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def associate_rq(contexts: list[tuple[int, str, list[str]]], max_pdu: int = 16384) -> bytes:
    request = A_ASSOCIATE()
    request.application_context_name = pdu.APPLICATION_CONTEXT
    request.calling_ae_title = "FUZZER"
    request.called_ae_title = "CLOUDFILM"
    items = []
    for cid, abstract, syntaxes in contexts:
        cx = build_context(abstract, syntaxes)
        cx.context_id = cid
        items.append(cx)
    request.presentation_context_definition_list = items
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    request.user_information = [length]
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(request)
    return rq.encode()


def store_stream(data: bytes, sop_uid: str, *, context: int = 1, max_pdu: int = 4096) -> bytes:
    """A well-formed C-STORE on context 1, as a peer would send it."""
    primitive = C_STORE()
    primitive.MessageID = 1
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = sop_uid
    primitive.Priority = 2
    primitive.DataSet = BytesIO(b"")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    command = encode(message.command_set, True, True)
    out = b"".join(pdu.p_data(context, command, command=True, max_pdu=max_pdu))
    return out + b"".join(pdu.p_data(context, data, command=False, max_pdu=max_pdu))


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    a = Archive(Settings(data_dir=tmp_path_factory.mktemp("fuzz") / "data"))
    yield a
    a.close()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def feed(archive: Archive, loop: asyncio.AbstractEventLoop, chunks: list[bytes]) -> Transport:
    handlers = Handlers(archive)
    contexts = build_ae(archive).supported_contexts
    executor = ThreadPoolExecutor(max_workers=2)
    transport = Transport()

    async def run() -> None:
        protocol = StoreAssociation(
            handlers=handlers,
            executor=executor,
            contexts=contexts,
            max_pdu=0,
            max_instance_bytes=8 << 20,
            artim_timeout=30,
            idle_timeout=30,
            peer_host="127.0.0.1",
            admit=lambda: True,
            release=lambda: None,
        )
        protocol.connection_made(transport)
        for chunk in chunks:
            if transport.closed:
                break
            protocol.data_received(chunk)
        await asyncio.sleep(0)
        while protocol.busy:
            await asyncio.sleep(0.01)
        protocol.connection_lost(None)

    # In a thread of its own: a browser test earlier in the session leaves Playwright's loop
    # running in the main thread, where no other loop may run.
    with ThreadPoolExecutor(max_workers=1) as runner:
        runner.submit(loop.run_until_complete, asyncio.wait_for(run(), 20)).result()
    executor.shutdown(wait=True)
    return transport


def sent_pdus(data: bytes) -> list[int]:
    types, pos = [], 0
    while pos < len(data):
        assert len(data) - pos >= 6, "a partial PDU was sent"
        pdu_type, length = struct.unpack_from(">BxL", data, pos)
        types.append(pdu_type)
        pos += 6 + length
    assert pos == len(data), "a partial PDU was sent"
    return types


def test_a_whole_c_store_through_the_protocol(archive: Archive, loop) -> None:  # type: ignore[no-untyped-def]
    ds = make_dataset(study_uid=pydicom.uid.generate_uid(), series_uid=pydicom.uid.generate_uid())
    data = to_bytes(ds)
    body = data[data.index(b"DICM") + 4 :]  # the data set after the file meta
    meta_len = struct.unpack_from("<L", body, 8)[0]
    dataset = body[12 + meta_len :]
    stream = associate_rq([(1, CT, [EXPLICIT])]) + store_stream(dataset, ds.SOPInstanceUID)
    stream += pdu.HEADER.pack(pdu.A_RELEASE_RQ_TYPE, 4) + b"\x00" * 4
    # one byte at a time: every PDU boundary falls inside a chunk somewhere
    transport = feed(archive, loop, [stream[i : i + 1] for i in range(len(stream))])
    assert sent_pdus(bytes(transport.sent)) == [2, 4, 6]
    rsp = bytes(transport.sent)
    assert struct.pack("<HHLH", 0, 0x0900, 2, 0) in rsp  # Status 0x0000
    with archive.db.read() as session:
        from cloudfilm.storage.models import Instance

        assert session.query(Instance).filter_by(sop_uid=ds.SOPInstanceUID).count() == 1


def _mutations() -> st.SearchStrategy[bytes]:
    valid = associate_rq([(1, CT, [EXPLICIT]), (3, "1.2.840.10008.1.1", [EXPLICIT])])
    pdu_types = st.integers(min_value=0, max_value=255)
    lengths = st.one_of(st.integers(0, 64), st.sampled_from([0xFFFFFFFF, 1 << 20, (1 << 20) + 1]))
    header = st.builds(lambda t, n: struct.pack(">BxL", t, n), pdu_types, lengths)
    noise = st.binary(max_size=300)
    cut = st.integers(0, len(valid)).map(lambda n: valid[:n])
    flipped = st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)).map(
        lambda p: valid[: p[0]] + bytes([p[1]]) + valid[p[0] + 1 :]
    )
    pdv = st.builds(
        lambda cid, ctl, frag: (
            struct.pack(">BxLLBB", 4, len(frag) + 6, len(frag) + 2, cid, ctl) + frag
        ),
        st.integers(0, 255),
        st.integers(0, 255),
        st.binary(max_size=64),
    )
    headed = st.builds(lambda h, n: h + n, header, noise)
    part = st.one_of(headed, noise, cut, flipped, pdv, st.just(valid))
    return st.lists(part, max_size=6).map(b"".join)


@settings(
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=_mutations(), cuts=st.lists(st.integers(1, 97), max_size=8))
def test_fuzzed_bytes_never_crash_or_send_half_a_pdu(
    archive: Archive,
    loop: asyncio.AbstractEventLoop,
    stream: bytes,
    cuts: list[int],
) -> None:
    chunks, pos = [], 0
    for n in cuts:
        chunks.append(stream[pos : pos + n])
        pos += n
    chunks.append(stream[pos:])
    transport = feed(archive, loop, [c for c in chunks if c])
    types = sent_pdus(bytes(transport.sent))
    assert set(types) <= {2, 3, 4, 6, 7}
    if 7 in types or 3 in types:
        assert types[-1] in (3, 7), "nothing follows an abort or a rejection"

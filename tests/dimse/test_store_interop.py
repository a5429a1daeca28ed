"""The C-STORE receive path held to real peers: dcmtk's storescu in every transfer syntax and
PDU size, pynetdicom proposing 127 presentation contexts, and a hand-driven peer (rawpeer.py)
that aborts, resets, stalls and sends what the standard forbids.

These tests are the contract for any replacement of the receive path: what a modality sees
(statuses, negotiation results, A-ABORT / A-ASSOCIATE-RJ answers, timers) and what the archive
keeps (the data set byte for byte; nothing at all of an instance that never fully arrived).
Each server is shared by a group of tests (module-scoped, one per index engine); tests never
reuse a SOP Instance UID, so they do not disturb each other.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE, _config
from pynetdicom.presentation import StoragePresentationContexts
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from cloudfilm.demo import DemoManifest, write_demo
from tests.conftest import ServerProcess

from . import rawpeer as ul
from .interop import (
    assert_no_trace,
    assert_stored_as_sent,
    big_ct,
    fresh_copy,
    profile,
    pydicom_samples,
    pynetdicom_store,
    serve,
    sop_ts,
    storescu,
    uid_of,
)
from .pdufuzz import run_fuzz

pytestmark = pytest.mark.timeout(300)
INTEROP_ENGINES = ["postgresql"]
"""The bytes on the wire, not the index: one engine (the index is tested on both elsewhere)."""

HTJ2K_SYNTAXES = {"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
"""dcmtk 3.6.7 predates HTJ2K ("DIMSE Unsupported transfer syntax"): pynetdicom sends these."""
UNKNOWN_SOP_CLASS = "1.2.826.0.1.3680043.8.498.7433.1"
UNKNOWN_SYNTAX = "1.2.826.0.1.3680043.8.498.7433.2"
CT = [(1, CTImageStorage, [ExplicitVRLittleEndian])]


@pytest.fixture(scope="module", params=INTEROP_ENGINES)
def archive(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Default timers; no PDU limit (announced as 0)."""
    yield from serve(request.param, tmp_path_factory, {"CLOUDFILM_DICOM_MAX_PDU": "0"})


@pytest.fixture(scope="module", params=INTEROP_ENGINES)
def artim_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """ARTIM 2 s, idle timeout long: what closes a connection here is the ARTIM timer."""
    env = {"CLOUDFILM_DICOM_ARTIM_TIMEOUT": "2", "CLOUDFILM_DICOM_IDLE_TIMEOUT": "60"}
    yield from serve(request.param, tmp_path_factory, env)


@pytest.fixture(scope="module", params=INTEROP_ENGINES)
def idle_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    env = {"CLOUDFILM_DICOM_IDLE_TIMEOUT": "2", "CLOUDFILM_DICOM_ARTIM_TIMEOUT": "30"}
    yield from serve(request.param, tmp_path_factory, env)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoManifest:
    root = tmp_path_factory.mktemp("interop-demo")
    manifest = write_demo(root, ct_slices=3, ct_size=64, include_pydicom_files=False)
    manifest.root = root
    return manifest


@pytest.fixture
def raw_file_sends() -> Iterator[None]:
    """pynetdicom sends a file's data set bytes as they are instead of re-encoding them."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = before


# -- 1. every transfer syntax, byte for byte ---------------------------------------------------
DEMO_CODECS = [
    "ref-ct-int16", "implicit-vr-le", "deflated-explicit-vr-le", "rle-lossless",
    "jpeg-lossless-sv1", "jpeg-lossless-p14", "jpeg-ls-lossless", "jpeg-ls-near-lossless",
    "jpeg2000-lossless", "jpeg2000", "ref-ct-uint12", "jpeg-extended-12bit", "htj2k-lossless",
    "htj2k", "ref-dx-uint8", "jpeg-baseline", "ref-us-rgb", "jpeg-baseline-ybr-full-422",
    "rle-lossless-rgb", "ref-us-cine", "jpeg-baseline-multiframe", "jpeg-ls-lossless-multiframe",
]  # fmt: skip


@pytest.mark.parametrize("name", DEMO_CODECS)
def test_storescu_every_transfer_syntax_byte_for_byte(
    archive: ServerProcess, demo: DemoManifest, name: str, tmp_path: Path, raw_file_sends: None
) -> None:
    """storescu proposes exactly the file's syntax; the data set is kept as it was sent."""
    codec = demo.codec(name)
    assert codec.status == "written", f"the demo could not make {name}: {codec.reason}"
    path = demo.path(codec.file)  # type: ignore[arg-type]
    sop, ts = sop_ts(path)
    if ts in HTJ2K_SYNTAXES:
        assert pynetdicom_store(archive, path) == 0x0000
    else:
        storescu(archive, profile(tmp_path, [(sop, ts)]), path)
    assert_stored_as_sent(archive, path)


def test_storescu_explicit_big_endian(archive: ServerProcess, tmp_path: Path) -> None:
    src = Path(get_testdata_file("MR_small_bigendian.dcm"))  # type: ignore[arg-type]
    path = fresh_copy(src, tmp_path / "be.dcm")
    assert sop_ts(path)[1] == ExplicitVRBigEndian
    storescu(archive, profile(tmp_path, [sop_ts(path)]), path)
    assert_stored_as_sent(archive, path)


@pytest.mark.parametrize("name", pydicom_samples())
def test_pynetdicom_pydicom_files_byte_for_byte(
    archive: ServerProcess, name: str, raw_file_sends: None
) -> None:
    """Sent as they are by pynetdicom: dcmtk would tidy them on the way (recomputed group
    lengths, OB for encapsulated OW, trailing padding dropped), and the point is that the
    archive keeps what arrives, odd or not."""
    path = Path(get_testdata_file(name))  # type: ignore[arg-type]
    assert pynetdicom_store(archive, path) == 0x0000
    assert_stored_as_sent(archive, path)


# -- 2. PDU sizes ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [4096, 16384, 65536, 131072])  # 131072: dcmtk's largest
def test_storescu_pdu_sizes(archive: ServerProcess, size: int, tmp_path: Path) -> None:
    path = big_ct(tmp_path, size)
    relay = ul.PduRecorder(archive.dicom_port)
    storescu(archive, ["--max-pdu", str(size), "--max-send-pdu", str(size)], path, port=relay.port)
    lengths = relay.p_data_lengths()
    assert max(lengths) == size - 6 and len(lengths) > 512 * 512 * 2 // size, lengths
    assert_stored_as_sent(archive, path)


def test_unlimited_pdu_one_pdv_for_the_whole_data_set(
    archive: ServerProcess, tmp_path: Path
) -> None:
    """We announce 0 (no limit): a peer may send the 512 kB data set in a single PDV."""
    path = big_ct(tmp_path, 0)
    peer = ul.Peer(archive.dicom_port)
    assert peer.associate(CT).max_pdu == 0
    assert peer.store(1, CTImageStorage, uid_of(path), ul.dataset_part(path.read_bytes())) == 0
    peer.release()
    assert_stored_as_sent(archive, path)


@pytest.mark.parametrize("announced", [4096, 16384])
def test_small_announced_maximum(  # type: ignore[no-untyped-def]
    server_factory, announced: int, tmp_path: Path
) -> None:
    """Our announced maximum is what peers fragment to; PDUs of exactly that size are fine."""
    server = server_factory(env_extra={"CLOUDFILM_DICOM_MAX_PDU": str(announced)})
    server.start()
    # dcmtk, which would send 128 kB PDUs if we let it
    first = big_ct(tmp_path, 1)
    relay = ul.PduRecorder(server.dicom_port)
    storescu(server, ["--max-pdu", "131072"], first, port=relay.port)
    assert max(relay.p_data_lengths()) <= announced
    assert_stored_as_sent(server, first)
    # hand-driven: every P-DATA-TF exactly at the maximum
    second = big_ct(tmp_path, 2)
    peer = ul.Peer(server.dicom_port)
    assert peer.associate(CT).max_pdu == announced
    assert peer.store(1, CTImageStorage, uid_of(second), ul.dataset_part(second.read_bytes())) == 0
    peer.release()
    assert_stored_as_sent(server, second)
    # pynetdicom
    third = big_ct(tmp_path, 3)
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established and assoc.acceptor.maximum_length == announced
    assert assoc.send_c_store(pydicom.dcmread(third)).Status == 0x0000
    assoc.release()
    assert_stored_as_sent(server, third)


# -- 3. several presentation contexts on one association --------------------------------------
def _mixed_modalities(demo: DemoManifest, folder: Path) -> list[Path]:
    """CT, MR, US and secondary capture; five transfer syntaxes."""
    codec = {c.name: demo.path(c.file) for c in demo.codecs if c.file}
    sc = Path(get_testdata_file("SC_rgb.dcm"))  # type: ignore[arg-type]
    return [
        fresh_copy(codec["jpeg-ls-lossless"], folder / "ct.dcm"),
        fresh_copy(demo.path(demo.study("mr").files[0]), folder / "mr.dcm", ImplicitVRLittleEndian),
        fresh_copy(codec["jpeg-baseline-ybr-full-422"], folder / "us.dcm"),
        fresh_copy(sc, folder / "sc.dcm", ExplicitVRLittleEndian),
        fresh_copy(codec["rle-lossless-rgb"], folder / "us-rle.dcm"),
    ]


def test_one_storescu_association_four_sop_classes_five_syntaxes(
    archive: ServerProcess, demo: DemoManifest, tmp_path: Path
) -> None:
    files = _mixed_modalities(demo, tmp_path)
    contexts = [sop_ts(f) for f in files]
    assert len({ts for _, ts in contexts}) == 5 and len({s for s, _ in contexts}) == 4
    out = storescu(archive, profile(tmp_path, contexts), *files)
    assert out.count("Association Accepted") == 1, out
    for f in files:
        assert_stored_as_sent(archive, f)


def test_pynetdicom_proposing_127_contexts(
    archive: ServerProcess, demo: DemoManifest, tmp_path: Path, raw_file_sends: None
) -> None:
    """25 current storage SOP classes x 5 syntaxes, an unknown SOP class and a CT context
    whose only syntax is unknown: the two are refused with the right reasons, every other
    context is accepted with the one syntax it proposed, and instances go over five of them."""
    files = _mixed_modalities(demo, tmp_path)
    current = [cx.abstract_syntax for cx in StoragePresentationContexts]
    current = [s for s in current if not UID(s).is_retired]  # retired: the server's choice
    sops = list(dict.fromkeys([sop_ts(f)[0] for f in files] + current))[:25]
    syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless, RLELossless,
                JPEGBaseline8Bit]  # fmt: skip
    proposed = [(s, ts) for s in sops for ts in syntaxes]
    proposed += [(UNKNOWN_SOP_CLASS, ExplicitVRLittleEndian), (CTImageStorage, UNKNOWN_SYNTAX)]
    ae = AE(ae_title="MANYCX")
    for sop, ts in proposed:
        ae.add_requested_context(sop, ts)
    assoc = ae.associate("127.0.0.1", archive.dicom_port, ae_title=archive.ae_title)
    assert assoc.is_established
    try:
        accepted = {cx.context_id: cx for cx in assoc.accepted_contexts}
        rejected = {cx.context_id: cx for cx in assoc.rejected_contexts}
        assert len(accepted) + len(rejected) == len(proposed) == 127
        for cid, (sop, ts) in zip(range(1, 2 * len(proposed), 2), proposed, strict=True):
            if sop == UNKNOWN_SOP_CLASS:
                assert rejected[cid].result == 0x03, "abstract syntax not supported"
            elif ts == UNKNOWN_SYNTAX:
                assert rejected[cid].result == 0x04, "transfer syntaxes not supported"
            else:
                assert cid in accepted, f"{UID(sop).name} in {UID(ts).name} refused"
                assert accepted[cid].abstract_syntax == sop
                assert accepted[cid].transfer_syntax == [ts]
        for f in files:
            assert assoc.send_c_store(f).Status == 0x0000, f.name
    finally:
        assoc.release()
    for f in files:
        assert_stored_as_sent(archive, f)


# -- 4. an instance cut short ------------------------------------------------------------------
@pytest.mark.parametrize("also_find", [False, True], ids=["store-only", "store-and-find"])
@pytest.mark.parametrize("how", ["a-abort", "tcp-reset", "tcp-close"])
def test_interrupted_instance_leaves_no_trace(
    archive: ServerProcess, how: str, also_find: bool, tmp_path: Path
) -> None:
    """The instance sent whole before is kept; the one cut short leaves nothing anywhere.
    With a C-FIND context proposed too, the association is not a store-only one (the server
    may serve the two kinds differently): the same holds."""
    whole, cut = big_ct(tmp_path, 10), big_ct(tmp_path, 11)
    peer = ul.Peer(archive.dicom_port)
    find = [(3, StudyRootQueryRetrieveInformationModelFind, [ImplicitVRLittleEndian])]
    accepted = peer.associate(CT + (find if also_find else []))
    assert all(result == 0 for result, _ in accepted.contexts.values()), accepted
    data = ul.dataset_part(whole.read_bytes())
    assert peer.store(1, CTImageStorage, uid_of(whole), data, fragment=16000) == 0x0000
    data = ul.dataset_part(cut.read_bytes())
    peer.send_store(1, CTImageStorage, uid_of(cut), data, fragment=16000, stop_after=len(data) // 2)
    if how == "a-abort":
        peer.send(ul.ABORT_PDU)
        answer, _ = ul.wait_closed(peer.sock, 10)
        assert answer == b"", "an A-ABORT is answered by closing the connection (AA-3)"
        peer.close()
    elif how == "tcp-reset":
        peer.reset()
    else:
        peer.close()
    time.sleep(0.5)
    assert_stored_as_sent(archive, whole)
    assert_no_trace(archive, uid_of(cut))
    after = big_ct(tmp_path, 12)
    storescu(archive, [], after)
    assert_stored_as_sent(archive, after)


# -- 5. timers ---------------------------------------------------------------------------------
def _closed_quietly(answer: bytes) -> None:
    """Nothing, or one A-ABORT PDU, before the close."""
    kinds = [k for k, _ in ul.split_pdus(answer)]
    assert kinds in ([], [ul.A_ABORT]), kinds


def test_silent_connection_is_closed_by_artim(artim_server: ServerProcess) -> None:
    """Sta2 + ARTIM expiry -> AA-2: the transport connection is closed."""
    peer = ul.Peer(artim_server.dicom_port)
    answer, elapsed = ul.wait_closed(peer.sock, 8)
    peer.close()
    assert 1.0 < elapsed < 6, elapsed
    _closed_quietly(answer)


def test_half_an_associate_rq_is_closed_by_artim(artim_server: ServerProcess) -> None:
    rq = ul.associate_rq(CT)
    peer = ul.Peer(artim_server.dicom_port)
    peer.send(rq[: len(rq) // 2])
    answer, elapsed = ul.wait_closed(peer.sock, 8)
    peer.close()
    assert elapsed < 6, elapsed
    _closed_quietly(answer)


def test_rejected_peer_that_stays_is_closed_by_artim(artim_server: ServerProcess) -> None:
    """Sta13 (after A-ASSOCIATE-RJ) + ARTIM expiry -> AA-2."""
    peer = ul.Peer(artim_server.dicom_port)
    peer.send(ul.associate_rq(CT, version=2))
    answer, elapsed = ul.wait_closed(peer.sock, 8)
    peer.close()
    assert [k for k, _ in ul.split_pdus(answer)] == [ul.A_ASSOCIATE_RJ]
    assert elapsed < 6, elapsed


def test_idle_association_is_aborted(idle_server: ServerProcess) -> None:
    peer = ul.Peer(idle_server.dicom_port)
    peer.associate(CT)
    answer, elapsed = ul.wait_closed(peer.sock, 8)
    peer.close()
    assert 1.0 < elapsed < 6, elapsed
    _closed_quietly(answer)


def test_stalled_instance_is_dropped_without_trace(
    idle_server: ServerProcess, tmp_path: Path
) -> None:
    path = big_ct(tmp_path, 20)
    peer = ul.Peer(idle_server.dicom_port)
    peer.associate(CT)
    data = ul.dataset_part(path.read_bytes())
    peer.send_store(
        1, CTImageStorage, uid_of(path), data, fragment=16000, stop_after=len(data) - 99
    )
    answer, elapsed = ul.wait_closed(peer.sock, 8)
    peer.close()
    assert elapsed < 6, elapsed
    _closed_quietly(answer)
    assert_no_trace(idle_server, uid_of(path))
    storescu(idle_server, [], path)  # the same instance, whole this time
    assert_stored_as_sent(idle_server, path)


def test_slow_but_steady_sender_is_not_cut_off(idle_server: ServerProcess, tmp_path: Path) -> None:
    """Idle means nothing arrives for the timeout, not a limit on the whole transfer."""
    path = big_ct(tmp_path, 21)
    peer = ul.Peer(idle_server.dicom_port)
    peer.associate(CT)
    data = ul.dataset_part(path.read_bytes())
    peer.send(ul.p_data(ul.pdv(1, ul.c_store_rq(1, CTImageStorage, uid_of(path)), command=True,
                               last=True)))  # fmt: skip
    step = len(data) // 5 + 1
    for start in range(0, len(data), step):
        time.sleep(1.0)  # 5 s in all, each gap half the idle timeout
        last = start + step >= len(data)
        peer.send(ul.p_data(ul.pdv(1, data[start : start + step], command=False, last=last)))
    assert int(peer.response().Status) == 0x0000
    peer.release()
    assert_stored_as_sent(idle_server, path)


# -- 6. PDUs the standard answers --------------------------------------------------------------
def _first_answer(port: int, *pdus: bytes, associate: bool = False) -> tuple[int, bytes] | None:
    """The first PDU the server sends after ``pdus`` (None: it closed without one)."""
    peer = ul.Peer(port, timeout=10)
    try:
        if associate:
            peer.associate(CT)
        for p in pdus:
            with contextlib.suppress(OSError):
                peer.send(p)
        return peer.receive()
    finally:
        peer.close()


@pytest.mark.parametrize(
    ("version", "context", "expected"),
    [
        (2, ul.APPLICATION_CONTEXT, (1, 2, 2)),  # protocol version not supported
        (0, ul.APPLICATION_CONTEXT, (1, 2, 2)),
        (1, "1.2.840.10008.3.1.1.2", (1, 1, 2)),  # application context name not supported
    ],
)
def test_unacceptable_associate_rq_is_rejected(
    archive: ServerProcess, version: int, context: str, expected: tuple[int, int, int]
) -> None:
    """(result, source, reason): PS3.8 9.3.4, table 9-21."""
    rq = ul.associate_rq(CT, version=version, application_context=context)
    answer = _first_answer(archive.dicom_port, rq)
    assert answer is not None and answer[0] == ul.A_ASSOCIATE_RJ, answer
    assert ul.parse_rj(answer[1]) == expected


def test_a_query_association_with_a_wrong_application_context_is_rejected(
    archive: ServerProcess,
) -> None:
    """Not only store-only requests: the router gives any request the ACSE rules reject the
    standard's A-ASSOCIATE-RJ (pynetdicom alone does not check the application context)."""
    find = [(1, "1.2.840.10008.5.1.4.1.2.2.1", [ExplicitVRLittleEndian]), *CT]
    rq = ul.associate_rq(find, application_context="1.2.840.10008.3.1.1.2")
    answer = _first_answer(archive.dicom_port, rq)
    assert answer is not None and answer[0] == ul.A_ASSOCIATE_RJ, answer
    assert ul.parse_rj(answer[1]) == (1, 1, 2)


def test_protocol_version_is_a_bit_field(archive: ServerProcess) -> None:
    """PS3.8 9.3.2: a receiver that implements only version 1 tests only bit 0, so a
    requestor announcing versions 1 and 2 (0x0003) is accepted."""
    answer = _first_answer(archive.dicom_port, ul.associate_rq(CT, version=3))
    assert answer is not None and answer[0] == ul.A_ASSOCIATE_AC, answer


_RQ = ul.associate_rq(CT)
BEFORE_ASSOCIATION = {
    "unknown-pdu-type": ul.pdu(0x0A, bytes(4)),
    "p-data": ul.p_data(ul.pdv(1, ul.c_echo_rq(1), command=True, last=True)),
    "a-release-rq": ul.RELEASE_RQ_PDU,
    "a-associate-ac": ul.pdu(ul.A_ASSOCIATE_AC, _RQ[6:]),
    "a-associate-rj": ul.pdu(ul.A_ASSOCIATE_RJ, bytes([0, 1, 1, 1])),
    "a-release-rp": ul.pdu(ul.A_RELEASE_RP, bytes(4)),
    "rq-item-length-lies": _RQ[:74] + b"\x10\x00\xff\xff" + _RQ[78:],
}


@pytest.mark.parametrize("name", sorted(BEFORE_ASSOCIATION))
def test_unexpected_pdu_before_association_is_aborted(archive: ServerProcess, name: str) -> None:
    """Sta2 + Evt3/4/10/12/13/19 -> AA-1: an A-ABORT PDU."""
    answer = _first_answer(archive.dicom_port, BEFORE_ASSOCIATION[name])
    assert answer is not None and answer[0] == ul.A_ABORT, answer
    assert len(answer[1]) == 4 and ul.parse_abort(answer[1])[0] in (0, 2)


def test_a_abort_before_association_just_closes(archive: ServerProcess) -> None:
    """Sta2 + Evt16 -> AA-2: close, nothing sent."""
    peer = ul.Peer(archive.dicom_port)
    peer.send(ul.ABORT_PDU)
    answer, elapsed = ul.wait_closed(peer.sock, 10)
    peer.close()
    assert answer == b"" and elapsed < 5


IN_ASSOCIATION = {
    "unknown-pdu-type": ul.pdu(0x0B, bytes(8)),
    "second-a-associate-rq": _RQ,
    "a-associate-ac": ul.pdu(ul.A_ASSOCIATE_AC, _RQ[6:]),
    "a-release-rp": ul.pdu(ul.A_RELEASE_RP, bytes(4)),
}


@pytest.mark.parametrize("name", sorted(IN_ASSOCIATION))
def test_unexpected_pdu_in_association_is_aborted(archive: ServerProcess, name: str) -> None:
    """Sta6 + Evt3/6/13/19 -> AA-8: an A-ABORT PDU from the service provider."""
    answer = _first_answer(archive.dicom_port, IN_ASSOCIATION[name], associate=True)
    assert answer is not None and answer[0] == ul.A_ABORT, answer
    source, reason = ul.parse_abort(answer[1])
    assert source == 2 and reason in (0, 1, 2, 4, 5, 6)


# -- 7. fuzzing --------------------------------------------------------------------------------
def test_fuzzed_pdus_never_hang_the_server(artim_server: ServerProcess, tmp_path: Path) -> None:
    stats = run_fuzz(artim_server.dicom_port)
    print(stats)
    assert stats.examples >= 100, stats
    assert artim_server.proc is not None and artim_server.proc.poll() is None
    ae = AE(ae_title="AFTER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", artim_server.dicom_port, ae_title=artim_server.ae_title)
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    assoc.release()
    path = big_ct(tmp_path, 30)
    storescu(artim_server, [], path)
    assert_stored_as_sent(artim_server, path)

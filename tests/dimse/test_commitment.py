"""Storage Commitment (PS3.4 Annex J) against a real ``cloudfilm serve``: instances stored with
dcmtk's storescu, commitment asked for by pynetdicom as the modality would, the report read
from the requesting association or from the modality's own listening AE.

One server per engine for the whole module: the tests use their own instances and calling
AEs, so they do not interfere.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    MRImageStorage,
    StorageCommitmentPushModel,
    StorageCommitmentPushModelInstance,
)

from tests.conftest import ServerProcess, dcmtk, free_port
from tests.factory import make_dataset, to_bytes

pytestmark = [
    pytest.mark.engines("postgresql"),  # the DIMSE service, not the index
    pytest.mark.timeout(120),
]

MODALITY = "MODALITY"
"""May store, and is a move destination: reports can reach it on a new association."""
UNLISTED = "NOWHERE"
"""May store, but cloudfilm has no address for it."""
VIEWER = "VIEWER"
"""Known, but not allowed to store."""
REPORT_WAIT = 20.0


@dataclass
class Archive:
    server: ServerProcess
    listen_port: int
    """Where MODALITY's own AE listens, as CLOUDFILM_MOVE_DESTINATIONS says."""


@pytest.fixture(scope="module")
def archive(module_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    listen_port = free_port()
    callers = (
        f'[{{"ae_title": "{MODALITY}"}}, {{"ae_title": "{UNLISTED}"}},'
        f' {{"ae_title": "{VIEWER}", "services": ["echo", "find"]}}]'
    )
    destinations = f'[{{"ae_title": "{MODALITY}", "host": "127.0.0.1", "port": {listen_port}}}]'
    server = ServerProcess(
        data_dir=tmp_path_factory.mktemp("srv") / "data",
        database_url=module_db,
        env_extra={
            "CLOUDFILM_ALLOWED_CALLERS": callers,
            "CLOUDFILM_MOVE_DESTINATIONS": destinations,
        },
    )
    server.start()
    try:
        yield Archive(server, listen_port)
    finally:
        server.stop()


# -- the modality's side ----------------------------------------------------------------------
@dataclass
class Report:
    event_type: int
    transaction: str
    committed: set[tuple[str, str]]
    failed: dict[tuple[str, str], int]
    assoc: Association
    sender_ae: str


class Inbox:
    """Collects N-EVENT-REPORTs, answering each with Success as a modality would."""

    def __init__(self) -> None:
        self.reports: queue.Queue[Report] = queue.Queue()

    def handle(self, event: evt.Event) -> tuple[int, None]:
        info = event.event_information
        self.reports.put(
            Report(
                event_type=int(event.event_type),
                transaction=str(info.TransactionUID),
                committed={
                    (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
                    for i in info.get("ReferencedSOPSequence", [])
                },
                failed={
                    (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)): int(
                        i.FailureReason
                    )
                    for i in info.get("FailedSOPSequence", [])
                },
                assoc=event.assoc,
                sender_ae=event.assoc.requestor.ae_title.strip(),
            )
        )
        return 0x0000, None

    def next(self, timeout: float = REPORT_WAIT) -> Report:
        return self.reports.get(timeout=timeout)


def store(archive: Archive, folder: Path, n: int) -> list[tuple[str, str]]:
    """Store n new instances with storescu; their (SOP Class, SOP Instance) UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    refs, paths = [], []
    for i in range(n):
        ds = make_dataset(study_uid=study, series_uid=series, instance_number=i + 1)
        path = folder / f"{i:03d}.dcm"
        path.write_bytes(to_bytes(ds))
        refs.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
        paths.append(str(path))
    s = archive.server
    proc = dcmtk(
        "storescu", "-aet", MODALITY, "-aec", s.ae_title, "127.0.0.1", str(s.dicom_port), *paths
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return refs


def request(refs: list[tuple[str, str]], transaction: str | None = None) -> Dataset:
    ds = Dataset()
    if transaction != "":
        ds.TransactionUID = transaction or generate_uid()
    items = []
    for sop_class, sop_instance in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def associate(archive: Archive, calling: str, inbox: Inbox | None = None) -> Association:
    ae = AE(ae_title=calling)
    ae.add_requested_context(StorageCommitmentPushModel)
    handlers = [(evt.EVT_N_EVENT_REPORT, inbox.handle)] if inbox else []
    s = archive.server
    return ae.associate("127.0.0.1", s.dicom_port, ae_title=s.ae_title, evt_handlers=handlers)


def n_action(
    assoc: Association,
    ds: Dataset,
    action_type: int = 1,
    instance: str = StorageCommitmentPushModelInstance,
) -> int:
    status, _ = assoc.send_n_action(ds, action_type, StorageCommitmentPushModel, instance)
    return int(status.Status)


class Listener:
    """The modality's own AE, taking reports on associations cloudfilm opens: it accepts the
    requestor's proposal to be the Storage Commitment SCP (PS3.4 J.3.3.1.3)."""

    def __init__(self, port: int) -> None:
        self.inbox = Inbox()
        self.ae = AE(ae_title=MODALITY)
        self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        self.server = self.ae.start_server(
            ("127.0.0.1", port),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self.inbox.handle)],
        )

    def close(self) -> None:
        self.server.shutdown()


def blob_of(archive: Archive, sop_instance: str) -> Path:
    for path in (archive.server.data_dir / "blobs").rglob("*.dcm"):
        if pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID == sop_instance:
            return path
    raise AssertionError(f"no blob holds {sop_instance}")


# -- the tests --------------------------------------------------------------------------------
def test_report_on_the_same_association_when_all_are_committed(
    archive: Archive, tmp_path: Path
) -> None:
    refs = store(archive, tmp_path, 3)
    inbox = Inbox()
    assoc = associate(archive, MODALITY, inbox)
    assert assoc.is_established
    transaction = generate_uid()
    try:
        assert n_action(assoc, request(refs, transaction)) == 0x0000
        report = inbox.next()
    finally:
        assoc.release()
    assert report.assoc is assoc  # on the association that asked, not on a new one
    assert report.event_type == 1
    assert report.transaction == transaction
    assert report.committed == set(refs)
    assert report.failed == {}


def test_report_on_a_new_association_when_the_modality_has_released(
    archive: Archive, tmp_path: Path
) -> None:
    refs = store(archive, tmp_path, 2)
    listener = Listener(archive.listen_port)
    try:
        assoc = associate(archive, MODALITY)  # no report handler: it leaves at once
        assert assoc.is_established
        transaction = generate_uid()
        assert n_action(assoc, request(refs, transaction)) == 0x0000
        assoc.release()
        report = listener.inbox.next()
        cx = next(
            c
            for c in report.assoc.accepted_contexts
            if c.abstract_syntax == StorageCommitmentPushModel
        )
    finally:
        listener.close()
    assert report.sender_ae == archive.server.ae_title
    assert (cx.as_scu, cx.as_scp) == (True, False)  # cloudfilm took the SCP role
    assert report.event_type == 1
    assert report.transaction == transaction
    assert report.committed == set(refs)


def test_unknown_instance_and_wrong_class_are_failed_with_their_reasons(
    archive: Archive, tmp_path: Path
) -> None:
    (good, other) = store(archive, tmp_path, 2)
    wrong_class = (str(MRImageStorage), other[1])
    unknown = (good[0], generate_uid())
    inbox = Inbox()
    assoc = associate(archive, MODALITY, inbox)
    try:
        assert n_action(assoc, request([good, wrong_class, unknown])) == 0x0000
        report = inbox.next()
    finally:
        assoc.release()
    assert report.event_type == 2
    assert report.committed == {good}
    assert report.failed == {wrong_class: 0x0119, unknown: 0x0112}


def test_damaged_or_missing_blobs_are_not_committed(archive: Archive, tmp_path: Path) -> None:
    intact, deleted, corrupted = store(archive, tmp_path, 3)
    blob_of(archive, deleted[1]).unlink()
    damaged = blob_of(archive, corrupted[1])
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF  # one pixel bit: the file still parses, its hash no longer matches
    damaged.write_bytes(bytes(data))
    inbox = Inbox()
    assoc = associate(archive, MODALITY, inbox)
    try:
        assert n_action(assoc, request([intact, deleted, corrupted])) == 0x0000
        report = inbox.next()
    finally:
        assoc.release()
    assert report.event_type == 2
    assert report.committed == {intact}
    assert report.failed == {deleted: 0x0110, corrupted: 0x0110}


def test_a_calling_ae_that_may_not_store_is_refused(archive: Archive, tmp_path: Path) -> None:
    refs = store(archive, tmp_path, 1)
    inbox = Inbox()
    assoc = associate(archive, VIEWER, inbox)
    assert assoc.is_established  # VIEWER is on the allow-list, for echo and find only
    try:
        assert n_action(assoc, request(refs)) == 0x0124
        with pytest.raises(queue.Empty):
            inbox.next(timeout=1.0)
    finally:
        assoc.release()
    stranger = associate(archive, "STRANGER")
    assert not stranger.is_established  # not on the list at all: association rejected
    assert stranger.is_rejected


def test_malformed_requests_get_a_failure_status(archive: Archive, tmp_path: Path) -> None:
    refs = store(archive, tmp_path, 1)
    inbox = Inbox()
    assoc = associate(archive, MODALITY, inbox)
    try:
        assert n_action(assoc, request(refs, transaction="")) == 0x0115  # no Transaction UID
        assert n_action(assoc, request([])) == 0x0115  # nothing referenced
        assert n_action(assoc, request([(refs[0][0], "not a uid")])) == 0x0115
        assert n_action(assoc, request(refs), action_type=2) == 0x0123  # no such action
        assert n_action(assoc, request(refs), instance=generate_uid()) == 0x0117
        with pytest.raises(queue.Empty):
            inbox.next(timeout=0.5)  # refused requests are not reported on
    finally:
        assoc.release()


def test_the_report_is_retried_until_the_modality_listens(archive: Archive, tmp_path: Path) -> None:
    refs = store(archive, tmp_path, 1)
    assoc = associate(archive, MODALITY)
    transaction = generate_uid()
    assert n_action(assoc, request(refs, transaction)) == 0x0000
    assoc.release()
    time.sleep(1.5)  # the first two attempts find nobody listening
    listener = Listener(archive.listen_port)
    try:
        report = listener.inbox.next()
    finally:
        listener.close()
    assert report.transaction == transaction
    assert report.committed == set(refs)
    assert "no association with MODALITY" in archive.server.log()


def test_an_undeliverable_report_is_logged(archive: Archive, tmp_path: Path) -> None:
    refs = store(archive, tmp_path, 1)
    assoc = associate(archive, UNLISTED)
    transaction = generate_uid()
    assert n_action(assoc, request(refs, transaction)) == 0x0000
    assoc.release()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [ln for ln in archive.server.log().splitlines() if transaction in ln]
        if any("could NOT be delivered" in ln for ln in lines):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"no undeliverable-report message for {transaction}:\n{archive.server.log()}")

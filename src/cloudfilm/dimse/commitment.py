"""Storage Commitment Push Model SCP (PS3.4 Annex J): a modality asks, with an N-ACTION, whether
instances it sent are safe here; the answer comes later as an N-EVENT-REPORT, and on it the
modality deletes its own copies. So "committed" is said only after reading the blob back and
finding the SHA-256 the index recorded at ingest, not merely because the index has a row.

The N-ACTION is answered at once; checking and reporting run in a background thread per
request. The report goes on the requesting association while the peer keeps it open (the
acceptor is the SCP there, no role negotiation needed), otherwise on an association we open to
the calling AE, found in ``CLOUDFILM_MOVE_DESTINATIONS``, proposing the SCP role for ourselves
(PS3.4 J.3.3.1.3: the modality accepts the SCP role from the requestor). Pending reports live in
the process only: if it stops first, the modality's own timeout makes it ask again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import N_ACTION_RSP
from pynetdicom.dimse_primitives import N_EVENT_REPORT
from pynetdicom.dsutils import encode
from pynetdicom.events import Event
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT, A_RELEASE
from sqlalchemy import select

from cloudfilm.access import AccessDenied, Action
from cloudfilm.dimse.handlers import _status
from cloudfilm.storage.models import Instance

if TYPE_CHECKING:
    from cloudfilm.config import MoveDestination
    from cloudfilm.dimse.handlers import Handlers

log = logging.getLogger(__name__)

STORAGE_COMMITMENT = UID("1.2.840.10008.1.20.1")
WELL_KNOWN_INSTANCE = UID("1.2.840.10008.1.20.1.1")
REQUEST_COMMITMENT = 1
"""Action Type ID of "Request Storage Commitment"."""
ALL_COMMITTED = 1
"""Event Type ID: storage commitment request successful."""
FAILURES_EXIST = 2
"""Event Type ID: storage commitment request complete, failures exist."""

# Failure Reason (0008,1197) values, PS3.3 C.14.1.1
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119

# N-ACTION statuses, PS3.7 10.1.4.1.10
SUCCESS = 0x0000
INVALID_ARGUMENT_VALUE = 0x0115
INVALID_OBJECT_INSTANCE = 0x0117
NO_SUCH_SOP_CLASS = 0x0118
NO_SUCH_ACTION = 0x0123
NOT_AUTHORIZED = 0x0124

RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)
"""Seconds to wait before each further attempt on a new association (six in all, ~31 s):
a modality that is briefly busy or restarting still gets its report."""
REPLY_TIMEOUT = 30.0
"""How long to wait for the N-EVENT-REPORT response, on either association."""
PAUSE_TIMEOUT = 10.0
"""How long to wait for the requesting association's reader to stop between messages."""
QUERY_CHUNK = 500


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str


@dataclass
class Outcome:
    transaction_uid: str
    committed: list[Reference] = field(default_factory=list)
    failed: list[tuple[Reference, int]] = field(default_factory=list)

    @property
    def event_type(self) -> int:
        return FAILURES_EXIST if self.failed else ALL_COMMITTED

    def event_information(self, retrieve_ae: str) -> Dataset:
        """Every referenced instance appears once, in exactly one of the two sequences."""
        ds = Dataset()
        ds.TransactionUID = self.transaction_uid
        if self.committed:
            ds.RetrieveAETitle = retrieve_ae
            ds.ReferencedSOPSequence = [_item(ref) for ref in self.committed]
        if self.failed:
            items = []
            for ref, reason in self.failed:
                item = _item(ref)
                item.FailureReason = reason
                items.append(item)
            ds.FailedSOPSequence = items
        return ds


def _item(ref: Reference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    return item


class RequestError(ValueError):
    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status


def _uid(value: object, what: str) -> str:
    text = str(value or "").strip().rstrip("\0")
    if not text or not UID(text).is_valid:
        raise RequestError(INVALID_ARGUMENT_VALUE, f"{what} missing or not a valid UID")
    return text


def parse_request(info: Dataset | None) -> tuple[str, list[Reference]]:
    """Transaction UID and references of an N-ACTION's Action Information."""
    if info is None:
        raise RequestError(INVALID_ARGUMENT_VALUE, "no Action Information")
    try:
        transaction = _uid(info.get("TransactionUID"), "Transaction UID")
        items = info.get("ReferencedSOPSequence") or []
        refs = [
            Reference(
                _uid(item.get("ReferencedSOPClassUID"), "Referenced SOP Class UID"),
                _uid(item.get("ReferencedSOPInstanceUID"), "Referenced SOP Instance UID"),
            )
            for item in items
        ]
    except RequestError:
        raise
    except Exception as exc:  # pydicom decodes lazily: a broken data set fails here
        raise RequestError(PROCESSING_FAILURE, f"cannot decode Action Information: {exc}") from exc
    if not refs:
        raise RequestError(INVALID_ARGUMENT_VALUE, "Referenced SOP Sequence missing or empty")
    return transaction, refs


def verify(handlers: Handlers, transaction: str, refs: Sequence[Reference]) -> Outcome:
    """Commit an instance only if the index knows it under that class and its blob still
    hashes to what was received."""
    archive = handlers.archive
    uids = sorted({r.sop_instance_uid for r in refs})
    rows: dict[str, tuple[str, str, str]] = {}
    with archive.db.read() as session:
        for start in range(0, len(uids), QUERY_CHUNK):
            chunk = uids[start : start + QUERY_CHUNK]
            query = select(
                Instance.sop_uid, Instance.sop_class_uid, Instance.blob_key, Instance.sha256
            ).where(Instance.sop_uid.in_(chunk))
            for sop_uid, sop_class, key, sha in session.execute(query).all():
                rows[sop_uid] = (sop_class, key, sha)
    outcome = Outcome(transaction)
    intact: dict[str, bool] = {}
    for ref in refs:
        row = rows.get(ref.sop_instance_uid)
        if row is None:
            outcome.failed.append((ref, NO_SUCH_OBJECT_INSTANCE))
            continue
        sop_class, key, sha = row
        if sop_class != ref.sop_class_uid:
            outcome.failed.append((ref, CLASS_INSTANCE_CONFLICT))
            continue
        if key not in intact:
            intact[key] = _blob_intact(handlers, ref, key, sha)
        if intact[key]:
            outcome.committed.append(ref)
        else:
            outcome.failed.append((ref, PROCESSING_FAILURE))
    return outcome


def _blob_intact(handlers: Handlers, ref: Reference, key: str, sha: str) -> bool:
    digest = hashlib.sha256()
    try:
        for chunk in handlers.archive.blobs.open_stream(key):
            digest.update(chunk)
    except Exception as exc:  # missing (BlobNotFound), unreadable, store unreachable
        log.error(
            "storage commitment: instance %s cannot be read back from %s: %r",
            ref.sop_instance_uid,
            key,
            exc,
        )
        return False
    if digest.hexdigest() != sha:
        log.error(
            "storage commitment: instance %s is damaged: %s no longer has SHA-256 %s",
            ref.sop_instance_uid,
            key,
            sha,
        )
        return False
    return True


def _delivered(code: int | None) -> bool:
    """The modality answered the report with Success (or a warning): it has it."""
    return code is not None and (code == SUCCESS or 0xB000 <= code <= 0xBFFF)


class _ResponseWatch:
    """Tells when our N-ACTION response is on the wire, so the report never overtakes it.

    The handler returns before pynetdicom sends the response, and pynetdicom marks its reactor
    "paused" for the whole time a handler runs, so a thread cannot tell from that flag alone.
    EVT_DIMSE_SENT fires (in the reactor) as the response is encoded; the next P-DATA the
    connection writes (EVT_PDU_SENT) is that response."""

    def __init__(self, assoc: Association, message_id: int) -> None:
        self.assoc = assoc
        self.message_id = message_id
        self.encoded = False
        self.sent = threading.Event()
        assoc.bind(evt.EVT_DIMSE_SENT, self._dimse_sent)
        assoc.bind(evt.EVT_PDU_SENT, self._pdu_sent)

    def _dimse_sent(self, event: Event) -> None:
        msg = event.message
        if isinstance(msg, N_ACTION_RSP):
            replied_to = msg.command_set.get("MessageIDBeingRespondedTo")
            self.encoded = self.encoded or replied_to == self.message_id

    def _pdu_sent(self, event: Event) -> None:
        if self.encoded and isinstance(event.pdu, P_DATA_TF):
            self.sent.set()

    def wait(self) -> bool:
        deadline = time.monotonic() + PAUSE_TIMEOUT
        while not self.sent.wait(0.01):
            if not self.assoc.is_established or time.monotonic() > deadline:
                break
        self.assoc.unbind(evt.EVT_DIMSE_SENT, self._dimse_sent)
        self.assoc.unbind(evt.EVT_PDU_SENT, self._pdu_sent)
        return self.sent.is_set()


def _leaving(assoc: Association) -> bool:
    """The peer has asked to release (or aborted): nothing more should be written to it."""
    pending = assoc.dul.peek_next_pdu()
    return not assoc.is_established or isinstance(pending, A_RELEASE | A_ABORT | A_P_ABORT)


@contextmanager
def _reactor_held(assoc: Association) -> Iterator[bool]:
    """Keep the association's reactor from taking the next message, as pynetdicom's own send_*
    methods do (its private handshake ``_reactor_checkpoint``/``_is_paused``), so the peer's
    answer to our request is ours to read. Yields False if the reactor did not stop in time."""
    assoc._reactor_checkpoint.clear()
    try:
        deadline = time.monotonic() + PAUSE_TIMEOUT
        while not assoc._is_paused and assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.001)
        yield assoc._is_paused and assoc.is_established
    finally:
        assoc._reactor_checkpoint.set()


def report_on_same(assoc: Association, info: Dataset, event_type: int) -> bool:
    """Send the N-EVENT-REPORT on the requesting association and wait for its answer, giving
    up as soon as the peer releases: a modality that is leaving ignores the report (PS3.4
    J.3.3.1.2 note 1), and waiting out a timeout would only delay the new association."""
    context = next(
        (c for c in assoc.accepted_contexts if c.abstract_syntax == STORAGE_COMMITMENT), None
    )
    if context is None:
        return False
    with _reactor_held(assoc) as held:
        if not held or _leaving(assoc):
            return False
        syntax = context.transfer_syntax[0]
        encoded = encode(info, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
        if encoded is None:
            log.error("storage commitment: cannot encode the event information")
            return False
        req = N_EVENT_REPORT()
        req.MessageID = 1
        req.AffectedSOPClassUID = STORAGE_COMMITMENT
        req.AffectedSOPInstanceUID = WELL_KNOWN_INSTANCE
        req.EventTypeID = event_type
        req.EventInformation = BytesIO(encoded)
        assoc.dimse.send_msg(req, context.context_id)
        deadline = time.monotonic() + REPLY_TIMEOUT
        while time.monotonic() < deadline:
            _cx, msg = assoc.dimse.peek_msg()
            if msg is not None:
                if not (isinstance(msg, N_EVENT_REPORT) and msg.is_valid_response):
                    return False  # the peer went on with something else: leave it queued
                assoc.dimse.get_msg(block=False)
                return _delivered(msg.Status)
            if _leaving(assoc):
                return False
            time.sleep(0.002)
        return False


class StorageCommitment:
    """The EVT_N_ACTION handler; shares the calling-AE principal with the C-STORE handler,
    since asking for commitment is part of storing."""

    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self.settings = handlers.settings

    def action(self, event: Event) -> tuple[Dataset | int, Dataset | None]:
        req = event.request
        if str(req.RequestedSOPClassUID) != STORAGE_COMMITMENT:
            return _status(NO_SUCH_SOP_CLASS, "only Storage Commitment Push Model"), None
        if event.action_type != REQUEST_COMMITMENT:
            return _status(NO_SUCH_ACTION, "only Action Type 1 (Request Commitment)"), None
        if str(req.RequestedSOPInstanceUID) != WELL_KNOWN_INSTANCE:
            return _status(INVALID_OBJECT_INSTANCE, f"use instance {WELL_KNOWN_INSTANCE}"), None
        try:
            transaction, refs = parse_request(event.action_information)
            problem: RequestError | None = None
            detail = f"N-ACTION storage commitment {transaction} ({len(refs)} instances)"
        except RequestError as exc:
            transaction, refs, problem = "", [], exc
            detail = f"N-ACTION storage commitment (malformed: {exc})"
        try:
            self.handlers.archive.authorize(
                self.handlers.principal(event, "store"), Action.WRITE, None, detail
            )
        except AccessDenied:
            return _status(NOT_AUTHORIZED, "calling AE may not store here"), None
        if problem is not None:
            log.warning(
                "storage commitment request from %s refused: %s",
                event.assoc.requestor.ae_title,
                problem,
            )
            return _status(problem.status, str(problem)), None
        watch = _ResponseWatch(event.assoc, req.MessageID)
        threading.Thread(
            target=self._complete,
            args=(watch, event.assoc.requestor.ae_title.strip(), transaction, refs),
            name=f"commitment-{transaction[-12:]}",
            daemon=True,
        ).start()
        return SUCCESS, None

    # -- in the background ----------------------------------------------------------------
    def _complete(
        self, watch: _ResponseWatch, calling_ae: str, transaction: str, refs: list[Reference]
    ) -> None:
        try:
            outcome = verify(self.handlers, transaction, refs)
        except Exception:
            log.exception("storage commitment %s: checking failed", transaction)
            outcome = Outcome(transaction, failed=[(r, PROCESSING_FAILURE) for r in refs])
        log.info(
            "storage commitment %s for %s: %d committed, %d failed",
            transaction,
            calling_ae,
            len(outcome.committed),
            len(outcome.failed),
        )
        info = outcome.event_information(self.settings.ae_title)
        if self._send_on_same(watch, info, outcome.event_type):
            log.info("storage commitment %s reported on the requesting association", transaction)
            return
        destination = self.settings.move_destination(calling_ae)
        if destination is None:
            log.error(
                "storage commitment report %s for %s could NOT be delivered: the requesting "
                "association is closed and %s is not in CLOUDFILM_MOVE_DESTINATIONS",
                transaction,
                calling_ae,
                calling_ae,
            )
            return
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS), start=1):
            time.sleep(delay)
            if self._send_on_new(destination, info, outcome.event_type, transaction):
                log.info(
                    "storage commitment %s reported to %s at %s:%d (attempt %d)",
                    transaction,
                    destination.ae_title,
                    destination.host,
                    destination.port,
                    attempt,
                )
                return
        log.error(
            "storage commitment report %s for %s could NOT be delivered to %s:%d after %d "
            "attempts; the modality must ask again",
            transaction,
            calling_ae,
            destination.host,
            destination.port,
            len(RETRY_DELAYS) + 1,
        )

    def _send_on_same(self, watch: _ResponseWatch, info: Dataset, event_type: int) -> bool:
        if not watch.wait():  # the response first; or the association is gone
            return False
        try:
            return report_on_same(watch.assoc, info, event_type)
        except Exception as exc:
            log.warning("storage commitment report on the same association failed: %r", exc)
            return False

    def _send_on_new(
        self, destination: MoveDestination, info: Dataset, event_type: int, transaction: str
    ) -> bool:
        ae = AE(ae_title=self.settings.ae_title)
        ae.acse_timeout = self.settings.dicom_artim_timeout
        ae.network_timeout = self.settings.dicom_idle_timeout
        ae.dimse_timeout = REPLY_TIMEOUT
        ae.add_requested_context(STORAGE_COMMITMENT)
        assoc = ae.associate(
            destination.host,
            destination.port,
            ae_title=destination.ae_title,
            ext_neg=[build_role(STORAGE_COMMITMENT, scp_role=True)],
        )
        if not assoc.is_established:
            log.warning(
                "storage commitment %s: no association with %s at %s:%d",
                transaction,
                destination.ae_title,
                destination.host,
                destination.port,
            )
            return False
        try:
            context = next(
                (c for c in assoc.accepted_contexts if c.abstract_syntax == STORAGE_COMMITMENT),
                None,
            )
            if context is None:
                log.warning(
                    "storage commitment %s: %s refused the Storage Commitment context",
                    transaction,
                    destination.ae_title,
                )
                return False
            if not context.as_scp:
                log.warning(
                    "storage commitment %s: %s did not accept our SCP role; sending anyway",
                    transaction,
                    destination.ae_title,
                )
            status, _ = assoc.send_n_event_report(
                info, event_type, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE
            )
            if not _delivered(getattr(status, "Status", None)):
                log.warning(
                    "storage commitment %s: %s answered the report with status %s",
                    transaction,
                    destination.ae_title,
                    getattr(status, "Status", None),
                )
                return False
            return True
        except Exception as exc:
            log.warning("storage commitment %s: sending the report failed: %r", transaction, exc)
            return False
        finally:
            if assoc.is_established:
                assoc.release()

"""Fixity: every blob is re-read on a schedule and its SHA-256 compared with the index's.

A disk that rots a sector, an S3 object overwritten by a mis-scripted sync, a file deleted by
hand: nothing else notices until a doctor opens that image, maybe ten years later, when the
second copy may be gone too. The verifier walks the instances in primary-key order, reads each
blob from the *primary* store (the fallback reader would hide a missing primary), hashes it
and compares with ``Instance.sha256`` (the hash of the bytes as received).

A missing or changed blob is an alarm, raised five ways: the log (ERROR), the metric
``cloudfilm_fixity_alarms_total``, a row in ``keeping_fixity_events`` (shown on the console's
fixity page), a record in the audit trail, and, when a replica holds the right bytes, a repair
(outcome ``repaired``). Outcomes: ``missing`` / ``changed`` (no replica to repair from),
``repaired``, ``unrepaired`` (a replica is configured but could not give the right bytes).

The background verifier (``FixityVerifier``, in ``serve`` only, under a lease) does one full
pass per ``verify_period_days``, reading at most ``verify_mbps`` MB/s; its cursor is kept in
``index_state`` after every batch, so a restart continues the pass where it stopped.
``cloudfilm verify`` runs the same check now, optionally limited to a hospital or a date.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from cloudfilm.background import Lease, backoff
from cloudfilm.keeping.models import FixityEvent
from cloudfilm.metrics import instruments
from cloudfilm.storage.blobs import BlobNotFound, BlobStore
from cloudfilm.storage.models import IndexState, Instance, Series, Study
from cloudfilm.storage.replicated import primary_of, replica_of

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

log = logging.getLogger(__name__)

PRINCIPAL = "system:fixity"
PASS_KEY = "keeping.fixity_pass"
LEASE_KEY = "keeping.fixity_lease"
LEASE_SECONDS = 60.0
BATCH = 100
CHUNK = 1024 * 1024
IDLE_SECONDS = 60.0
"""Between passes the verifier looks again this often (the period may be changed)."""


@dataclass(frozen=True)
class Blob:
    """One instance's blob as the index knows it."""

    pk: int
    key: str
    sha256: str
    size: int
    study_uid: str
    hospital_pk: int


@dataclass
class Tally:
    """What a run of the verifier saw."""

    checked: int = 0
    bytes: int = 0
    alarms: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: str) -> None:
        self.alarms[outcome] = self.alarms.get(outcome, 0) + 1

    @property
    def unresolved(self) -> int:
        return sum(n for outcome, n in self.alarms.items() if outcome != "repaired")


class Unreachable(Exception):
    """The primary store itself failed (not one blob): the pass waits and tries again."""


class Stopped(Exception):
    """The verifier is stopping: the blob being read is left for the next start."""


class Throttle:
    """At most ``mbps`` MB/s on average; time spent idle is not banked for a later burst."""

    def __init__(self, mbps: float, stop: threading.Event | None = None) -> None:
        self.rate = mbps * 1e6
        self.stop = stop or threading.Event()
        self.start = time.monotonic()
        self.spent = 0

    def take(self, size: int) -> None:
        if self.rate <= 0:
            return
        self.spent += size
        delay = self.start + self.spent / self.rate - time.monotonic()
        if delay > 0 and self.stop.wait(delay):
            raise Stopped
        if delay < -1.0:  # we were slower than the rate (or idle): start a new window
            self.start, self.spent = time.monotonic(), 0


def blob_rows(
    archive: Archive,
    after: int,
    limit: int = BATCH,
    *,
    hospital: int | None = None,
    since: datetime | None = None,
) -> list[Blob]:
    """The next instances after primary key ``after`` (optionally of one hospital, received
    since a time)."""
    query = (
        select(
            Instance.pk,
            Instance.blob_key,
            Instance.sha256,
            Instance.size_bytes,
            Study.study_uid,
            Study.hospital_pk,
        )
        .join(Series, Series.pk == Instance.series_pk)
        .join(Study, Study.pk == Series.study_pk)
        .where(Instance.pk > after)
        .order_by(Instance.pk)
        .limit(limit)
    )
    if hospital is not None:
        query = query.where(Study.hospital_pk == hospital)
    if since is not None:
        query = query.where(Instance.received_at >= since)
    with archive.db.read() as session:
        return [Blob(*row) for row in session.execute(query).all()]


def hash_blob(store: BlobStore, key: str, throttle: Throttle | None = None) -> tuple[str, int]:
    """(SHA-256 hex, size) of the stored bytes. Raises BlobNotFound; OSError for a blob that
    cannot be read; anything else when the store itself fails."""
    digest = hashlib.sha256()
    size = 0
    for chunk in store.open_stream(key):
        digest.update(chunk)
        size += len(chunk)
        if throttle is not None:
            throttle.take(len(chunk))
    return digest.hexdigest(), size


def check_blob(archive: Archive, blob: Blob, throttle: Throttle | None = None) -> str | None:
    """Verify one blob; None when it is intact, else the alarm's outcome (recorded)."""
    primary = primary_of(archive.blobs)
    try:
        found, size = hash_blob(primary, blob.key, throttle)
    except Stopped:
        raise
    except BlobNotFound:
        problem, detail = "missing", "the blob is not in the primary store"
    except OSError as exc:
        if type(exc).__name__ == "BlobDamaged":  # an encrypted blob failing authentication
            problem, detail = "changed", f"the blob fails authentication: {exc}"
        else:  # this file cannot be read (EIO, permissions): as good as missing
            problem, detail = "missing", f"the blob cannot be read: {exc}"
    except Exception as exc:
        raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
    else:
        instruments.fixity_verified(size)
        if found == blob.sha256:
            return None
        problem = "changed"
        detail = f"SHA-256 {found} ({size} bytes), the index says {blob.sha256} ({blob.size})"
    if problem == "missing" and not _still_indexed(archive, blob):
        return None  # deleted (retention, a replaced duplicate) since the batch was read
    outcome, how = repair(archive, blob)
    if outcome == "unrepaired" or outcome == "repaired":
        detail = f"{detail}; {how}"
    else:
        outcome = problem
    record_alarm(archive, blob, outcome, f"{problem}: {detail}")
    return outcome


def _still_indexed(archive: Archive, blob: Blob) -> bool:
    with archive.db.read() as session:
        found = session.execute(select(Instance.blob_key).where(Instance.pk == blob.pk)).scalar()
    return found == blob.key


def repair(archive: Archive, blob: Blob) -> tuple[str, str]:
    """Rewrite the primary's copy from the replica's, when that one is right.
    Returns (``repaired`` | ``unrepaired`` | ``none``, what happened)."""
    try:
        replica = replica_of(archive.blobs)
    except Exception as exc:
        return "unrepaired", f"the replica cannot be opened: {exc}"
    if replica is None:
        return "none", "no replica is configured"
    try:
        data = replica.get(blob.key)
    except BlobNotFound:
        return "unrepaired", "the replica has no copy either"
    except Exception as exc:
        return "unrepaired", f"the replica could not be read: {exc}"
    if hashlib.sha256(data).hexdigest() != blob.sha256:
        return "unrepaired", "the replica's copy differs from the index too"
    primary = primary_of(archive.blobs)
    try:
        rewrite(primary, blob.key, data)
        again, _size = hash_blob(primary, blob.key)
    except Exception as exc:
        return "unrepaired", f"rewriting the primary's copy failed: {exc}"
    if again != blob.sha256:
        return "unrepaired", "the rewritten copy still differs"
    return "repaired", "rewritten from the replica's copy (SHA-256 checked)"


def rewrite(store: BlobStore, key: str, data: bytes) -> None:
    """Put the right bytes back. A file that is there is overwritten in place: HTTP processes
    keep descriptors of recently served blobs open (dicomweb.resources), and a new file under
    the same name would leave them serving the damaged one. A crash in the middle leaves a
    damaged file again, which the next pass repairs; the replica keeps the good copy. Other
    stores (S3, an encrypted folder) get a fresh object; readers meanwhile fall back to the
    replica."""
    path = store.local_path(key)
    if path is not None and path.is_file():
        fd = os.open(path, os.O_WRONLY)
        try:
            view = memoryview(data)
            offset = 0
            while offset < len(view):
                offset += os.pwrite(fd, view[offset:], offset)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    with contextlib.suppress(BlobNotFound):
        store.delete(key)  # a store may keep what it finds under the key (same size: same bytes)
    store.put(key, data)


def record_alarm(archive: Archive, blob: Blob, outcome: str, detail: str) -> None:
    """The log, the metric, the fixity events table, the audit trail."""
    level = logging.WARNING if outcome == "repaired" else logging.ERROR
    log.log(level, "fixity %s: %s (study %s): %s", outcome, blob.key, blob.study_uid, detail)
    instruments.fixity_alarm(outcome)
    with archive.db.write() as session:
        session.add(
            FixityEvent(
                blob_key=blob.key, hospital_pk=blob.hospital_pk, outcome=outcome, detail=detail
            )
        )
    archive.audit.record(
        principal=PRINCIPAL,
        action="fixity",
        resource=blob.study_uid,
        outcome=outcome,
        detail=f"{blob.key}: {detail}"[:2000],
        hospital=blob.hospital_pk,
    )


def verify(
    archive: Archive,
    *,
    hospital: int | None = None,
    since: datetime | None = None,
    mbps: float = 0.0,
    progress: object = None,
) -> Tally:
    """Check every blob now (``cloudfilm verify``); the background pass's cursor is untouched.
    ``progress``: called with each batch's size."""
    tally = Tally()
    throttle = Throttle(mbps)
    for batch in _batches(archive, hospital=hospital, since=since):
        for blob in batch:
            outcome = check_blob(archive, blob, throttle)
            tally.checked += 1
            tally.bytes += blob.size
            if outcome is not None:
                tally.add(outcome)
        if callable(progress):
            progress(len(batch))
    return tally


def _batches(archive: Archive, **kw: object) -> Iterator[list[Blob]]:
    after = 0
    while batch := blob_rows(archive, after, **kw):  # type: ignore[arg-type]
        yield batch
        after = batch[-1].pk


# -- the background pass -----------------------------------------------------------------


@dataclass
class PassState:
    """The current (or last) pass, kept in ``index_state`` as JSON."""

    started: float = 0.0
    after: int = 0
    finished: float = 0.0
    checked: int = 0
    bytes: int = 0
    alarms: int = 0

    @classmethod
    def load(cls, archive: Archive) -> PassState:
        with archive.db.read() as session:
            row = session.get(IndexState, PASS_KEY)
        if row is None or not row.value:
            return cls()
        try:
            return cls(**json.loads(row.value))
        except (TypeError, ValueError):
            return cls()

    def save(self, archive: Archive) -> None:
        value = json.dumps(self.__dict__, separators=(",", ":"))
        with archive.db.write() as session:
            row = session.get(IndexState, PASS_KEY)
            if row is None:
                session.add(IndexState(key=PASS_KEY, value=value))
            else:
                row.value = value

    def when(self, field_name: str) -> datetime | None:
        stamp = getattr(self, field_name)
        return datetime.fromtimestamp(stamp, UTC) if stamp else None


class FixityVerifier:
    """The background thread of one ``serve``: a pass per period, throttled, resumable."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.settings = archive.settings
        self.lease = Lease(archive.db, LEASE_KEY, LEASE_SECONDS)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="fixity-verifier", daemon=True)
        self.failures = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
        try:
            self.lease.release()
        except Exception:
            log.exception("could not release the fixity lease")

    @property
    def period(self) -> float:
        return self.settings.verify_period_days * 86400.0

    def step(self, throttle: Throttle) -> float:
        """One batch of the current pass (starting a pass when one is due); returns how long
        to wait before the next step (0: go on)."""
        state = PassState.load(self.archive)
        now = time.time()
        if not state.started or state.finished:
            due = state.started + self.period
            if state.started and now < due:
                return min(IDLE_SECONDS, due - now)
            state = PassState(started=now)
            log.info("fixity: a pass over every blob begins")
        batch = blob_rows(self.archive, state.after)
        if not batch:
            state.finished = now
            state.save(self.archive)
            took = now - state.started
            log.info("fixity: pass done, %d blob(s), %.0f MB, %d alarm(s) in %.0f s",
                     state.checked, state.bytes / 1e6, state.alarms, took)  # fmt: skip
            if took > self.period:
                rate = self.settings.verify_mbps
                log.warning("fixity: a pass took longer than verify_period_days at "
                            "verify_mbps=%s; raise the rate", rate)  # fmt: skip
            return 0.0
        try:
            for blob in batch:
                if self.stopping.is_set() or not self.lease.held():
                    break  # the cursor covers only what was checked
                outcome = check_blob(self.archive, blob, throttle)
                state.after = blob.pk
                state.checked += 1
                state.bytes += blob.size
                state.alarms += outcome is not None
        finally:  # also when the store failed half-way: what was checked is not checked again
            state.save(self.archive)
        return 0.0

    def _run(self) -> None:
        throttle = Throttle(self.settings.verify_mbps, self.stopping)
        while not self.stopping.is_set():
            try:
                if not self.lease.held():
                    self.stopping.wait(LEASE_SECONDS / 3)
                    continue
                wait = self.step(throttle)
                self.failures = 0
            except Stopped:
                break
            except Unreachable as exc:
                self.failures += 1
                wait = backoff(self.failures, 5.0)
                log.warning("fixity: the primary store failed (%s); trying again in %.0f s",
                            exc, wait)  # fmt: skip
            except Exception:
                self.failures += 1
                wait = backoff(self.failures, 5.0)
                log.exception("fixity pass step failed")
            if wait:
                self.stopping.wait(wait)

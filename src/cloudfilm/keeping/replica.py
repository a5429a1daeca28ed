"""A second copy of every blob: queued with the instance, copied in the background, verified.

Ingest adds a row to ``keeping_replica_queue`` in the same index transaction as the instance
(only when ``replica_url`` is set: one extra INSERT), so the queue is exactly as durable as the
index and a C-STORE never waits for the replica. ``ReplicaWorker`` (in ``serve`` only, under
a lease) takes due rows, reads each blob from the primary, checks it against the queued
SHA-256 (a damaged primary copy is never spread), writes it to the replica, reads it back and
hashes it again; only then is the row deleted. A failure (the replica is down, full, slow) keeps
the row, with a back-off per blob that doubles up to 10 minutes; the first copy that succeeds
again makes every waiting row due at once, so the replica catches up as soon as it is back.

``cloudfilm replicate --catch-up`` queues the blobs held before the replica was configured
(instances, and the report PDFs under ``reports/``) that the replica does not have. Report
PDFs written later are found by the worker's look every ``SCAN_SECONDS`` at what is new.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cloudfilm.background import Lease, backoff
from cloudfilm.keeping.models import ReplicaItem
from cloudfilm.metrics import instruments
from cloudfilm.storage.blobs import BlobNotFound, BlobStore
from cloudfilm.storage.models import IndexState, Instance, utcnow
from cloudfilm.storage.replicated import primary_of, replica_of

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

log = logging.getLogger(__name__)

LEASE_KEY = "keeping.replica_lease"
LEASE_SECONDS = 60.0
BATCH = 64
COPIERS = 4
"""Copies in flight: S3 round trips overlap; a folder on another disk is not helped by more."""
POLL_SECONDS = 0.5
"""Instances stored by other processes (DICOM and HTTP workers) are noticed this often."""
SCAN_KEY = "keeping.replica_scan"
SCAN_SECONDS = 300.0
"""Blobs that are not instances (report PDFs) are not queued where they are written: the
worker looks for new ones this often (by modification time, since its last look)."""
_SHA_IN_KEY = re.compile(r"(?:^|/)([0-9a-f]{64})(?:\.[A-Za-z0-9_-]+)?\.[a-z]+$")


@dataclass(frozen=True)
class Due:
    pk: int
    key: str
    sha256: str
    created_at: datetime
    attempts: int


@dataclass(frozen=True)
class Copied:
    item: Due
    outcome: str
    """``copied``, ``gone`` (nothing references the blob any more) or ``failed``."""
    error: str = ""


class ReplicaUnavailable(Exception):
    """No replica is configured, or it cannot be opened."""


def expected_sha(key: str, queued: str) -> str:
    """The hash the copy must have: the queued one, else the one the key is named by."""
    if queued:
        return queued
    found = _SHA_IN_KEY.search(key)
    return found.group(1) if found else ""


def copy_blob(primary: BlobStore, replica: BlobStore, key: str, sha: str) -> str:
    """Copy one blob and read it back; returns ``copied`` or raises with the reason."""
    data = primary.get(key)
    if sha and hashlib.sha256(data).hexdigest() != sha:
        raise ValueError("the primary's copy differs from the index: not copied")
    for attempt in range(2):
        if attempt or not replica.exists(key):  # already there (a re-indexed blob): check it
            replica.put(key, data)
        back = replica.get(key)
        if hashlib.sha256(back).hexdigest() == sha if sha else back == data:
            return "copied"
        # A file store keeps a same-size file it finds (put is idempotent by size): a damaged
        # copy there must go before the right one can be written.
        if attempt == 0:
            replica.delete(key)
    raise ValueError("the replica gave back other bytes than were written")


def _referenced(archive: Archive, key: str) -> bool:
    if not key.startswith("instances/"):
        return True
    with archive.db.read() as session:
        found = session.execute(select(Instance.pk).where(Instance.blob_key == key)).first()
    return found is not None


def copy_item(archive: Archive, replica: BlobStore, item: Due) -> Copied:
    primary = primary_of(archive.blobs)
    try:
        copy_blob(primary, replica, item.key, expected_sha(item.key, item.sha256))
    except BlobNotFound:
        if not _referenced(archive, item.key):
            return Copied(item, "gone")  # replaced or deleted before it was copied
        return Copied(item, "failed", "the primary has no copy (see the fixity events)")
    except Exception as exc:
        return Copied(item, "failed", f"{type(exc).__name__}: {exc}"[:1000])
    return Copied(item, "copied")


def due_items(archive: Archive, limit: int = BATCH) -> list[Due]:
    query = (
        select(
            ReplicaItem.pk,
            ReplicaItem.blob_key,
            ReplicaItem.sha256,
            ReplicaItem.created_at,
            ReplicaItem.attempts,
        )
        .where(ReplicaItem.next_at <= utcnow())
        .order_by(ReplicaItem.next_at, ReplicaItem.pk)
        .limit(limit)
    )
    with archive.db.read() as session:
        return [Due(*row) for row in session.execute(query).all()]


def settle(archive: Archive, results: Iterable[Copied], retry_seconds: float) -> None:
    """Done rows go; failed ones wait longer. One transaction for the batch."""
    now = utcnow()
    table = ReplicaItem.__table__
    done = [r.item.pk for r in results if r.outcome != "failed"]
    with archive.db.write() as session:
        if done:
            session.execute(delete(table).where(table.c.pk.in_(done)))
        for r in results:
            if r.outcome != "failed":
                continue
            wait = backoff(r.item.attempts + 1, retry_seconds)
            session.execute(
                update(table)
                .where(table.c.pk == r.item.pk)
                .values(
                    attempts=table.c.attempts + 1,
                    next_at=now + timedelta(seconds=wait),
                    last_error=r.error,
                )
            )
    for r in results:
        if r.outcome == "copied":
            created = r.item.created_at
            if created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            instruments.replica_copy(True, (now - created).total_seconds())
        elif r.outcome == "failed":
            instruments.replica_copy(False)


def make_all_due(archive: Archive) -> None:
    """The replica answers again: what waited for it need not wait out its back-off."""
    table = ReplicaItem.__table__
    with archive.db.write() as session:
        session.execute(update(table).where(table.c.attempts > 0).values(next_at=utcnow()))


def open_replica(archive: Archive) -> BlobStore:
    try:
        replica = replica_of(archive.blobs)
    except Exception as exc:
        raise ReplicaUnavailable(f"the replica cannot be opened: {exc}") from exc
    if replica is None:
        raise ReplicaUnavailable("no replica is configured (CLOUDFILM_REPLICA_URL)")
    return replica


def copy_due(archive: Archive, pool: ThreadPoolExecutor | None = None) -> tuple[int, int]:
    """One batch of due rows; returns (copied or gone, failed)."""
    items = due_items(archive)
    if not items:
        return 0, 0
    try:
        replica = open_replica(archive)
        ensure = getattr(replica, "ensure_bucket", None)
        if ensure is not None:
            ensure()
    except Exception as exc:
        results = [Copied(i, "failed", f"{type(exc).__name__}: {exc}"[:1000]) for i in items]
    else:
        if pool is None:
            results = [copy_item(archive, replica, i) for i in items]
        else:
            results = list(pool.map(lambda i: copy_item(archive, replica, i), items))
    settle(archive, results, archive.settings.replica_retry_seconds)
    failed = sum(r.outcome == "failed" for r in results)
    if failed:
        log.warning("replica: %d of %d copies failed (%s)", failed, len(results),
                    next(r.error for r in results if r.outcome == "failed"))  # fmt: skip
    return len(results) - failed, failed


@dataclass
class QueueStatus:
    waiting: int
    failing: int
    oldest: datetime | None
    last_error: str


def queue_status(archive: Archive) -> QueueStatus:
    with archive.db.read() as session:
        waiting, oldest = session.execute(
            select(func.count(ReplicaItem.pk), func.min(ReplicaItem.created_at))
        ).one()
        failing = session.execute(
            select(func.count(ReplicaItem.pk)).where(ReplicaItem.attempts > 0)
        ).scalar_one()
        error = session.execute(
            select(ReplicaItem.last_error)
            .where(ReplicaItem.attempts > 0)
            .order_by(ReplicaItem.next_at.desc())
            .limit(1)
        ).scalar()
    return QueueStatus(int(waiting), int(failing), oldest, error or "")


# -- catch-up ------------------------------------------------------------------------------


def _enqueue(session: Session, rows: list[dict[str, object]]) -> None:
    """Rows already queued are left as they are (both engines: INSERT … ON CONFLICT)."""
    if not rows:
        return
    if session.get_bind().dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    stmt = insert(ReplicaItem.__table__).on_conflict_do_nothing(index_elements=["blob_key"])
    session.execute(stmt, rows)


def catch_up(archive: Archive, *, batch: int = 500) -> int:
    """Queue every blob the replica does not have; returns how many were queued."""
    replica = open_replica(archive)
    queued = 0
    after = 0
    while True:
        with archive.db.read() as session:
            rows = session.execute(
                select(Instance.pk, Instance.blob_key, Instance.sha256)
                .where(Instance.pk > after)
                .order_by(Instance.pk)
                .limit(batch)
            ).all()
        if not rows:
            break
        after = rows[-1][0]
        queued += _queue_missing(archive, replica, [(key, sha) for _pk, key, sha in rows])
    reports = [(key, "") for key, _t in primary_of(archive.blobs).list_keys("reports/")]
    for i in range(0, len(reports), batch):
        queued += _queue_missing(archive, replica, reports[i : i + batch])
    return queued


def _queue_missing(archive: Archive, replica: BlobStore, keys: list[tuple[str, str]]) -> int:
    now = utcnow()
    rows: list[dict[str, object]] = [
        dict(
            blob_key=key,
            sha256=expected_sha(key, sha),
            created_at=now,
            attempts=0,
            next_at=now,
            last_error="",
        )
        for key, sha in keys
        if not replica.exists(key)
    ]
    with archive.db.write() as session:
        _enqueue(session, rows)
    return len(rows)


def queue_recent(archive: Archive, prefix: str = "reports/") -> int:
    """Queue the blobs under ``prefix`` written since the last look that the replica lacks
    (the look's time is kept in ``index_state``; a minute's overlap covers clocks)."""
    with archive.db.read() as session:
        row = session.get(IndexState, SCAN_KEY)
    since = float(row.value) if row is not None and row.value else 0.0
    started = time.time()
    replica = open_replica(archive)
    fresh = [
        (key, "")
        for key, mtime in primary_of(archive.blobs).list_keys(prefix)
        if mtime >= since - 60
    ]
    queued = 0
    for i in range(0, len(fresh), 500):
        queued += _queue_missing(archive, replica, fresh[i : i + 500])
    with archive.db.write() as session:
        row = session.get(IndexState, SCAN_KEY)
        if row is None:
            session.add(IndexState(key=SCAN_KEY, value=f"{started:.0f}"))
        else:
            row.value = f"{started:.0f}"
    return queued


# -- the background worker -----------------------------------------------------------------


class ReplicaWorker:
    """The background thread of one ``serve``: the queue to the replica."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.lease = Lease(archive.db, LEASE_KEY, LEASE_SECONDS)
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.failures = 0
        self.pool = ThreadPoolExecutor(max_workers=COPIERS, thread_name_prefix="replica-copy")
        self.thread = threading.Thread(target=self._run, name="replica-worker", daemon=True)
        archive.on_stored(lambda _result: self.wake.set())

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout=30)
        self.pool.shutdown(wait=True)
        try:
            self.lease.release()
        except Exception:
            log.exception("could not release the replica lease")

    def _run(self) -> None:
        scanned = 0.0
        while not self.stopping.is_set():
            wait = POLL_SECONDS
            try:
                if not self.lease.held():
                    self.stopping.wait(LEASE_SECONDS / 3)
                    continue
                if time.monotonic() - scanned > SCAN_SECONDS:
                    scanned = time.monotonic()
                    queue_recent(self.archive)
                done, failed = copy_due(self.archive, self.pool)
                if failed and not done:  # the replica is down (or everything due is stuck)
                    self.failures += 1
                    wait = backoff(self.failures, self.archive.settings.replica_retry_seconds)
                elif done:
                    if self.failures:  # it is back: the rows waiting out back-offs go now
                        make_all_due(self.archive)
                    self.failures = 0
                    continue
            except Exception:
                self.failures += 1
                wait = backoff(self.failures, self.archive.settings.replica_retry_seconds)
                log.exception("replica worker step failed")
            if self.failures:
                self.stopping.wait(wait)
            else:
                self.wake.wait(wait)
                self.wake.clear()

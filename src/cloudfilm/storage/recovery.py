"""Keeping the index in step with the storage area across crashes and power cuts.

The blobs are the record: each is fsynced before its instance is acknowledged. Index commits of
the ingest path do not wait for the disk, so a power cut may drop the last few of them. The
watermark says "every blob written before this time is indexed durably"; at start, blobs
written since (their keys carry the hour) that have no index row are indexed again, through
the one ingest function.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select

from cloudfilm.storage.blobs import key_hour, key_owner
from cloudfilm.storage.models import IndexState, Instance

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

log = logging.getLogger(__name__)
WATERMARK = "durable_until"
MARGIN = timedelta(minutes=5)


def read_watermark(archive: Archive) -> datetime | None:
    with archive.db.read() as session:
        value = session.get(IndexState, WATERMARK)
    return datetime.fromisoformat(value.value) if value and value.value else None


def mark_durable(archive: Archive) -> datetime:
    """Record that every index commit so far is durable.

    The record is itself a durable commit, and both engines write their log in order: flushing
    it (SQLite WAL fsync, PostgreSQL WAL flush) makes every earlier, relaxed commit durable too.
    The margin covers ingests whose blob was written before now but whose commit comes later.
    """
    mark = datetime.now(UTC) - MARGIN
    with archive.db.write() as session:
        row = session.get(IndexState, WATERMARK)
        if row is None:
            session.add(IndexState(key=WATERMARK, value=mark.isoformat()))
        else:
            row.value = mark.isoformat()
    return mark


def reconcile(archive: Archive) -> int:
    """Index every blob written since the watermark that has no index row. Returns the count."""
    since = read_watermark(archive)
    floor = since.replace(minute=0, second=0, microsecond=0) if since else None
    pending: list[str] = []
    recovered = 0
    for key, _mtime in archive.blobs.list_keys("instances/"):
        hour = key_hour(key)
        if hour is None or (floor is not None and hour < floor):
            continue
        pending.append(key)
        if len(pending) >= 500:
            recovered += reindex_missing(archive, pending)
            pending = []
    recovered += reindex_missing(archive, pending)
    if recovered:
        log.warning("re-indexed %d instance(s) whose index rows were lost", recovered)
    mark_durable(archive)
    return recovered


def reindex_missing(archive: Archive, keys: list[str]) -> int:
    """Index the blobs among ``keys`` that have no index row, through the one ingest path
    (``cloudfilm index rebuild`` uses it too). Returns how many were indexed."""
    if not keys:
        return 0
    from cloudfilm.accounts.hospitals import hospital_of_tag
    from cloudfilm.ingest import Rejected
    from cloudfilm.keeping.deletion import deleted_keys

    with archive.db.read() as session:
        known = set(
            session.execute(select(Instance.blob_key).where(Instance.blob_key.in_(keys))).scalars()
        )
        # a deletion's leftovers (its blobs go after its index commit) never come back
        gone = deleted_keys(session, [k for k in keys if k not in known])
    count = 0
    for key in keys:
        if key in known:
            continue
        if key in gone:
            archive.blobs.delete(key)
            continue
        try:
            owner = hospital_of_tag(archive.db, key_owner(key))
            result = archive.ingest(
                archive.blobs.get(key), hospital=owner, source="recovery", stored_key=key
            )
        except Rejected as exc:  # cannot happen for bytes we accepted once; keep them anyway
            log.error("blob %s could not be re-indexed: %s", key, exc.message)
            continue
        if result.outcome in ("stored", "replaced"):
            count += 1
    return count


class Checkpointer:
    """Moves the watermark forward every ``interval`` seconds while the server runs."""

    def __init__(self, archive: Archive, interval: float = 60.0) -> None:
        self.archive = archive
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="index-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                mark_durable(self.archive)
            except Exception:
                log.exception("index checkpoint failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

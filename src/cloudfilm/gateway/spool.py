"""The gateway's spool: received instances and reports waiting for the cloud.

A modality is told "stored" once its instance is an fsynced file here *and* a committed row of
the local queue (SQLite, WAL, synchronous=FULL): after that, a SIGKILL, a power cut or a cloud
away for hours loses nothing. A row leaves the queue only when the cloud has acknowledged the
item (and, for an instance, named the SHA-256 it holds); the file is removed after the row, so
a crash in between leaves an orphan file that the next start sweeps away, never a row without
its file. A file without a row was never acknowledged (the modality was not answered), so it
is removed too.

Order: a study's instances go in arrival order with its first series first, and the study
that arrived first goes first (``study_rank``, ``series_rank``: the queue id of the first row
of the study and of the series), so the cloud can issue the film of a study while the next
one still waits. A report waits behind the instances that arrived before it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cloudfilm.storage.blobs import FileBlobStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    study_uid TEXT NOT NULL DEFAULT '',
    series_uid TEXT NOT NULL DEFAULT '',
    sop_uid TEXT NOT NULL DEFAULT '',
    sha256 TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    blob_key TEXT NOT NULL DEFAULT '',
    fields TEXT NOT NULL DEFAULT '{}',
    source TEXT NOT NULL DEFAULT '',
    study_rank INTEGER NOT NULL DEFAULT 0,
    series_rank INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'waiting',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    received_at REAL NOT NULL,
    set_aside_at REAL
);
CREATE INDEX IF NOT EXISTS items_order ON items (state, study_rank, series_rank, id);
CREATE INDEX IF NOT EXISTS items_sop ON items (sop_uid);
CREATE INDEX IF NOT EXISTS items_study ON items (study_uid);
CREATE INDEX IF NOT EXISTS items_series ON items (series_uid);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL);
"""

log = logging.getLogger(__name__)
T = TypeVar("T")
BALLAST_BYTES = 256 * 1024
"""Disk kept back for the deletes that free the disk (see Spool._transaction)."""
WAL_TRUNCATE_BYTES = 256 * 1024
INSTANCE = "instance"
REPORT = "report"
WAITING = "waiting"
SET_ASIDE = "set_aside"


class SpoolFull(Exception):
    """Accepting more would pass the configured spool size or the disk's free reserve."""


@dataclass
class Item:
    id: int
    kind: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sha256: str
    size: int
    blob_key: str
    fields: dict[str, Any]
    source: str
    attempts: int
    received_at: float

    @property
    def label(self) -> str:
        return self.sop_uid if self.kind == INSTANCE else f"report {self.id}"


COLUMNS = (
    "id, kind, study_uid, series_uid, sop_uid, sha256, size, blob_key, fields, source, "
    "attempts, received_at"
)


def _item(row: tuple[Any, ...]) -> Item:
    values = list(row)
    values[8] = json.loads(values[8] or "{}")
    return Item(*values)


class Spool:
    def __init__(self, root: Path, *, max_bytes: int, min_free_bytes: int) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.files = FileBlobStore(root / "files")
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.lock = threading.Lock()
        self.wake = threading.Event()
        """Set when something new is queued: the uploader need not poll."""
        self.db = sqlite3.connect(
            root / "queue.sqlite3", check_same_thread=False, isolation_level=None
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.reserved = 0
        """Bytes of instances being written right now (counted against the limit)."""
        self.bytes = self._sum_bytes()
        self.recovered = self._recover()
        self._lay_ballast()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    # -- start ----------------------------------------------------------------------------
    def _sum_bytes(self) -> int:
        return int(self.db.execute("SELECT COALESCE(SUM(size), 0) FROM items").fetchone()[0])

    def _recover(self) -> int:
        """Remove what a crash left: half-written files, and files no row refers to."""
        removed = self.files.recover()
        referenced = {k for (k,) in self.db.execute("SELECT blob_key FROM items")}
        for prefix in ("instances/", "reports/"):
            for key, _mtime in list(self.files.list_keys(prefix)):
                if key not in referenced:
                    self.files.delete(key)
                    removed += 1
        return removed

    # -- in -------------------------------------------------------------------------------
    def _reserve(self, size: int) -> None:
        with self.lock:
            if self.bytes + self.reserved + size > self.max_bytes:
                raise SpoolFull(
                    f"spool holds {self.bytes} bytes of {self.max_bytes} allowed: the cloud "
                    "has not taken them yet"
                )
            free = shutil.disk_usage(self.root).free
            if free - size < self.min_free_bytes:
                raise SpoolFull(f"only {free} bytes free on the spool's disk")
            self.reserved += size

    def add_instance(
        self,
        data: bytes,
        *,
        sha256: str,
        study_uid: str,
        series_uid: str,
        sop_uid: str,
        source: str,
    ) -> int:
        """Durable on return (the caller may acknowledge); raises SpoolFull or OSError."""
        with self.lock:
            same = self.db.execute(
                "SELECT id FROM items WHERE sop_uid = ? AND sha256 = ? AND kind = ?",
                (sop_uid, sha256, INSTANCE),
            ).fetchone()
        if same:
            return int(same[0])  # the modality sent it again: we already hold these bytes
        size = len(data)
        self._reserve(size)
        key = f"instances/{sha256[:2]}/{sha256}.dcm"
        try:
            self.files.put(key, data)
            with self.lock:
                study = self._rank("study_uid", study_uid)
                series = self._rank("series_uid", series_uid)
                row_id = self._transaction(
                    lambda: self._insert_instance(
                        (study_uid, series_uid, sop_uid, sha256, size, key, source, study, series)
                    ),
                    free_ballast=False,  # a new instance must not eat the room kept for deletes
                )
                self.bytes += size
        except BaseException:
            self.files.delete(key)
            raise
        finally:
            with self.lock:
                self.reserved -= size
        self.wake.set()
        return row_id

    def _insert_instance(self, values: tuple[Any, ...]) -> int:
        cur = self.db.execute(
            "INSERT INTO items (kind, study_uid, series_uid, sop_uid, sha256, size, blob_key,"
            " source, study_rank, series_rank, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (INSTANCE, *values, time.time()),
        )
        row_id = int(cur.lastrowid or 0)
        self.db.execute(
            "UPDATE items SET study_rank = CASE study_rank WHEN 0 THEN id ELSE study_rank END,"
            " series_rank = CASE series_rank WHEN 0 THEN id ELSE series_rank END WHERE id = ?",
            (row_id,),
        )
        return row_id

    def _transaction(self, work: Callable[[], T], *, free_ballast: bool = True) -> T:
        """``work`` in one immediate transaction (caller holds the lock).

        A full disk must not wedge the spool: forgetting what the cloud holds is what frees
        the disk, and that delete needs room in the WAL. So the spool keeps a ballast file;
        a commit that finds the disk full (SQLite has then rolled back) drops the ballast and
        runs once more. The ballast is laid again when there is room."""
        for attempt in (1, 2):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                result = work()
                self.db.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                with contextlib.suppress(sqlite3.OperationalError):
                    self.db.execute("ROLLBACK")  # SQLite may have rolled back already
                full = "full" in str(exc)
                if not (full and free_ballast and attempt == 1 and self._drop_ballast()):
                    raise
            except BaseException:
                with contextlib.suppress(sqlite3.OperationalError):
                    self.db.execute("ROLLBACK")
                raise
        raise AssertionError("unreachable")

    @property
    def _ballast(self) -> Path:
        return self.root / "ballast"

    def _lay_ballast(self) -> None:
        if self._ballast.exists() or shutil.disk_usage(self.root).free < 2 * BALLAST_BYTES:
            return  # only when there is room: laying it must not be what fills the disk
        tmp = self.root / "ballast.part"
        try:
            with open(tmp, "wb") as fh:
                fh.write(bytes(BALLAST_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._ballast)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _drop_ballast(self) -> bool:
        try:
            self._ballast.unlink()
        except FileNotFoundError:
            return False
        log.error("spool disk full: released the reserve kept for this moment")
        return True

    def _rank(self, column: str, uid: str) -> int:
        """The rank of the study/series of this uid while any of its instances still waits."""
        row = self.db.execute(
            f"SELECT {column.split('_')[0]}_rank FROM items WHERE {column} = ? AND kind = ?"
            " AND state = ? LIMIT 1",
            (uid, INSTANCE, WAITING),
        ).fetchone()
        return int(row[0]) if row else 0

    def add_report(self, fields: dict[str, str], pdf: bytes | None, *, source: str) -> int:
        """A report (its fields, and the printer's PDF when there is one); durable on return."""
        import hashlib

        key = ""
        size = 0
        if pdf is not None:
            size = len(pdf)
            self._reserve(size)
            key = f"reports/{hashlib.sha256(pdf).hexdigest()}.pdf"
        try:
            if pdf is not None:
                self.files.put(key, pdf)
            with self.lock:
                cur = self.db.execute(
                    "INSERT INTO items (kind, study_uid, size, blob_key, fields, source,"
                    " received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        REPORT,
                        str(fields.get("study_uid", "")),
                        size,
                        key,
                        json.dumps(fields, ensure_ascii=False),
                        source,
                        time.time(),
                    ),
                )
                row_id = int(cur.lastrowid or 0)
                self.db.execute(
                    "UPDATE items SET study_rank = id, series_rank = 0 WHERE id = ?", (row_id,)
                )
                self.bytes += size
        finally:
            if pdf is not None:
                with self.lock:
                    self.reserved -= size
        self.wake.set()
        return row_id

    # -- out ------------------------------------------------------------------------------
    def next_batch(self, max_items: int, max_bytes: int) -> list[Item]:
        """The next items to upload: one report alone, or instances in queue order up to the
        limits (always at least one, whatever its size)."""
        with self.lock:
            rows = self.db.execute(
                f"SELECT {COLUMNS} FROM items WHERE state = ?"
                " ORDER BY study_rank, series_rank, id LIMIT ?",
                (WAITING, max_items),
            ).fetchall()
        batch: list[Item] = []
        total = 0
        for row in rows:
            item = _item(row)
            if item.kind == REPORT:
                return batch or [item]
            if batch and total + item.size > max_bytes:
                break
            batch.append(item)
            total += item.size
        return batch

    def open_item(self, item: Item) -> Any:
        return self.files.open_stream(item.blob_key)

    def read_item(self, item: Item) -> bytes:
        return self.files.get(item.blob_key)

    def done(self, items: list[Item], *, wire_bytes: int) -> None:
        """The cloud holds these: forget them (row first, then the file)."""
        if not items:
            return
        ids = [i.id for i in items]
        marks = ",".join("?" * len(ids))
        instances = [i for i in items if i.kind == INSTANCE]
        with self.lock:

            def forget() -> None:
                self.db.execute(f"DELETE FROM items WHERE id IN ({marks})", ids)
                self._count("sent_instances", len(instances))
                self._count("sent_reports", len(items) - len(instances))
                self._count("sent_bytes", sum(i.size for i in items))
                self._count("wire_bytes", wire_bytes)
                self._set("last_success_at", time.time())

            self._transaction(forget)
            self.bytes -= sum(i.size for i in items)
            keys = {i.blob_key for i in items if i.blob_key}
            still = set()
            if keys:
                marks = ",".join("?" * len(keys))
                query = f"SELECT blob_key FROM items WHERE blob_key IN ({marks})"
                still = {k for (k,) in self.db.execute(query, list(keys))}
        for key in keys - still:
            self.files.delete(key)
        with self.lock:
            wal = self.root / "queue.sqlite3-wal"
            if wal.exists() and wal.stat().st_size > WAL_TRUNCATE_BYTES:
                # the WAL never shrinks by itself: on a full disk it holds what deletes freed
                with contextlib.suppress(sqlite3.OperationalError):
                    self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if not self._ballast.exists():
                self._lay_ballast()

    def set_aside(self, item: Item, reason: str) -> None:
        """A refusal that will not change: kept (with its file) and shown, never retried."""
        with self.lock:
            self.db.execute(
                "UPDATE items SET state = ?, last_error = ?, set_aside_at = ? WHERE id = ?",
                (SET_ASIDE, reason[:1000], time.time(), item.id),
            )

    def failed(self, item: Item, reason: str) -> int:
        """A transient failure of this one item; returns how many times it has failed."""
        with self.lock:
            self.db.execute(
                "UPDATE items SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (reason[:1000], item.id),
            )
            row = self.db.execute("SELECT attempts FROM items WHERE id = ?", (item.id,))
            return int(row.fetchone()[0])

    def retry_set_aside(self, ids: list[int] | None = None) -> int:
        """An operator fixed the cause (e.g. on the cloud): queue set-aside items again."""
        with self.lock:
            if ids:
                marks = ",".join("?" * len(ids))
                cur = self.db.execute(
                    f"UPDATE items SET state = ?, attempts = 0 WHERE state = ? AND id IN ({marks})",
                    (WAITING, SET_ASIDE, *ids),
                )
            else:
                cur = self.db.execute(
                    "UPDATE items SET state = ?, attempts = 0 WHERE state = ?", (WAITING, SET_ASIDE)
                )
        self.wake.set()
        return cur.rowcount

    def count(self, name: str, value: float) -> None:
        with self.lock:
            self._count(name, value)

    def _count(self, name: str, value: float) -> None:
        self.db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, value),
        )

    def _set(self, name: str, value: float) -> None:
        self.db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    # -- what the status page shows ---------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        with self.lock:
            waiting = self.db.execute(
                "SELECT kind, COUNT(*), COALESCE(SUM(size), 0), MIN(received_at) FROM items"
                " WHERE state = ? GROUP BY kind",
                (WAITING,),
            ).fetchall()
            aside = self.db.execute(
                "SELECT id, kind, study_uid, sop_uid, last_error, set_aside_at, source FROM items"
                " WHERE state = ? ORDER BY id LIMIT 200",
                (SET_ASIDE,),
            ).fetchall()
            aside_count = self.db.execute(
                "SELECT COUNT(*) FROM items WHERE state = ?", (SET_ASIDE,)
            ).fetchone()[0]
            counters = dict(self.db.execute("SELECT name, value FROM counters").fetchall())
        by_kind = {k: (n, b, oldest) for k, n, b, oldest in waiting}
        oldest = min((v[2] for v in by_kind.values() if v[2] is not None), default=None)
        return {
            "waiting_instances": by_kind.get(INSTANCE, (0, 0, None))[0],
            "waiting_reports": by_kind.get(REPORT, (0, 0, None))[0],
            "waiting_bytes": sum(v[1] for v in by_kind.values()),
            "oldest_waiting_at": oldest,
            "spool_bytes": self.bytes,
            "spool_limit_bytes": self.max_bytes,
            "set_aside_count": int(aside_count),
            "set_aside": [
                {
                    "id": i,
                    "kind": kind,
                    "study_uid": study,
                    "sop_instance_uid": sop,
                    "reason": reason,
                    "set_aside_at": when,
                    "source": source,
                }
                for i, kind, study, sop, reason, when, source in aside
            ],
            "sent_instances": int(counters.get("sent_instances", 0)),
            "sent_reports": int(counters.get("sent_reports", 0)),
            "sent_bytes": int(counters.get("sent_bytes", 0)),
            "wire_bytes": int(counters.get("wire_bytes", 0)),
            "last_success_at": counters.get("last_success_at"),
        }

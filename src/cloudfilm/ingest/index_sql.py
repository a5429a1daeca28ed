"""The three index statements every stored instance runs, as plain SQL on the DBAPI cursor.

SQLAlchemy's statement machinery costs ~0.1-0.2 ms a statement in Python, which at hundreds of
instances a second was a third of the ingest's CPU. These run inside the session's own
transaction (same DBAPI connection), and values of SQLAlchemy types (timestamps) go through the
dialect's own bind processors, so rows are byte-for-byte what the ORM would have written. Rare
paths (a new patient, study or series; a replaced instance) stay on the ORM.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from cloudfilm.storage.models import Instance

INSTANCE_COLUMNS = (
    "sop_uid",
    "series_pk",
    "sop_class_uid",
    "transfer_syntax_uid",
    "blob_key",
    "size_bytes",
    "sha256",
    "meta_json",
    "received_at",
    "instance_number",
    "rows",
    "columns",
    "number_of_frames",
    "pixel_data_offset",
    "pixel_data_length",
)
_INSERT = "INSERT INTO instances ({}) VALUES ({})".format(
    ", ".join(f'"{c}"' for c in INSTANCE_COLUMNS), ", ".join("?" for _ in INSTANCE_COLUMNS)
)
_EXISTS = "SELECT pk FROM instances WHERE sop_uid = ?"
_BUMP_SERIES = (
    "UPDATE series SET num_instances = num_instances + ?, size_bytes = size_bytes + ? WHERE pk = ?"
)
_BUMP_CHECKED = _BUMP_SERIES + " AND series_uid = ? AND study_pk = ?"
"""With a cached series pk: zero rows changed means the cache is stale (the study was deleted,
and SQLite may have given the pk to another series since; keeping/deletion.py)."""
_BUMP_STUDY = (
    "UPDATE studies SET num_instances = num_instances + ?, num_series = num_series + ?, "
    "size_bytes = size_bytes + ?, last_instance_at = ? WHERE pk = ?"
)

_ENQUEUE_REPLICA = (
    "INSERT INTO keeping_replica_queue (blob_key, sha256, created_at, attempts, next_at, "
    "last_error) VALUES (?, ?, ?, 0, ?, '') ON CONFLICT (blob_key) DO NOTHING"
)
"""A new blob for the second copy (keeping/replica.py), in the instance's own transaction: a
commit that is lost loses both, and recovery re-indexing queues it again."""


class StaleSeries(Exception):
    """A cached series pk that no longer names its series (its study was deleted)."""


class HotStatements:
    """Bound to one session's transaction."""

    def __init__(self, session: Session) -> None:
        conn = session.connection()
        dialect = conn.dialect
        self.qmark = dialect.paramstyle == "qmark"
        self.cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        processor = Instance.__table__.c.received_at.type._cached_bind_processor(dialect)
        self.timestamp = processor or (lambda value: value)

    def _sql(self, sql: str) -> str:
        return sql if self.qmark else sql.replace("?", "%s")

    def exists(self, sop_uid: str) -> int | None:
        self.cursor.execute(self._sql(_EXISTS), (sop_uid,))
        row = self.cursor.fetchone()
        return int(row[0]) if row else None

    def insert_instance(self, values: dict[str, Any]) -> None:
        row = tuple(values.get(c) for c in INSTANCE_COLUMNS)
        row = (*row[:8], self.timestamp(values["received_at"]), *row[9:])
        self.cursor.execute(self._sql(_INSERT), row)

    def bump(
        self,
        series_pk: int,
        study_pk: int,
        size: int,
        count: int,
        now: datetime,
        new_series: bool,
        series_uid: str | None = None,
    ) -> None:
        """Counters move by SQL increments so concurrent writers never lose one.

        ``series_uid``: the pks came from the process's cache; raises :class:`StaleSeries`
        (the transaction is then rolled back and retried afresh) when they no longer name it."""
        if series_uid is None:
            self.cursor.execute(self._sql(_BUMP_SERIES), (count, size, series_pk))
        else:
            self.cursor.execute(
                self._sql(_BUMP_CHECKED), (count, size, series_pk, series_uid, study_pk)
            )
            if self.cursor.rowcount == 0:
                raise StaleSeries(series_uid)
        self.cursor.execute(
            self._sql(_BUMP_STUDY),
            (count, 1 if new_series else 0, size, self.timestamp(now), study_pk),
        )

    def enqueue_replica(self, key: str, sha256: str, now: datetime) -> None:
        stamp = self.timestamp(now)
        self.cursor.execute(self._sql(_ENQUEUE_REPLICA), (key, sha256, stamp, stamp))

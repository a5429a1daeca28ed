"""Group commit: the index writes of instances stored at the same time share one transaction.

Four modalities sending at once used to queue for the index one instance at a time, each
paying a transaction (and on SQLite the process's write lock) of its own, so parallel
associations were slower than one. Here the first writer to arrive becomes the leader, takes
every write waiting behind it, runs them in one transaction and commits once; each caller
returns only after the commit that holds its own row. A write that fails in a batch makes the
whole batch run again one transaction per write, so one bad instance cannot fail the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

from cloudfilm.storage.database import Database

T = TypeVar("T")
MAX_BATCH = 64


@dataclass
class _Job(Generic[T]):
    work: Callable[[Session], T]
    done: bool = False
    alone: bool = False
    """The batch it was in failed: the caller runs it again in a transaction of its own."""
    result: Any = None
    error: BaseException | None = None


class GroupCommit:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.pending: list[_Job[Any]] = []
        self.leading = False
        self.batches = 0
        self.writes = 0
        """Counters for the benchmark: writes / batches is the mean batch size."""

    def run(self, work: Callable[[Session], T]) -> T:
        """Run ``work(session)`` in a non-durable index transaction shared with other callers
        (the blobs are fsynced first, so the index is rebuildable; see Database.write)."""
        job: _Job[T] = _Job(work)
        with self.lock:
            self.pending.append(job)
            while not job.done and self.leading:
                self.changed.wait()
            if not job.done:
                self.leading = True
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
        if not job.done:
            try:
                self._commit(batch)
            finally:
                with self.lock:
                    self.leading = False
                    self.changed.notify_all()
        if job.alone:
            with self.db.write(durable=False) as session:
                return work(session)
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    def _commit(self, batch: list[_Job[Any]]) -> None:
        try:
            with self.db.write(durable=False) as session:
                results = [job.work(session) for job in batch]
        except BaseException as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                for job in batch:
                    job.alone = True
        else:
            for job, result in zip(batch, results, strict=True):
                job.result = result
            self.batches += 1
            self.writes += len(batch)
        for job in batch:
            job.done = True

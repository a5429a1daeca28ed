"""What the once-per-deployment background workers share: a lease in the index, and back-off.

``serve`` starts these workers (the index feed's webhook push, the fixity verifier, the
replica copier) in its own process only, never in its HTTP or DICOM workers. Several ``serve``
processes against one PostgreSQL would still each start one, so each worker holds a lease: a
row of ``index_state`` naming its holder and an expiry, renewed while it runs. Another process
waits while the lease is live and takes it over once its holder has not renewed it for
``seconds`` (it died).
"""

from __future__ import annotations

import os
import random
import socket
import time

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from cloudfilm.storage.database import Database
from cloudfilm.storage.models import IndexState

MAX_BACKOFF = 600.0


def backoff(failures: int, first: float, ceiling: float = MAX_BACKOFF) -> float:
    """Seconds to wait after ``failures`` failures in a row: half fixed, half random (so peers
    coming back are not met by every worker at the same second)."""
    top = min(ceiling, first * 2 ** max(0, failures - 1))
    return top / 2 + random.uniform(0, top / 2)


class Lease:
    """``key``'s row in ``index_state``: ``"<holder> <expiry epoch seconds>"``."""

    def __init__(self, db: Database, key: str, seconds: float = 60.0) -> None:
        self.db = db
        self.key = key
        self.seconds = seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._renewed = 0.0

    def take(self) -> bool:
        """Take or renew the lease; False while another process holds a live one."""
        now = time.time()
        mine = f"{self.owner} {now + self.seconds:.0f}"
        table = IndexState.__table__
        with self.db.write() as session:
            row = session.get(IndexState, self.key)
            if row is None:
                session.add(IndexState(key=self.key, value=mine))
                try:
                    session.flush()
                except IntegrityError:  # another process made the row first
                    return False
                self._renewed = time.monotonic()
                return True
            holder, _, until = row.value.rpartition(" ")
            if holder != self.owner and until.isdigit() and int(until) > now:
                return False
            # compare-and-set: two processes racing for an expired lease, one wins
            done = session.execute(
                update(table)
                .where(table.c.key == self.key, table.c.value == row.value)
                .values(value=mine)
            )
            if done.rowcount:
                self._renewed = time.monotonic()
            return bool(done.rowcount)

    def held(self) -> bool:
        """Renew when a third of the lease has passed; True while this process holds it."""
        if self._renewed and time.monotonic() - self._renewed < self.seconds / 3:
            return True
        self._renewed = 0.0
        return self.take()

    def release(self) -> None:
        """Give the lease up at once (a clean stop), so another process need not wait."""
        table = IndexState.__table__
        with self.db.write() as session:
            session.execute(
                update(table)
                .where(table.c.key == self.key, table.c.value.like(f"{self.owner} %"))
                .values(value=f"{self.owner} 0")
            )
        self._renewed = 0.0

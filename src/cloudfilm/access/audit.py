"""Append-only, hash-chained audit trail.

Each record's hash covers its content and the previous record's hash, so editing or deleting
any record breaks the chain at that point (``cloudfilm audit verify``). Records are written by a
background thread in batches: a viewer fetching 300 frames must not pay 300 index commits, and
the chain needs one writer anyway. ``flush()`` waits until everything queued is committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from cloudfilm.metrics import instruments
from cloudfilm.storage.database import Database
from cloudfilm.storage.models import AuditEvent, Study, utcnow

log = logging.getLogger(__name__)
GENESIS = "0" * 64
BATCH_MAX = 500
LINGER_SECONDS = 0.05
"""A record waits at most this long for others to share its transaction: at hundreds of
frame requests a second, one commit per handful of records cost a fifth of the server's CPU,
and waking the writer for each record made every request contend for its lock."""


@dataclass
class _Pending:
    at: datetime
    principal: str
    action: str
    resource: str
    outcome: str
    detail: str
    client: str
    hospital: int | None = None


def record_hash(prev_hash: str, ev: AuditEvent | _Pending) -> str:
    body = json.dumps(
        [
            prev_hash,
            ev.at.replace(tzinfo=None).isoformat(timespec="microseconds"),
            ev.principal,
            ev.action,
            ev.resource,
            ev.outcome,
            ev.detail,
            ev.client,
        ],
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


class AuditLog:
    """Records go into a deque (an append takes no lock, so a request never waits for the
    writer); the writer wakes every ``LINGER_SECONDS``, or at once for ``flush``/``close``,
    and commits what has gathered in one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._items: deque[_Pending | threading.Event | None] = deque()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def record(
        self,
        *,
        principal: str,
        action: str,
        resource: str = "",
        outcome: str,
        detail: str = "",
        client: str = "",
        hospital: int | None = None,
    ) -> None:
        self._items.append(
            _Pending(
                utcnow(),
                principal[:256],
                action[:64],
                resource[:256],
                outcome,
                detail,
                client,
                hospital,
            )
        )

    def flush(self, timeout: float = 30.0) -> None:
        done = threading.Event()
        self._items.append(done)
        self._wake.set()
        done.wait(timeout)

    def close(self) -> None:
        self.flush()
        self._items.append(None)
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        stop = False
        while not stop:
            self._wake.wait(LINGER_SECONDS)
            self._wake.clear()
            while self._items and not stop:
                batch: list[_Pending] = []
                waiters: list[threading.Event] = []
                while self._items and len(batch) < BATCH_MAX:
                    item = self._items.popleft()
                    if item is None:
                        stop = True
                        break
                    if isinstance(item, threading.Event):
                        waiters.append(item)
                        break  # everything before the marker is in this batch
                    batch.append(item)
                if batch:
                    try:
                        self._write(batch)
                    except Exception:
                        log.exception("audit write failed; %d record(s) lost", len(batch))
                        instruments.audit_lost(len(batch))
                    else:
                        _count(batch)
                for w in waiters:
                    w.set()

    def _write(self, batch: list[_Pending]) -> None:
        with self.db.write() as session:
            if not self.db.is_sqlite:
                # One chain, one writer across processes too.
                session.connection().exec_driver_sql("LOCK TABLE audit_events IN EXCLUSIVE MODE")
            last = session.execute(
                select(AuditEvent.hash).order_by(AuditEvent.pk.desc()).limit(1)
            ).scalar()
            prev = last or GENESIS
            owners = _owners(session, batch)
            rows = []
            for p in batch:
                h = record_hash(prev, p)
                rows.append(
                    {
                        "at": p.at,
                        "principal": p.principal,
                        "action": p.action,
                        "resource": p.resource,
                        "outcome": p.outcome,
                        "detail": p.detail,
                        "client": p.client,
                        "hospital_pk": p.hospital
                        if p.hospital is not None
                        else owners.get(p.resource),
                        "prev_hash": prev,
                        "hash": h,
                    }
                )
                prev = h
            # One Core executemany, in chain order (primary keys follow it): ORM objects cost
            # more than the insert on the frame path, where every request is audited.
            session.connection().execute(insert(AuditEvent.__table__), rows)


def _count(batch: list[_Pending]) -> None:
    """``cloudfilm_audit_records_total``: committed records, by outcome."""
    outcomes: dict[str, int] = {}
    for p in batch:
        outcomes[p.outcome] = outcomes.get(p.outcome, 0) + 1
    instruments.audit_committed(outcomes)


def _owners(session: Session, batch: list[_Pending]) -> dict[str, int]:
    """The owning hospital of the studies named by records that did not say their hospital
    (film issuing, patient verification, shares): every record about a study is that study's
    hospital's, found here once per batch rather than by each caller."""
    uids = {p.resource for p in batch if p.hospital is None and p.resource}
    if not uids:
        return {}
    rows = session.execute(
        select(Study.study_uid, Study.hospital_pk).where(Study.study_uid.in_(uids))
    ).all()
    return {uid: owner for uid, owner in rows}


def verify_chain(db: Database) -> tuple[bool, int, str]:
    """Walk the whole trail; return (ok, records checked, what is wrong where)."""
    prev = GENESIS
    count = 0
    with db.read() as session:
        for ev in session.execute(select(AuditEvent).order_by(AuditEvent.pk)).scalars():
            count += 1
            if ev.prev_hash != prev:
                return False, count, f"record {ev.pk}: previous record missing or altered"
            if record_hash(prev, ev) != ev.hash:
                return False, count, f"record {ev.pk}: content altered"
            prev = ev.hash
    return True, count, "ok"

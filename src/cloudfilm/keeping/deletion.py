"""Deleting approved studies: tombstones, the audit record, then the blobs.

Order is what keeps the promise "the index remembers what was deleted": one durable index
transaction writes a tombstone per instance (what, when, by whom, why, and the blob still to
remove), removes the study's rows and marks the deletion done; only after that commit are the
blobs removed, and a tombstone's ``blob_key`` is emptied once its blob is gone. A crash in
between leaves blobs that nothing indexes: :func:`finish_blobs` removes them on the next run,
and recovery (storage/recovery.py) never re-indexes a blob a tombstone names
(:func:`deleted_keys`), so a deleted study does not come back.

A deleted SOP Instance UID sent again is *stored anew* (its index row is gone, so the ingest
sees a new instance). The processes of ``serve`` cache immutable rows (series pks, study
owners, DICOMweb's instance rows, open file descriptors); a deletion bumps the
``deletion_epoch`` in ``index_state`` and every process's :class:`DeletionWatch` drops those
caches within a second. The ingest's cached series pk is also checked by its own UPDATE
(ingest/index_sql.py), so even inside that second a re-sent instance cannot land in a deleted
series or one whose pk SQLite gave again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cloudfilm.keeping.models import Deletion, ReplicaItem, Tombstone
from cloudfilm.keeping.retention import expired_studies, is_held
from cloudfilm.regional.models import IndexChange
from cloudfilm.storage.blobs import key_hour
from cloudfilm.storage.models import IndexState, Instance, Series, Study, utcnow

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

log = logging.getLogger(__name__)
EPOCH = "deletion_epoch"
WATCH_SECONDS = 1.0
CHUNK = 500


@dataclass
class DeleteReport:
    deleted: list[str] = field(default_factory=list)
    """Study UIDs removed from the index."""
    withdrawn: list[str] = field(default_factory=list)
    """Approved, but held now or no longer expired: not deleted."""
    instances: int = 0
    blobs_removed: int = 0


def delete_approved(
    archive: Archive,
    hospital: int,
    *,
    by: str,
    today: date | None = None,
    grace: float | None = None,
) -> DeleteReport:
    """Delete the hospital's approved studies. Each is checked again first: a hold placed
    after the approval, or a rule lengthened since, withdraws it instead."""
    report = DeleteReport()
    finish_blobs(archive)
    with archive.db.read() as session:
        approved = list(
            session.execute(
                select(Deletion).where(
                    Deletion.hospital_pk == hospital, Deletion.status == "approved"
                )
            ).scalars()
        )
    if not approved:
        return report
    still = {e.study_uid: e for e in expired_studies(archive, hospital, today)}
    for row in approved:
        expired = still.get(row.study_uid)
        if expired is None:
            _set_status(archive, row.pk, "withdrawn")
            report.withdrawn.append(row.study_uid)
            continue
        reason = f"retention expired {expired.expires.isoformat()} ({expired.rule}); "
        reason += f"approved by {row.approved_by}"
        count = delete_study(
            archive, hospital, row.study_uid, by=by, reason=reason, deletion=row.pk
        )
        if count is None:
            report.withdrawn.append(row.study_uid)
            continue
        report.deleted.append(row.study_uid)
        report.instances += count
    if report.deleted:
        # other processes drop their caches of the deleted rows within WATCH_SECONDS: give
        # them that long before the bytes go, so nobody meets a row without its blob
        time.sleep(WATCH_SECONDS * 1.5 if grace is None else grace)
        report.blobs_removed = finish_blobs(archive)
    return report


def _set_status(archive: Archive, pk: int, status: str) -> None:
    with archive.db.write() as session:
        session.execute(update(Deletion).where(Deletion.pk == pk).values(status=status))


def delete_study(
    archive: Archive, hospital: int, study_uid: str, *, by: str, reason: str,
    deletion: int | None = None,
) -> int | None:  # fmt: skip
    """Tombstone and remove one study's index rows (one durable transaction); returns the
    instances removed, or None when the study is held (or gone). Blobs: :func:`finish_blobs`."""
    with archive.db.write() as session:
        study = session.execute(
            select(Study).where(Study.study_uid == study_uid, Study.hospital_pk == hospital)
        ).scalar_one_or_none()
        if study is None or is_held(session, hospital, study_uid, study.patient_pk):
            if deletion is not None:
                session.execute(
                    update(Deletion).where(Deletion.pk == deletion).values(status="withdrawn")
                )
            return None
        rows = session.execute(
            select(
                Instance.sop_uid, Instance.sha256, Instance.size_bytes, Instance.blob_key,
                Series.series_uid,
            )
            .join(Series, Instance.series_pk == Series.pk)
            .where(Series.study_pk == study.pk)
        ).all()  # fmt: skip
        now = utcnow()
        session.add_all(
            Tombstone(
                hospital_pk=hospital, study_uid=study_uid, series_uid=r.series_uid,
                sop_uid=r.sop_uid, index_id=study.index_id or "", sha256=r.sha256,
                size_bytes=r.size_bytes, deleted_at=now, deleted_by=by[:128], reason=reason,
                blob_key=r.blob_key,
            )
            for r in rows
        )  # fmt: skip
        series = select(Series.pk).where(Series.study_pk == study.pk)
        session.execute(delete(Instance).where(Instance.series_pk.in_(series)))
        session.execute(delete(Series).where(Series.study_pk == study.pk))
        session.execute(delete(IndexChange).where(IndexChange.study_pk == study.pk))
        session.execute(delete(Study).where(Study.pk == study.pk))
        keys = [r.blob_key for r in rows]
        for i in range(0, len(keys), CHUNK):  # the second copy need not be made any more
            session.execute(
                delete(ReplicaItem).where(ReplicaItem.blob_key.in_(keys[i : i + CHUNK]))
            )
        if deletion is not None:
            session.execute(
                update(Deletion)
                .where(Deletion.pk == deletion)
                .values(status="deleted", deleted_at=now)
            )
        bump_epoch(session)
    archive.deletions.forget()  # this process at once; the others within a second
    archive.audit.record(
        principal=by, action="delete", resource=study_uid, outcome="allow",
        detail=f"{len(rows)} instance(s) deleted, tombstoned: {reason}"[:1000], hospital=hospital,
    )  # fmt: skip
    log.warning("deleted study %s (%d instances) by %s", study_uid, len(rows), by)
    return len(rows)


def bump_epoch(session: Session) -> None:
    row = session.get(IndexState, EPOCH)
    if row is None:
        session.add(IndexState(key=EPOCH, value="1"))
    else:
        row.value = str(int(row.value or "0") + 1)


def finish_blobs(archive: Archive) -> int:
    """Remove the blobs that tombstones still name (after their index commit); returns how
    many. A blob an instance indexes again (the same bytes sent anew) is kept."""
    removed = 0
    while True:
        with archive.db.read() as session:
            pending = session.execute(
                select(Tombstone.pk, Tombstone.blob_key)
                .where(Tombstone.blob_key != "")
                .order_by(Tombstone.pk)
                .limit(CHUNK)
            ).all()
            if not pending:
                return removed
            keys = {k for _pk, k in pending}
            used = set(
                session.execute(
                    select(Instance.blob_key).where(Instance.blob_key.in_(keys))
                ).scalars()
            )
        done: list[int] = []
        for pk, key in pending:
            if key not in used:
                try:
                    archive.blobs.delete(key)
                except Exception:
                    log.exception(
                        "blob %s of a deleted instance not removed (tried again later)", key
                    )
                    continue
                removed += 1
            done.append(pk)
        if not done:
            return removed
        with archive.db.write() as session:
            session.execute(update(Tombstone).where(Tombstone.pk.in_(done)).values(blob_key=""))


def deleted_keys(session: Session, keys: list[str]) -> set[str]:
    """The blob keys among ``keys`` (none of them indexed) whose bytes a deletion removed:
    a tombstone with their SHA-256, deleted in or after the hour the blob was written. Bytes
    sent again after a deletion get a key of a later hour, so they are re-indexed as usual."""
    by_sha: dict[str, list[str]] = {}
    for key in keys:
        by_sha.setdefault(key.rsplit("/", 1)[-1].split(".", 1)[0], []).append(key)
    if not by_sha:
        return set()
    rows = session.execute(
        select(Tombstone.sha256, func.max(Tombstone.deleted_at))
        .where(Tombstone.sha256.in_(list(by_sha)))
        .group_by(Tombstone.sha256)
    ).all()
    out: set[str] = set()
    for sha, deleted_at in rows:
        when = deleted_at if deleted_at.tzinfo else deleted_at.replace(tzinfo=UTC)
        for key in by_sha.get(sha, []):
            hour = key_hour(key)
            if hour is None or when >= hour:
                out.add(key)
    return out


def was_deleted_elsewhere(session: Session, study_uid: str, hospital: int) -> bool:
    """A study UID that another hospital's deletion tombstoned: ingest refuses it, so a study
    never changes hands (the processes' owner caches rely on that)."""
    return (
        session.execute(
            select(Tombstone.pk)
            .where(Tombstone.study_uid == study_uid, Tombstone.hospital_pk != hospital)
            .limit(1)
        ).first()
        is not None
    )


class DeletionWatch:
    """Drops this process's caches of index rows when any process deleted studies.

    A thread reads ``deletion_epoch`` every second (one primary-key read): a request never
    waits for it, and the event loop's inline paths keep answering from memory."""

    def __init__(self, archive: Archive, interval: float = WATCH_SECONDS) -> None:
        self.archive = archive
        self.interval = interval
        self._listeners: list[Callable[[], None]] = []
        self._epoch: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def on_forget(self, listener: Callable[[], None]) -> None:
        """``listener()`` drops a cache (DICOMweb's instance rows, open blobs)."""
        self._listeners.append(listener)

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._epoch = self.read()
                self._thread = threading.Thread(
                    target=self._run, name="deletion-watch", daemon=True
                )
                self._thread.start()

    def read(self) -> str:
        try:
            with self.archive.db.engine.connect() as conn:
                value = conn.execute(
                    select(IndexState.value).where(IndexState.key == EPOCH)
                ).scalar()
        except Exception:
            log.debug("deletion epoch not readable", exc_info=True)
            return self._epoch or ""
        return value or ""

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            epoch = self.read()
            if epoch != self._epoch:
                self._epoch = epoch
                self.forget()

    def forget(self) -> None:
        self.archive.series_pks.clear()
        self.archive._owners.clear()
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("a cache could not be dropped after a deletion")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=5)


def tombstones_of(archive: Archive, study_uid: str) -> list[Tombstone]:
    with archive.db.read() as session:
        return list(
            session.execute(select(Tombstone).where(Tombstone.study_uid == study_uid)).scalars()
        )

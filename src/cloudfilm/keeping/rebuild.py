"""Rebuilding the image index from the blobs alone (``cloudfilm index rebuild``).

The blobs are the record: each holds the received bytes, and its key holds the hour it was
written and the owning hospital's code (storage/blobs.py ``instance_key``). Every blob under
``instances/`` that the index does not know goes through the one ingest path with its
``stored_key`` (storage/recovery.py ``reindex_missing``, the crash recovery's own function),
so patients, studies, series, instances and their metadata JSON come out exactly as a first
ingest would make them, and person links from the files' identifiers are made again.

What the blobs do not hold is not made up: hospitals, users, AE titles and API tokens (the
accounts) are kept as they are, and a blob whose hospital code the index does not know is
left out and listed (add the hospital with its code, run again: the rebuild is idempotent).
Reports, films, shares, consent, persons, the audit trail and the keeping tables reference
studies by UID and are kept too.

``--empty`` first deletes the image tables (and what hangs off them by primary key: the index
feed's changes, person links and link conflicts). What those rows said that the blobs do not
is carried across by UID: each study's imaging index ID, patient class, tier and first-ingest
time, the person links made at the film desk or from reports, open link conflicts, and legal
holds on a patient. Over an index that was lost, there is nothing to carry: each study gets a
new imaging index ID, numbered from 5000001 on the rebuild's day (``REBUILD_SEQUENCE``, every
rebuild): the lost index's sequences are gone with it, and IDs it gave earlier that day must
not come again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cloudfilm.accounts.models import Hospital
from cloudfilm.keeping.models import LegalHold
from cloudfilm.regional.index_id import china_day
from cloudfilm.regional.models import IndexChange, IndexSequence, LinkConflict, PersonLink
from cloudfilm.storage.blobs import key_owner
from cloudfilm.storage.models import IndexState, Instance, Patient, Series, Study
from cloudfilm.storage.recovery import mark_durable, reindex_missing

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

log = logging.getLogger(__name__)

BATCH = 500
STUDY_COLUMNS = ("index_id", "patient_class", "tier", "created_at")
"""What a study row says that its blobs do not."""
PatientKey = tuple[int, str, str]
"""(hospital pk, Patient ID, issuer): how a patient record is found again."""
REBUILD_SEQUENCE = 5_000_000
"""Imaging index IDs given by a rebuild over a lost index are numbered after this, that day
(a hospital does not receive five million studies a day)."""


@dataclass
class Carried:
    """What the emptied tables said that the blobs do not, keyed by UID or patient key."""

    studies: dict[str, dict[str, Any]] = field(default_factory=dict)
    links: list[tuple[PatientKey, dict[str, Any]]] = field(default_factory=list)
    conflicts: list[tuple[PatientKey, dict[str, Any]]] = field(default_factory=list)
    holds: dict[int, PatientKey] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    last_change: int = 0
    """The index feed's last change number before the rebuild."""


@dataclass
class Rebuilt:
    keys: int = 0
    """Blobs under instances/ seen."""
    indexed: int = 0
    already: int = 0
    """Already in the index (a rebuild run again, or without ``--empty``)."""
    unowned: dict[str, int] = field(default_factory=dict)
    """Hospital code → blobs left out because the index has no hospital with that code."""
    failed: int = 0
    carried: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def live_leases(archive: Archive) -> list[str]:
    """The background workers' leases held by a running process (a ``serve``)."""
    now = time.time()
    with archive.db.read() as session:
        rows = session.execute(
            select(IndexState.key, IndexState.value).where(IndexState.key.like("%lease"))
        ).all()
    held = []
    for key, value in rows:
        _holder, _, until = value.rpartition(" ")
        if until.isdigit() and int(until) > now:
            held.append(key)
    return held


def _patient_keys(session: Session) -> dict[int, PatientKey]:
    rows = session.execute(
        select(Patient.pk, Patient.hospital_pk, Patient.patient_id, Patient.issuer)
    ).all()
    return {pk: (hospital, pid, issuer) for pk, hospital, pid, issuer in rows}


def _columns(row: object, skip: tuple[str, ...]) -> dict[str, Any]:
    table = row.__table__  # type: ignore[attr-defined]
    return {c.name: getattr(row, c.name) for c in table.columns if c.name not in skip}


def empty_image_index(archive: Archive) -> Carried:
    """Delete the image tables' rows, in one transaction, keeping what they alone said."""
    carried = Carried()
    with archive.db.write() as session:
        patients = _patient_keys(session)
        columns = [getattr(Study, c) for c in STUDY_COLUMNS]
        for uid, *values in session.execute(select(Study.study_uid, *columns)).all():
            carried.studies[uid] = dict(zip(STUDY_COLUMNS, values, strict=True))
        for link in session.execute(select(PersonLink)).scalars():
            if link.patient_pk in patients:
                carried.links.append(
                    (patients[link.patient_pk], _columns(link, ("pk", "patient_pk")))
                )
        for conflict in session.execute(
            select(LinkConflict).where(LinkConflict.resolved_at.is_(None))
        ).scalars():
            if conflict.patient_pk in patients:
                carried.conflicts.append(
                    (patients[conflict.patient_pk], _columns(conflict, ("pk", "patient_pk")))
                )
        for hold in session.execute(
            select(LegalHold).where(LegalHold.patient_pk.is_not(None))
        ).scalars():
            if hold.patient_pk in patients:
                carried.holds[hold.pk] = patients[hold.patient_pk]
        carried.last_change = session.execute(select(func.max(IndexChange.seq))).scalar() or 0
        for model in (IndexChange, LinkConflict, PersonLink, Instance, Series, Study, Patient):
            done = session.execute(delete(model.__table__))
            carried.deleted[model.__tablename__] = done.rowcount or 0
    archive.series_pks.clear()
    archive._owners.clear()
    return carried


def restore(archive: Archive, carried: Carried) -> dict[str, int]:
    """Put back what ``empty_image_index`` kept, onto the rebuilt rows."""
    counts = {"studies": 0, "links": 0, "conflicts": 0, "holds": 0, "holds_unmatched": 0}
    table = Study.__table__
    with archive.db.write() as session:
        if carried.studies:
            # the IDs given during the rebuild go first, so an old ID never meets a new one
            uids = list(carried.studies)
            for i in range(0, len(uids), BATCH):
                session.execute(
                    update(table).where(table.c.study_uid.in_(uids[i : i + BATCH]))
                    .values(index_id=None)
                )  # fmt: skip
            for uid, values in carried.studies.items():
                done = session.execute(
                    update(table).where(table.c.study_uid == uid).values(**values)
                )
                counts["studies"] += done.rowcount or 0
        patients = {key: pk for pk, key in _patient_keys(session).items()}
        linked = set(session.execute(select(PersonLink.patient_pk)).scalars())
        for key, values in carried.links:
            pk = patients.get(key)
            if pk is not None and pk not in linked:  # a link made again from the files stays
                session.add(PersonLink(patient_pk=pk, **values))
                linked.add(pk)
                counts["links"] += 1
        for key, values in carried.conflicts:
            pk = patients.get(key)
            if pk is not None:
                session.add(LinkConflict(patient_pk=pk, **values))
                counts["conflicts"] += 1
        hold_table = LegalHold.__table__
        for hold_pk, key in carried.holds.items():
            pk = patients.get(key)
            if pk is None:
                counts["holds_unmatched"] += 1
                log.error("legal hold %d: its patient %s has no blobs any more", hold_pk, key)
            session.execute(
                update(hold_table).where(hold_table.c.pk == hold_pk).values(patient_pk=pk)
            )
            counts["holds"] += pk is not None
    return counts


def _known_codes(archive: Archive) -> set[str]:
    with archive.db.read() as session:
        codes = set(session.execute(select(Hospital.code)).scalars())
    return codes | {""}  # the first hospital's blobs carry no code


def in_write_order(listing: Iterable[tuple[str, float]]) -> Iterator[str]:
    """Keys in the order they were written, as far as the store tells: hour folders come in
    order (the file store walks them sorted, S3 lists keys sorted), and within a folder the
    modification times decide (the key breaks a tie). Ingest order matters: a study's or a
    series' QIDO attributes beyond the index columns come from its first instance by primary
    key, so the rebuilt index must number instances as the original did."""
    folder, group = None, []
    for key, mtime in listing:
        here = key.rsplit("/", 1)[0]
        if here != folder and group:
            yield from (k for _t, k in sorted(group))
            group = []
        folder = here
        group.append((mtime, key))
    yield from (k for _t, k in sorted(group))


def index_blobs(
    archive: Archive, result: Rebuilt, progress: Callable[[int], None] | None = None
) -> None:
    """Every blob under instances/ not in the index, through the one ingest path."""
    codes = _known_codes(archive)
    pending: list[str] = []

    def flush() -> None:
        with archive.db.read() as session:
            known = set(
                session.execute(
                    select(Instance.blob_key).where(Instance.blob_key.in_(pending))
                ).scalars()
            )
        result.already += len(known)
        missing = len(pending) - len(known)
        indexed = reindex_missing(archive, pending)
        result.indexed += indexed
        result.failed += missing - indexed
        if progress is not None:
            progress(len(pending))
        pending.clear()

    for key in in_write_order(archive.blobs.list_keys("instances/")):
        result.keys += 1
        owner = key_owner(key)
        if owner not in codes:
            result.unowned[owner] = result.unowned.get(owner, 0) + 1
            continue
        pending.append(key)
        if len(pending) >= BATCH:
            flush()
    if pending:
        flush()


def rebuild(
    archive: Archive, *, empty: bool = False, progress: Callable[[int], None] | None = None
) -> Rebuilt:
    """Rebuild the image index from the blobs (see the module's docstring)."""
    started = time.monotonic()
    result = Rebuilt()
    number_after_loss(archive)
    carried = empty_image_index(archive) if empty else None
    if carried is not None:
        result.deleted = carried.deleted
    index_blobs(archive, result, progress)
    if carried is not None:
        result.carried = restore(archive, carried)
        feed_after(archive, carried.last_change)
    if result.unowned:
        log.error("blobs of unknown hospital codes left out: %s", result.unowned)
    mark_durable(archive)
    result.seconds = time.monotonic() - started
    return result


def feed_after(archive: Archive, before: int) -> None:
    """The rebuilt studies' changes in the index feed come after every earlier one. SQLite
    numbers a table's next row as its largest + 1, so once emptied the feed would reuse numbers
    its readers (the webhook's cursor, the regional platform) have passed and they would never
    see the rebuilt studies. PostgreSQL's sequence goes on by itself."""
    if not archive.db.is_sqlite or not before:
        return
    table = IndexChange.__table__
    with archive.db.write() as session:
        top = session.execute(select(func.max(table.c.seq))).scalar() or 0
        if top:  # shifted past both old and new numbers: no key is ever taken twice
            session.execute(update(table).values(seq=table.c.seq + before + top))


def number_after_loss(archive: Archive) -> None:
    """Today's imaging index ID sequence of every hospital starts after REBUILD_SEQUENCE."""
    day = china_day()
    with archive.db.write() as session:
        for pk in session.execute(select(Hospital.pk)).scalars().all():
            row = session.get(IndexSequence, (pk, day))
            if row is None:
                session.add(IndexSequence(hospital_pk=pk, day=day, last=REBUILD_SEQUENCE))
            elif row.last < REBUILD_SEQUENCE:
                row.last = REBUILD_SEQUENCE


def index_counts(archive: Archive) -> dict[str, int]:
    with archive.db.read() as session:
        return {
            model.__tablename__: session.execute(
                select(func.count()).select_from(model)
            ).scalar_one()
            for model in (Patient, Study, Series, Instance)
        }

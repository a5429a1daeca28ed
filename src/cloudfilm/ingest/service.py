"""The one ingest function. C-STORE, STOW-RS, ``cloudfilm import`` and the gateway all call it.

Order of work is what makes "acknowledged means durable" true: check, write the blob (fsynced,
content-addressed), commit the index row, and only then return. A crash before the commit
leaves at most an unreferenced blob (harmless, swept later), never an index row without a blob.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from cloudfilm.accounts.hospitals import blob_tag
from cloudfilm.ingest.errors import Rejected, RejectReason
from cloudfilm.ingest.index_sql import HotStatements, StaleSeries
from cloudfilm.ingest.parse import ParsedInstance, parse_instance
from cloudfilm.keeping.deletion import was_deleted_elsewhere
from cloudfilm.regional.identifiers import from_dataset
from cloudfilm.regional.index_id import new_index_id
from cloudfilm.regional.models import IndexChange
from cloudfilm.regional.persons import link_patient
from cloudfilm.storage.blobs import instance_key
from cloudfilm.storage.models import Instance, Patient, Series, Study, utcnow

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

log = logging.getLogger(__name__)

Outcome = Literal["stored", "duplicate", "kept-first", "replaced"]


@dataclass
class IngestResult:
    outcome: Outcome
    sop_instance_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    size: int
    warnings: list[str] = field(default_factory=list)
    sha256: str = ""
    """Of the bytes the archive holds for this SOP Instance UID now (the first copy's when
    ``kept-first``): what a sender checks its own copy against (the edge gateway does)."""

    @property
    def is_warning(self) -> bool:
        """A re-sent instance whose bytes differ and were not stored is a warning, not success."""
        return self.outcome == "kept-first"


def ingest(
    archive: Archive,
    data: bytes,
    *,
    hospital: int,
    source: str = "",
    stored_key: str | None = None,
    sha256: str | None = None,
) -> IngestResult:
    """Check, store and index one DICOM Part-10 instance; return once it is durable.

    ``hospital``: the owner, from the door the data came in through (the calling AE, the
    token, ``import --hospital``). Raises :class:`Rejected` (nothing written) for bad input, a
    refused duplicate, or UIDs another hospital holds.
    ``stored_key``: the bytes are already durable under this key (recovery re-indexing).
    """
    if len(data) > archive.settings.max_instance_bytes:
        raise Rejected(
            RejectReason.TOO_LARGE,
            f"instance of {len(data)} bytes exceeds the limit of "
            f"{archive.settings.max_instance_bytes} bytes",
        )
    sha = sha256 or hashlib.sha256(data).hexdigest()
    key = stored_key or instance_key(sha, owner=blob_tag(archive.db, hospital))
    # The blob is written and fsynced in another thread while this one parses: the disk's
    # wait and the parser's CPU overlap. Bad input or a duplicate then removes what was
    # written (unless an earlier copy of the same bytes uses that very key).
    writing = None if stored_key else archive.blob_writer.submit(archive.blobs.put, key, data)
    try:
        parsed = parse_instance(data)
    except BaseException:
        _discard(archive, writing, key)
        raise
    try:
        if writing is not None:
            writing.result()
    except Exception as exc:
        log.exception("blob write failed for %s", parsed.sop_instance_uid)
        raise Rejected(RejectReason.STORAGE, f"storage area refused the write: {exc}") from exc
    try:
        result, old_key = _index_with_retries(archive, parsed, key, sha, len(data), hospital)
    except BaseException:
        _discard(archive, writing, key)
        raise
    if result.outcome in ("duplicate", "kept-first"):
        _discard(archive, writing, key)  # the index decided inside its transaction
    if old_key and old_key != key:
        _delete_if_unreferenced(archive, old_key)
    if result.outcome in ("stored", "replaced"):
        archive.notify_stored(result)
    result.warnings = parsed.warnings
    result.sha256 = result.sha256 or sha
    log.debug("%s %s from %s", result.outcome, parsed.sop_instance_uid, source)
    return result


def _index_with_retries(
    archive: Archive, parsed: ParsedInstance, key: str, sha: str, size: int, hospital: int
) -> tuple[IngestResult, str | None]:
    """The index rows, in a transaction shared with concurrent ingests (group commit).

    The duplicate check is inside that transaction: a separate look-up before it cost a
    query per instance and decided nothing the transaction does not decide again.
    """
    for attempt in range(5):
        try:
            fresh: dict[str, tuple[int, int, int]] = {}

            def work(
                session: Session, fresh: dict[str, tuple[int, int, int]] = fresh
            ) -> tuple[IngestResult, str | None]:
                fresh.clear()  # a batch that failed runs again alone
                return _index(session, archive, parsed, key, sha, size, hospital, fresh)

            # The blob is durable already; the index row can be rebuilt from it, so its
            # commit need not wait for the disk (see Archive.recover), and it is shared with
            # the instances other associations store at the same moment (group commit).
            result, old_key = archive.group_commit.run(work)
            if len(archive.series_pks) > 100_000:
                archive.series_pks.clear()
            archive.series_pks.update(fresh)  # only once committed
            break
        except (IntegrityError, StaleSeries):
            # Another writer created the same patient/study/series/instance between our check
            # and our insert (PostgreSQL, or two processes on SQLite), or the cached series
            # was deleted (keeping/deletion.py): read again and retry.
            archive.series_pks.clear()
            if attempt == 4:
                raise
        except OperationalError as exc:
            if attempt == 4:
                raise Rejected(RejectReason.STORAGE, f"index unavailable: {exc}") from exc
    return result, old_key


def _result(parsed: ParsedInstance, outcome: Outcome, size: int) -> IngestResult:
    return IngestResult(
        outcome=outcome,
        sop_instance_uid=parsed.sop_instance_uid,
        sop_class_uid=parsed.sop_class_uid,
        study_uid=parsed.study_uid,
        series_uid=parsed.series_uid,
        transfer_syntax_uid=parsed.transfer_syntax_uid,
        size=size,
    )


def _decide_duplicate(
    archive: Archive, parsed: ParsedInstance, existing: tuple[str, str], sha: str, size: int
) -> IngestResult | None:
    """None means "go on and store" (the ``replace`` policy)."""
    if existing[0] == sha:
        return _result(parsed, "duplicate", size)
    policy = archive.settings.duplicate_policy
    if policy == "keep-first":
        kept = _result(parsed, "kept-first", size)
        kept.sha256 = existing[0]
        return kept
    if policy == "reject":
        raise Rejected(
            RejectReason.CONFLICT,
            f"SOP Instance {parsed.sop_instance_uid} is already stored with other content",
        )
    return None


def _index(
    session: Session,
    archive: Archive,
    parsed: ParsedInstance,
    key: str,
    sha: str,
    size: int,
    hospital: int,
    fresh: dict[str, tuple[int, int, int]],
) -> tuple[IngestResult, str | None]:
    now = utcnow()
    hot = HotStatements(session)
    exists = hot.exists(parsed.sop_instance_uid)
    current = session.get(Instance, exists) if exists is not None else None
    if current is not None:
        owner = session.execute(
            select(Study.hospital_pk).join(Series).where(Series.pk == current.series_pk)
        ).scalar_one()
        if owner != hospital:
            raise _other_hospital("SOP Instance", parsed.sop_instance_uid)
        decided = _decide_duplicate(archive, parsed, (current.sha256, current.blob_key), sha, size)
        if decided is not None:
            return decided, None
        old_key, old_size = current.blob_key, current.size_bytes
        _fill_instance(current, parsed, key, sha, size, now)
        if archive.settings.replica_url:
            hot.enqueue_replica(key, sha, now)
        series = session.get(Series, current.series_pk)
        assert series is not None
        _bump(session, series.pk, series.study_pk, size - old_size, 0, now)
        return _result(parsed, "replaced", size), old_key

    # Every instance of a series after the first takes this path: two inserts/updates, no
    # look-ups (the pks of a series seen before are cached in the process).
    cached = archive.series_pks.get(parsed.series_uid)
    new_series = False
    checked: str | None = None
    if cached is None or cached[2] != hospital:
        series_pk, study_pk, new_series = _series_for(session, parsed, hospital, archive.secret)
        fresh[parsed.series_uid] = (series_pk, study_pk, hospital)
    else:
        series_pk, study_pk, _owner = cached
        checked = parsed.series_uid  # the bump checks the cached pks still name it
    values = dict(
        sop_uid=parsed.sop_instance_uid,
        series_pk=series_pk,
        sop_class_uid=parsed.sop_class_uid,
        transfer_syntax_uid=parsed.transfer_syntax_uid,
        blob_key=key,
        size_bytes=size,
        sha256=sha,
        meta_json=parsed.meta_json,
        received_at=now,
        **parsed.instance,
    )
    # the bump first: with cached pks it checks they still name the series (StaleSeries)
    hot.bump(series_pk, study_pk, size, 1, now, new_series, checked)
    hot.insert_instance(values)
    if archive.settings.replica_url:  # the second copy's queue (keeping/replica.py)
        hot.enqueue_replica(key, sha, now)
    return _result(parsed, "stored", size), None


def _other_hospital(level: str, uid: str) -> Rejected:
    return Rejected(
        RejectReason.OTHER_HOSPITAL,
        f"{level} UID {uid} is already held by another hospital; it is not stored here",
    )


def _series_for(
    session: Session, parsed: ParsedInstance, hospital: int, secret: bytes
) -> tuple[int, int, bool]:
    """Find or create patient, study and series; returns (series pk, study pk, created).

    A new study gets its imaging index ID and links its patient record to a regional person
    (when its identifiers say who); a new series is a change in the index feed."""
    study = session.execute(
        select(Study).where(Study.study_uid == parsed.study_uid)
    ).scalar_one_or_none()
    if study is not None and study.hospital_pk != hospital:
        raise _other_hospital("Study Instance", parsed.study_uid)
    if study is None and was_deleted_elsewhere(session, parsed.study_uid, hospital):
        raise _other_hospital("Study Instance", parsed.study_uid)  # a study never changes hands
    if study is None:
        patient = _patient(session, parsed, hospital)
        study = Study(
            study_uid=parsed.study_uid,
            index_id=new_index_id(session, hospital),
            hospital_pk=hospital,
            patient_pk=patient.pk,
            **parsed.study,
        )
        session.add(study)
        session.flush()
        link_patient(session, secret, patient, from_dataset(parsed.dataset), source="dicom")
    else:
        _fill_blanks(study, parsed.study)
    series = session.execute(
        select(Series).where(Series.series_uid == parsed.series_uid)
    ).scalar_one_or_none()
    if series is not None and series.study_pk != study.pk:
        owner = session.get(Study, series.study_pk)
        if owner is not None and owner.hospital_pk != hospital:
            raise _other_hospital("Series Instance", parsed.series_uid)
    if series is not None:
        _fill_blanks(series, parsed.series)
        session.flush()
        return series.pk, series.study_pk, False
    if session.get_bind().dialect.name != "sqlite":
        # Two new series of one study stored at once (PostgreSQL, parallel associations):
        # take the study's row lock before the series insert (whose foreign key would take a
        # share lock first and deadlock the two), then read its modalities afresh, or one
        # series would overwrite the other's. SQLite writers are serialised already.
        session.refresh(study, attribute_names=["modalities"], with_for_update=True)
    series = Series(series_uid=parsed.series_uid, study_pk=study.pk, **parsed.series)
    session.add(series)
    session.add(IndexChange(study_pk=study.pk, hospital_pk=hospital, kind="series"))
    modality = parsed.series["modality"]
    mods = [m for m in study.modalities.split("\\") if m]
    if modality and modality not in mods:
        study.modalities = "\\".join(sorted([*mods, modality]))
    session.flush()
    return series.pk, study.pk, True


def _fill_instance(
    inst: Instance, parsed: ParsedInstance, key: str, sha: str, size: int, now: datetime
) -> None:
    inst.sop_uid = parsed.sop_instance_uid
    inst.sop_class_uid = parsed.sop_class_uid
    inst.transfer_syntax_uid = parsed.transfer_syntax_uid
    for name, value in parsed.instance.items():
        setattr(inst, name, value)
    inst.blob_key = key
    inst.size_bytes = size
    inst.sha256 = sha
    inst.meta_json = parsed.meta_json
    inst.received_at = now


def _bump(
    session: Session,
    series_pk: int,
    study_pk: int,
    size: int,
    count: int,
    now: datetime,
    *,
    new_series: bool = False,
) -> None:
    """Counters move by SQL increments so concurrent writers (PostgreSQL) never lose one.

    Core statements on the session's connection: the ORM's bulk-update path costs more than
    the update itself on this hot path.
    """
    conn = session.connection()
    series, study = Series.__table__.c, Study.__table__.c
    conn.execute(
        update(Series.__table__)
        .where(series.pk == series_pk)
        .values(num_instances=series.num_instances + count, size_bytes=series.size_bytes + size)
    )
    conn.execute(
        update(Study.__table__)
        .where(study.pk == study_pk)
        .values(
            num_instances=study.num_instances + count,
            num_series=study.num_series + (1 if new_series else 0),
            size_bytes=study.size_bytes + size,
            last_instance_at=now,
        )
    )


def _patient(session: Session, parsed: ParsedInstance, hospital: int) -> Patient:
    attrs = dict(parsed.patient)
    if not attrs["patient_id"] and not attrs["issuer"]:
        # No Patient ID: keep such studies apart rather than merging strangers into one patient.
        attrs["issuer"] = f"~noid:{parsed.study_uid}"[:64]
    patient = session.execute(
        select(Patient).where(
            Patient.hospital_pk == hospital,
            Patient.patient_id == attrs["patient_id"],
            Patient.issuer == attrs["issuer"],
        )
    ).scalar_one_or_none()
    if patient is None:
        patient = Patient(hospital_pk=hospital, **attrs)
        session.add(patient)
        session.flush()
    else:
        _fill_blanks(patient, attrs)
    return patient


def _fill_blanks(row: object, attrs: dict[str, object]) -> None:
    """Later instances complete, never overwrite, what the first one said."""
    for name, value in attrs.items():
        if value not in (None, "") and getattr(row, name) in (None, ""):
            setattr(row, name, value)


def _discard(archive: Archive, writing: Future[None] | None, key: str) -> None:
    if writing is None:
        return
    try:
        writing.result()
    except Exception:
        return  # nothing durable was written
    _delete_if_unreferenced(archive, key)


def _delete_if_unreferenced(archive: Archive, key: str) -> None:
    with archive.db.read() as session:
        used = session.execute(select(Instance.pk).where(Instance.blob_key == key)).first()
    if used is None:
        archive.blobs.delete(key)

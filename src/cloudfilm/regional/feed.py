"""The imaging index feed: new and changed studies in the order they changed, for a higher
(regional) platform that keeps its own index of who holds which exam.

Every change is a row of ``regional_index_changes`` (ingest writes one per new series, report
matching one per matched report); its ``seq`` is the feed's cursor. A reader asks for the
records after the last ``seq`` it has and gets each changed study once per page, at the
position of its latest change, with the study's *current* facts. A study that changes again
comes again with a later ``seq``; the receiver keeps the newest record per index ID.

No gaps: on PostgreSQL a transaction may commit its change row after a later ``seq`` has
committed (numbers are handed out at insert, not at commit). A reader that moved its cursor
past the later row would never see the earlier one. So a page stops before a missing number
until the change after it is ``SETTLE_SECONDS`` old: an earlier transaction still open that
long has rolled back (its number is never used) or will be taken on the next page after that.
SQLite serialises writers, so its numbers commit in order and pages never wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudfilm.accounts.models import Hospital
from cloudfilm.portal.models import Report
from cloudfilm.regional.models import IndexChange
from cloudfilm.storage.models import Series, Study, utcnow

SETTLE_SECONDS = 30.0
"""How long a missing ``seq`` holds a page back (see the module's docstring)."""
MAX_LIMIT = 1000
SCAN_CHUNK = 500
MAX_SCAN = 20 * SCAN_CHUNK
"""Change rows one page looks at, at most, when a hospital's reader skips other hospitals'."""


@dataclass(frozen=True)
class SeriesFacts:
    uid: str
    number: int | None
    modality: str
    body_part: str
    description: str
    num_instances: int


@dataclass(frozen=True)
class IndexRecord:
    """One study as the feed tells it: what a regional index needs to find the exam, no
    patient identifiers (those stay with the hospital; the study UID leads back to them)."""

    seq: int
    kinds: tuple[str, ...]
    """What changed since the reader's cursor: ``new``, ``series``, ``report``."""
    changed_at: datetime
    index_id: str
    study_uid: str
    hospital_code: str
    hospital_name: str
    hospital_region: str
    study_date: str
    study_time: str
    accession_number: str
    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]
    description: str
    num_series: int
    num_instances: int
    report: bool
    series: tuple[SeriesFacts, ...]


@dataclass(frozen=True)
class FeedPage:
    records: list[IndexRecord]
    after: int
    """The cursor to ask with next: every change up to it has been looked at."""
    more: bool
    """Another page is ready now (False: caught up, or waiting for a change to settle)."""


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def feed_page(
    session: Session,
    after: int,
    limit: int,
    *,
    hospital: int | None = None,
    studies: frozenset[str] | None = None,
) -> FeedPage:
    """The page of records after cursor ``after``: at most ``limit`` changes, of one hospital's
    studies (``hospital``) or of some studies only (``studies``, by UID) when given."""
    limit = max(1, min(limit, MAX_LIMIT))
    cutoff = utcnow() - timedelta(seconds=SETTLE_SECONDS)
    allowed_pks: set[int] | None = None
    if studies is not None:
        allowed_pks = set(
            session.execute(select(Study.pk).where(Study.study_uid.in_(studies))).scalars()
        )
    cursor, matched, more, scanned = after, [], False, 0
    while True:
        rows = session.execute(
            select(IndexChange.seq, IndexChange.study_pk, IndexChange.hospital_pk,
                   IndexChange.kind, IndexChange.at)
            .where(IndexChange.seq > cursor)
            .order_by(IndexChange.seq)
            .limit(SCAN_CHUNK)
        ).all()  # fmt: skip
        scanned += len(rows)
        for row in rows:
            if row.seq != cursor + 1 and _aware(row.at) > cutoff:
                return _page(session, matched, cursor, more=False)  # an earlier one may commit
            if (hospital is None or row.hospital_pk == hospital) and (
                allowed_pks is None or row.study_pk in allowed_pks
            ):
                if len(matched) == limit:
                    return _page(session, matched, cursor, more=True)
                matched.append(row)
            cursor = row.seq
        if len(rows) < SCAN_CHUNK:
            break
        if scanned >= MAX_SCAN:
            more = True
            break
    return _page(session, matched, cursor, more=more)


def records_after(session: Session, after: int, limit: int) -> list[IndexRecord]:
    """Every hospital's records after cursor ``after`` (at most ``limit`` changes), in order.
    The next cursor is the last record's ``seq`` (the benchmark and the webhook page so)."""
    return feed_page(session, after, limit).records


def _page(session: Session, rows: list[Any], cursor: int, *, more: bool) -> FeedPage:
    latest: dict[int, Any] = {}
    kinds: dict[int, list[str]] = {}
    for row in rows:  # a study changed twice in the page comes once, at its latest change
        latest.pop(row.study_pk, None)
        latest[row.study_pk] = row
        seen = kinds.setdefault(row.study_pk, [])
        if row.kind not in seen:
            seen.append(row.kind)
    return FeedPage(_records(session, latest, kinds), cursor, more)


def _records(
    session: Session, latest: dict[int, Any], kinds: dict[int, list[str]]
) -> list[IndexRecord]:
    if not latest:
        return []
    pks = list(latest)
    studies = {
        s.pk: (s, h)
        for s, h in session.execute(
            select(Study, Hospital).join(Hospital, Hospital.pk == Study.hospital_pk)
            .where(Study.pk.in_(pks))
        ).all()
    }  # fmt: skip
    series: dict[int, list[SeriesFacts]] = {}
    for row in session.execute(
        select(Series).where(Series.study_pk.in_(pks)).order_by(Series.series_number, Series.pk)
    ).scalars():
        series.setdefault(row.study_pk, []).append(
            SeriesFacts(row.series_uid, row.series_number, row.modality, row.body_part,
                        row.description, row.num_instances)
        )  # fmt: skip
    uids = [s.study_uid for s, _h in studies.values()]
    reported = set(
        session.execute(
            select(Report.study_uid).where(Report.study_uid.in_(uids), Report.current.is_(True))
        ).scalars()
    )
    out = []
    for pk, change in latest.items():
        if pk not in studies:
            continue  # deleted since
        study, hosp = studies[pk]
        own = series.get(pk, [])
        out.append(
            IndexRecord(
                seq=change.seq,
                kinds=tuple(kinds[pk]),
                changed_at=_aware(change.at),
                index_id=study.index_id or "",
                study_uid=study.study_uid,
                hospital_code=hosp.code,
                hospital_name=hosp.name,
                hospital_region=hosp.region_code,
                study_date=study.study_date,
                study_time=study.study_time,
                accession_number=study.accession_number,
                modalities=tuple(m for m in study.modalities.split("\\") if m),
                body_parts=tuple(dict.fromkeys(s.body_part for s in own if s.body_part)),
                description=study.description,
                num_series=study.num_series,
                num_instances=study.num_instances,
                report=study.study_uid in reported,
                series=tuple(own),
            )
        )
    return out


def note_report(session: Session, study_uid: str) -> None:
    """A report was matched to this study (or corrected): the study changed, in the feed."""
    row = session.execute(
        select(Study.pk, Study.hospital_pk).where(Study.study_uid == study_uid)
    ).first()
    if row is not None:
        session.add(IndexChange(study_pk=row.pk, hospital_pk=row.hospital_pk, kind="report"))


# --- the JSON form ----------------------------------------------------------------------------


def urls(base: str, study_uid: str) -> dict[str, str]:
    """Where the study is read: DICOMweb, the viewer, and the viewer through IHE IID.
    ``base``: the server's root URL as the reader reaches it (no trailing slash)."""
    uid = quote(study_uid, safe="")
    return {
        "dicomweb_url": f"{base}/dicom-web/studies/{uid}",
        "viewer_url": f"{base}/viewer/?study={uid}",
        "iid_url": f"{base}/iid?requestType=STUDY&studyUID={uid}",
    }


def record_json(record: IndexRecord, base: str) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "changes": list(record.kinds),
        "changed_at": record.changed_at.isoformat(),
        "index_id": record.index_id,
        "study_uid": record.study_uid,
        "hospital": {
            "code": record.hospital_code,
            "name": record.hospital_name,
            "region": record.hospital_region,
        },
        "study_date": record.study_date,
        "study_time": record.study_time,
        "accession_number": record.accession_number,
        "modalities": list(record.modalities),
        "body_parts": list(record.body_parts),
        "description": record.description,
        "num_series": record.num_series,
        "num_instances": record.num_instances,
        "report": record.report,
        **urls(base, record.study_uid),
    }


def page_json(page: FeedPage, base: str) -> dict[str, Any]:
    """The page as the JSON feed and the JSON webhook send it."""
    return {
        "records": [record_json(r, base) for r in page.records],
        "after": page.after,
        "more": page.more,
    }

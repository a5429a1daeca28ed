"""Attribute matching over the index, shared by C-FIND (PS3.4 C.2.2.2) and QIDO-RS (PS3.18 8.3).

Both protocols match the same way: single value, universal (empty), wildcard ``*``/``?``,
ranges of dates and times, lists of UIDs. One implementation turns a set of (keyword, value)
keys into SQL; each protocol only converts its own request and response formats.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, String, and_, func, literal, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import GenericFunction

from cloudfilm.storage.models import Instance, Patient, Series, Study

Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
LEVELS: tuple[Level, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")

# keyword -> (column, kind). kind: text | pn | date | time | uid | int | modalities
_PATIENT = {
    "PatientID": (Patient.patient_id, "text"),
    "IssuerOfPatientID": (Patient.issuer, "text"),
    "PatientName": (Patient.name, "pn"),
    "PatientBirthDate": (Patient.birth_date, "date"),
    "PatientSex": (Patient.sex, "text"),
}
_STUDY = {
    "StudyInstanceUID": (Study.study_uid, "uid"),
    "StudyDate": (Study.study_date, "date"),
    "StudyTime": (Study.study_time, "time"),
    "AccessionNumber": (Study.accession_number, "text"),
    "StudyID": (Study.study_id, "text"),
    "StudyDescription": (Study.description, "text"),
    "ReferringPhysicianName": (Study.referring_physician, "pn"),
    "InstitutionName": (Study.institution_name, "text"),
    "ModalitiesInStudy": (Study.modalities, "modalities"),
    "NumberOfStudyRelatedSeries": (Study.num_series, "int"),
    "NumberOfStudyRelatedInstances": (Study.num_instances, "int"),
    "IndexID": (Study.index_id, "text"),  # not DICOM: the imaging index ID (regional.index_id)
}
_SERIES = {
    "SeriesInstanceUID": (Series.series_uid, "uid"),
    "Modality": (Series.modality, "text"),
    "SeriesNumber": (Series.series_number, "int"),
    "SeriesDescription": (Series.description, "text"),
    "BodyPartExamined": (Series.body_part, "text"),
    "SeriesDate": (Series.series_date, "date"),
    "SeriesTime": (Series.series_time, "time"),
    "NumberOfSeriesRelatedInstances": (Series.num_instances, "int"),
}
_IMAGE = {
    "SOPInstanceUID": (Instance.sop_uid, "uid"),
    "SOPClassUID": (Instance.sop_class_uid, "uid"),
    "InstanceNumber": (Instance.instance_number, "int"),
    "Rows": (Instance.rows, "int"),
    "Columns": (Instance.columns, "int"),
    "NumberOfFrames": (Instance.number_of_frames, "int"),
    "AvailableTransferSyntaxUID": (Instance.transfer_syntax_uid, "uid"),
}

# What each level can see: its own attributes and those of the levels above it.
ATTRIBUTES: dict[Level, dict[str, tuple[Any, str]]] = {
    "PATIENT": _PATIENT,
    "STUDY": {**_PATIENT, **_STUDY},
    "SERIES": {**_PATIENT, **_STUDY, **_SERIES},
    "IMAGE": {**_PATIENT, **_STUDY, **_SERIES, **_IMAGE},
}
UNIQUE_KEY: dict[Level, str] = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
PATIENT_COUNTS = (
    "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
)


@dataclass
class Query:
    level: Level
    keys: dict[str, str] = field(default_factory=dict)
    """Matching keys: keyword -> value in DICOM string form ('' = universal match)."""
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False
    allowed_studies: frozenset[str] | None = None
    also_studies: frozenset[str] | None = None
    """With ``hospital``: other hospitals' studies the answer may include (consent)."""
    """Only these studies may appear in the answer (None: no restriction)."""
    hospital: int | None = None
    """Only this hospital's patients and studies (None: every hospital's)."""
    want_meta: bool = False
    """Also return each row's representative DICOM JSON (attributes without their own column)."""


@dataclass
class QueryResult:
    rows: list[dict[str, Any]]
    unsupported: list[str]
    """Matching keys that this index cannot match on (ignored, as PS3.18 allows)."""


def _escape_like(value: str) -> str:
    return value.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _wildcard_to_like(value: str) -> str:
    return _escape_like(value).replace("*", "%").replace("?", "_")


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


class folded(GenericFunction[str]):
    """``lower(x)`` in byte order: the expression the name indexes are built on (migration
    0005). SQLite compares text bytewise anyway; PostgreSQL needs ``COLLATE "C"`` so that every
    value starting with a prefix sorts between the prefix and its successor."""

    type = String()
    name = "folded"
    inherit_cache = True


@compiles(folded)
def _folded_default(element: folded, compiler: Any, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(folded, "postgresql")
def _folded_pg(element: folded, compiler: Any, **kw: Any) -> str:
    return f'(lower({compiler.process(element.clauses, **kw)}) COLLATE "C")'


def _literal_prefix(pattern: str) -> str:
    """The text before the first wildcard of a (lower-cased) pattern."""
    cut = min((i for i in (pattern.find("*"), pattern.find("?")) if i >= 0), default=len(pattern))
    return pattern[:cut]


def _match_text(
    col: Any, value: str, *, fold: bool, name_index: bool = True
) -> ColumnElement[bool]:
    expr = func.lower(col) if fold else col
    v = value.lower() if fold else value
    if _has_wildcard(v):
        if v.strip("*") == "":
            return literal(True)  # '*' alone is a universal match
        like = expr.like(_wildcard_to_like(v), escape="!")
        prefix = _literal_prefix(v)
        if fold and name_index and prefix and ord(prefix[-1]) < 0x10FFFF:
            # 'wang*' also as the range ['wang', 'wanh') on the indexed lower(name): the index
            # finds the few candidates, LIKE keeps the exact semantics.
            upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            key = folded(col)
            return and_(key >= prefix, key < upper, like)
        return like
    return expr == v


def _match_pn(
    value: str, group_cols: tuple[Any, Any, Any] | None, col: Any, name_index: bool = True
) -> ColumnElement[bool]:
    """A name matches when the whole value or any one component group matches.

    Chinese names come as ``Wang^XiaoDong=王^小东=``: a user searching ``王*`` or ``wang*`` must
    find the patient, so each group is tried, case-insensitively.
    """
    if "=" in value or group_cols is None:
        return _match_text(col, value, fold=True, name_index=name_index)
    return or_(
        *(_match_text(c, value, fold=True, name_index=name_index) for c in (col, *group_cols))
    )


def _match_range(col: Any, value: str, *, full_length: int | None = None) -> ColumnElement[bool]:
    if "-" not in value:
        return col == value
    lo, hi = (part.strip() for part in value.split("-", 1))
    conds = [col != ""]
    if lo:
        conds.append(col >= lo)
    if hi and len(hi) == full_length:
        conds.append(col <= hi)  # a whole date: a plain bound, so the index serves both ends
    elif hi:
        # A time range '-1200' includes 1200xx.xx: compare on the prefix length given.
        conds.append(func.substr(col, 1, len(hi)) <= hi)
    return and_(*conds)


def _match(
    keyword: str, col: Any, kind: str, value: str, name_index: bool = True
) -> ColumnElement[bool]:
    if kind == "uid":
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        if not uids:
            raise ValueError("separators without a UID")
        return col.in_(uids) if len(uids) > 1 else col == uids[0]
    if kind == "int":
        number = int(value)
        if not -(2**63) <= number < 2**63:
            raise ValueError("no database stores such a number")  # the driver would fail
        return col == number
    if kind in ("date", "time"):
        if kind == "time":
            value = value.replace(":", "")
        else:
            value = value.replace(".", "").replace("/", "")
        return _match_range(col, value, full_length=8 if kind == "date" else None)
    if kind == "pn":
        groups = (
            (Patient.name_alphabetic, Patient.name_ideographic, Patient.name_phonetic)
            if keyword == "PatientName"
            else None
        )
        return _match_pn(value, groups, col, name_index)
    if kind == "modalities":
        wanted = [m.strip() for m in value.split("\\") if m.strip()]
        padded = literal("\\") + col + literal("\\")
        return or_(*(padded.like(f"%\\{_escape_like(m)}\\%", escape="!") for m in wanted))
    values = value.split("\\") if "\\" in value and not _has_wildcard(value) else [value]
    return or_(*(_match_text(col, v, fold=False) for v in values))


_MODELS: dict[Level, tuple[Any, ...]] = {
    "PATIENT": (Patient,),
    "STUDY": (Study, Patient),
    "SERIES": (Series, Study, Patient),
    "IMAGE": (Instance, Series, Study, Patient),
}
_OWN = {Patient: _PATIENT, Study: _STUDY, Series: _SERIES, Instance: _IMAGE}


def _columns(level: Level) -> list[Any]:
    """The matching attributes of each level's tables, labelled by keyword, and their pks:
    plain rows (no ORM objects to build for a page of 1,000 results)."""
    cols: list[Any] = []
    for model in _MODELS[level]:
        cols += [col.label(kw) for kw, (col, _kind) in _OWN[model].items()]
        cols.append(model.pk.label(f"_{model.__name__.lower()}_pk"))
    return cols


def _base(level: Level) -> Select[Any]:
    if level == "PATIENT":
        return select(*_columns(level)).select_from(Patient)
    if level == "STUDY":
        return (
            select(*_columns(level))
            .select_from(Study)
            .join(Patient, Study.patient_pk == Patient.pk)
        )
    if level == "SERIES":
        return (
            select(*_columns(level))
            .select_from(Series)
            .join(Study, Series.study_pk == Study.pk)
            .join(Patient, Study.patient_pk == Patient.pk)
        )
    return (
        select(*_columns(level))
        .select_from(Instance)
        .join(Series, Instance.series_pk == Series.pk)
        .join(Study, Series.study_pk == Study.pk)
        .join(Patient, Study.patient_pk == Patient.pk)
    )


def _order(stmt: Select[Any], level: Level) -> Select[Any]:
    if level == "PATIENT":
        return stmt.order_by(Patient.pk)
    if level == "STUDY":
        return stmt.order_by(Study.study_date.desc(), Study.study_time.desc(), Study.pk.desc())
    if level == "SERIES":
        return stmt.order_by(Study.pk, Series.series_number, Series.pk)
    return stmt.order_by(Series.pk, Instance.instance_number, Instance.pk)


def build_select(q: Query, *, name_index: bool = True) -> tuple[Select[Any], list[str]]:
    """The SQL of a query. ``name_index=False`` leaves out the conditions that steer the
    database to the name indexes (see ``_walk_in_date_order``); the matching is the same."""
    attrs = ATTRIBUTES[q.level]
    stmt = _base(q.level)
    unsupported: list[str] = []
    for keyword, value in q.keys.items():
        if value is None or str(value) == "":
            continue
        value = str(value).strip()
        spec = attrs.get(keyword)
        if spec is None:
            unsupported.append(keyword)
            continue
        col, kind = spec
        try:
            stmt = stmt.where(_match(keyword, col, kind, value, name_index))
        except ValueError:
            raise QueryError(f"invalid value for {keyword}: {value!r}") from None
    if q.hospital is not None:
        owner = Patient.hospital_pk if q.level == "PATIENT" else Study.hospital_pk
        if q.also_studies and q.level != "PATIENT":
            # the hospital's own, and the other hospitals' studies a consent grant opened
            stmt = stmt.where(or_(owner == q.hospital, Study.study_uid.in_(q.also_studies)))
        else:
            stmt = stmt.where(owner == q.hospital)
    if q.allowed_studies is not None:
        if q.level == "PATIENT":
            stmt = stmt.where(
                Patient.pk.in_(
                    select(Study.patient_pk).where(Study.study_uid.in_(q.allowed_studies))
                )
            )
        else:
            stmt = stmt.where(Study.study_uid.in_(q.allowed_studies))
    stmt = _order(stmt, q.level)
    if q.offset:
        stmt = stmt.offset(q.offset)
    if q.limit is not None:
        stmt = stmt.limit(q.limit)
    return stmt, unsupported


class QueryError(ValueError):
    """A matching key whose value cannot be used (e.g. text in a numeric attribute)."""


def run_query(session: Session, q: Query) -> QueryResult:
    stmt, unsupported = build_select(q, name_index=not _walk_in_date_order(session, q))
    rows: list[dict[str, Any]] = [dict(r._mapping) for r in session.execute(stmt)]
    if q.level == "PATIENT" and rows:
        _add_patient_counts(session, rows)
    if q.want_meta and rows:
        _add_meta(session, q.level, rows)
    return QueryResult(rows, unsupported)


def _walk_in_date_order(session: Session, q: Query) -> bool:
    """Should a page of a study search by a common name prefix walk the studies newest first?

    ``王*`` matches a tenth of the patients of a Chinese hospital. Through the name index, the
    database gathers all their studies (10,000 of 100,000) and sorts them to return the newest
    100: ~70 ms on SQLite. Walking the study-date index and checking each study's patient finds
    those 100 after ~1,000 studies: a few ms. For a rare name the walk would cross the whole
    index, so a capped count of the matching patients decides: walk when the expected walk
    ((limit + offset) × patients / matches) is shorter than the matching studies to sort
    (about 3 × matches per the ratio of studies to patients). PostgreSQL's planner weighs
    this itself from its statistics; SQLite has none unless ANALYZE was run, so only SQLite
    is steered.
    """
    if q.level != "STUDY" or q.limit is None or q.allowed_studies is not None:
        return False
    if session.get_bind().dialect.name != "sqlite":
        return False
    name = str(q.keys.get("PatientName") or "").strip()
    if not _has_wildcard(name) or name.strip("*") == "" or "=" in name:
        return False
    if any(str(v or "").strip() for k, v in q.keys.items() if k != "PatientName"):
        return False  # other keys may be more selective than the date order helps
    prefix = _literal_prefix(name.lower())
    if not prefix or ord(prefix[-1]) >= 0x10FFFF:
        return False
    patients = session.execute(select(func.max(Patient.pk))).scalar() or 0
    enough = int(math.sqrt((q.limit + q.offset) * patients / 6)) + 1
    if patients < 1000 or enough * 2 > patients:
        return False
    # Count on each name index alone (index-only range scans, stopped at ``enough``): the
    # largest count is a lower bound of the patients matching, so the walk is only chosen
    # when it surely pays.
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    for col in (Patient.name, Patient.name_alphabetic, Patient.name_ideographic):
        key = folded(col)
        hits = select(literal(1)).where(key >= prefix, key < upper).limit(enough)
        if (session.execute(select(func.count()).select_from(hits.subquery())).scalar() or 0) >= (
            enough
        ):
            return True
    return False


def _add_patient_counts(session: Session, rows: list[dict[str, Any]]) -> None:
    pks = [r["_patient_pk"] for r in rows]
    stmt = (
        select(
            Study.patient_pk,
            func.count(Study.pk),
            func.sum(Study.num_series),
            func.sum(Study.num_instances),
        )
        .where(Study.patient_pk.in_(pks))
        .group_by(Study.patient_pk)
    )
    counts = {pk: (n, s or 0, i or 0) for pk, n, s, i in session.execute(stmt)}
    for r in rows:
        n, s, i = counts.get(r["_patient_pk"], (0, 0, 0))
        r.update(dict(zip(PATIENT_COUNTS, (n, int(s), int(i)), strict=True)))


def _add_meta(session: Session, level: Level, rows: list[dict[str, Any]]) -> None:
    """Attach the DICOM JSON of one representative instance to each row (first by pk)."""
    if level == "IMAGE":
        pks = [r["_instance_pk"] for r in rows]
        stmt = select(Instance.pk, Instance.meta_json).where(Instance.pk.in_(pks))
        metas = dict(session.execute(stmt).all())
        for r in rows:
            r["_meta"] = json.loads(metas.get(r["_instance_pk"], "{}"))
        return
    if level == "SERIES":
        key, col = "_series_pk", Instance.series_pk
        firsts = select(func.min(Instance.pk)).where(col.in_([r[key] for r in rows])).group_by(col)
    else:
        key = "_study_pk" if level == "STUDY" else "_patient_pk"
        col = Series.study_pk if level == "STUDY" else Study.patient_pk
        base = select(func.min(Instance.pk)).join(Series, Instance.series_pk == Series.pk)
        if level == "PATIENT":
            base = base.join(Study, Series.study_pk == Study.pk)
        firsts = base.where(col.in_([r[key] for r in rows])).group_by(col)
    owner = {
        "SERIES": Instance.series_pk,
        "STUDY": Series.study_pk,
        "PATIENT": Study.patient_pk,
    }[level]
    stmt = select(owner, Instance.meta_json).select_from(Instance)
    if level != "SERIES":
        stmt = stmt.join(Series, Instance.series_pk == Series.pk)
    if level == "PATIENT":
        stmt = stmt.join(Study, Series.study_pk == Study.pk)
    stmt = stmt.where(Instance.pk.in_(firsts))
    metas = dict(session.execute(stmt).all())
    for r in rows:
        r["_meta"] = json.loads(metas.get(r[key], "{}"))

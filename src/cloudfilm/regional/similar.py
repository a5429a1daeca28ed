"""The similar-exam warning: has this person had the same kind of exam recently, anywhere?

China re-scans about a fifth of its patients because the last hospital's images were out of
reach. Before an exam is ordered, the hospital's ordering system (HIS) asks with the patient's
identifiers and the planned exam; the answer lists the person's exams at *any* hospital (through
the master person index's links) of the same modality family and body region within a window
(``Settings.similar_exam_days``: 30 days for CT and MR, 14 for radiography by default).

The answer says only that an exam exists: date, hospital, modality, region, imaging index ID.
Report text and images need the patient's consent (regional.grants), which the warning links
to. :func:`similar_exams` is the one function behind the API, the console's banner and the bench.

Matching:

- modality by family: CR, DX, DR (and RG) are one radiography family, ``DX``; every other
  modality is its own family;
- body region through regional.bodyparts, from the series' Body Part Examined, the study
  description and the current report's exam name and body part; an exam whose region is not
  understood matches no planned region, and a planned exam whose region is not understood
  matches nothing;
- the window in days counts back from today in China (UTC+8), from the study date, or from the
  day the archive received the study when it has none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import and_, literal, or_, select, union_all
from sqlalchemy.orm import Session

from cloudfilm.accounts.models import Hospital
from cloudfilm.portal.models import Report
from cloudfilm.regional.bodyparts import EMPTY, REGIONS, region_names, regions_of
from cloudfilm.regional.identifiers import Identifier
from cloudfilm.regional.models import Person, PersonLink
from cloudfilm.regional.persons import find_person
from cloudfilm.storage.models import Series, Study

CHINA = timezone(timedelta(hours=8))
RADIOGRAPHY = "DX"
FAMILY = {"CR": RADIOGRAPHY, "DR": RADIOGRAPHY, "DX": RADIOGRAPHY, "RG": RADIOGRAPHY}
"""Modalities that count as one; the rest are their own family."""
DEFAULT_DAYS: dict[str, int] = {"CT": 30, "MR": 30, RADIOGRAPHY: 14}
FALLBACK_DAYS = 30
"""The window of a family that neither the settings nor :data:`DEFAULT_DAYS` name."""

_MODALITY_TEXT: tuple[tuple[str, str], ...] = (
    # most specific first: PET-CT is a PET exam, 乳腺X线 a mammogram, CTA a CT
    (r"PET", "PT"),
    (r"钼靶|乳腺 ?X ?[线光]|\bMG\b|MAMMO", "MG"),
    (r"磁共振|核磁|\bMRI?\b|\bMR[ACV]\b|MRCP|\bNMR\b", "MR"),
    (r"超声|彩超|B ?超|多普勒|\bUS\b|\bUSG\b", "US"),
    (r"DSA|血管造影|\bXA\b", "XA"),
    (r"SPECT|\bECT\b|核医学|骨扫描|\bNM\b", "NM"),
    (r"透视|钡餐|钡灌肠|消化道造影|\bRF\b", "RF"),
    (r"\bCT[AVU]?\b|HRCT|计算机断层", "CT"),
    (r"\bDR\b", "DR"),
    (r"\bCR\b", "CR"),
    (r"\bDX\b|\bRG\b|X ?[线光]|X-?RAY|平片|胸片|摄片|正位|侧位|斜位", "DX"),
)
_MODALITY_RES = tuple((re.compile(p), m) for p, m in _MODALITY_TEXT)
_MODALITY_CODE = re.compile(r"[A-Z0-9_]{1,16}")
_LATIN_EDGE = re.compile(r"(?<=[^\x00-\x7f])(?=[A-Za-z])|(?<=[A-Za-z])(?=[^\x00-\x7f])")


def family(modality: str) -> str:
    m = modality.strip().upper()
    return FAMILY.get(m, m)


def window_days(fam: str, days: Mapping[str, int] | None = None) -> int:
    """The family's window: the settings' value (keyed by any modality of the family), else
    the default."""
    for key, value in (days or {}).items():
        if family(key) == fam and key != "*":
            return int(value)
    if days and "*" in days and fam not in DEFAULT_DAYS:
        return int(days["*"])
    return DEFAULT_DAYS.get(fam, FALLBACK_DAYS)


def modality_in(text: str) -> str | None:
    """The modality an exam name or modality field names (``胸部CT`` → CT, ``磁共振`` → MR,
    ``腰椎正侧位`` → DX), or None."""
    value = _LATIN_EDGE.sub(" ", text.strip().upper())  # 胸部CT → 胸部 CT, so \b sees CT
    for pattern, modality in _MODALITY_RES:
        if pattern.search(value):
            return modality
    return None


@dataclass(frozen=True)
class PlannedExam:
    """What the ordering system plans: a modality and body regions (empty: not understood)."""

    modality: str | None
    regions: frozenset[str]

    @property
    def understood(self) -> bool:
        return self.modality is not None and bool(self.regions)

    @property
    def family(self) -> str | None:
        return family(self.modality) if self.modality else None

    def describe(self) -> str:
        regions = "+".join(r for r in REGIONS if r in self.regions) or "?"
        return f"{self.modality or '?'} {regions}"


def parse_exam(exam: str = "", modality: str = "", body_part: str = "") -> PlannedExam:
    """``exam`` a common exam name (``胸部CT``, ``头颅MR``, ``腰椎DR``); ``modality`` and
    ``body_part`` given apart (a DICOM modality, a defined term, a CID 4031 code, a name) win
    over what the exam name says."""
    mod = (modality_in(modality) or _code(modality)) if modality else None
    mod = mod or (modality_in(exam) if exam else None)
    regions = regions_of(body_part) if body_part else EMPTY
    regions = regions or (regions_of(exam) if exam else EMPTY)
    return PlannedExam(mod, regions)


def _code(text: str) -> str | None:
    """A modality code we do not name ourselves (``OP``, ``IVUS``), as DICOM writes codes."""
    value = text.strip().upper()
    return value if _MODALITY_CODE.fullmatch(value) else None


@dataclass(frozen=True)
class SimilarExam:
    """One exam the person had: what the warning may say without consent, plus keys for our
    own use (``person_pk``, ``study_pk``, ``study_uid``: never shown in the API)."""

    person_pk: int
    person_id: str
    study_pk: int
    study_uid: str
    index_id: str | None
    study_date: str
    """YYYYMMDD: the study date, or the day it was received when it has none."""
    days_ago: int
    hospital_pk: int
    hospital_code: str
    hospital_name: str
    modalities: tuple[str, ...]
    """The study's modalities of the planned family (all of them when none was planned)."""
    regions: frozenset[str]

    def region_names(self, lang: str = "zh") -> str:
        return region_names(self.regions, lang)


class AmbiguousPerson(ValueError):
    """The identifiers name two different persons (a shared family phone, a typing error)."""


def person_of(session: Session, secret: bytes, identifiers: Iterable[Identifier]) -> int | None:
    found = {find_person(session, secret, ident) for ident in identifiers}
    found.discard(None)
    if len(found) > 1:
        raise AmbiguousPerson("the identifiers name two different persons: send one of them")
    return found.pop() if found else None


def similar_exams(
    session: Session,
    secret: bytes,
    identifiers: Iterable[Identifier],
    modality: str | None,
    region: str | Iterable[str] | None,
    now: datetime,
    *,
    days: Mapping[str, int] | None = None,
) -> list[SimilarExam]:
    """The person's exams like the planned one, newest first (see the module docstring).

    ``modality``: a DICOM modality (``CT``, ``DR``); ``region``: region codes of
    regional.bodyparts, or a text for it to read (``CHEST``, ``胸部``). None means any (the
    console's banner: every recent exam, each within its own family's window); a value that
    names nothing matches nothing. Raises :class:`AmbiguousPerson`."""
    person_pk = person_of(session, secret, identifiers)
    if person_pk is None:
        return []
    return exams_of_person(session, person_pk, modality, region, now, days=days)


def exams_of_person(
    session: Session,
    person_pk: int,
    modality: str | None,
    region: str | Iterable[str] | None,
    now: datetime,
    *,
    days: Mapping[str, int] | None = None,
) -> list[SimilarExam]:
    """:func:`similar_exams` for a person already known (the console knows the patient)."""
    fam = family(modality) if modality is not None else None
    wanted = _planned_regions(region)
    if fam == "" or wanted == EMPTY:
        return []
    longest = window_days(fam, days) if fam else _longest_window(days)
    today = now.astimezone(CHINA).date()
    cutoff = today - timedelta(days=longest)
    cutoff_at = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=CHINA).astimezone(UTC)
    rows = session.execute(
        select(
            Study.pk,
            Study.study_uid,
            Study.index_id,
            Study.study_date,
            Study.created_at,
            Study.modalities,
            Study.description,
            Study.hospital_pk,
            Hospital.code,
            Hospital.name,
            Person.person_id,
        )
        .join(PersonLink, PersonLink.patient_pk == Study.patient_pk)
        .join(Person, Person.pk == PersonLink.person_pk)
        .join(Hospital, Hospital.pk == Study.hospital_pk)
        .where(
            PersonLink.person_pk == person_pk,
            or_(
                Study.study_date >= cutoff.strftime("%Y%m%d"),
                and_(Study.study_date == "", Study.created_at >= cutoff_at),
            ),
        )
    ).all()
    candidates = []
    for row in rows:
        held = tuple(m for m in (row.modalities or "").split("\\") if m)
        mods = tuple(m for m in held if family(m) == fam) if fam else held
        if not mods:
            continue
        day = _exam_day(row.study_date, row.created_at)
        ago = (today - day).days
        limit = window_days(fam, days) if fam else max(window_days(family(m), days) for m in mods)
        if ago <= limit:
            candidates.append((row, mods, day, ago))
    if not candidates:
        return []
    found_regions = _study_regions(session, [c[0] for c in candidates], fam)
    out = []
    for row, mods, day, ago in candidates:
        regions = found_regions.get(row.pk, EMPTY)
        if wanted is not None and not regions & wanted:
            continue
        out.append(
            SimilarExam(
                person_pk=person_pk,
                person_id=row.person_id or "",
                study_pk=row.pk,
                study_uid=row.study_uid,
                index_id=row.index_id,
                study_date=day.strftime("%Y%m%d"),
                days_ago=ago,
                hospital_pk=row.hospital_pk,
                hospital_code=row.code,
                hospital_name=row.name or row.code,
                modalities=mods,
                regions=regions,
            )
        )
    out.sort(key=lambda e: (e.days_ago, e.hospital_code, e.study_pk))
    return out


def _planned_regions(region: str | Iterable[str] | None) -> frozenset[str] | None:
    if region is None:
        return None
    if isinstance(region, str):
        return regions_of(region)
    return frozenset(r for r in region if r in REGIONS)


def _longest_window(days: Mapping[str, int] | None) -> int:
    families = {*DEFAULT_DAYS, *(family(k) for k in (days or {}) if k != "*")}
    values = [window_days(f, days) for f in families]
    if days and "*" in days:
        values.append(int(days["*"]))
    return max([FALLBACK_DAYS, *values])


def _exam_day(study_date: str, created_at: datetime) -> date:
    if len(study_date or "") == 8 and study_date.isdigit():
        try:
            return date(int(study_date[:4]), int(study_date[4:6]), int(study_date[6:]))
        except ValueError:
            pass
    at = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    return at.astimezone(CHINA).date()


def _study_regions(session: Session, rows: list[Any], fam: str | None) -> dict[int, frozenset[str]]:
    """Each study's regions: its series' Body Part Examined (series of the planned family, or
    of no stated modality), its description, and its current report's exam name and body part."""
    by_pk: dict[int, set[str]] = {r.pk: set(regions_of(r.description)) for r in rows}
    pks = list(by_pk)
    # one round trip for both: the series' body parts, then the current reports' exam names
    series = select(
        Series.study_pk, literal("S").label("source"), Series.modality, Series.body_part
    ).where(Series.study_pk.in_(pks))
    reports = (
        select(Study.pk, literal("R"), Report.exam_name, Report.body_part)
        .join(Study, Study.study_uid == Report.study_uid)
        .where(Study.pk.in_(pks), Report.current.is_(True))
    )
    for study_pk, source, text, body_part in session.execute(union_all(series, reports)):
        if source == "R":
            by_pk[study_pk] |= regions_of(text) | regions_of(body_part)
        elif body_part and (fam is None or not text or family(text) == fam):
            by_pk[study_pk] |= regions_of(body_part)
    return {pk: frozenset(regions) for pk, regions in by_pk.items()}

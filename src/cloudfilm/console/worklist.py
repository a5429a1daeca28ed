"""The console's worklist: the studies a logged-in user may see, searched and paged.

Built on the one matching engine (``storage.query``), the same C-FIND and QIDO-RS use, so a
name finds the patient in any of its component groups and character sets (``王*``, ``wang*``)
and a hospital user's answer is limited by the access decision, not by a filter of our own:
``archive.authorize(principal, Action.QUERY)`` says which hospital (or which studies) the answer
may hold, and the engine applies it. What the engine does not return (the owner's name, whether
a report or a film exists) is looked up afterwards for the one page shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cloudfilm.access import Action, Decision, Principal
from cloudfilm.portal.models import Film, Report
from cloudfilm.regional.index_id import valid_index_id
from cloudfilm.storage.models import Study
from cloudfilm.storage.query import Query, QueryError, run_query

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from cloudfilm.archive import Archive

PAGE_SIZE = 25
MAX_PAGE = 400
"""Deeper pages are refused (10,000 rows in): a search that broad wants narrower terms."""
_MODALITY = re.compile(r"^[A-Z0-9]{1,16}$")
_DATE = re.compile(r"^\d{8}$")
_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003ffff]")


class WorklistError(ValueError):
    """A search term that cannot be used (a malformed date, modality or page)."""


def dicom_date(text: str) -> str:
    """``2026-01-10``, ``2026/01/10``, ``2026.01.10`` or ``20260110`` → ``20260110``; '' stays.

    Raises WorklistError for anything else (a half-typed date must not silently match all)."""
    value = re.sub(r"[-./\s]", "", text or "")
    if not value:
        return ""
    if not _DATE.match(value):
        raise WorklistError(f"not a date: {text!r}")
    try:
        date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise WorklistError(f"not a date: {text!r}") from None
    return value


def _clean(text: str, limit: int = 64) -> str:
    """A typed search term: trimmed, without the backslash (a DICOM value separator: ``a\\b``
    would become a list of two values) and control characters (PostgreSQL refuses NUL)."""
    kept = "".join(c for c in (text or "") if c.isprintable() and c != "\\")
    return kept.strip()[:limit]


def name_pattern(text: str) -> str:
    """What a typed name matches: a prefix, whatever the separators the user left out.

    Names are stored as DICOM writes them, family and given name apart: ``Wang^XiuYing``,
    ``王^秀英``. Typed with wildcards or ``^``, the term is used as given. Otherwise ``wang
    xiuying`` means ``wang^xiuying*``, and ``王秀英`` (nobody types the caret in Chinese)
    means ``王*秀*英*``: the family name may be one character or two (欧阳), so any split
    matches, and the first character still narrows the search through the name index."""
    name = _clean(text)
    if not name or any(c in name for c in "*?^="):
        return name
    if _CJK.search(name) and " " not in name:
        return "*".join(name) + "*"
    return re.sub(r"\s+", "^", name) + "*"


def _index_id(text: str) -> str:
    """The imaging index ID in ``text`` (spaces and dashes dropped, ``x`` as ``X``), or ''."""
    value = re.sub(r"[\s-]", "", text or "").upper()
    return value if valid_index_id(value) else ""


@dataclass(frozen=True)
class WorklistFilter:
    """The search form. Empty fields match everything."""

    name: str = ""
    """Any character set; a term without ``*`` or ``?`` is a prefix (``王`` finds 王秀英)."""
    patient_id: str = ""
    accession: str = ""
    date_from: str = ""
    date_to: str = ""
    modality: str = ""
    hospital: int | None = None
    """Operators may narrow to one hospital; ignored for a hospital's users (theirs only)."""

    def keys(self) -> dict[str, str]:
        """The matching keys of the engine (DICOM string forms). An imaging index ID pasted in
        any of the text boxes (its check character makes a chance match unlikely) finds its
        study, whichever box it went into."""
        keys: dict[str, str] = {}
        pasted = [v for v in (self.name, self.patient_id, self.accession) if _index_id(v)]
        if pasted:
            keys["IndexID"] = _index_id(pasted[0])
            return keys
        name = name_pattern(self.name)
        if name:
            keys["PatientName"] = name
        if _clean(self.patient_id):
            keys["PatientID"] = _clean(self.patient_id)
        if _clean(self.accession):
            keys["AccessionNumber"] = _clean(self.accession)
        lo, hi = dicom_date(self.date_from), dicom_date(self.date_to)
        if lo and hi and lo > hi:
            lo, hi = hi, lo
        if lo or hi:
            keys["StudyDate"] = lo if lo and lo == hi else f"{lo}-{hi}"
        modality = _clean(self.modality, 16).upper()
        if modality:
            if not _MODALITY.match(modality):
                raise WorklistError(f"not a modality: {self.modality!r}")
            keys["ModalitiesInStudy"] = modality
        return keys


@dataclass(frozen=True)
class WorklistRow:
    study_uid: str
    patient_name: str
    """The name as people read it: the ideographic group (王秀英) when there is one."""
    patient_name_other: str
    """The other group (Wang XiuYing), or ''."""
    patient_id: str
    sex: str
    age: str
    """DICOM Age String form (``045Y``, ``006M``), from the images or the birth date; ''."""
    study_date: str
    study_time: str
    modalities: list[str]
    description: str
    accession: str
    num_series: int
    num_instances: int
    hospital_pk: int
    hospital_name: str
    has_report: bool
    film_id: str | None
    """The study's film (issued), or None."""


@dataclass
class WorklistPage:
    rows: list[WorklistRow]
    page: int
    has_next: bool
    page_size: int = PAGE_SIZE
    filter: WorklistFilter = field(default_factory=WorklistFilter)


def _readable(group: str) -> str:
    """A PN component group as written: ``Wang^XiuYing`` → Wang XiuYing, ``王^秀英`` → 王秀英."""
    parts = [p for p in group.split("^") if p]
    joiner = "" if parts and _CJK.search(group) else " "
    return joiner.join(parts).strip()


def display_name(pn: str) -> tuple[str, str]:
    """(primary, other) forms of a PN value: Chinese readers find the ideographic first."""
    groups = (pn or "").split("=")
    alphabetic = _readable(groups[0])
    ideographic = _readable(groups[1]) if len(groups) > 1 else ""
    if ideographic:
        return ideographic, alphabetic if alphabetic != ideographic else ""
    return alphabetic, ""


def _age(meta: dict[str, Any], birth: str, study_date: str) -> str:
    """The age at the exam: the images' Patient's Age (what the modality recorded) when given,
    else years between birth and study date (months, weeks, days for infants)."""
    given = ((meta.get("00101010") or {}).get("Value") or [""])[0]
    if isinstance(given, str) and re.match(r"^\d{3}[DWMY]$", given):
        return given
    if not (_DATE.match(birth or "") and _DATE.match(study_date or "")):
        return ""
    try:
        born = date(int(birth[:4]), int(birth[4:6]), int(birth[6:]))
        seen = date(int(study_date[:4]), int(study_date[4:6]), int(study_date[6:]))
    except ValueError:
        return ""
    if seen < born:
        return ""
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    if years >= 2:
        return f"{min(years, 999):03d}Y"
    months = (seen.year - born.year) * 12 + seen.month - born.month - (seen.day < born.day)
    if months >= 1:
        return f"{months:03d}M"
    days = (seen - born).days
    return f"{days // 7:03d}W" if days >= 7 else f"{days:03d}D"


def search_studies(
    archive: Archive, principal: Principal, flt: WorklistFilter, page: int = 1
) -> WorklistPage:
    """One page (``PAGE_SIZE`` rows) of the studies ``principal`` may see that match ``flt``,
    newest first (study date, then time). Raises AccessDenied (audited) or WorklistError."""
    if not 1 <= page <= MAX_PAGE:
        raise WorklistError(f"page must be between 1 and {MAX_PAGE}")
    keys = flt.keys()  # a bad term is refused before anything is asked or audited
    terms = ", ".join(f"{k}={v}" for k, v in keys.items())
    decision = archive.authorize(
        principal, Action.QUERY, None, detail=f"console worklist {terms}".strip()
    )
    q = Query(
        level="STUDY",
        keys=keys,
        limit=PAGE_SIZE + 1,  # one more says whether there is a next page, without a count
        offset=(page - 1) * PAGE_SIZE,
        allowed_studies=decision.studies,
        hospital=decision.hospital if decision.hospital is not None else flt.hospital,
        want_meta=True,
    )
    with archive.db.read() as session:
        try:
            found = run_query(session, q).rows
        except QueryError as exc:
            raise WorklistError(str(exc)) from None
        rows = _decorate(archive, session, found[:PAGE_SIZE])
    return WorklistPage(rows=rows, page=page, has_next=len(found) > PAGE_SIZE, filter=flt)


def study_row(archive: Archive, decision: Decision, study_uid: str) -> WorklistRow | None:
    """One study as a worklist row, for a page that has already asked the access check about
    it (the film desk): ``decision`` limits the look-up like a search's. None: not found."""
    if decision.studies is not None and study_uid not in decision.studies:
        return None
    q = Query(
        level="STUDY",
        keys={"StudyInstanceUID": study_uid},
        limit=1,
        allowed_studies=decision.studies,
        hospital=decision.hospital,
        want_meta=True,
    )
    with archive.db.read() as session:
        rows = _decorate(archive, session, run_query(session, q).rows)
    return rows[0] if rows else None


def _decorate(archive: Archive, session: Session, shown: list[dict[str, Any]]) -> list[WorklistRow]:
    """Rows of the engine's answer with what it does not hold: owner, report, film."""
    uids = [r["StudyInstanceUID"] for r in shown]
    if not uids:
        return []
    owners = dict(
        session.execute(
            select(Study.study_uid, Study.hospital_pk).where(Study.study_uid.in_(uids))
        ).all()
    )
    films = dict(
        session.execute(
            select(Film.study_uid, Film.film_id).where(
                Film.study_uid.in_(uids), Film.revoked_at.is_(None)
            )
        ).all()
    )
    reported = set(
        session.execute(
            select(Report.study_uid).where(Report.study_uid.in_(uids), Report.current.is_(True))
        ).scalars()
    )
    return [_row(archive, r, owners, films, reported) for r in shown]


def _row(
    archive: Archive,
    r: dict[str, Any],
    owners: dict[str, int],
    films: dict[str, str],
    reported: set[str],
) -> WorklistRow:
    from cloudfilm.accounts.hospitals import DIRECTORY, HospitalError

    uid = r["StudyInstanceUID"]
    owner = owners.get(uid, 0)
    try:
        hospital = DIRECTORY.get(archive.db, owner)
        hospital_name = hospital.name or hospital.code
    except HospitalError:
        hospital_name = ""
    primary, other = display_name(r.get("PatientName") or "")
    return WorklistRow(
        study_uid=uid,
        patient_name=primary,
        patient_name_other=other,
        patient_id=r.get("PatientID") or "",
        sex=r.get("PatientSex") or "",
        age=_age(r.get("_meta") or {}, r.get("PatientBirthDate") or "", r.get("StudyDate") or ""),
        study_date=r.get("StudyDate") or "",
        study_time=r.get("StudyTime") or "",
        modalities=[m for m in (r.get("ModalitiesInStudy") or "").split("\\") if m],
        description=r.get("StudyDescription") or "",
        accession=r.get("AccessionNumber") or "",
        num_series=int(r.get("NumberOfStudyRelatedSeries") or 0),
        num_instances=int(r.get("NumberOfStudyRelatedInstances") or 0),
        hospital_pk=owner,
        hospital_name=hospital_name,
        has_report=uid in reported or uid in films,
        film_id=films.get(uid),
    )

"""Retention: how long each study is kept, which ones have expired, and the admin's approval.

A hospital keeps images by the patient's class: inpatients' 30 years, outpatients' (and
emergency patients', 门急诊) 15 (``Settings.retention_years``, the defaults); rules of its own
in ``keeping_retention_rules`` (a class, a modality or both) override them. The class of a
study comes from the report that names it (``patient_class`` in the report JSON, HL7 PV1-2 via
the gateway) or else from the DICOM itself (:func:`class_from_dataset`); a study of unknown
class is kept as long as the longest rule of its hospital: nothing is deleted early because a
sender left a field out.

Nothing is deleted without approval. :func:`scan` lists the expired studies (a
``keeping_deletions`` row, ``listed``); an admin approves them (:func:`approve`); only then
does :func:`cloudfilm.keeping.deletion.delete_approved` remove them. A study under a legal hold
(the study, or its patient) is never listed, and a hold placed after the listing or the
approval withdraws it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from cloudfilm.keeping.models import Deletion, LegalHold, RetentionRule
from cloudfilm.storage.models import Patient, Study, utcnow

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

log = logging.getLogger(__name__)

CLASSES = ("inpatient", "outpatient", "emergency", "checkup")
ALIASES: dict[str, str] = {
    **{c: c for c in CLASSES},
    # HL7 v2 PV1-2 (table 0004): preadmit and obstetrics are inpatient stays, recurring visits
    # outpatient; C (commercial), N (not applicable), U (unknown) say nothing
    "I": "inpatient",
    "P": "inpatient",
    "B": "inpatient",
    "O": "outpatient",
    "R": "outpatient",
    "E": "emergency",
    "IP": "inpatient",
    "OP": "outpatient",
    "ER": "emergency",
    "住院": "inpatient",
    "住院病人": "inpatient",
    "门诊": "outpatient",
    "急诊": "emergency",
    "体检": "checkup",
}
ACTIVE = ("listed", "approved")


def normalize_class(value: object) -> str:
    """One of :data:`CLASSES`, or '' (unknown) for anything else."""
    text = str(value or "").strip()
    return ALIASES.get(text) or ALIASES.get(text.upper()) or ALIASES.get(text.lower(), "")


def class_from_dataset(ds: Any) -> str:
    """The class the DICOM tells: an Admission ID (0038,0010), a Current Patient Location
    (0038,0300, the ward and bed) or a Patient's Institution Residence (0038,0400) is only
    filled for a patient admitted to a ward → ``inpatient``. Their absence proves nothing
    (most modalities never fill them): '' (unknown), never ``outpatient``."""
    for keyword in ("AdmissionID", "CurrentPatientLocation", "PatientInstitutionResidence"):
        try:
            value = ds.get(keyword)
        except Exception:  # a value pydicom cannot decode still says nothing
            continue
        if value not in (None, "") and str(value).strip():
            return "inpatient"
    return ""


def apply_report_class(session: Session, study_uid: str, patient_class: str) -> None:
    """A matched report's class becomes the study's (the RIS knows better than the DICOM)."""
    if not patient_class:
        return
    study = session.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one_or_none()
    if study is not None and study.patient_class != patient_class:
        study.patient_class = patient_class


# --- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    patient_class: str
    """A class or ``*``."""
    modality: str
    """A modality or ``*``."""
    years: int
    source: str = "hospital"
    """``hospital`` (keeping_retention_rules) or ``default`` (the settings)."""

    @property
    def label(self) -> str:
        return f"{self.source}:{self.patient_class}/{self.modality}={self.years}y"


def hospital_rules(session: Session, hospital: int) -> list[Rule]:
    rows = session.execute(
        select(RetentionRule).where(RetentionRule.hospital_pk == hospital)
    ).scalars()
    return [Rule(r.patient_class or "*", r.modality or "*", r.years) for r in rows]


def default_rules(defaults: Mapping[str, int]) -> list[Rule]:
    return [Rule(c, "*", int(y), "default") for c, y in defaults.items()]


def years_for(
    rules: list[Rule], defaults: Mapping[str, int], patient_class: str, modalities: Iterable[str]
) -> tuple[int, str]:
    """How many years a study of this class and these modalities is kept, and why.

    The hospital's most specific matching rule wins (class and modality, then class or
    modality, then ``*``/``*``; equally specific ones: the longest); with none, the default of
    the class. A study of several modalities is kept as long as its longest-kept one. An
    unknown class (or a class without any rule) gets the longest rule that could apply."""
    mods = [m for m in modalities if m] or ["*"]
    longest = _longest(rules, defaults, mods)
    if patient_class not in CLASSES:
        return longest[0], f"unknown class: longest rule {longest[1]}"
    best: tuple[int, str] | None = None
    for modality in mods:
        found = _specific(rules, patient_class, modality)
        if found is None and patient_class in defaults:
            rule = Rule(patient_class, "*", int(defaults[patient_class]), "default")
            found = (rule.years, rule.label)
        if found is None:
            found = (longest[0], f"no rule for {patient_class}: longest rule {longest[1]}")
        if best is None or found[0] > best[0]:
            best = found
    assert best is not None
    return best


def _specific(rules: list[Rule], patient_class: str, modality: str) -> tuple[int, str] | None:
    matching = [
        r
        for r in rules
        if r.patient_class in (patient_class, "*") and r.modality in (modality, "*")
    ]
    if not matching:
        return None

    def rank(r: Rule) -> tuple[int, int]:
        return ((r.patient_class != "*") + (r.modality != "*"), r.years)

    top = max(matching, key=rank)
    return top.years, top.label


def _longest(rules: list[Rule], defaults: Mapping[str, int], mods: list[str]) -> tuple[int, str]:
    candidates = [r for r in rules if r.modality == "*" or r.modality in mods]
    candidates += default_rules(defaults)
    if not candidates:
        return 10_000, "none (kept)"
    top = max(candidates, key=lambda r: r.years)
    return top.years, top.label


def expiry(base: date, years: int) -> date:
    try:
        return base.replace(year=base.year + years)
    except ValueError:  # 29 February
        return base.replace(year=base.year + years, month=3, day=1)


def base_date(study_date: str, created_at: datetime) -> date:
    """The exam's date (Study Date), or the day the archive received it when that is missing."""
    try:
        return datetime.strptime(study_date[:8], "%Y%m%d").date()
    except ValueError:
        return created_at.date()


def set_rule(
    archive: Archive, hospital: int, patient_class: str, modality: str, years: int
) -> None:
    """Add or change one rule of a hospital (``*`` for any class or modality)."""
    cls = "*" if patient_class in ("", "*") else normalize_class(patient_class)
    if not cls:
        raise ValueError(f"unknown patient class {patient_class!r}: {', '.join(CLASSES)} or *")
    if years < 1:
        raise ValueError("a rule keeps studies at least one year")
    mod = (modality or "*").strip().upper() or "*"
    with archive.db.write() as session:
        row = session.execute(
            select(RetentionRule).where(
                RetentionRule.hospital_pk == hospital,
                RetentionRule.patient_class == cls,
                RetentionRule.modality == mod,
            )
        ).scalar_one_or_none()
        if row is None:
            session.add(
                RetentionRule(hospital_pk=hospital, patient_class=cls, modality=mod, years=years)
            )
        else:
            row.years = years


# --- holds ----------------------------------------------------------------------------------


def place_hold(
    archive: Archive,
    hospital: int,
    *,
    by: str,
    reason: str,
    study_uid: str | None = None,
    patient_id: str | None = None,
) -> int:
    """A legal hold on one study or on every study of a patient (by Patient ID). Returns its pk."""
    with archive.db.write() as session:
        patient_pk = None
        if patient_id is not None:
            patient_pk = session.execute(
                select(Patient.pk).where(
                    Patient.hospital_pk == hospital, Patient.patient_id == patient_id
                )
            ).scalar()
            if patient_pk is None:
                raise LookupError(f"no patient {patient_id!r} at this hospital")
        elif not study_uid:
            raise ValueError("a hold names a study or a patient")
        hold = LegalHold(
            hospital_pk=hospital, patient_pk=patient_pk, study_uid=study_uid or None,
            reason=reason, created_by=by,
        )  # fmt: skip
        session.add(hold)
        session.flush()
        _withdraw_held(session, hospital)
        pk = hold.pk
    archive.audit.record(
        principal=by, action="hold", resource=study_uid or f"patient:{patient_id}",
        outcome="allow", detail=f"legal hold {pk}: {reason}"[:500], hospital=hospital,
    )  # fmt: skip
    return pk


def release_hold(archive: Archive, hospital: int, pk: int, *, by: str) -> None:
    with archive.db.write() as session:
        hold = session.get(LegalHold, pk)
        if hold is None or hold.hospital_pk != hospital or hold.released_at is not None:
            raise LookupError(f"no active hold {pk}")
        hold.released_at = utcnow()
        hold.released_by = by
    what = hold.study_uid or f"patient-pk:{hold.patient_pk}"
    archive.audit.record(
        principal=by, action="hold-release", resource=what, outcome="allow",
        detail=f"legal hold {pk} released", hospital=hospital,
    )  # fmt: skip


def active_holds(session: Session, hospital: int) -> list[LegalHold]:
    return list(
        session.execute(
            select(LegalHold).where(
                LegalHold.hospital_pk == hospital, LegalHold.released_at.is_(None)
            )
        ).scalars()
    )


def is_held(session: Session, hospital: int, study_uid: str, patient_pk: int) -> bool:
    return (
        session.execute(
            select(LegalHold.pk).where(
                LegalHold.hospital_pk == hospital,
                LegalHold.released_at.is_(None),
                or_(LegalHold.study_uid == study_uid, LegalHold.patient_pk == patient_pk),
            )
        ).first()
        is not None
    )


def _withdraw_held(session: Session, hospital: int) -> None:
    holds = active_holds(session, hospital)
    uids = {h.study_uid for h in holds if h.study_uid}
    patients = {h.patient_pk for h in holds if h.patient_pk is not None}
    if not uids and not patients:
        return
    held = select(Study.study_uid).where(
        Study.hospital_pk == hospital,
        or_(Study.study_uid.in_(uids), Study.patient_pk.in_(patients)),
    )
    for row in session.execute(
        select(Deletion).where(
            Deletion.hospital_pk == hospital,
            Deletion.status.in_(ACTIVE),
            Deletion.study_uid.in_(held),
        )
    ).scalars():
        row.status = "withdrawn"


# --- expired studies ------------------------------------------------------------------------


@dataclass
class Expired:
    study_uid: str
    study_pk: int
    patient_pk: int
    patient_class: str
    modalities: str
    study_date: str
    expires: date
    rule: str


def expired_studies(archive: Archive, hospital: int, today: date | None = None) -> list[Expired]:
    """The hospital's studies past their retention, held ones left out."""
    today = today or datetime.now(UTC).date()
    defaults = archive.settings.retention_years
    out: list[Expired] = []
    with archive.db.read() as session:
        rules = hospital_rules(session, hospital)
        shortest = min([r.years for r in rules] + [int(y) for y in defaults.values()] or [1])
        cutoff = expiry(today, -shortest)
        holds = active_holds(session, hospital)
        held_uids = {h.study_uid for h in holds if h.study_uid}
        held_patients = {h.patient_pk for h in holds if h.patient_pk is not None}
        # only studies older than the shortest rule can have expired: the date index narrows
        rows = session.execute(
            select(
                Study.pk, Study.study_uid, Study.patient_pk, Study.patient_class,
                Study.modalities, Study.study_date, Study.created_at,
            ).where(
                Study.hospital_pk == hospital,
                or_(
                    and_(Study.study_date != "", Study.study_date <= f"{cutoff:%Y%m%d}"),
                    Study.study_date == "",
                ),
            )
        )  # fmt: skip
        for pk, uid, patient_pk, cls, mods, sdate, created in rows:
            if uid in held_uids or patient_pk in held_patients:
                continue
            years, why = years_for(rules, defaults, cls, mods.split("\\"))
            ends = expiry(base_date(sdate, created), years)
            if ends <= today:
                out.append(Expired(uid, pk, patient_pk, cls, mods, sdate, ends, why))
    return out


def scan(archive: Archive, hospital: int, today: date | None = None) -> list[Deletion]:
    """List the expired studies for approval (new ones ``listed``); a listed or approved study
    that is held now, or no longer expired (a rule changed), is withdrawn. Returns the
    hospital's pending list."""
    found = {e.study_uid: e for e in expired_studies(archive, hospital, today)}
    with archive.db.write() as session:
        pending = {
            d.study_uid: d
            for d in session.execute(
                select(Deletion).where(
                    Deletion.hospital_pk == hospital, Deletion.status.in_(ACTIVE)
                )
            ).scalars()
        }
        for uid, row in pending.items():
            if uid not in found:
                row.status = "withdrawn"
        for uid, e in found.items():
            if uid not in pending:
                session.add(Deletion(hospital_pk=hospital, study_uid=uid, rule=e.rule[:128]))
    if found:
        log.info("retention: %d expired stud(ies) listed for approval", len(found))
    return pending_list(archive, hospital)


def pending_list(archive: Archive, hospital: int) -> list[Deletion]:
    with archive.db.read() as session:
        return list(
            session.execute(
                select(Deletion)
                .where(Deletion.hospital_pk == hospital, Deletion.status.in_(ACTIVE))
                .order_by(Deletion.pk)
            ).scalars()
        )


def study_facts(archive: Archive, uids: list[str]) -> dict[str, dict[str, Any]]:
    """What the approval page and the command line show of each listed study."""
    if not uids:
        return {}
    with archive.db.read() as session:
        rows = session.execute(
            select(
                Study.study_uid, Study.study_date, Study.modalities, Study.patient_class,
                Study.num_instances, Study.size_bytes, Study.description, Study.tier,
                Patient.patient_id, Patient.name,
            )
            .join(Patient, Study.patient_pk == Patient.pk)
            .where(Study.study_uid.in_(uids))
        ).all()  # fmt: skip
    return {r.study_uid: dict(r._mapping) for r in rows}


def approve(archive: Archive, hospital: int, study_uids: Iterable[str], *, by: str) -> int:
    """Approve listed studies for deletion; returns how many. Each approval is audited."""
    wanted = set(study_uids)
    approved: list[str] = []
    with archive.db.write() as session:
        rows = session.execute(
            select(Deletion).where(
                Deletion.hospital_pk == hospital,
                Deletion.status == "listed",
                Deletion.study_uid.in_(wanted),
            )
        ).scalars()
        for row in rows:
            row.status = "approved"
            row.approved_by = by[:128]
            row.approved_at = utcnow()
            approved.append(row.study_uid)
    for uid in approved:
        archive.audit.record(
            principal=by, action="retention-approve", resource=uid, outcome="allow",
            detail="approved for deletion (retention expired)", hospital=hospital,
        )  # fmt: skip
    return len(approved)

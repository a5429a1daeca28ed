"""Reports in: structured JSON, a PDF from the reporting system's virtual printer, or DICOM SR /
Encapsulated PDF that came through the one ingest path.

Whatever the door, a report ends up as one :class:`Report` row holding the fields a patient
page shows (findings 检查所见, impression 印象, doctors …) and, for PDFs, the original bytes
untouched in the blob store under ``reports/``. A report is matched to its study by study UID,
accession number or exam number; one that arrives before its images keeps waiting
(``study_uid`` None) and is matched again as studies arrive. A corrected report (same keys)
becomes the current version; older versions stay, marked not current.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError

from cloudfilm.keeping.retention import apply_report_class, normalize_class
from cloudfilm.portal.keys import new_id
from cloudfilm.portal.models import Report
from cloudfilm.portal.persons import keys_json, link_report
from cloudfilm.regional.feed import note_report
from cloudfilm.regional.identifiers import Identifier
from cloudfilm.storage.models import IndexState, Instance, Patient, Series, Study, utcnow

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

log = logging.getLogger(__name__)

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
}
REPORT_CLASSES = SR_CLASSES | {ENCAPSULATED_PDF}
MAX_PDF_BYTES = 20 * 1024 * 1024


class ReportError(ValueError):
    """The report cannot be accepted (nothing to match it with, unreadable PDF)."""


@dataclass
class ReportFields:
    """What a reporting system tells us; every field optional except something to match on."""

    study_uid: str = ""
    accession_number: str = ""
    exam_number: str = ""
    patient_id: str = ""
    patient_name: str = ""
    patient_sex: str = ""
    patient_age: str = ""
    phone: str = ""
    hospital: str = ""
    department: str = ""
    modality: str = ""
    exam_name: str = ""
    exam_date: str = ""
    body_part: str = ""
    findings: str = ""
    impression: str = ""
    reporting_doctor: str = ""
    reviewing_doctor: str = ""
    report_time: str = ""
    patient_class: str = ""
    """``inpatient`` (住院, HL7 PV1-2 ``I``), ``outpatient`` (门诊, ``O``), ``emergency``
    (急诊, ``E``) or ``checkup`` (体检): what the retention rules go by (keeping.retention)."""

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> ReportFields:
        out = cls()
        for name in cls.names():
            value = data.get(name)
            if value is not None:
                setattr(out, name, str(value).strip())
        return out

    def merged_over(self, base: ReportFields) -> ReportFields:
        """These values where given, ``base``'s (e.g. extracted from a PDF) elsewhere."""
        out = ReportFields(**vars(base))
        for name, value in vars(self).items():
            if value:
                setattr(out, name, value)
        return out


# --- PDF text --------------------------------------------------------------------------------

_LABEL = r"[:：]\s*"
_ONE = {
    "patient_name": r"姓\s*名",
    "patient_sex": r"性\s*别",
    "patient_age": r"年\s*龄",
    "patient_id": r"(?:影像号|病人ID|患者ID)",
    "exam_number": r"检查号",
    "accession_number": r"(?:申请单号|登记号|Accession)",
    "department": r"科\s*室",
    "exam_date": r"检查日期",
    "report_time": r"报告日期",
    "body_part": r"检查部位",
    "reporting_doctor": r"报告医生",
    "reviewing_doctor": r"审核医生",
}
_ENDS = r"(?=印\s*象|诊断意见|诊断结论|报告医生|审核医生|Impression|$)"


def pdf_text(data: bytes) -> str:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        return "\n".join(page.extract_text() or "" for page in reader.pages)
    except Exception as exc:
        raise ReportError(f"the PDF cannot be read: {exc}") from exc


def fields_from_text(text: str) -> ReportFields:
    """The labelled fields of a Chinese radiology report (as printed in seed 003)."""
    out = ReportFields()
    for name, label in _ONE.items():
        m = re.search(label + _LABEL + r"([^\s:：]+(?: \d{1,2}:\d{2})?)", text)
        if m:
            setattr(out, name, m.group(1).strip())
    m = re.search(r"(?:检查所见|影像所见|Findings)" + _LABEL + r"(.*?)" + _ENDS, text, re.S)
    if m:
        out.findings = _paragraph(m.group(1))
    m = re.search(
        r"(?:印\s*象|诊断意见|诊断结论|Impression)" + _LABEL + r"(.*?)(?=报告医生|审核医生|$)",
        text,
        re.S,
    )
    if m:
        out.impression = _paragraph(m.group(1))
    for line in text.splitlines():
        if "医院" in line and len(line.strip()) <= 40:
            out.hospital = line.strip()
            break
    return out


def _paragraph(text: str) -> str:
    """Join the lines a PDF broke, keep the paragraph breaks (numbered items, blank lines)."""
    lines = [ln.strip() for ln in text.strip().splitlines()]
    out = ""
    for ln in lines:
        if not ln:
            continue
        if out and (re.match(r"^\d+[、.．]", ln) or out.endswith(("。", "；"))):
            out += "\n" + ln
        else:
            out += ln
    return out


# --- DICOM SR / Encapsulated PDF -----------------------------------------------------------


def fields_from_dicom(data: bytes) -> tuple[ReportFields, bytes | None]:
    """Fields (and the PDF, for an Encapsulated PDF) of a DICOM report instance."""
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(data))
    out = ReportFields(
        study_uid=str(ds.get("StudyInstanceUID", "")),
        accession_number=str(ds.get("AccessionNumber", "")),
        patient_id=str(ds.get("PatientID", "")),
        patient_name=_person(ds.get("PatientName", "")),
        patient_sex=str(ds.get("PatientSex", "")),
        hospital=str(ds.get("InstitutionName", "")),
        exam_date=str(ds.get("StudyDate", "")),
        exam_name=str(ds.get("StudyDescription", "")),
    )
    pdf: bytes | None = None
    if str(ds.SOPClassUID) == ENCAPSULATED_PDF:
        pdf = bytes(ds.EncapsulatedDocument)
        if pdf.endswith(b"\x00"):
            pdf = pdf[:-1]  # padded to an even length
        text_fields = fields_from_text(pdf_text(pdf))
        return out.merged_over(text_fields), pdf
    texts: list[tuple[str, str]] = []
    _walk_sr(ds, texts, "")
    for concept, value in texts:
        low = concept.lower()
        if any(k in low for k in ("finding", "所见")):
            out.findings = "\n".join(filter(None, [out.findings, value]))
        elif any(k in low for k in ("impression", "conclusion", "印象", "诊断")):
            out.impression = "\n".join(filter(None, [out.impression, value]))
    if not out.findings and not out.impression:
        out.findings = "\n".join(v for _c, v in texts)
    observer = ds.get("VerifyingObserverSequence")
    if observer:
        out.reviewing_doctor = _person(observer[0].get("VerifyingObserverName", ""))
    return out, None


def _person(value: object) -> str:
    text = str(value)
    groups = text.split("=")
    return next((g.replace("^", "") for g in reversed(groups) if g), "")


def _walk_sr(item: Any, out: list[tuple[str, str]], concept: str) -> None:
    for child in item.get("ContentSequence", []) or []:
        name = concept
        if child.get("ConceptNameCodeSequence"):
            name = str(child.ConceptNameCodeSequence[0].get("CodeMeaning", concept))
        if child.get("ValueType") == "TEXT" and child.get("TextValue"):
            out.append((name, str(child.TextValue)))
        _walk_sr(child, out, name)


# --- storing and matching -------------------------------------------------------------------


def save_report(
    archive: Archive,
    given: ReportFields,
    *,
    source: str,
    hospital: int,
    pdf: bytes | None = None,
    source_sop_uid: str | None = None,
    identifiers: Sequence[Identifier] = (),
) -> Report:
    """Store a report of ``hospital`` (new, or a new version of one with the same keys) and
    match it to that hospital's study: an accession number means nothing across hospitals."""
    given = ReportFields(**{n: _storable(v) for n, v in vars(given).items()})
    given.patient_class = normalize_class(given.patient_class)
    if not (given.study_uid or given.accession_number or given.exam_number):
        raise ReportError("a report needs study_uid, accession_number or exam_number to match")
    if given.study_uid and not _UID.match(given.study_uid):
        raise ReportError("study_uid is not a DICOM UID (digits and dots, at most 64)")
    pdf_key = None
    if pdf is not None:
        if len(pdf) > MAX_PDF_BYTES:
            raise ReportError("the PDF is larger than 20 MB")
        pdf_key = f"reports/{hashlib.sha256(pdf).hexdigest()}.pdf"
        if not archive.blobs.exists(pdf_key):
            archive.blobs.put(pdf_key, pdf)
    with archive.db.write() as session:
        matched = _match(session, given, hospital)
        if matched:  # a correction is a new report for the same study
            same = Report.study_uid == matched
        else:  # still waiting for its images: the same keys
            keys = []
            if given.study_uid:
                keys.append(Report.claimed_study_uid == given.study_uid)
            if given.accession_number:
                keys.append(Report.accession_number == given.accession_number)
            if given.exam_number:
                keys.append(Report.exam_number == given.exam_number)
            same = and_(Report.study_uid.is_(None), or_(*keys))
        previous = session.execute(
            select(Report)
            .where(Report.current.is_(True), Report.hospital_pk == hospital, same)
            .order_by(Report.pk.desc())
        ).scalars()
        version = 1
        for old in previous:
            old.current = False
            version = max(version, old.version + 1)
        row = Report(
            report_id=new_id(),
            hospital_pk=hospital,
            claimed_study_uid=given.study_uid,
            source=source,
            source_sop_uid=source_sop_uid,
            pdf_key=pdf_key,
            version=version,
            current=True,
            received_at=utcnow(),
            **{n: getattr(given, n)[: _limit(n)] for n in ReportFields.names() if n != "study_uid"},
        )
        row.study_uid = matched
        row.person_keys = keys_json(archive.secret, identifiers)
        session.add(row)
        if matched:
            link_report(session, row)
            apply_report_class(session, matched, row.patient_class)
        if matched:
            note_report(session, matched)  # the study changed: the index feed says so
        rekeyed = False
        if matched and version > 1:
            from cloudfilm.portal.films import follow_phone_correction  # films imports us

            rekeyed = follow_phone_correction(session, archive, matched, row.phone)
    log.info("report %s v%d (%s) matched=%s", row.report_id, version, source, bool(row.study_uid))
    if rekeyed:
        archive.audit.record(
            principal="system:films", action="update", resource=str(matched), outcome="allow",
            detail=f"report v{version} corrected the phone number: link to be sent to it",
        )  # fmt: skip
    return row


_UID = re.compile(r"^[0-9.]{1,64}$")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable(text: str) -> str:
    """Without NUL (DICOM pads with it; PostgreSQL refuses it) and with unpaired surrogates
    (JSON's ``\\ud800`` escapes, which UTF-8 cannot encode) shown as U+FFFD."""
    return _SURROGATE.sub("\ufffd", text.replace("\x00", ""))


def _limit(name: str) -> int:
    column = Report.__table__.c[name]
    return getattr(column.type, "length", None) or 1_000_000


def _match(session: Any, f: ReportFields, hospital: int) -> str | None:
    if f.study_uid:
        hit = session.execute(
            select(Study.study_uid).where(
                Study.study_uid == f.study_uid, Study.hospital_pk == hospital
            )
        ).first()
        if hit:
            return hit[0]
    for number in filter(None, (f.accession_number, f.exam_number)):
        hit = session.execute(
            select(Study.study_uid)
            .where(
                Study.hospital_pk == hospital,
                or_(Study.accession_number == number, Study.study_id == number),
            )
            .order_by(Study.pk.desc())
        ).first()
        if hit:
            return hit[0]
    return None


def match_waiting(archive: Archive) -> int:
    """Match reports that arrived before their images; returns how many found their study."""
    with archive.db.read() as session:
        waiting = session.execute(
            select(Report.pk).where(Report.current.is_(True), Report.study_uid.is_(None)).limit(1)
        ).first()
    if waiting is None:
        return 0
    with archive.db.write() as session:
        waiting = session.execute(
            select(Report).where(Report.current.is_(True), Report.study_uid.is_(None)).limit(500)
        ).scalars()
        found = 0
        for row in waiting:
            uid = _match(
                session,
                ReportFields(
                    study_uid=row.claimed_study_uid,
                    accession_number=row.accession_number,
                    exam_number=row.exam_number,
                ),
                row.hospital_pk,
            )
            if uid:
                row.study_uid = uid
                found += 1
                link_report(session, row)
                apply_report_class(session, uid, row.patient_class)
                note_report(session, uid)  # the study changed: the index feed says so
                older = session.execute(
                    select(Report).where(
                        Report.study_uid == uid, Report.current.is_(True), Report.pk != row.pk
                    )
                ).scalars()
                for old in older:  # the study had a report already: this one is newer
                    old.current = False
                    row.version = max(row.version, old.version + 1)
    return found


class DicomReportScanner:
    """Finds SR / Encapsulated PDF instances stored by any process (DIMSE workers included)
    that are not reports yet. Polls the index by instance pk, so nothing depends on an
    in-process event.

    Each pass reads only instances above a watermark (a primary-key range, cheap however big the
    index). The watermark trails by ``LAG`` seconds of arrivals, since on PostgreSQL a row with
    a lower pk may commit after a higher one; rows seen twice are skipped by their SOP UID. It is
    kept in ``index_state`` so a restart does not read the whole index again.
    """

    LAG = 30.0
    KEY = "portal.report_scan_pk"

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.safe_pk: int | None = None
        self.saved_at = 0.0

    def _load(self) -> int:
        with self.archive.db.read() as session:
            row = session.get(IndexState, self.KEY)
        return int(row.value) if row and row.value.isdigit() else 0

    def _advance(self) -> None:
        cutoff = utcnow() - timedelta(seconds=self.LAG)
        with self.archive.db.read() as session:
            hi = session.execute(
                select(func.max(Instance.pk)).where(
                    Instance.pk > self.safe_pk, Instance.received_at < cutoff
                )
            ).scalar()
        if hi is None:
            return
        self.safe_pk = hi
        if time.monotonic() - self.saved_at > 60:
            self.saved_at = time.monotonic()
            with self.archive.db.write() as session:
                row = session.get(IndexState, self.KEY)
                if row is None:
                    session.add(IndexState(key=self.KEY, value=str(hi)))
                else:
                    row.value = str(hi)

    def scan(self) -> int:
        if self.safe_pk is None:
            self.safe_pk = self._load()
        with self.archive.db.read() as session:
            rows = session.execute(
                select(Instance.pk, Instance.sop_uid, Instance.blob_key, Study.hospital_pk)
                .join(Series, Instance.series_pk == Series.pk)
                .join(Study, Series.study_pk == Study.pk)
                .where(Instance.pk > self.safe_pk, Instance.sop_class_uid.in_(REPORT_CLASSES))
                .order_by(Instance.pk)
                .limit(500)
            ).all()
            known = set(
                session.execute(
                    select(Report.source_sop_uid).where(
                        Report.source_sop_uid.in_([r.sop_uid for r in rows])
                    )
                ).scalars()
            )
        done = 0
        for pk, sop_uid, blob_key, owner in rows:
            if sop_uid in known:
                continue
            try:
                f, pdf = fields_from_dicom(self.archive.blobs.get(blob_key))
                source = "dicom-pdf" if pdf is not None else "dicom-sr"
                save_report(
                    self.archive,
                    f,
                    source=source,
                    hospital=owner,
                    pdf=pdf,
                    source_sop_uid=sop_uid,
                )
                done += 1
            except IntegrityError:
                pass  # another server process read it first
            except Exception:
                log.exception("could not read the report in instance pk %d", pk)
                known.add(sop_uid)
        if len(rows) < 500:
            self._advance()
        else:  # a backlog: move past what this pass handled
            self.safe_pk = max(self.safe_pk, rows[-1].pk)
        return done


def current_report(archive: Archive, study_uid: str) -> Report | None:
    with archive.db.read() as session:
        return (
            session.execute(
                select(Report)
                .where(Report.study_uid == study_uid, Report.current.is_(True))
                .order_by(Report.pk.desc())
            )
            .scalars()
            .first()
        )


def report_versions(archive: Archive, study_uid: str) -> list[Report]:
    with archive.db.read() as session:
        return list(
            session.execute(
                select(Report).where(Report.study_uid == study_uid).order_by(Report.version.desc())
            ).scalars()
        )


def study_summary(archive: Archive, study_uid: str) -> dict[str, str]:
    """Exam facts from the image index, for pages when the report leaves them out."""
    with archive.db.read() as session:
        row = session.execute(
            select(Study, Patient.name)
            .join(Patient, Study.patient_pk == Patient.pk)
            .where(Study.study_uid == study_uid)
        ).first()
        if row is None:
            return {}
        study, name = row
        body = session.execute(
            select(Series.body_part).where(Series.study_pk == study.pk, Series.body_part != "")
        ).first()
        return {
            "study_date": study.study_date,
            "modalities": study.modalities.replace("\\", "/"),
            "description": study.description,
            "institution": study.institution_name,
            "patient_name": _person(name),
            "body_part": body[0] if body else "",
            "num_instances": str(study.num_instances),
            "num_series": str(study.num_series),
            "index_id": study.index_id or "",
        }

"""De-identification by DICOM PS3.15 Annex E: the Basic Application Level Confidentiality
Profile, with the Retain Longitudinal Temporal Information with Modified Dates option and the
Clean Descriptors option to choose.

Why not a library: pydicom's ``deid`` applies recipes of its own (not Table E.1-1 and its
option columns) and ``dicognito`` has its own list of attributes without the options; the
table is therefore generated from the standard (``deid_table.py``, scripts/gen_deid_table.py)
and applied here, attribute by attribute, at every level of nesting.

What each action does (PS3.15 E.3.1):

- ``X`` remove; ``Z`` empty value; ``D`` a dummy value of the VR (``ANONYMIZED``,
  ``19000101``...; a sequence is emptied); ``K`` keep; ``U`` a new UID, the same for the same
  original in every export of a project (``keeping_deid_map``).
- The compound codes (``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``) allow the later action where the
  IOD requires the attribute; the index cannot tell each IOD's Type here, so the last (the
  one that is conformant in every IOD) is taken: a dummy value says nothing either.
  ``X/Z/U*`` (referenced image sequences) keeps the sequence and replaces the UIDs in it.
- ``C`` with Modified Dates: dates and date-times move by a whole number of days, the same
  for every study of the patient (a keyed offset), so intervals between exams survive; times
  of day stay. ``C`` with Clean Descriptors: the text stays, with every identifying value of
  the same instance (the patient's names and IDs, accession, physicians, institution, phone,
  birth date) and every run of six or more digits replaced by ``***``.
- Patient ID becomes a pseudonym (``P`` + 10 digits), Patient's Name the same pseudonym, the
  Accession Number a keyed one: the same patient (hospital, ID, issuer) gets the same ones
  in every export of the project.
- Private attributes are removed (the profile's row for them), curves and overlays too (a
  whole 60xx group when its Overlay Data goes).
- Pixel data is never touched: the Pixel Data element's bytes are written out as received.
  Burned-in annotation cannot be removed by this profile: an instance whose Burned In
  Annotation (0028,0301) is ``YES``, or whose modality or SOP class usually carries text in
  its pixels (ultrasound, secondary capture, photographs, documents) without ``NO`` there, is
  *flagged* (:func:`burned_in`) and the export withholds it unless asked otherwise.

The mapping is keyed by an HMAC of the original with the server secret (``archive.secret``):
the table holds no original value, and nothing of it is exported.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cloudfilm.access.keys import mac_hex
from cloudfilm.keeping.deid_table import MASKED, PRIVATE, TABLE, Row
from cloudfilm.keeping.models import DeidMapping

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

PIXEL_DATA = 0x7FE00010
PATIENT_ID, PATIENT_NAME, ACCESSION = 0x00100020, 0x00100010, 0x00080050
BASIC = ("113100", "Basic Application Confidentiality Profile")
OPTION_CODES = {
    "modified_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
}
DUMMY = {
    "PN": "ANONYMOUS", "DA": "19000101", "TM": "000000", "DT": "19000101000000",
    "AS": "000Y", "IS": "0", "DS": "0", "CS": "ANONYMIZED", "AE": "ANONYMOUS",
}  # fmt: skip
TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC", "PN", "CS", "AE"})
LIKELY_BURNED_IN_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "GM", "DOC", "IVUS"})
LIKELY_BURNED_IN_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture (and the multi-frame ones)
    "1.2.840.10008.5.1.4.1.1.6.",  # Ultrasound
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame
    "1.2.840.10008.5.1.4.1.1.77.1.",  # Visible Light (endoscopy, photographs)
    "1.2.840.10008.5.1.4.1.1.104.",  # Encapsulated PDF / CDA documents
)


@dataclass(frozen=True)
class Options:
    modified_dates: bool = False
    """Retain Longitudinal Temporal Information with Modified Dates."""
    clean_descriptors: bool = False
    project: str = "default"
    """Pseudonyms are per project: two projects cannot join their data sets."""

    @property
    def selected(self) -> tuple[str, ...]:
        return tuple(n for n in ("modified_dates", "clean_descriptors") if getattr(self, n))

    @property
    def method(self) -> str:
        """De-identification Method (LO, 64 characters; the code sequence has the full names)."""
        short = {"modified_dates": "Modified Dates", "clean_descriptors": "Clean Descriptors"}
        return ", ".join(["PS3.15 E.1-1 Basic Profile", *(short[n] for n in self.selected)])


def row_of(tag: int) -> Row | None:
    """Table E.1-1's row for an attribute (private ones: the profile's private row)."""
    row = TABLE.get(tag)
    if row is not None:
        return row
    for mask, value, name, basic, options in MASKED:
        if tag & mask == value:
            return name, basic, options
    if (tag >> 16) % 2 == 1:
        return PRIVATE
    return None


def action_of(tag: int, options: Options) -> str | None:
    """The action for ``tag`` under these options (an option's column wins where it has
    one), or None when the profile does not name the attribute (it is kept)."""
    row = row_of(tag)
    if row is None:
        return None
    _name, basic, columns = row
    for option in options.selected:
        if option in columns:
            return columns[option]
    return basic


def resolve(action: str, vr: str = "") -> str:
    """The one action taken: ``U*`` for the starred code, else the last of a compound one;
    a dummy UID (``D`` on a UI, e.g. Annotation Group UID) is a consistent new UID too."""
    if action.endswith("*"):
        return "U*"
    last = action.split("/")[-1]
    return "U" if last == "D" and vr == "UI" else last


def burned_in(ds: Dataset) -> str | None:
    """Why this instance may carry identifying text in its pixels, or None."""
    said = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if said == "YES":
        return "Burned In Annotation (0028,0301) is YES"
    if said == "NO":
        return None
    modality = str(ds.get("Modality", "") or "").upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if modality in LIKELY_BURNED_IN_MODALITIES:
        return (
            f"modality {modality} usually carries text in its pixels (Burned In Annotation not NO)"
        )
    if any(sop_class.startswith(p) for p in LIKELY_BURNED_IN_CLASSES):
        return f"SOP class {sop_class} usually carries text (Burned In Annotation not NO)"
    return None


class Pseudonyms:
    """Replacements kept by the archive (``keeping_deid_map``), keyed by an HMAC of the
    original with the server secret, so two exports agree and the table holds no original."""

    def __init__(self, archive: Archive, project: str) -> None:
        self.archive = archive
        self.project = project[:64]
        self._cache: dict[tuple[str, str], str] = {}

    def _key(self, kind: str, original: str) -> str:
        return mac_hex(self.archive.secret, "deid", self.project, kind, original)

    def get(self, kind: str, original: str) -> str:
        return self.get_many(kind, [original])[original]

    def get_many(self, kind: str, originals: Iterable[str]) -> dict[str, str]:
        wanted = {o for o in originals if (kind, o) not in self._cache}
        if wanted:
            keys = {self._key(kind, o): o for o in wanted}
            found = self._read(kind, list(keys))
            missing = [k for k in keys if k not in found]
            if missing:
                found.update(self._create(kind, missing))
            for key, replacement in found.items():
                self._cache[(kind, keys[key])] = replacement
        return {o: self._cache[(kind, o)] for o in originals}

    def _read(self, kind: str, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self.archive.db.read() as session:
            for i in range(0, len(keys), 500):
                rows = session.execute(
                    select(DeidMapping.original_key, DeidMapping.replacement).where(
                        DeidMapping.project == self.project,
                        DeidMapping.kind == kind,
                        DeidMapping.original_key.in_(keys[i : i + 500]),
                    )
                )
                out.update(dict(rows.all()))
        return out

    def _create(self, kind: str, keys: list[str]) -> dict[str, str]:
        made = {k: new_replacement(kind) for k in keys}
        try:
            with self.archive.db.write() as session:
                session.add_all(
                    DeidMapping(project=self.project, kind=kind, original_key=k, replacement=v)
                    for k, v in made.items()
                )
        except IntegrityError:  # another export made some of them at the same moment
            made = self._read(kind, keys)
            if len(made) < len(keys):
                return {**made, **self._create(kind, [k for k in keys if k not in made])}
        return made


def new_replacement(kind: str) -> str:
    if kind == "uid":
        return f"2.25.{int.from_bytes(secrets.token_bytes(16), 'big')}"
    if kind == "date_shift":
        return str(-(365 + secrets.randbelow(3 * 365)))  # one to four years back
    prefix = {"patient_id": "P", "accession": "A"}.get(kind, "X")
    return f"{prefix}{secrets.randbelow(10**10):010d}"


@dataclass
class Context:
    options: Options
    uids: dict[str, str]
    shift_days: int = 0
    identifying: list[str] = field(default_factory=list)


def deidentify(
    ds: Dataset, options: Options, pseudonyms: Pseudonyms, *, patient_key: str
) -> Dataset:
    """De-identify ``ds`` in place (and return it). ``patient_key``: who the patient is in
    the archive (hospital, Patient ID, issuer): the pseudonyms and the date shift follow it."""
    uids: set[str] = set()
    _collect_uids(ds, options, uids)
    ctx = Context(options, pseudonyms.get_many("uid", sorted(uids)))
    if options.modified_dates:
        ctx.shift_days = int(pseudonyms.get("date_shift", patient_key))
    if options.clean_descriptors:
        ctx.identifying = identifying_values(ds)
    accession = str(ds.get("AccessionNumber", "") or "").strip()
    _walk(ds, ctx)
    pseudonym = pseudonyms.get("patient_id", patient_key)
    ds.PatientID = pseudonym
    ds.PatientName = pseudonym
    if accession:
        ds.AccessionNumber = pseudonyms.get("accession", f"{patient_key}|{accession}")
    _mark(ds, options)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for tag in list(meta.keys()):
            if int(tag) not in (0x00020001, 0x00020002, 0x00020010):
                del meta[tag]  # the sender's AE title and implementation go; ours are written
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _collect_uids(ds: Dataset, options: Options, out: set[str]) -> None:
    for elem in ds:
        action = action_of(int(elem.tag), options)
        if elem.VR == "SQ":
            if action is None or resolve(action) not in ("X", "Z", "D"):
                for item in elem.value or []:
                    _collect_uids(item, options, out)
        elif action is not None and resolve(action, elem.VR) == "U" and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            out.update(str(v) for v in values if str(v))


def _walk(ds: Dataset, ctx: Context) -> None:
    overlays_gone: set[int] = set()
    for elem in list(ds):
        tag = int(elem.tag)
        if tag == PIXEL_DATA:
            continue
        action = action_of(tag, ctx.options)
        if action is None:
            if elem.VR == "SQ":
                for item in elem.value or []:
                    _walk(item, ctx)
            continue
        what = resolve(action, elem.VR)
        if what == "X":
            if tag & 0xFF00FFFF == 0x60003000:
                overlays_gone.add(tag >> 16)
            del ds[elem.tag]
        elif what == "Z":
            elem.value = Sequence() if elem.VR == "SQ" else None
        elif what == "D":
            elem.value = Sequence() if elem.VR == "SQ" else _dummy(elem.VR)
        elif what in ("K", "U*"):
            if elem.VR == "SQ":
                for item in elem.value or []:
                    _walk(item, ctx)
        elif what == "U":
            _replace_uid(elem, ctx)
        elif what == "C":
            _clean(ds, elem, ctx)
    for group in overlays_gone:  # the rest of an overlay whose data went
        for elem in list(ds):
            if int(elem.tag) >> 16 == group:
                del ds[elem.tag]


def _dummy(vr: str) -> Any:
    if vr in DUMMY:
        return DUMMY[vr]
    if vr in TEXT_VRS:
        return "ANONYMIZED"
    if vr in ("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT"):
        return 0
    return b"" if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") else "ANONYMIZED"


def _replace_uid(elem: Any, ctx: Context) -> None:
    if not elem.value:
        return
    if elem.VM > 1:
        elem.value = [ctx.uids.get(str(v), str(v)) for v in elem.value]
    else:
        elem.value = ctx.uids.get(str(elem.value), str(elem.value))


def _clean(ds: Dataset, elem: Any, ctx: Context) -> None:
    if elem.VR == "SQ":
        for item in elem.value or []:
            _walk(item, ctx)
        return
    if elem.VR in ("DA", "DT", "TM"):
        if not ctx.options.modified_dates:
            elem.value = None
        elif elem.VR != "TM" and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            shifted = [shift_date(str(v), ctx.shift_days) for v in values]
            elem.value = shifted if elem.VM > 1 else shifted[0]
        return
    if ctx.options.clean_descriptors and elem.VR in TEXT_VRS and elem.value:
        values = elem.value if elem.VM > 1 else [elem.value]
        cleaned = [clean_text(str(v), ctx.identifying) for v in values]
        if elem.VR == "CS":  # code strings: upper case, digits, space, underscore only
            cleaned = [re.sub(r"[^A-Z0-9 _]", "", c.upper()).strip() for c in cleaned]
        elem.value = cleaned if elem.VM > 1 else cleaned[0]
        return
    del ds[elem.tag]  # nothing here knows how to clean it: it goes


def shift_date(value: str, days: int) -> str:
    """A DA (or the date part of a DT) moved by ``days``; what cannot be read is emptied."""
    try:
        day = datetime.strptime(value[:8], "%Y%m%d") + timedelta(days=days)
    except ValueError:
        return ""
    return f"{day:%Y%m%d}{value[8:]}"


_DIGITS = re.compile(r"\d{6,}")
_WRITTEN_DATE = re.compile(r"\d{4}\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}\s*日?")


def identifying_values(ds: Dataset) -> list[str]:
    """Strings of this instance that name the patient or the people and place around them."""
    found: set[str] = set()
    for keyword in (
        "PatientName", "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
        "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician",
        "PatientMotherBirthName", "OtherPatientNames",
    ):  # fmt: skip
        for value in _values(ds, keyword):
            found.add(value)
            for group in value.split("="):
                found.add(group.replace("^", ""))
                found.update(
                    p for p in group.split("^") if len(p) >= 2 or ord(p[:1] or "a") > 0x2E80
                )
    for keyword in (
        "PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "InstitutionName",
        "InstitutionAddress", "PatientAddress", "PatientTelephoneNumbers", "PatientBirthDate",
        "AdmissionID", "MedicalRecordLocator", "StationName", "InstitutionalDepartmentName",
    ):  # fmt: skip
        found.update(_values(ds, keyword))
    return sorted((s for s in found if s.strip()), key=len, reverse=True)


def _values(ds: Dataset, keyword: str) -> list[str]:
    try:
        value = ds.get(keyword)
    except Exception:
        return []
    if value in (None, ""):
        return []
    items = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    return [str(v).strip() for v in items if str(v).strip()]


def clean_text(text: str, identifying: list[str]) -> str:
    out = text
    for value in identifying:
        if len(value) >= 2 or ord(value[:1] or "a") > 0x2E80:
            out = re.sub(re.escape(value), "***", out, flags=re.IGNORECASE)
    out = _WRITTEN_DATE.sub("***", out)
    return _DIGITS.sub("***", out)


def _mark(ds: Dataset, options: Options) -> None:
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = options.method
    codes = []
    for value, meaning in [BASIC, *(OPTION_CODES[n] for n in options.selected)]:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if options.modified_dates else "REMOVED"

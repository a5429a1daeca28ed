"""Reading and checking one received instance before anything is written.

Real modalities send imperfect data, so the checks refuse only what would make the archive
wrong: bytes that are not DICOM, a file cut short, missing identifiers, values that cannot be
decoded (bad lengths, an unknown character set on non-ASCII text). Everything refused carries a
reason a hospital engineer can act on.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
import pydicom
from pydicom import config
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from cloudfilm.ingest.errors import Rejected, RejectReason
from cloudfilm.keeping.retention import class_from_dataset

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
PIXEL_DATA = 0x7FE00010
DEFLATED = "1.2.840.10008.1.2.1.99"
BULK_THRESHOLD = 1024
TEXT_VRS = {"AE", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT"}
"""Character set aliases seen from Chinese modalities, mapped to the DICOM defined term whose
repertoire contains theirs (GB18030 is a superset of GB2312 and GBK)."""
CHARSET_ALIASES = {"GB2312": "GB18030", "GB 2312": "GB18030", "CP936": "GBK", "UTF-8": "ISO_IR 192"}


@dataclass
class ParsedInstance:
    """What the index needs of one instance, taken from its bytes."""

    dataset: Dataset
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient: dict[str, str] = field(default_factory=dict)
    study: dict[str, str] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)
    instance: dict[str, Any] = field(default_factory=dict)
    meta_json: str = "{}"
    warnings: list[str] = field(default_factory=list)


def parse_instance(data: bytes) -> ParsedInstance:
    """Parse a Part-10 byte string; raise :class:`Rejected` with a reason when it is unusable."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise Rejected(RejectReason.NOT_DICOM, "not a DICOM Part-10 file (no 'DICM' preamble)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=False)
        except InvalidDicomError as exc:
            raise Rejected(RejectReason.NOT_DICOM, f"not DICOM: {exc}") from exc
        except (EOFError, OSError, ValueError, KeyError, NotImplementedError, zlib.error) as exc:
            raise Rejected(RejectReason.MALFORMED, f"cannot parse: {exc}") from exc
    deflated = str(ds.file_meta.get("TransferSyntaxUID", "")) == DEFLATED
    if not deflated:  # offsets of a deflated data set are in the inflated stream
        _check_lengths(ds, len(data))
    pixel_offset = pixel_length = None
    raw_pixels = ds._dict.get(pydicom.tag.Tag(PIXEL_DATA))
    if not deflated and isinstance(raw_pixels, RawDataElement) and raw_pixels.length != 0xFFFFFFFF:
        pixel_offset, pixel_length = raw_pixels.value_tell, raw_pixels.length

    meta = ds.file_meta
    ts = str(meta.get("TransferSyntaxUID", "") or "")
    if not ts:
        raise Rejected(RejectReason.MISSING_UID, "file meta has no Transfer Syntax UID")
    if not _UID_RE.match(ts):
        raise Rejected(RejectReason.MALFORMED, f"invalid Transfer Syntax UID {ts!r}")
    if not UID(ts).is_transfer_syntax:
        raise Rejected(RejectReason.MALFORMED, f"unknown Transfer Syntax UID {ts}")

    _normalise_charset(ds)
    meta_json = _json_or_reject(ds)

    uids = {}
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        value = str(ds.get(kw, "") or "").strip().rstrip("\x00")
        if not value:
            raise Rejected(RejectReason.MISSING_UID, f"missing {kw}")
        if len(value) > 64 or not _UID_RE.match(value):
            raise Rejected(RejectReason.MALFORMED, f"invalid {kw} {value!r}")
        uids[kw] = value
    media_sop = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip()
    mismatch = media_sop and media_sop != uids["SOPInstanceUID"]

    parsed = ParsedInstance(
        dataset=ds,
        transfer_syntax_uid=ts,
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        warnings=[str(w.message) for w in caught],
    )
    if mismatch:
        # Edited files often keep a stale file meta: the data set's own UID is the identity.
        parsed.warnings.append("MediaStorageSOPInstanceUID differs from SOPInstanceUID")
    _extract_attributes(ds, parsed)
    parsed.instance["pixel_data_offset"] = pixel_offset
    parsed.instance["pixel_data_length"] = pixel_length
    parsed.meta_json = meta_json
    return parsed


def _json_or_reject(ds: Dataset) -> str:
    """Decode every element once, by writing the metadata cache; refuse what cannot decode.

    The strict conversion is the fast path and also the validation. Only when it fails do we
    look closer: a value pydicom cannot decode at all (a 3-byte US) is refused; a value that
    decodes but is not valid JSON material (an IS of '1A', common in old files) is kept.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return dataset_json(ds, strict=True)
        except Exception:
            pass
        try:
            _decode_everything(ds)
        except Rejected:
            raise
        except Exception as exc:  # pydicom raises many types for undecodable values
            raise Rejected(RejectReason.MALFORMED, f"undecodable element: {exc}") from exc
        return dataset_json(ds)


def _check_lengths(ds: Dataset, total: int) -> None:
    """pydicom returns short values for a file cut inside an element; we refuse those."""
    for elem in ds._dict.values():
        if isinstance(elem, RawDataElement):
            length, tell = elem.length, elem.value_tell
            if length != 0xFFFFFFFF and tell is not None and tell + length > total:
                raise Rejected(
                    RejectReason.TRUNCATED,
                    f"truncated: element {elem.tag} declares {length} bytes at offset {tell}, "
                    f"file has {total} bytes",
                )
            if length != 0xFFFFFFFF and elem.value is not None and len(elem.value) != length:
                raise Rejected(RejectReason.TRUNCATED, f"truncated inside element {elem.tag}")


def _normalise_charset(ds: Dataset) -> None:
    """Map known aliases to DICOM terms; refuse an unknown one only when it matters."""
    raw = ds.get("SpecificCharacterSet")
    if raw is None:
        return
    terms = [raw] if isinstance(raw, str) else list(raw)
    fixed: list[str] = []
    unknown: list[str] = []
    for term in terms:
        t = (term or "").strip()
        t = CHARSET_ALIASES.get(t.upper(), t)
        if t and t not in python_encoding:
            unknown.append(t)
        fixed.append(t)
    if unknown:
        if _has_non_ascii_text(ds):
            raise Rejected(
                RejectReason.CHARSET,
                f"unknown Specific Character Set {'/'.join(unknown)!r} with non-ASCII text: "
                "names cannot be decoded; send GB18030, GBK or ISO_IR 192",
            )
        fixed = [t for t in fixed if t not in unknown] or [""]
    if fixed != terms:
        ds.SpecificCharacterSet = fixed if len(fixed) > 1 else fixed[0]


def _has_non_ascii_text(ds: Dataset) -> bool:
    for elem in ds._dict.values():
        if isinstance(elem, RawDataElement) and elem.VR in TEXT_VRS | {None}:
            value = elem.value or b""
            if isinstance(value, bytes) and any(b > 0x7F for b in value):
                return True
    return False


def _decode_everything(ds: Dataset) -> None:
    """Convert every raw element, so a bad VR or length is refused at the door."""
    for tag in list(ds._dict):
        if tag == PIXEL_DATA:
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value:
                _decode_everything(item)


_VALUES: dict[tuple[Any, ...], Any] = {}
"""Decoded values of the indexed attributes, keyed like ``_FRAGMENTS``: reading 25 attributes
through pydicom's keyword lookup cost more than the rest of the parse."""


def _value(ds: Dataset, kw: str) -> Any:
    tag = tag_for_keyword(kw)
    assert tag is not None
    elem = ds._dict.get(tag)
    if elem is None:
        return None
    key = _memo_key(tag, elem, str(ds._dict.get(0x00080005, "") and ds.SpecificCharacterSet))
    if key is None:
        return ds[tag].value
    try:
        return _VALUES[key]
    except KeyError:
        pass
    value = ds[tag].value
    if len(_VALUES) >= _FRAGMENTS_MAX:
        _VALUES.clear()
    _VALUES[key] = value
    return value


def _text(ds: Dataset, kw: str, limit: int = 256) -> str:
    value = _value(ds, kw)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        value = "\\".join(str(v) for v in value)
    return str(value).strip().rstrip("\x00")[:limit]


def _int(ds: Dataset, kw: str) -> int | None:
    value = _value(ds, kw)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _extract_attributes(ds: Dataset, p: ParsedInstance) -> None:
    pn = _value(ds, "PatientName")
    alphabetic = ideographic = phonetic = ""
    if pn is not None and str(pn):
        alphabetic, ideographic, phonetic = (
            str(pn.alphabetic or ""),
            str(pn.ideographic or ""),
            str(pn.phonetic or ""),
        )
    p.patient = {
        "patient_id": _text(ds, "PatientID", 64),
        "issuer": _text(ds, "IssuerOfPatientID", 64),
        "name": str(pn or "")[:324],
        "name_alphabetic": alphabetic[:200],
        "name_ideographic": ideographic[:200],
        "name_phonetic": phonetic[:200],
        "birth_date": _text(ds, "PatientBirthDate", 8),
        "sex": _text(ds, "PatientSex", 16),
    }
    p.study = {
        "study_date": _text(ds, "StudyDate", 8),
        "study_time": _text(ds, "StudyTime", 16),
        "accession_number": _text(ds, "AccessionNumber", 64),
        "study_id": _text(ds, "StudyID", 64),
        "description": _text(ds, "StudyDescription"),
        "referring_physician": _text(ds, "ReferringPhysicianName", 324),
        "institution_name": _text(ds, "InstitutionName"),
        "patient_class": class_from_dataset(ds),  # a report's class replaces it (keeping/)
    }
    p.series = {
        "modality": _text(ds, "Modality", 16),
        "series_number": _int(ds, "SeriesNumber"),
        "description": _text(ds, "SeriesDescription"),
        "body_part": _text(ds, "BodyPartExamined", 64),
        "series_date": _text(ds, "SeriesDate", 8),
        "series_time": _text(ds, "SeriesTime", 16),
    }
    p.instance = {
        "instance_number": _int(ds, "InstanceNumber"),
        "rows": _int(ds, "Rows"),
        "columns": _int(ds, "Columns"),
        "number_of_frames": _int(ds, "NumberOfFrames"),
    }


def _bulk_marker(elem: DataElement) -> str:
    """Large values are not kept in the index; DICOMweb turns this marker into a BulkDataURI."""
    return f"bulk:{elem.tag:08X}"


_FRAGMENTS: dict[tuple[Any, ...], Any] = {}
"""DICOM JSON of element values seen before, keyed by their raw bytes: the 300 slices of a
series repeat most of their header, and converting a value is most of an ingest's CPU."""
_FRAGMENTS_MAX = 50_000
_MEMO_MAX_VALUE = 256


def dataset_json(ds: Dataset, *, strict: bool = False) -> str:
    """DICOM JSON (PS3.18 F.2) of the data set without its bulk data, for the metadata cache.

    Same output as pydicom's ``Dataset.to_json_dict``; public, unambiguous elements of up to
    256 bytes are converted once per distinct raw value and character set (``_FRAGMENTS``).
    """
    body: dict[str, Any] = {}
    charset = str(ds.get("SpecificCharacterSet", "") or "")
    context = contextlib.nullcontext() if strict else config.strict_reading()
    with context:
        for tag, elem in list(ds._dict.items()):
            key = _memo_key(tag, elem, charset)
            if key is not None:
                fragment = _FRAGMENTS.get(key)
                if fragment is not None:
                    body[f"{tag:08X}"] = fragment
                    continue
            try:
                fragment = ds[tag].to_json_dict(
                    bulk_data_element_handler=_bulk_marker, bulk_data_threshold=BULK_THRESHOLD
                )
            except Exception:
                if strict:
                    raise
                continue  # as suppress_invalid_tags does: the element is left out
            if key is not None:
                if len(_FRAGMENTS) >= _FRAGMENTS_MAX:
                    _FRAGMENTS.clear()
                _FRAGMENTS[key] = fragment
            body[f"{tag:08X}"] = fragment
    return orjson.dumps(body).decode()


def _memo_key(tag: int, elem: Any, charset: str) -> tuple[Any, ...] | None:
    if not isinstance(elem, RawDataElement) or tag & 0x00010000 or tag == PIXEL_DATA:
        return None  # converted already, private (VR depends on the creator), or bulk
    value = elem.value
    if value is None or len(value) > _MEMO_MAX_VALUE:
        return None
    vr = elem.VR or dictionary_VR_or_none(tag)
    if vr is None or vr == "SQ" or " " in vr:
        return None  # unknown, a sequence, or "US or SS": depends on other elements
    return (tag, vr, value, elem.is_little_endian, charset)


def dictionary_VR_or_none(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None

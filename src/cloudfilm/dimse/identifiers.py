"""C-FIND identifiers to index queries and back (PS3.4 C.4.1), in the language of pydicom."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from cloudfilm.storage.query import LEVELS, Level, Query

_SKIP = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability"}
_NUMERIC_VRS = {"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"}


class IdentifierError(ValueError):
    """The identifier cannot be answered (no or bad Query/Retrieve Level)."""


def query_from_identifier(identifier: Dataset) -> tuple[Query, list[str]]:
    """Build an index query and list the keywords the peer asked to have returned."""
    _guess_charset(identifier)
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS:
        raise IdentifierError(f"missing or invalid QueryRetrieveLevel {level!r}")
    keys: dict[str, str] = {}
    requested: list[str] = []
    for elem in identifier:
        keyword = elem.keyword or keyword_for_tag(elem.tag)
        if not keyword or keyword in _SKIP or elem.tag.group in (0x0000, 0x0002):
            continue
        requested.append(keyword)
        if elem.VR == "SQ":
            continue
        keys[keyword] = _as_text(elem.value)
    return Query(level=level, keys=keys, want_meta=True), requested  # type: ignore[arg-type]


def _guess_charset(identifier: Dataset) -> None:
    """Many Chinese clients send UTF-8 or GB18030 names without declaring a character set:
    when the default repertoire cannot hold the bytes, decode them as UTF-8, else GB18030."""
    if identifier.get("SpecificCharacterSet"):
        return
    for tag, elem in list(identifier._dict.items()):
        value = elem.value if isinstance(elem, RawDataElement) else None
        if not isinstance(value, bytes) or all(b < 0x80 for b in value):
            continue
        vr = elem.VR or dictionary_VR(tag)
        if vr not in ("PN", "LO", "SH", "LT", "ST", "UT", "UC"):
            continue
        for codec in ("utf-8", "gb18030"):
            try:
                text = value.decode(codec).rstrip(" \x00")
            except UnicodeDecodeError:
                continue
            identifier.add(DataElement(tag, vr, text))
            break
    identifier.SpecificCharacterSet = "ISO_IR 192"


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_as_text(v) for v in value)
    return str(value)


def response_identifier(
    row: dict[str, Any], requested: list[str], level: Level, retrieve_ae: str
) -> Dataset:
    """One C-FIND response: every requested key, filled from the index or the cached metadata."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: Chinese names come out whole
    ds.QueryRetrieveLevel = level
    ds.RetrieveAETitle = retrieve_ae
    meta: Dataset | None = None
    for keyword in requested:
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        if keyword in row:
            _set(ds, keyword, tag, row[keyword])
            continue
        if meta is None:
            meta = _meta_dataset(row.get("_meta") or {})
        if tag in meta:
            ds[tag] = meta[tag]
        else:
            ds.add(DataElement(tag, dictionary_VR(tag), None))
    return ds


def _set(ds: Dataset, keyword: str, tag: int, value: Any) -> None:
    vr = dictionary_VR(tag)
    if value in (None, ""):
        ds.add(DataElement(tag, vr, None))
        return
    if vr in _NUMERIC_VRS:
        ds.add(DataElement(tag, vr, int(value)))
    elif vr == "IS":
        ds.add(DataElement(tag, vr, str(value)))
    elif isinstance(value, str) and "\\" in value and vr in ("CS", "UI"):
        ds.add(DataElement(tag, vr, value.split("\\")))
    else:
        ds.add(DataElement(tag, vr, value))


def _meta_dataset(meta: dict[str, Any]) -> Dataset:
    try:
        return Dataset.from_json(meta, bulk_data_uri_handler=lambda *_args: b"")
    except Exception:
        return Dataset()

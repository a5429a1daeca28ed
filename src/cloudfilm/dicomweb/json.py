"""DICOM JSON (PS3.18 F.2) helpers: search results from index rows, metadata from the cache.

The index keeps each instance's DICOM JSON with bulk values replaced by ``bulk:<tag>`` markers
(see cloudfilm.ingest.parse). Here those markers become real BulkDataURIs, with the path of
sequence items in the URI so a nested value (an icon image inside a sequence) resolves to
itself and not to the top-level element with the same tag.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
MARKER = '"bulk:'


@lru_cache(maxsize=4096)
def resolve_attribute(name: str) -> tuple[str, str] | None:
    """Keyword or 8-hex tag → (keyword, TAG); None if it is neither."""
    name = name.strip()
    if _TAG_RE.match(name):
        tag = int(name, 16)
        return keyword_for_tag(tag) or name.upper(), f"{tag:08X}"
    tag = tag_for_keyword(name)
    if tag is None:
        return None
    return name, f"{tag:08X}"


@lru_cache(maxsize=4096)
def vr_of(keyword: str) -> str:
    try:
        return dictionary_VR(keyword)
    except KeyError:
        return "UN"


def _pn_value(text: str) -> dict[str, str]:
    groups = text.split("=")
    out = {}
    for name, value in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False):
        if value:
            out[name] = value
    return out


def element(keyword: str, value: Any) -> dict[str, Any]:
    """One DICOM JSON element from a Python value taken from the index."""
    vr = vr_of(keyword)
    if value is None or value == "":
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [_pn_value(str(value))]}
    if vr in ("IS", "US", "UL", "SS", "SL", "UV", "SV"):
        try:
            return {"vr": vr, "Value": [int(value)]}
        except (TypeError, ValueError):
            return {"vr": vr}
    if vr in ("DS", "FL", "FD"):
        return {"vr": vr, "Value": [float(value)]}
    if isinstance(value, str) and "\\" in value and vr not in ("LT", "ST", "UT", "UR"):
        return {"vr": vr, "Value": [v for v in value.split("\\")]}
    return {"vr": vr, "Value": [value]}


def dataset(items: Iterable[tuple[str, Any]]) -> dict[str, dict[str, Any]]:
    """A DICOM JSON object from (keyword, value) pairs, keys sorted by tag."""
    out: dict[str, dict[str, Any]] = {}
    for keyword, value in items:
        resolved = resolve_attribute(keyword)
        if resolved is None:
            continue
        out[resolved[1]] = element(resolved[0], value)
    return dict(sorted(out.items()))


def _rewrite(obj: dict[str, Any], base: str, prefix: str) -> None:
    for tag, elem in obj.items():
        uri = elem.get("BulkDataURI")
        if isinstance(uri, str) and uri.startswith("bulk:"):
            elem["BulkDataURI"] = f"{base}/bulkdata/{prefix}{tag}"
        if elem.get("vr") == "SQ":
            for i, item in enumerate(elem.get("Value") or []):
                if isinstance(item, dict):
                    _rewrite(item, base, f"{prefix}{tag}/{i}/")


def instance_metadata_json(meta_json: str, instance_url: str) -> str:
    """The cached DICOM JSON of one instance with BulkDataURIs pointing at ``instance_url``.

    Most instances have no bulk value inside a sequence: then a string replacement is enough
    and the JSON is never parsed (series metadata of 1,000 instances stays cheap).
    """
    if MARKER not in meta_json:
        return meta_json
    if '"SQ"' not in meta_json:
        return meta_json.replace(MARKER, f'"{instance_url}/bulkdata/')
    obj = json.loads(meta_json)
    _rewrite(obj, instance_url, "")
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def bulk_path(path: str) -> list[int | str]:
    """``0040A730/1/7FE00010`` → ["0040A730", 1, "7FE00010"]; ValueError if malformed."""
    parts = path.strip("/").split("/")
    if len(parts) % 2 != 1:
        raise ValueError("bulk data path must be TAG[/ITEM/TAG…]")
    out: list[int | str] = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            if not _TAG_RE.match(part):
                raise ValueError(f"{part!r} is not a tag")
            out.append(part.upper())
        else:
            out.append(int(part))
    return out

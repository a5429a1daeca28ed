"""QIDO-RS (PS3.18 10.6): search for studies, series and instances on the shared query engine.

Matching itself (single value, wildcard, ranges, UID lists, names in any component group) is the
engine's, the same that answers C-FIND; this module only turns URL parameters into engine keys
and engine rows into DICOM JSON with the return attributes PS3.18 Table 10.6.3-3 requires.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from cloudfilm.access import Action
from cloudfilm.dicomweb.json import element, resolve_attribute, vr_of
from cloudfilm.dicomweb.negotiate import choose_simple
from cloudfilm.dicomweb.resources import base_url
from cloudfilm.dicomweb.stow import PRIVATE_CREATOR
from cloudfilm.dicomweb.wado import JSON_TYPES, UID
from cloudfilm.http.caching import REVALIDATE, make_etag, not_modified
from cloudfilm.http.params import INDEX_INT_MAX
from cloudfilm.http.problems import Problem
from cloudfilm.http.security import ArchiveDep, PrincipalDep
from cloudfilm.storage.query import ATTRIBUTES, Level, Query, run_query

router = APIRouter(prefix="/dicom-web", tags=["QIDO-RS"])

MAX_RESULTS = 1000
"""Largest page we return; a client asks for more with ``offset`` (PS3.18 8.3.4.4)."""
DEFAULT_LIMIT = 100
"""Page size when the client gives no ``limit`` (as large archives do: a search for ``wang*``
over 100,000 studies should not build 1,000 results nobody reads). A full page says so in a
Warning header, and ``limit`` up to MAX_RESULTS asks for more at once."""

_STUDY_REQUIRED = (
    "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability", "ModalitiesInStudy",
    "ReferringPhysicianName", "RetrieveURL", "PatientName", "PatientID", "PatientBirthDate",
    "PatientSex", "StudyInstanceUID", "StudyID", "StudyDescription",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
)  # fmt: skip
_SERIES_REQUIRED = (
    "Modality", "SeriesDescription", "RetrieveURL", "SeriesInstanceUID", "SeriesNumber",
    "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "BodyPartExamined", "StudyInstanceUID",
)  # fmt: skip
_INSTANCE_REQUIRED = (
    "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "RetrieveURL", "InstanceNumber",
    "Rows", "Columns", "BitsAllocated", "NumberOfFrames", "StudyInstanceUID",
    "SeriesInstanceUID",
)  # fmt: skip
_OPTIONAL_IF_PRESENT = {"PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
                        "BitsAllocated", "TimezoneOffsetFromUTC"}  # fmt: skip

_NOT_AT_SERIES = frozenset(
    {
        "00080008", "00080016", "00080018", "00080022", "00080023", "00080032", "00080033",
        "00200012", "00200013", "00200032", "00200037", "00201041", "00180050", "00180088",
    }
)  # fmt: skip
"""Instance-level attributes left out of ``includefield=all`` above the instance level."""
_NOT_AT_STUDY = _NOT_AT_SERIES | {"0020000E", "00200011", "00080060", "0008103E", "00080021",
                                  "00080031", "00180015"}  # fmt: skip

_INDEX_ID_NAMES = ("indexid", "00091002")
"""The imaging index ID as a query key: ``IndexID=`` (our extension; no DICOM attribute holds
it) or its private tag. Returned in study results as (0009,1002) of the private block
(0009,0010) "CLOUDFILM 1.0" (see stow.stored_sha256 for (0009,1001))."""
_INDEX_ID = re.compile(r"^[0-9X*?]{1,27}(\\[0-9X*?]{1,27})*$")
_DA = re.compile(r"^(\d{8})?(-(\d{8})?)?$")
_TM = re.compile(r"^(\d{2,6}(\.\d{1,6})?)?(-(\d{2,6}(\.\d{1,6})?)?)?$")


def _required(level: Level, study_scoped: bool, series_scoped: bool) -> list[str]:
    names: list[str] = []
    if level == "STUDY":
        return list(_STUDY_REQUIRED)
    if not study_scoped:
        names += _STUDY_REQUIRED
    if level == "SERIES":
        return names + list(_SERIES_REQUIRED)
    if not series_scoped:
        names += _SERIES_REQUIRED
    return names + list(_INSTANCE_REQUIRED)


def _check_value(keyword: str, value: str) -> str:
    vr = vr_of(keyword)
    if vr == "DA" and not _DA.match(value.replace(".", "").replace("/", "")):
        raise Problem(400, f"invalid date for {keyword}: {value!r} (YYYYMMDD or a range)")
    if vr == "TM" and not _TM.match(value.replace(":", "")):
        raise Problem(400, f"invalid time for {keyword}: {value!r} (HHMMSS or a range)")
    if vr == "UI":
        value = value.replace(",", "\\")
        if any(not re.match(r"^[0-9.]{1,64}$", u) for u in value.split("\\") if u):
            raise Problem(400, f"invalid UID in {keyword}: {value!r}")
    if keyword == "ModalitiesInStudy":
        value = value.replace(",", "\\")
    return value


def _parse(request: Request, level: Level) -> tuple[Query, list[str], bool, list[str]]:
    """(query, include fields, include all, warnings) from the URL parameters."""
    keys: dict[str, str] = {}
    include: list[str] = []
    include_all = False
    limit: int | None = None
    offset = 0
    fuzzy = False
    warnings: list[str] = []
    for name, value in request.query_params.multi_items():
        lname = name.lower()
        if lname in ("limit", "offset"):
            try:
                number = int(value)
            except ValueError:
                raise Problem(400, f"{lname} must be a non-negative integer") from None
            if number < 0:
                raise Problem(400, f"{lname} must be a non-negative integer")
            if lname == "limit":
                limit = number
            else:
                offset = min(number, INDEX_INT_MAX)  # further is past any archive's end too
        elif lname == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise Problem(400, "fuzzymatching must be true or false")
            fuzzy = value.lower() == "true"
        elif lname == "includefield":
            for field in (f.strip() for f in value.split(",") if f.strip()):
                if field.lower() == "all":
                    include_all = True
                    continue
                if field.lower() in _INDEX_ID_NAMES:
                    continue  # always returned at the study level
                resolved = resolve_attribute(field)
                if resolved is None:
                    if "." in field:
                        warnings.append(f"includefield {field} (sequence paths) is not supported")
                        continue
                    raise Problem(400, f"unknown attribute in includefield: {field!r}")
                include.append(resolved[0])
        elif lname in _INDEX_ID_NAMES:
            ids = value.replace(",", "\\")
            if not _INDEX_ID.match(ids):
                raise Problem(400, f"invalid imaging index ID: {value!r} (27 characters)")
            keys["IndexID"] = ids
        else:
            resolved = resolve_attribute(name)
            if resolved is None:
                if "." in name:
                    warnings.append(f"matching on {name} (sequence attributes) is not supported")
                    continue
                raise Problem(400, f"unknown query parameter or attribute {name!r}")
            keyword = resolved[0]
            checked = _check_value(keyword, value)
            keys[keyword] = f"{keys[keyword]}\\{checked}" if keys.get(keyword) else checked
    if limit is None:
        limit = DEFAULT_LIMIT
    elif limit > MAX_RESULTS:
        warnings.append(f"limit reduced to {MAX_RESULTS}")
        limit = MAX_RESULTS
    q = Query(level=level, keys=keys, limit=limit, offset=offset, fuzzy=fuzzy)
    return q, include, include_all, warnings


def _meta_value(meta: dict[str, Any], tag: str) -> dict[str, Any] | None:
    elem = meta.get(tag)
    if not elem or "BulkDataURI" in elem or "InlineBinary" in elem:
        return None
    return elem


def _plan(names: list[str], include: list[str], level: Level) -> list[tuple[str, str, str]]:
    """(keyword, tag, source) for each returned attribute, in tag order, worked out once per
    request rather than once per result row."""
    columns = ATTRIBUTES[level]
    steps: dict[str, tuple[str, str, str]] = {}
    for keyword in dict.fromkeys([*names, *include]):
        resolved = resolve_attribute(keyword)
        if resolved is None:
            continue
        kw, tag = resolved
        if kw == "RetrieveURL":
            source = "url"
        elif kw == "InstanceAvailability":
            source = "availability"
        elif kw in columns:
            source = "column"
        else:
            source = "meta"
        steps[tag] = (kw, tag, source)
    return [steps[tag] for tag in sorted(steps)]


def _result(
    row: dict[str, Any],
    plan: list[tuple[str, str, str]],
    include_all: bool,
    level: Level,
    base: str,
) -> dict[str, Any]:
    meta: dict[str, Any] = row.get("_meta") or {}
    out: dict[str, Any] = {}
    for kw, tag, source in plan:
        if source == "column" and kw in row:
            out[tag] = element(kw, row[kw])
        elif source == "url":
            url = f"{base}/studies/{row['StudyInstanceUID']}"
            if level in ("SERIES", "IMAGE"):
                url += f"/series/{row['SeriesInstanceUID']}"
            if level == "IMAGE":
                url += f"/instances/{row['SOPInstanceUID']}"
            out[tag] = {"vr": "UR", "Value": [url]}
        elif source == "availability":
            out[tag] = {"vr": "CS", "Value": ["ONLINE"]}
        elif (value := _meta_value(meta, tag)) is not None:
            out[tag] = value
        elif kw not in _OPTIONAL_IF_PRESENT:
            out[tag] = {"vr": vr_of(kw)}
    ours = level == "STUDY" and bool(row.get("IndexID"))
    if ours:
        out.update(_index_id_block(str(row["IndexID"])))
    if not include_all:
        return dict(sorted(out.items())) if ours else out  # the plan is in tag order
    skip = _NOT_AT_STUDY if level == "STUDY" else _NOT_AT_SERIES if level == "SERIES" else ()
    for tag, elem in meta.items():
        if (
            tag not in out
            and tag[:4] not in ("0002", "0028", "0088", "7FE0")
            and tag not in skip
            and not (ours and tag.startswith("000910"))  # another creator's block 10 clashes
            and _meta_value(meta, tag)
        ):
            out[tag] = elem
    return dict(sorted(out.items()))


def _index_id_block(index_id: str) -> dict[str, Any]:
    """(0009,0010) "CLOUDFILM 1.0" with (0009,1002) the imaging index ID."""
    return {
        "00090010": {"vr": "LO", "Value": [PRIVATE_CREATOR]},
        "00091002": {"vr": "LO", "Value": [index_id]},
    }


def search(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    level: Level,
    study: str | None = None,
    series: str | None = None,
) -> Response:
    media = choose_simple(request.headers.get("accept"), JSON_TYPES)
    q, include, include_all, warnings = _parse(request, level)
    decision = archive.authorize(principal, Action.QUERY, study, detail=f"qido {level.lower()}")
    q.allowed_studies = decision.studies
    q.hospital = decision.hospital
    q.also_studies = decision.also
    if study is not None:
        q.keys["StudyInstanceUID"] = study
    if series is not None:
        q.keys["SeriesInstanceUID"] = series
    names = _required(level, study is not None, series is not None)
    needs_meta = include_all or level != "STUDY" or any(k not in ATTRIBUTES[level] for k in include)
    q.want_meta = needs_meta
    page = q.limit or DEFAULT_LIMIT
    q.limit = page + 1  # one more row tells whether there are more results than this page
    with archive.db.read() as session:
        result = run_query(session, q)
    more = len(result.rows) > page
    del result.rows[page:]
    base = base_url(request, archive)
    plan = _plan(names, include, level)
    body_items = [_result(r, plan, include_all, level, base) for r in result.rows]
    if result.unsupported:
        warnings.append(f"not matched on (unsupported): {', '.join(result.unsupported)}")
    if more:
        warnings.append(
            f"there are more than {page} results: use offset (and limit, up to {MAX_RESULTS})"
            " for more"
        )
    body = orjson.dumps(body_items)  # UTF-8, compact; a fifth of a search's time with json
    etag = make_etag("qido", body)
    headers = {"ETag": etag, "Cache-Control": REVALIDATE}
    if warnings:
        headers["Warning"] = ", ".join(f'299 cloudfilm "{w}"' for w in warnings)
    if not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media, headers=headers)


@router.get("/studies", summary="Search for studies")
def search_studies(request: Request, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    return search(request, archive, principal, "STUDY")


@router.get("/series", summary="Search for series")
def search_series(request: Request, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    return search(request, archive, principal, "SERIES")


@router.get("/studies/{study}/series", summary="Search for series of a study")
def search_study_series(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study: UID
) -> Response:
    return search(request, archive, principal, "SERIES", study)


@router.get("/instances", summary="Search for instances")
def search_instances(request: Request, archive: ArchiveDep, principal: PrincipalDep) -> Response:
    return search(request, archive, principal, "IMAGE")


@router.get("/studies/{study}/instances", summary="Search for instances of a study")
def search_study_instances(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study: UID
) -> Response:
    return search(request, archive, principal, "IMAGE", study)


@router.get(
    "/studies/{study}/series/{series}/instances", summary="Search for instances of a series"
)
def search_series_instances(
    request: Request, archive: ArchiveDep, principal: PrincipalDep, study: UID, series: UID
) -> Response:
    return search(request, archive, principal, "IMAGE", study, series)

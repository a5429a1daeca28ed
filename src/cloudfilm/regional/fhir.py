"""The index feed as FHIR R4: a Bundle of ImagingStudy resources, built with ``fhir.resources``.

The models are the package's R4B ones (FHIR 4.3.0): the package's R4 (4.0.1) models need
pydantic 1, and ImagingStudy, Endpoint, Organization and Bundle are the same in R4 and R4B for
every element used here, so the JSON is valid R4 too. Building through the models validates
each resource (required elements, value formats) before it leaves the server.

Per study: identifiers (the imaging index ID under ``index_id_system``, the Study Instance UID
as ``urn:dicom:uid``, the accession number assigned by the hospital), modalities, counts,
series with body part, and two endpoints: the deployment's DICOMweb service (``dicom-wado-rs``,
one Endpoint entry per bundle, ``search.mode`` include) and the study's viewer through IHE
Invoke Image Display (``ihe-iid``, contained). The patient is not disclosed: ``subject`` carries
only the data-absent-reason ``masked``; the hospital holding the study answers who it is.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntrySearch, BundleLink
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.imagingstudy import ImagingStudy, ImagingStudySeries
from fhir.resources.R4B.organization import Organization

from cloudfilm.regional.feed import FeedPage, IndexRecord, urls
from cloudfilm.storage.models import utcnow

FHIR_JSON = "application/fhir+json"
DICOM_UID_SYSTEM = "urn:dicom:uid"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
CONNECTION = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
HOSPITAL_SYSTEM = "urn:cloudfilm:hospital-code"
"""Identifier system of a hospital's code on this platform (``cloudfilm hospital add CODE``)."""
REPORT_EXTENSION = "urn:cloudfilm:fhir:StructureDefinition:report-available"
"""valueBoolean: the study has a current radiology report at its hospital."""
CHANGE_SYSTEM = "urn:cloudfilm:fhir:CodeSystem:index-change"
"""``meta.tag`` codes: what changed (``new``, ``series``, ``report``)."""
_TIME = re.compile(r"^(\d{2})(\d{2})?(\d{2})?")


def _started(date: str, time: str) -> str | None:
    """StudyDate/Time as a FHIR dateTime; DICOM gives no zone, so China Standard Time."""
    if not re.fullmatch(r"\d{8}", date or ""):
        return None
    day = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    m = _TIME.match(time or "")
    if not m:
        return day
    hh, mm, ss = m.group(1), m.group(2) or "00", m.group(3) or "00"
    if int(hh) > 23 or int(mm) > 59 or int(ss) > 59:
        return day
    return f"{day}T{hh}:{mm}:{ss}+08:00"


def _endpoint_id(base: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, base + '/dicom-web')}"


def dicomweb_endpoint(base: str) -> Endpoint:
    return Endpoint(
        status="active",
        name="cloudfilm DICOMweb",
        connectionType={"system": CONNECTION, "code": "dicom-wado-rs"},
        payloadType=[{"text": "DICOM"}],
        payloadMimeType=["application/dicom", "application/dicom+json"],
        address=f"{base}/dicom-web",
    )


def imaging_study(record: IndexRecord, base: str, system: str) -> ImagingStudy:
    identifiers: list[dict[str, Any]] = [
        {"use": "official", "system": system, "value": record.index_id},
        {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{record.study_uid}"},
    ]
    if record.accession_number:
        identifiers.append(
            {
                "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                "value": record.accession_number,
                "assigner": {"reference": "#hospital"},
            }
        )
    hospital = Organization(
        id="hospital",
        identifier=[{"system": HOSPITAL_SYSTEM, "value": record.hospital_code}],
        name=record.hospital_name or record.hospital_code,
        address=[{"country": "CN", "district": record.hospital_region}]
        if record.hospital_region
        else None,
    )
    viewer = Endpoint(
        id="viewer",
        status="active",
        name="cloudfilm viewer (IHE IID)",
        managingOrganization={"reference": "#hospital"},
        connectionType={"system": CONNECTION, "code": "ihe-iid"},
        payloadType=[{"text": "DICOM"}],
        payloadMimeType=["text/html"],
        address=urls(base, record.study_uid)["iid_url"],
    )
    series = [
        ImagingStudySeries(
            uid=s.uid,
            number=s.number if s.number is not None and s.number >= 0 else None,
            modality={"system": DCM, "code": s.modality or "OT"},
            description=s.description or None,
            numberOfInstances=s.num_instances,
            bodySite={"display": s.body_part} if s.body_part else None,
        )
        for s in record.series
    ]
    return ImagingStudy(
        id=record.index_id or None,
        meta={
            "lastUpdated": record.changed_at.isoformat(),
            "tag": [{"system": CHANGE_SYSTEM, "code": k} for k in record.kinds],
        },
        contained=[hospital, viewer],
        extension=[{"url": REPORT_EXTENSION, "valueBoolean": record.report}],
        identifier=identifiers,
        status="available",
        modality=[{"system": DCM, "code": m} for m in record.modalities] or None,
        subject={"type": "Patient", "extension": [{"url": ABSENT, "valueCode": "masked"}]},
        started=_started(record.study_date, record.study_time),
        endpoint=[{"reference": _endpoint_id(base)}, {"reference": "#viewer"}],
        numberOfSeries=record.num_series,
        numberOfInstances=record.num_instances,
        description=record.description or None,
        series=series or None,
    )


def bundle(
    page: FeedPage, base: str, system: str, *, self_url: str, next_url: str | None
) -> Bundle:
    """One page of the feed: its studies (``match``) and the DICOMweb Endpoint (``include``)."""
    entries = [
        BundleEntry(
            fullUrl=f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{system}|{r.index_id}')}",
            resource=imaging_study(r, base, system),
            search=BundleEntrySearch(mode="match"),
        )
        for r in page.records
    ]
    if entries:
        entries.append(
            BundleEntry(
                fullUrl=_endpoint_id(base),
                resource=dicomweb_endpoint(base),
                search=BundleEntrySearch(mode="include"),
            )
        )
    links = [BundleLink(relation="self", url=self_url)]
    if next_url:
        links.append(BundleLink(relation="next", url=next_url))
    return Bundle(
        type="searchset",
        timestamp=utcnow().isoformat(),
        link=links,
        entry=entries or None,
    )


def bundle_json(bundle_: Bundle) -> bytes:
    return bundle_.model_dump_json(exclude_none=True).encode()

"""``POST /api/regional/similar-exams``: the ordering system (HIS) asks before an exam is ordered.

The hospital's API token (bearer, scope ``read``) identifies who asks; the body carries the
patient's strong identifiers and the planned exam; the answer lists the person's similar exams
at every hospital (regional.similar) without report text or images, and links the console page
where a clinician asks the patient for consent to see them.

Identifiers travel in the body, never in a URL (URLs end up in proxy logs). Every answer is
audited: who asked, for which person (``person:<pk>``, with the identifiers masked), the planned
exam and how many exams were found, how many of them at other hospitals. Patients and share
links cannot ask: the answer would reveal other people's exams.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from cloudfilm.access import Action, Principal
from cloudfilm.access.policy import decide
from cloudfilm.archive import Archive
from cloudfilm.dicomweb.resources import PREFIX, base_url
from cloudfilm.http.problems import Problem
from cloudfilm.http.security import ArchiveDep, PrincipalDep
from cloudfilm.regional.bodyparts import REGIONS, region_names
from cloudfilm.regional.identifiers import BadIdentifier, Identifier, parse
from cloudfilm.regional.similar import (
    AmbiguousPerson,
    PlannedExam,
    SimilarExam,
    parse_exam,
    person_of,
    similar_exams,
    window_days,
)
from cloudfilm.storage.models import utcnow

router = APIRouter(prefix="/api/regional", tags=["Regional sharing"])
PATH = "/similar-exams"
CONSENT_PAGE = "/console/regional"
NO_STORE = {"Cache-Control": "no-store"}


class SimilarExamsQuery(BaseModel):
    """At least one identifier; the planned exam as a common name (``exam``) and/or a modality
    and body part given apart (which win over the name)."""

    model_config = ConfigDict(extra="forbid")

    national_id: str | None = Field(None, max_length=32, examples=["11010519491231002X"])
    """居民身份证号码 (GB 11643)."""
    insurance: str | None = Field(None, max_length=64)
    """Medical insurance card number."""
    phone: str | None = Field(None, max_length=32)
    """A mobile number the patient proved by SMS."""
    exam: str | None = Field(None, max_length=128, examples=["胸部CT"])
    """A common exam name: 胸部CT, 头颅MR, 腰椎DR, 上腹部CT, 颈椎MR, 膝关节MR, CT CHEST …"""
    modality: str | None = Field(None, max_length=16, examples=["CT"])
    """A DICOM modality (CT, MR, DR, CR, DX, US, MG …) or its Chinese name (磁共振)."""
    body_part: str | None = Field(None, max_length=128, examples=["CHEST"])
    """A Body Part Examined defined term (CHEST, HEAD, LSPINE), a SNOMED CT code of CID 4031
    (816094009), or a Chinese name (胸部)."""


class Planned(BaseModel):
    modality: str | None
    family: str | None
    """CR, DR and DX count as one family: DX."""
    regions: list[str]
    region_names: str
    days: int | None
    """The window looked back over."""
    understood: bool
    """False: the modality or the body region was not recognised, and nothing is matched."""


class FoundExam(BaseModel):
    index_id: str | None
    date: str
    """YYYY-MM-DD."""
    days_ago: int
    hospital_code: str
    hospital_name: str
    this_hospital: bool
    modality: str
    regions: list[str]
    region_names: str
    consent_url: str


class SimilarExamsAnswer(BaseModel):
    planned: Planned
    count: int
    person_id: str | None = None
    """Only when something was found (an empty answer does not tell whether the person is
    known)."""
    consent_url: str | None = None
    """The console page where a clinician asks the patient for consent."""
    exams: list[FoundExam]


def identifiers_of(query: SimilarExamsQuery) -> list[Identifier]:
    found: list[Identifier] = []
    for kind in ("national_id", "insurance", "phone"):
        value = getattr(query, kind)
        if value is not None and value.strip():
            try:
                found.append(parse(kind, value))
            except BadIdentifier as exc:
                raise Problem(400, f"{kind}: {exc}") from None
    if not found:
        raise Problem(400, "send at least one identifier: national_id, insurance or phone")
    return found


def may_ask(archive: Archive, principal: Principal, detail: str) -> None:
    """A hospital's token or user with ``read`` (or a platform operator); refusals audited."""
    if principal.studies is not None or principal.kind in ("patient", "share"):
        archive.audit.record(
            principal=principal.label, action=str(Action.QUERY), outcome="deny",
            detail=f"not a hospital's; {detail}", client=principal.client,
        )  # fmt: skip
        raise Problem(403, "the similar-exam warning answers hospitals only")
    if not decide(principal, Action.QUERY, None).allowed:
        archive.authorize(principal, Action.QUERY, None, detail=detail)  # audits, raises


def consent_url(root: str, person_id: str) -> str:
    return f"{root}{CONSENT_PAGE}?person={person_id}"


def answer(
    planned: PlannedExam, exams: list[SimilarExam], hospital: int | None, root: str, days: int
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "planned": {
            "modality": planned.modality,
            "family": planned.family,
            "regions": [r for r in REGIONS if r in planned.regions],
            "region_names": region_names(planned.regions),
            "days": days if planned.understood else None,
            "understood": planned.understood,
        },
        "count": len(exams),
        "exams": [],
    }
    if exams:
        link = consent_url(root, exams[0].person_id)
        body.update(person_id=exams[0].person_id, consent_url=link)
        for e in exams:
            body["exams"].append(
                {
                    "index_id": e.index_id,
                    "date": f"{e.study_date[:4]}-{e.study_date[4:6]}-{e.study_date[6:]}",
                    "days_ago": e.days_ago,
                    "hospital_code": e.hospital_code,
                    "hospital_name": e.hospital_name,
                    "this_hospital": e.hospital_pk == hospital,
                    "modality": "/".join(e.modalities),
                    "regions": [r for r in REGIONS if r in e.regions],
                    "region_names": e.region_names(),
                    "consent_url": link,
                }
            )
    return body


@router.post(
    PATH,
    summary="The patient's recent exams like the planned one, at any hospital (no report text)",
    response_model=SimilarExamsAnswer,
    responses={400: {"description": "a malformed identifier or body"},
               409: {"description": "the identifiers name two different persons"}},
)  # fmt: skip
def post_similar_exams(
    query: SimilarExamsQuery,
    request: Request,
    response: Response,
    archive: ArchiveDep,
    principal: PrincipalDep,
) -> Any:
    """Exams of the same modality family (CR/DR/DX are one) and body region within the
    window (settings ``similar_exam_days``; 30 days CT/MR, 14 days radiography by default), at
    any hospital holding a record of the person. Seeing their images or reports needs the
    patient's consent: ``consent_url``."""
    idents = identifiers_of(query)
    planned = parse_exam(query.exam or "", query.modality or "", query.body_part or "")
    masked = ", ".join(f"{i.kind} {i.masked}" for i in idents)
    may_ask(archive, principal, f"similar-exam warning for {masked}")
    days = window_days(planned.family or "", archive.settings.similar_exam_days)
    exams: list[SimilarExam] = []
    with archive.db.read() as session:
        try:
            if planned.understood:
                exams = similar_exams(
                    session, archive.secret, idents, planned.modality, planned.regions,
                    utcnow(), days=archive.settings.similar_exam_days,
                )  # fmt: skip
            person_pk = exams[0].person_pk if exams else person_of(session, archive.secret, idents)
        except AmbiguousPerson as exc:
            _audit(archive, principal, None, f"{exc}; {masked}", outcome="deny")
            raise Problem(409, str(exc)) from None
    elsewhere = sum(1 for e in exams if e.hospital_pk != principal.hospital)
    _audit(
        archive, principal, person_pk,
        f"similar-exam warning: planned {planned.describe()} within {days} days"
        f"{'' if planned.understood else ' (not understood)'}; {masked}; "
        f"{len(exams)} found, {elsewhere} at other hospitals",
    )  # fmt: skip
    root = base_url(request, archive).removesuffix(PREFIX)
    response.headers.update(NO_STORE)
    return answer(planned, exams, principal.hospital, root, days)


def _audit(
    archive: Archive, principal: Principal, person_pk: int | None, detail: str,
    outcome: str = "allow",
) -> None:  # fmt: skip
    archive.audit.record(
        principal=principal.label,
        action=str(Action.QUERY),
        resource=f"person:{person_pk}" if person_pk is not None else "person:?",
        outcome=outcome,
        detail=detail,
        client=principal.client,
        hospital=principal.hospital,
    )

"""The similar-exam warning as a banner on the worklist, when a clinician opens one patient.

A worklist page whose studies all belong to one person of the master person index (the user
searched one patient) gets a banner listing that person's recent exams at *other* hospitals:
date, hospital, modality, region, imaging index ID; never report text or images, which need
the patient's consent (the banner links the consent page, ``/console/regional?person=``).

The console knows no planned exam, so the banner asks regional.similar for every modality and
region, each exam within its own modality's window (``similar_exam_days``): the same function
and the same windows as the HIS's API, which narrows the answer to the planned exam. Studies of
the user's own hospital, and any already on the page (a consent grant), are left out. A banner
shown is audited like an API answer (who, which person, how many).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cloudfilm.access import Action, Principal
from cloudfilm.http.templating import add_texts, t
from cloudfilm.regional.models import PersonLink
from cloudfilm.regional.similar import exams_of_person
from cloudfilm.storage.models import Study, utcnow

if TYPE_CHECKING:
    from cloudfilm.archive import Archive
    from cloudfilm.console.worklist import WorklistRow

CONSENT_PAGE = "/console/regional"
SHOWN = 10
"""Exams listed; the banner counts the rest."""

TEXTS: dict[str, tuple[str, str]] = {
    "console_similar_title": (
        "近期检查提醒：该患者近期在其他医院有 {n} 项检查",
        "Recent exams: this patient had {n} exam(s) at other hospitals recently",
    ),
    "console_similar_hint": (
        "开具检查前，请确认是否为重复检查。查看其影像和报告需患者授权。",
        "Before ordering, check that the exam would not repeat one of these. Seeing their "
        "images and reports needs the patient's consent.",
    ),
    "console_similar_request": ("申请患者授权", "Ask the patient for consent"),
    "console_similar_days_ago": ("{n} 天前", "{n} day(s) ago"),
    "console_similar_index_id": ("影像索引号", "Index ID"),
    "console_similar_more": ("另有 {n} 项未列出。", "{n} more not listed."),
}
add_texts(TEXTS)


def similar_banner(
    archive: Archive, principal: Principal, rows: list[WorklistRow], lang: str
) -> dict[str, Any] | None:
    """The banner's content for a worklist page, or None (not one person, nothing elsewhere)."""
    if principal.hospital is None or not rows:
        return None
    uids = [r.study_uid for r in rows]
    with archive.db.read() as session:
        patients = set(
            session.execute(select(Study.patient_pk).where(Study.study_uid.in_(uids))).scalars()
        )
        links = dict(
            session.execute(
                select(PersonLink.patient_pk, PersonLink.person_pk).where(
                    PersonLink.patient_pk.in_(patients)
                )
            ).all()
        )
        persons = set(links.values())
        if not patients or set(links) != patients or len(persons) != 1:
            return None
        person_pk = persons.pop()
    return person_banner(archive, principal, person_pk, lang, set(uids), "console worklist")


def person_banner(
    archive: Archive,
    principal: Principal,
    person_pk: int,
    lang: str,
    shown: set[str] | frozenset[str] = frozenset(),
    where: str = "console",
) -> dict[str, Any] | None:
    """The banner for one person (the worklist's patient, the regional lookup's person)."""
    with archive.db.read() as session:
        exams = exams_of_person(
            session, person_pk, None, None, utcnow(), days=archive.settings.similar_exam_days
        )
    own = principal.hospital
    elsewhere = [e for e in exams if e.hospital_pk != own and e.study_uid not in shown]
    if not elsewhere:
        return None
    archive.audit.record(
        principal=principal.label, action=str(Action.QUERY), resource=f"person:{person_pk}",
        outcome="allow", client=principal.client, hospital=principal.hospital,
        detail=f"similar-exam banner ({where}): {len(elsewhere)} found at other "
        "hospitals",
    )  # fmt: skip
    return {
        "count": len(elsewhere),
        "more": max(len(elsewhere) - SHOWN, 0),
        "consent_href": f"{CONSENT_PAGE}?person={elsewhere[0].person_id}",
        "exams": [
            {
                "date": e.study_date,
                "days_ago": t(lang, "console_similar_days_ago", n=max(e.days_ago, 0)),
                "hospital": e.hospital_name,
                "modality": "/".join(e.modalities),
                "regions": e.region_names(lang),
                "index_id": e.index_id or "",
            }
            for e in elsewhere[:SHOWN]
        ],
    }

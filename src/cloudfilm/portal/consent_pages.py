"""The patient's side of consent: the SMS link page, the requests and grants in their pages.

``/c/{token}``: the link of a consent SMS. The link itself is the proof that the phone's owner
opened it (a 256-bit token sent only to that phone), so approving there needs no login.
``/p/consent``: after SMS login, the person's pending requests (approve/refuse), their grants
(revoke, with effect on the clinician's very next request) and who saw what through them.
Every decision is an audit record about the person; accesses through a grant are audited by
the access check itself and appear in each film's history with the doctor and hospital.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from cloudfilm.accounts.models import Hospital
from cloudfilm.http.problems import Problem
from cloudfilm.http.security import ArchiveDep, client_address
from cloudfilm.http.templating import add_texts, lang_of, render, t
from cloudfilm.portal.sessions import load_session, require_csrf
from cloudfilm.regional import consent
from cloudfilm.regional.models import ConsentGrant, ConsentRequest
from cloudfilm.regional.persons import person_by_phone_key

router = APIRouter(include_in_schema=False)

TEXTS = {
    "consent_title": ("授权申请", "Consent request"),
    "consent_mine": ("跨院调阅授权", "Access by other hospitals"),
    "consent_asks": (
        "{hospital} 的 {doctor} 申请查看您在其他医院的检查影像和报告。",
        "{doctor} of {hospital} asks to see your exams and reports from other hospitals.",
    ),
    "consent_reason": ("申请原因", "Reason"),
    "consent_scope": ("范围", "Scope"),
    "consent_scope_all": ("全部检查", "every exam"),
    "consent_days": ("授权 {n} 天", "for {n} days"),
    "consent_approve": ("同意", "Approve"),
    "consent_refuse": ("拒绝", "Refuse"),
    "consent_pending": ("待处理的申请", "Waiting for you"),
    "consent_none_pending": ("没有待处理的申请。", "Nothing waiting."),
    "consent_grants": ("我的授权", "My grants"),
    "consent_no_grants": ("还没有授权。", "No grants yet."),
    "consent_until": ("有效至", "until"),
    "consent_state_pending": ("待处理", "waiting"),
    "consent_state_approved": ("已同意", "approved"),
    "consent_state_refused": ("已拒绝", "refused"),
    "consent_state_expired": ("已过期", "expired"),
    "consent_state_active": ("有效", "active"),
    "consent_state_revoked": ("已撤销", "revoked"),
    "consent_revoke": ("撤销授权", "Revoke"),
    "consent_done_approved": ("已同意，医生现在可以查看。", "Approved: the doctor can see them."),
    "consent_done_refused": ("已拒绝。", "Refused."),
    "consent_unknown": ("此链接无效。", "This link is not valid."),
    "consent_mode_sms": ("短信", "SMS"),
    "consent_mode_app": ("应用内", "in the app"),
    "consent_mode_assisted": ("医生代为记录", "recorded by the doctor"),
}
add_texts(TEXTS)


def _hospital_names(session: Any, pks: set[int]) -> dict[int, str]:
    rows = session.execute(select(Hospital.pk, Hospital.name).where(Hospital.pk.in_(pks)))
    return dict(rows.all())


def _request_view(row: ConsentRequest, hospitals: dict[int, str]) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "hospital": hospitals.get(row.hospital_pk, ""),
        "doctor": row.requester_name,
        "reason": row.reason,
        "date_from": row.date_from,
        "date_to": row.date_to,
        "modalities": [m for m in row.modalities.split("\\") if m],
        "days": row.days,
        "mode": row.mode,
        "state": consent.state(row),
        "created_at": consent.aware(row.created_at),
    }


def _grant_view(row: ConsentGrant, hospitals: dict[int, str]) -> dict[str, Any]:
    return {
        "grant_id": row.grant_id,
        "hospital": hospitals.get(row.hospital_pk, ""),
        "doctor": row.grantee_name,
        "date_from": row.date_from,
        "date_to": row.date_to,
        "modalities": [m for m in row.modalities.split("\\") if m],
        "mode": row.mode,
        "state": consent.grant_state(row),
        "expires_at": consent.aware(row.expires_at),
        "created_at": consent.aware(row.created_at),
    }


def _audit(archive: Any, principal: str, action: str, row: ConsentRequest | ConsentGrant,
           detail: str, client: str) -> None:  # fmt: skip
    archive.audit.record(
        principal=principal, action=action, resource=f"person:{row.person_pk}", outcome="allow",
        detail=detail, client=client, hospital=row.hospital_pk,
    )  # fmt: skip


# --- the SMS link ------------------------------------------------------------------------------


@router.get("/c/{token}")
def consent_link_page(token: str, request: Request, archive: ArchiveDep) -> Response:
    with archive.db.read() as session:
        row = consent.request_by_token(session, token)
        hospitals = _hospital_names(session, {row.hospital_pk}) if row else {}
    if row is None:
        message = t(lang_of(request), "consent_unknown")
        return render(request, "portal/error.html", {"message": message}, status=404)
    return render(
        request, "portal/consent_link.html", {"req": _request_view(row, hospitals), "token": token}
    )


class LinkDecisionIn(BaseModel):
    token: str = Field(max_length=128)
    decision: str = Field(pattern="^(approve|refuse)$")


@router.post("/api/portal/consent/link", summary="Approve or refuse from the consent SMS link")
def post_link_decision(body: LinkDecisionIn, request: Request, archive: ArchiveDep) -> Any:
    approve = body.decision == "approve"
    with archive.db.write() as session:
        row = consent.request_by_token(session, body.token)
        if row is None:
            raise Problem(404, "unknown consent link", zh=TEXTS["consent_unknown"][0])
        try:
            consent.decide(session, row, approve=approve, by="patient:sms-link")
        except consent.ConsentError as exc:
            raise Problem(exc.status, exc.en, zh=exc.zh, en=exc.en) from None
    _audit(archive, "patient:sms-link", "consent", row,
           f"{body.decision} request {row.request_id}", client_address(request))  # fmt: skip
    key = "consent_done_approved" if approve else "consent_done_refused"
    return {"zh": TEXTS[key][0], "en": TEXTS[key][1], "next": f"/c/{body.token}"}


# --- in the patient's pages ----------------------------------------------------------------------


def _person_view(request: Request, archive: Any) -> tuple[Any, int]:
    view = load_session(archive, request)
    if view is None or view.kind != "phone":
        raise Problem(401, "log in with your phone number first", zh="请先用手机号登录。")
    with archive.db.read() as session:
        person = person_by_phone_key(session, view.subject)
    if person is None:
        raise Problem(404, "no records are linked to this phone yet", zh="该手机号尚无关联档案。")
    return view, person


@router.get("/p/consent")
def consent_page(request: Request, archive: ArchiveDep) -> Response:
    try:
        view, person = _person_view(request, archive)
    except Problem as exc:
        if exc.status == 401:
            return RedirectResponse("/p/login", status_code=303)
        return render(request, "portal/consent.html", {"requests": [], "grants": [],
                                                       "csrf": "", "empty": True})  # fmt: skip
    with archive.db.read() as session:
        requests = consent.requests_of_person(session, person)
        grants = consent.grants_of_person(session, person)
        hospitals = _hospital_names(session, {r.hospital_pk for r in [*requests, *grants]})
    return render(
        request,
        "portal/consent.html",
        {
            "requests": [_request_view(r, hospitals) for r in requests],
            "grants": [_grant_view(g, hospitals) for g in grants],
            "csrf": view.csrf,
            "empty": False,
        },
    )


class DecisionIn(BaseModel):
    decision: str = Field(pattern="^(approve|refuse)$")


@router.post("/api/portal/consent/{request_id}/decision", summary="Answer a consent request")
def post_decision(request_id: str, body: DecisionIn, request: Request, archive: ArchiveDep) -> Any:
    view, person = _person_view(request, archive)
    require_csrf(request, view)
    approve = body.decision == "approve"
    with archive.db.write() as session:
        row = session.execute(
            select(ConsentRequest).where(
                ConsentRequest.request_id == request_id, ConsentRequest.person_pk == person
            )
        ).scalar_one_or_none()
        if row is None:
            raise Problem(404, "no such request")
        try:
            consent.decide(session, row, approve=approve, by=f"patient:phone-{view.subject[:12]}")
        except consent.ConsentError as exc:
            raise Problem(exc.status, exc.en, zh=exc.zh, en=exc.en) from None
    _audit(archive, f"patient:phone-{view.subject[:12]}", "consent", row,
           f"{body.decision} request {request_id}", client_address(request))  # fmt: skip
    key = "consent_done_approved" if approve else "consent_done_refused"
    return {"zh": TEXTS[key][0], "en": TEXTS[key][1], "next": "/p/consent"}


@router.post("/api/portal/grants/{grant_id}/revoke", summary="Revoke a consent grant")
def post_revoke(grant_id: str, request: Request, archive: ArchiveDep) -> Any:
    view, person = _person_view(request, archive)
    require_csrf(request, view)
    with archive.db.write() as session:
        grant = session.execute(
            select(ConsentGrant).where(
                ConsentGrant.grant_id == grant_id, ConsentGrant.person_pk == person
            )
        ).scalar_one_or_none()
        if grant is None:
            raise Problem(404, "no such grant")
        consent.revoke(session, grant, by=f"patient:phone-{view.subject[:12]}")
    _audit(archive, f"patient:phone-{view.subject[:12]}", "revoke", grant,
           f"grant {grant_id}", client_address(request))  # fmt: skip
    return {"zh": "已撤销。", "en": "Revoked.", "next": "/p/consent"}

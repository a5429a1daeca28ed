"""``/console/regional``: a clinician finds a person across hospitals and asks for consent.

Find by national ID number, insurance card or phone (a POST: identifiers never sit in a URL).
Without a grant the page says only how many exams exist at other hospitals (and the
similar-exam warning); the clinician asks for consent by SMS (link + 6-digit code), in the
patient's pages, or in person (doctor-assisted, the ID card's last 4 digits checked). With a
grant, each exam of the other hospitals is listed (date, hospital, modality, body part,
report) after the access check allowed it, opening in the viewer beside this hospital's prior.
Codes and last-4 checks are limited like the film codes (portal.verify).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from cloudfilm.access import AccessDenied, Action
from cloudfilm.console.data_common import archive_of, link
from cloudfilm.console.render import render_console, scope_of
from cloudfilm.console.session import ConsoleRefused, ConsoleView, check_csrf, require_view
from cloudfilm.console.similar_banner import person_banner
from cloudfilm.http.security import client_address
from cloudfilm.http.templating import add_texts, lang_of, t
from cloudfilm.portal.models import Report
from cloudfilm.portal.notify import make_notifier
from cloudfilm.portal.verify import VerifyFailed, checked
from cloudfilm.regional import consent, lookup
from cloudfilm.regional import identifiers as ids
from cloudfilm.regional.grants import active_grants
from cloudfilm.regional.models import ConsentRequest, LinkConflict, PersonIdentifier, PersonLink
from cloudfilm.regional.persons import link_patient, person_pk_of, value_key
from cloudfilm.storage.models import Patient, Study

router = APIRouter(include_in_schema=False)
PATH = "/console/regional"
Field = Annotated[str, Form(max_length=512)]

CONSENT_SMS = (
    "【云胶片】{hospital}{doctor}医生申请查看您在其他医院的检查影像和报告（原因：{reason}）。"
    "同意请打开 {link} ，或把验证码 {code} 告诉医生。24小时内有效，可随时撤销。"
)

TEXTS = {
    "console.nav_regional": ("跨院调阅", "Other hospitals"),
    "console_rg_find": ("查找患者", "Find the patient"),
    "console_rg_kind": ("证件类型", "Identifier"),
    "console_rg_national_id": ("身份证号", "National ID number"),
    "console_rg_insurance": ("医保卡号", "Insurance card"),
    "console_rg_phone": ("手机号", "Phone"),
    "console_rg_value": ("号码", "Number"),
    "console_rg_search": ("查找", "Find"),
    "console_rg_not_found": ("没有找到该患者的跨院档案。", "No regional record of this person."),
    "console_rg_person": ("患者", "Person"),
    "console_rg_elsewhere": (
        "该患者在其他医院有 {n} 次检查。查看需要患者授权。",
        "This person has {n} exam(s) at other hospitals. Seeing them needs the patient's consent.",
    ),
    "console_rg_ask": ("申请授权", "Ask for consent"),
    "console_rg_reason": ("申请原因", "Reason"),
    "console_rg_from": ("检查日期从", "Exams from"),
    "console_rg_to": ("到", "to"),
    "console_rg_modalities": ("检查类型（如 CT,MR；空为全部）",
                              "Modalities (e.g. CT,MR; empty: all)"),
    "console_rg_days": ("授权天数", "Days"),
    "console_rg_mode": ("授权方式", "How"),
    "console_rg_mode_sms": ("短信（链接和验证码）", "SMS (link and code)"),
    "console_rg_mode_app": ("患者在云胶片中确认", "In the patient's cloud film pages"),
    "console_rg_mode_assisted": ("当面确认（无智能手机）", "In person (no smartphone)"),
    "console_rg_sms_phone": ("短信发送到（可空：用报告登记的手机号）",
                             "Send the SMS to (empty: the phone on the reports)"),
    "console_rg_last4": ("核对身份证后4位", "ID card's last 4 characters, checked"),
    "console_rg_sent": ("授权短信已发送。", "The consent SMS was sent."),
    "console_rg_waiting": ("申请已提交，等待患者在云胶片中确认。",
                           "Asked: waiting for the patient."),
    "console_rg_granted": ("已获授权。", "Consent recorded."),
    "console_rg_no_phone": ("没有可用的手机号：请当面确认。",
                            "No phone to send to: ask in person."),
    "console_rg_requests": ("我的申请", "My requests"),
    "console_rg_code": ("患者告知的验证码", "Code the patient reads out"),
    "console_rg_confirm": ("确认", "Confirm"),
    "console_rg_exams": ("其他医院的检查（已授权）", "Exams at other hospitals (consented)"),
    "console_rg_until": ("授权有效至 {when}", "Consent until {when}"),
    "console_rg_open": ("打开影像", "Open images"),
    "console_rg_compare": ("与本院检查对比", "Compare with ours"),
    "console_rg_no_exams": ("授权范围内没有检查。", "No exams within the consent."),
    "console_rg_impression": ("诊断意见", "Impression"),
}  # fmt: skip
add_texts(TEXTS)


def _view(request: Request, csrf: str | None = None) -> ConsoleView:
    view = require_view(request, role_scope=scope_of(PATH))
    if view.principal.hospital is None:
        raise ConsoleRefused(403, "console.err_role", view)  # a clinician acts for a hospital
    if csrf is not None:
        check_csrf(request, view, csrf)
    return view


def _audit(request: Request, view: ConsoleView, person_pk: int, action: str, detail: str) -> None:
    archive_of(request).audit.record(
        principal=view.principal.label, action=action, resource=f"person:{person_pk}",
        outcome="allow", detail=detail, client=client_address(request),
        hospital=view.principal.hospital,
    )  # fmt: skip


def _page(request: Request, view: ConsoleView, person_id: str, *, status: int = 200,
          **extra: Any) -> Response:  # fmt: skip
    archive = archive_of(request)
    context: dict[str, Any] = {
        "found": None, "requests": [], "exams": [], "grants": [], "done": "", "similar": None,
        "prior": "", "max_days": consent.MAX_DAYS, "conflicts": [], **extra,
    }  # fmt: skip
    if not person_id:
        if {"consent", "admin"} & view.principal.scopes:
            context["conflicts"] = open_conflicts(archive, view.principal.hospital)
        return render_console(request, view, "console/regional.html", context, status=status)
    hospital = view.principal.hospital
    with archive.db.read() as session:
        person_pk = person_pk_of(session, person_id)
        if person_pk is None:
            raise ConsoleRefused(404, "console.err_not_found", view)
        found = lookup.describe(session, person_pk, hospital)
        mine = list(
            session.execute(
                select(ConsentRequest)
                .where(
                    ConsentRequest.person_pk == person_pk,
                    ConsentRequest.requester == view.principal.label,
                )
                .order_by(ConsentRequest.pk.desc())
                .limit(20)
            ).scalars()
        )
        grants = [
            g for g in active_grants(session, view.principal.label, hospital)
            if g.person_pk == person_pk
        ]  # fmt: skip
    _audit(request, view, person_pk, "query", f"regional lookup: {found.elsewhere} elsewhere")
    context.update(
        found=found,
        requests=[{"row": r, "state": consent.state(r)} for r in mine],
        grants=grants,
        exams=_granted_exams(request, view, person_pk) if grants else [],
        prior=found.here[0].study_uid if found.here else "",
        similar=person_banner(
            archive, view.principal, person_pk, lang_of(request), where="regional lookup"
        ),
        max_days=consent.MAX_DAYS,
    )
    return render_console(request, view, "console/regional.html", context, status=status)


def _granted_exams(request: Request, view: ConsoleView, person_pk: int) -> list[dict[str, Any]]:
    """Each exam elsewhere that the access check lets this clinician read (and audits)."""
    archive = archive_of(request)
    granted = archive.granted_studies(view.principal)
    rows: list[dict[str, Any]] = []
    with archive.db.read() as session:
        studies = list(
            session.execute(
                select(Study)
                .where(Study.study_uid.in_(granted))
                .order_by(Study.study_date.desc(), Study.pk.desc())
            ).scalars()
        )
        names = lookup.hospital_names(session, {s.hospital_pk for s in studies})
        facts = []
        for study in studies:
            report = session.execute(
                select(Report)
                .where(Report.study_uid == study.study_uid, Report.current.is_(True))
                .order_by(Report.pk.desc())
            ).scalars().first()  # fmt: skip
            facts.append((study, lookup.body_parts(session, study.pk), report))
    for study, parts, report in facts:
        try:
            archive.authorize(view.principal, Action.READ, study.study_uid, "regional lookup")
        except AccessDenied:
            continue
        rows.append(
            {
                "study_uid": study.study_uid,
                "date": study.study_date,
                "hospital": names.get(study.hospital_pk, ""),
                "modalities": study.modalities.replace("\\", ", "),
                "body_part": parts or (report.body_part if report else ""),
                "description": (report.exam_name if report else "") or study.description,
                "impression": report.impression if report else "",
                "index_id": getattr(study, "index_id", "") or "",
            }
        )
    return rows


@router.get(PATH)
def regional_page(request: Request) -> Response:
    view = _view(request)
    person = request.query_params.get("person", "").strip()
    if person and not (len(person) <= 32 and person.isalnum()):
        person = ""
    return _page(request, view, person, done=request.query_params.get("done", ""))


@router.post(f"{PATH}/find")
def find(request: Request, csrf: Field = "", kind: Field = "", value: Field = "") -> Response:
    view = _view(request, csrf)
    archive = archive_of(request)
    lang = lang_of(request)
    try:
        with archive.db.read() as session:
            person_pk = lookup.find(session, archive.secret, kind, value)
            person_id = lookup.describe(session, person_pk, None).person_id if person_pk else ""
    except ids.BadIdentifier as exc:
        return _page(request, view, "", status=400, message=str(exc), message_kind="error")
    if not person_id:
        archive.audit.record(
            principal=view.principal.label, action="query", resource="person:?",
            outcome="allow", detail=f"regional lookup by {kind}: none",
            client=client_address(request), hospital=view.principal.hospital,
        )  # fmt: skip
        message = t(lang, "console_rg_not_found")
        return _page(request, view, "", status=404, message=message, message_kind="info")
    return RedirectResponse(link(PATH, {"person": person_id}), status_code=303)


def _ask(reason: str, date_from: str, date_to: str, modalities: str, days: str) -> consent.Ask:
    try:
        n_days = int(days.strip() or consent.DEFAULT_DAYS)
    except ValueError:
        n_days = 0
    mods = tuple(m for m in modalities.replace("，", ",").replace(" ", ",").split(",") if m)
    return consent.Ask(reason, date_from.replace("-", ""), date_to.replace("-", ""), mods, n_days)


def _sms_phone(session: Any, secret: bytes, person_pk: int, typed: str) -> str | None:
    """Where the consent SMS may go: a phone the person proved, or one a hospital registered
    on the person's reports. A phone the clinician types must be one of those, so nobody can
    send the code to themselves."""
    studies = select(Study.study_uid).join(
        PersonLink, PersonLink.patient_pk == Study.patient_pk
    ).where(PersonLink.person_pk == person_pk)  # fmt: skip
    on_reports = [
        p for p in session.execute(
            select(Report.phone).where(Report.study_uid.in_(studies), Report.phone != "")
            .order_by(Report.pk.desc())
        ).scalars()
    ]  # fmt: skip
    proven = set(
        session.execute(
            select(PersonIdentifier.value_key).where(
                PersonIdentifier.person_pk == person_pk, PersonIdentifier.kind == ids.PHONE
            )
        ).scalars()
    )
    candidates: list[str] = []
    for raw in on_reports:
        try:
            candidates.append(ids.phone(raw).value)
        except ids.BadIdentifier:
            continue
    if typed.strip():
        try:
            wanted = ids.phone(typed)
        except ids.BadIdentifier:
            return None
        if wanted.value in candidates or value_key(secret, wanted) in proven:
            return wanted.value
        return None
    return candidates[0] if candidates else None


@router.post(f"{PATH}/request")
def ask_consent(
    request: Request,
    csrf: Field = "",
    person: Field = "",
    mode: Field = "sms",
    reason: Field = "",
    date_from: Field = "",
    date_to: Field = "",
    modalities: Field = "",
    days: Field = "7",
    phone: Field = "",
    last4: Field = "",
) -> Response:
    view = _view(request, csrf)
    archive = archive_of(request)
    lang = lang_of(request)
    client = client_address(request)
    with archive.db.read() as session:
        person_pk = person_pk_of(session, person.strip())
    if person_pk is None:
        raise ConsoleRefused(404, "console.err_not_found", view)
    ask = _ask(reason, date_from, date_to, modalities, days)

    def refused(message: str, status: int = 400) -> Response:
        return _page(request, view, person, status=status, message=message, message_kind="error")

    if mode == "assisted":
        with archive.db.read() as session:
            matches = consent.last4_matches(session, archive.secret, person_pk, last4)
        try:
            checked(
                archive, subject_key=f"last4:{person_pk}", client=client,
                resource=f"person:{person_pk}", principal=view.principal.label,
                matches=matches, what="ID card last 4 (assisted consent)",
            )  # fmt: skip
        except VerifyFailed as exc:
            return refused(exc.zh if lang == "zh" else exc.en, exc.status)
    target = None
    try:
        with archive.db.write() as session:
            if mode == "sms":
                target = _sms_phone(session, archive.secret, person_pk, phone)
                if target is None:
                    return refused(t(lang, "console_rg_no_phone"), 409)
            row, token, code = consent.new_request(
                session, archive.secret, person_pk=person_pk,
                hospital_pk=view.principal.hospital or 0, requester=view.principal.label,
                requester_name=view.principal.name, ask=ask, mode=mode,
            )  # fmt: skip
            if mode == "assisted":
                consent.decide(session, row, approve=True, by=f"assisted:{view.principal.label}")
    except consent.ConsentError as exc:
        return refused(exc.zh if lang == "zh" else exc.en, exc.status)
    detail = f"consent request {row.request_id} ({mode}): {ask.checked().reason}"
    _audit(request, view, person_pk, "consent", detail)
    if mode == "sms" and target:
        with archive.db.read() as session:
            names = lookup.hospital_names(session, {view.principal.hospital or 0})
        message = CONSENT_SMS.format(
            hospital=names.get(view.principal.hospital or 0, ""), doctor=view.principal.name,
            reason=ask.checked().reason[:40], link=f"{archive.settings.http_url}/c/{token}",
            code=code,
        )  # fmt: skip
        notifier = getattr(request.app.state, "film_notifier", None) or make_notifier(
            archive.settings
        )
        try:
            notifier.send(target, message)
        except Exception:
            return refused("SMS failed", 503)
    done = {"sms": "sent", "app": "waiting", "assisted": "granted"}[mode]
    return RedirectResponse(link(PATH, {"person": person, "done": done}), status_code=303)


@router.post(f"{PATH}/code")
def enter_code(
    request: Request, csrf: Field = "", person: Field = "", request_id: Field = "",
    code: Field = "",
) -> Response:  # fmt: skip
    view = _view(request, csrf)
    archive = archive_of(request)
    lang = lang_of(request)
    with archive.db.read() as session:
        row = session.execute(
            select(ConsentRequest).where(
                ConsentRequest.request_id == request_id.strip(),
                ConsentRequest.requester == view.principal.label,
            )
        ).scalar_one_or_none()
    if row is None or row.code_hash is None:
        raise ConsoleRefused(404, "console.err_not_found", view)
    expected = consent.code_hash(archive.secret, row.request_id, code)
    try:
        checked(
            archive, subject_key=f"consent:{row.request_id}", client=client_address(request),
            resource=f"person:{row.person_pk}", principal=view.principal.label,
            matches=hmac.compare_digest(expected, row.code_hash), what="consent code",
        )  # fmt: skip
        with archive.db.write() as session:
            fresh = session.get(ConsentRequest, row.pk)
            assert fresh is not None
            consent.decide(session, fresh, approve=True, by=f"code:{view.principal.label}")
    except VerifyFailed as exc:
        message = exc.zh if lang == "zh" else exc.en
        return _page(request, view, person, status=exc.status, message=message,
                     message_kind="error")  # fmt: skip
    except consent.ConsentError as exc:
        message = exc.zh if lang == "zh" else exc.en
        return _page(request, view, person, status=exc.status, message=message,
                     message_kind="error")  # fmt: skip
    _audit(request, view, row.person_pk, "consent", f"code confirmed: {row.request_id}")
    return RedirectResponse(link(PATH, {"person": person, "done": "granted"}), status_code=303)


# --- a hospital user links a record, and sees the refused links --------------------------------

LINK_TEXTS = {
    "console_rg_link": ("关联身份证号 / 医保卡号", "Link an ID number or insurance card"),
    "console_rg_link_hint": (
        "核对患者证件后填写：该患者在各医院的检查将归于同一人（查看仍需患者授权）。",
        "After checking the patient's card: their exams at every hospital become one person's "
        "(seeing them still needs the patient's consent).",
    ),
    "console_rg_linked": ("已关联。", "Linked."),
    "console_rg_conflict": (
        "未关联：该证件号已属于另一人，已记录待核查。",
        "Not linked: this number belongs to another person; recorded for review.",
    ),
    "console_rg_conflicts": ("待核查的身份冲突", "Identity conflicts to review"),
    "console_rg_badid": (
        "证件号码不正确（位数或校验位）。",
        "That number is not valid (length or check digit).",
    ),
}
add_texts(LINK_TEXTS)


@router.post(f"{PATH}/link")
def link_record(
    request: Request, csrf: Field = "", study: Field = "", kind: Field = "", value: Field = ""
) -> Response:
    """The film desk links the study's patient record after checking the card in person."""
    view = _view(request, csrf)
    archive = archive_of(request)
    uid = study.strip()
    if not uid or len(uid) > 64:
        raise ConsoleRefused(404, "console.err_not_found", view)
    try:
        archive.authorize(view.principal, Action.CONSENT, uid, detail="link person")
    except AccessDenied:
        raise ConsoleRefused(403, "console.err_hospital", view) from None
    if kind not in (ids.NATIONAL_ID, ids.INSURANCE):
        raise ConsoleRefused(404, "console.err_not_found", view)
    try:
        ident = ids.parse(kind, value)
    except ids.BadIdentifier:
        return RedirectResponse(link("/console/desk", {"study": uid, "done": "badid"}), 303)
    with archive.db.write() as session:
        patient = session.execute(
            select(Patient).join(Study, Study.patient_pk == Patient.pk).where(
                Study.study_uid == uid
            )
        ).scalar_one()  # fmt: skip
        outcome = link_patient(
            session, archive.secret, patient, [ident], source=f"user:{view.principal.id}"
        )
    _audit(request, view, outcome.person_pk or 0, "link",
           f"study {uid}: {kind} {ident.masked}: {outcome.status}")  # fmt: skip
    done = "conflict" if outcome.status == "conflict" else "linked"
    return RedirectResponse(link("/console/desk", {"study": uid, "done": done}), status_code=303)


def open_conflicts(archive: Any, hospital: int | None) -> list[LinkConflict]:
    with archive.db.read() as session:
        return list(
            session.execute(
                select(LinkConflict)
                .where(LinkConflict.hospital_pk == hospital, LinkConflict.resolved_at.is_(None))
                .order_by(LinkConflict.pk.desc())
                .limit(100)
            ).scalars()
        )

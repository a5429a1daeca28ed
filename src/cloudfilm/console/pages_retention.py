"""``/console/admin/retention``: a hospital admin's retention desk (keeping/retention.py).

The page lists the studies past their retention that wait for approval (found afresh by
"find expired"), the approved ones, the legal holds and the rules in force. An admin approves
studies one by one or all at once, deletes the approved ones (tombstones, audit, then blobs:
keeping/deletion.py), places and releases holds. Nothing is deleted from this page that was
not approved first, and a held study never shows up. Every view and every act goes through
the one access check (``Action.ADMIN`` on the managed hospital), so it is audited under the
admin's name, which is also what the deletion records as "approved by" and "deleted by".
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from cloudfilm.console.admin_common import (
    admin_view,
    archive_of,
    guard,
    managed_hospital,
    page,
    picker_context,
)
from cloudfilm.console.session import ConsoleRefused, ConsoleView
from cloudfilm.http.params import RowPk
from cloudfilm.http.templating import add_texts, lang_of, t
from cloudfilm.keeping.deletion import delete_approved
from cloudfilm.keeping.retention import (
    active_holds,
    approve,
    default_rules,
    hospital_rules,
    pending_list,
    place_hold,
    release_hold,
    scan,
    study_facts,
)

router = APIRouter(include_in_schema=False)
PATH = "/console/admin/retention"
Field = Annotated[str, Form(max_length=256)]
Choices = Annotated[list[str], Form()]

add_texts(
    {
        "retention.title": ("保存期限与删除", "Retention and deletion"),
        "retention.help": (
            "住院影像默认保存 30 年，门急诊 15 年；患者类别不明的按最长期限保存。"
            "到期的检查须经管理员批准后才会删除，法律保全中的检查不会列出。",
            "Inpatients' images are kept 30 years and outpatients' 15 by default; a study of "
            "unknown class is kept as long as the longest rule. Expired studies are deleted "
            "only after an admin approves them; a study under a legal hold is never listed.",
        ),
        "retention.scan": ("查找到期检查", "Find expired studies"),
        "retention.pending": ("待批准 / 已批准删除", "Waiting for approval / approved"),
        "retention.study": ("检查", "Study"),
        "retention.date": ("检查日期", "Study date"),
        "retention.class": ("患者类别", "Patient class"),
        "retention.rule": ("依据", "Rule"),
        "retention.status": ("状态", "Status"),
        "retention.listed": ("待批准", "Listed"),
        "retention.approved": ("已批准", "Approved"),
        "retention.approve": ("批准删除", "Approve deletion"),
        "retention.approve_all": ("全部批准", "Approve all listed"),
        "retention.delete": ("删除已批准的检查", "Delete the approved studies"),
        "retention.delete_confirm": (
            "删除不可撤销：影像将从存储中移除，索引只保留删除记录。",
            "Deletion cannot be undone: the images leave the storage; the index keeps only a "
            "record of what was deleted.",
        ),
        "retention.none": ("没有到期的检查。", "No expired study."),
        "retention.holds": ("法律保全", "Legal holds"),
        "retention.hold_add": ("新增保全", "Place a hold"),
        "retention.hold_study": ("检查 UID", "Study Instance UID"),
        "retention.hold_patient": ("或患者 ID", "or Patient ID"),
        "retention.hold_reason": ("原因", "Reason"),
        "retention.hold_by": ("设立人", "Placed by"),
        "retention.release": ("解除", "Release"),
        "retention.no_holds": ("没有保全。", "No hold."),
        "retention.rules": ("保存规则", "Rules in force"),
        "retention.years": ("年", "years"),
        "retention.unknown": ("不明", "unknown"),
        "retention.done_scan": ("已查找：{n} 个检查待处理。", "Found: {n} stud(ies) pending."),
        "retention.done_approve": ("已批准 {n} 个检查。", "{n} stud(ies) approved."),
        "retention.done_delete": (
            "已删除 {n} 个检查（{i} 个实例）；{w} 个因保全或规则变更而撤回。",
            "{n} stud(ies) deleted ({i} instances); {w} withdrawn (held, or a rule changed).",
        ),
        "retention.done_hold": ("已设立保全。", "Hold placed."),
        "retention.done_release": ("已解除保全。", "Hold released."),
        "retention.err_hold": (
            "请填写检查 UID 或本院的患者 ID，以及原因。",
            "Give a Study Instance UID or one of this hospital's Patient IDs, and a reason.",
        ),
    }
)
_UID = re.compile(r"^[0-9.]{1,64}$")
DONE = ("done_scan", "done_approve", "done_delete", "done_hold", "done_release")


def _target(request: Request, view: ConsoleView, hospital: str | None):  # type: ignore[no-untyped-def]
    target = managed_hospital(request, view, hospital)
    if target is None:
        raise ConsoleRefused(404, "console.err_not_found", view)
    return target


def _page(
    request: Request, view: ConsoleView, hospital: str | None, status: int = 200, **extra: object
) -> Response:
    target = managed_hospital(request, view, hospital)
    context: dict[str, object] = {**picker_context(request, view, target, PATH)}
    lang = lang_of(request)
    done = request.query_params.get("done", "")
    if done in DONE:
        numbers = {k: request.query_params.get(k, "0")[:9] for k in ("n", "i", "w")}
        context.update(message=t(lang, f"retention.{done}", **numbers), message_kind="ok")
    if target is not None:
        guard(request, view, target.pk, "retention", "console: retention")
        archive = archive_of(request)
        rows = pending_list(archive, target.pk)
        with archive.db.read() as session:
            holds = active_holds(session, target.pk)
            rules = hospital_rules(session, target.pk)
        context.update(
            pending=rows,
            facts=study_facts(archive, [r.study_uid for r in rows]),
            holds=holds,
            rules=[*rules, *default_rules(archive.settings.retention_years)],
            listed=sum(r.status == "listed" for r in rows),
            approved=sum(r.status == "approved" for r in rows),
        )
    context.update(extra)
    return page(request, view, "console/retention.html", context, status)


def _back(target: object, done: str, **numbers: int) -> Response:
    query = "".join(f"&{k}={v}" for k, v in numbers.items())
    return RedirectResponse(
        f"{PATH}?hospital={target.pk}&done={done}{query}",  # type: ignore[attr-defined]
        status_code=303,
    )


@router.get(PATH)
def retention_page(request: Request) -> Response:
    view = admin_view(request)
    return _page(request, view, request.query_params.get("hospital"))


@router.post(PATH + "/scan")
def retention_scan(request: Request, csrf: Field = "", hospital: Field = "") -> Response:
    view = admin_view(request, csrf)
    target = _target(request, view, hospital)
    guard(request, view, target.pk, "retention", "console: find expired studies")
    rows = scan(archive_of(request), target.pk)
    return _back(target, "done_scan", n=len(rows))


@router.post(PATH + "/approve")
def retention_approve(
    request: Request,
    csrf: Field = "",
    hospital: Field = "",
    study_uid: Choices = [],  # noqa: B006  (FastAPI copies defaults)
    all_listed: Field = "",
) -> Response:
    view = admin_view(request, csrf)
    target = _target(request, view, hospital)
    archive = archive_of(request)
    uids = [u for u in study_uid if _UID.match(u)]
    if all_listed:
        uids = [d.study_uid for d in pending_list(archive, target.pk) if d.status == "listed"]
    for uid in uids:  # each study's approval is its own decision in the audit trail
        guard(request, view, target.pk, uid[:64], "console: approve deletion")
    count = approve(archive, target.pk, uids, by=view.principal.label)
    return _back(target, "done_approve", n=count)


@router.post(PATH + "/delete")
def retention_delete(request: Request, csrf: Field = "", hospital: Field = "") -> Response:
    view = admin_view(request, csrf)
    target = _target(request, view, hospital)
    guard(request, view, target.pk, "retention", "console: delete approved studies")
    report = delete_approved(archive_of(request), target.pk, by=view.principal.label)
    return _back(
        target, "done_delete", n=len(report.deleted), i=report.instances, w=len(report.withdrawn)
    )


@router.post(PATH + "/holds")
def retention_hold(
    request: Request,
    csrf: Field = "",
    hospital: Field = "",
    study_uid: Field = "",
    patient_id: Field = "",
    reason: Field = "",
) -> Response:
    view = admin_view(request, csrf)
    target = _target(request, view, hospital)
    what = study_uid.strip() if _UID.match(study_uid.strip()) else "retention"
    guard(request, view, target.pk, what, "console: legal hold")
    try:
        if not reason.strip() or bool(study_uid.strip()) == bool(patient_id.strip()):
            raise ValueError("study or patient, and a reason")
        if study_uid.strip() and not _UID.match(study_uid.strip()):
            raise ValueError("not a UID")
        if "\x00" in reason + patient_id or len(patient_id) > 64:
            raise ValueError("not a Patient ID or reason")
        place_hold(
            archive_of(request), target.pk, by=view.principal.label, reason=reason.strip(),
            study_uid=study_uid.strip() or None, patient_id=patient_id.strip() or None,
        )  # fmt: skip
    except (LookupError, ValueError):
        lang = lang_of(request)
        return _page(
            request, view, str(target.pk), 400,
            message=t(lang, "retention.err_hold"), message_kind="error",
        )  # fmt: skip
    return _back(target, "done_hold")


@router.post(PATH + "/holds/{pk}/release")
def retention_release(
    request: Request, pk: RowPk, csrf: Field = "", hospital: Field = ""
) -> Response:
    view = admin_view(request, csrf)
    target = _target(request, view, hospital)
    guard(request, view, target.pk, f"hold:{pk}", "console: release legal hold")
    try:
        release_hold(archive_of(request), target.pk, pk, by=view.principal.label)
    except LookupError:
        raise ConsoleRefused(404, "console.err_not_found", view) from None
    return _back(target, "done_release")

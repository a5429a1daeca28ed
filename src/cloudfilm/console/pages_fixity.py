"""``/console/admin/fixity``: what the fixity verifier found (keeping/fixity.py), newest first,
with the current pass's progress and the replica queue.

A hospital's admin sees the events of their hospital's blobs; an operator picks a hospital or
sees all. Viewing is an administrative act like the other admin pages: decided by the one
access check and audited.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import func, select

from cloudfilm.accounts.hospitals import DIRECTORY
from cloudfilm.console.admin_common import admin_view, archive_of, guard, page
from cloudfilm.http.params import id_int
from cloudfilm.http.templating import add_texts
from cloudfilm.keeping.fixity import PassState
from cloudfilm.keeping.models import FixityEvent
from cloudfilm.keeping.replica import queue_status
from cloudfilm.storage.models import Instance

router = APIRouter(include_in_schema=False)
PATH = "/console/admin/fixity"
SHOWN = 200

add_texts(
    {
        "console.fx_pass": ("校验进度", "Verification pass"),
        "console.fx_started": ("本轮开始", "Pass started"),
        "console.fx_finished": ("本轮完成", "Pass finished"),
        "console.fx_running": ("进行中", "running"),
        "console.fx_never": ("尚未开始", "not yet started"),
        "console.fx_checked": ("已校验文件", "Blobs checked"),
        "console.fx_progress": ("进度", "Progress"),
        "console.fx_alarms": ("告警", "Alarms"),
        "console.fx_replica": ("第二副本", "Second copy"),
        "console.fx_no_replica": ("未配置第二副本。", "No second copy is configured."),
        "console.fx_waiting": ("待复制", "Waiting to be copied"),
        "console.fx_failing": ("复制失败待重试", "Failed, to be retried"),
        "console.fx_oldest": ("最早入队", "Oldest queued"),
        "console.fx_last_error": ("最近错误", "Last error"),
        "console.fx_events": ("发现的问题", "What was found"),
        "console.fx_time": ("时间", "Time"),
        "console.fx_blob": ("文件", "Blob"),
        "console.fx_outcome": ("结果", "Outcome"),
        "console.fx_detail": ("详情", "Detail"),
        "console.fx_all": ("全部医院", "All hospitals"),
        "console.fx_none": ("未发现缺失或被改动的文件。", "No missing or changed blob found."),
        "console.fx_missing": ("缺失", "missing"),
        "console.fx_changed": ("内容被改动", "changed"),
        "console.fx_repaired": ("已从副本修复", "repaired from the replica"),
        "console.fx_unrepaired": ("无法修复", "not repaired"),
    }
)


def _when(stamp: datetime | None) -> str:
    if stamp is None:
        return ""
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).isoformat()


@router.get(PATH)
def fixity_page(request: Request) -> Response:
    view = admin_view(request)
    archive = archive_of(request)
    operator = view.user.hospital is None
    wanted = id_int(request.query_params.get("hospital") or "") if operator else None
    hospital = view.user.hospital if not operator else wanted
    guard(request, view, hospital, "fixity", "console: fixity events")
    query = select(FixityEvent).order_by(FixityEvent.pk.desc()).limit(SHOWN)
    if hospital is not None:
        query = query.where(FixityEvent.hospital_pk == hospital)
    with archive.db.read() as session:
        events = list(session.execute(query).scalars())
        top = session.execute(select(func.max(Instance.pk))).scalar() or 0
    state = PassState.load(archive)
    progress = min(100, round(100 * state.after / top)) if top and not state.finished else 100
    replica = queue_status(archive) if archive.settings.replica_url else None
    context: dict[str, object] = {
        "operator": operator,
        "hospitals": DIRECTORY.all(archive.db) if operator else [],
        "picked": hospital,
        "events": [
            {"at": _when(e.at), "key": e.blob_key, "outcome": e.outcome, "detail": e.detail}
            for e in events
        ],
        "state": {
            "started": _when(state.when("started")),
            "finished": _when(state.when("finished")),
            "checked": state.checked,
            "alarms": state.alarms,
            "progress": progress if state.started else 0,
        },
        "replica": replica,
        "oldest": _when(replica.oldest) if replica else "",
    }
    return page(request, view, "console/fixity.html", context)

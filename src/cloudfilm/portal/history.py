"""The patient's access history, read from the audit trail (there is no second log).

Every decision about the film's study is an audit record; a viewer scrolling a CT makes
hundreds (one per frame), so consecutive records of the same caller doing the same thing within
ten minutes are shown as one line with a count.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cloudfilm.accounts.models import Hospital, User
from cloudfilm.portal.films import aware
from cloudfilm.portal.models import Film, Share
from cloudfilm.storage.models import AuditEvent

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

GAP = timedelta(minutes=10)
LIMIT = 5000

WHAT = {
    "verify": ("验证", "verification"),
    "open": ("打开分享链接", "opened the share link"),
    "read": ("查看", "viewed"),
    "query": ("查询", "searched"),
    "download": ("下载", "downloaded"),
    "manage": ("管理", "managed"),
    "share": ("创建分享", "created a share"),
    "revoke": ("撤销分享", "revoked a share"),
    "issue": ("生成云胶片", "film issued"),
    "notify": ("发送短信", "SMS sent"),
    "write": ("医院上传", "hospital upload"),
}


def _who(principal: str, film: Film, labels: dict[str, str]) -> tuple[str, str, str]:
    """(kind, Chinese, English) for an audit principal label."""
    kind, _, ident = principal.partition(":")
    if kind == "patient":
        return "patient", "本人", "you"
    if kind == "share":
        label = labels.get(ident, "")
        extra = f"「{label}」" if label else ""
        return "share", f"分享链接{extra} {ident[:6]}", f"share link {label} {ident[:6]}".strip()
    if kind == "anonymous":
        return "anonymous", "未验证的访客", "unverified visitor"
    if kind == "system":
        return "system", "系统", "system"
    if kind == "user" and ident in labels:
        # a hospital's doctor: by name and hospital (through a consent grant, often)
        return "user", labels[ident], labels[ident]
    return kind, "医院系统", "hospital system"


def _mask(client: str) -> str:
    parts = client.split(".")
    return ".".join([*parts[:2], "*", "*"]) if len(parts) == 4 else (client[:8] + "…")


def film_history(archive: Archive, film: Film) -> list[dict[str, Any]]:
    """Grouped access records for the film's study, newest first."""
    archive.audit.flush(timeout=5)
    with archive.db.read() as session:
        events = list(
            session.execute(
                select(AuditEvent)
                .where(AuditEvent.resource == film.study_uid)
                .order_by(AuditEvent.pk.desc())
                .limit(LIMIT)
            ).scalars()
        )
        share_ids = {e.principal[6:] for e in events if e.principal.startswith("share:")}
        labels = dict(
            session.execute(
                select(Share.share_id, Share.label).where(Share.share_id.in_(share_ids))
            ).all()
        )
        users = {e.principal[5:] for e in events if e.principal.startswith("user:")}
        for username, name, hospital in session.execute(
            select(User.username, User.display_name, Hospital.name)
            .outerjoin(Hospital, Hospital.pk == User.hospital_pk)
            .where(User.username.in_(users))
        ).all():
            labels[username] = " · ".join(x for x in (hospital, name or username) if x)
    groups: list[dict[str, Any]] = []
    for ev in reversed(events):  # oldest first while grouping
        if ev.action == "manage":
            continue  # the patient's own share management: shown as "share" / "revoke" records
        at = aware(ev.at)
        assert at is not None
        last = groups[-1] if groups else None
        if (
            last is not None
            and last["principal"] == ev.principal
            and last["action"] == ev.action
            and last["outcome"] == ev.outcome
            and at - last["_last"] <= GAP
        ):
            last["count"] += 1
            last["_last"] = at
            last["last_at"] = at.isoformat()
            continue
        kind, zh, en = _who(ev.principal, film, labels)
        what_zh, what_en = WHAT.get(ev.action, (ev.action, ev.action))
        groups.append(
            {
                "principal": ev.principal,
                "who_kind": kind,
                "who_zh": zh,
                "who_en": en,
                "action": ev.action,
                "what_zh": what_zh,
                "what_en": what_en,
                "outcome": ev.outcome,
                "detail": ev.detail.split(";")[0][:80],
                "at": at.isoformat(),
                "last_at": at.isoformat(),
                "count": 1,
                "client": _mask(ev.client) if ev.client else "",
                "_last": at,
            }
        )
    for g in groups:
        del g["_last"]
    return list(reversed(groups))

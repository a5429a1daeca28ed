"""``/console/audit``: the audit trail search (``console.audit_search``): a hospital's admin
searches their hospital's records; an operator any hospital's, or all. Newest first; "older"
continues below the last record shown."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cloudfilm.access import AccessDenied
from cloudfilm.accounts.hospitals import DIRECTORY
from cloudfilm.console.audit_search import (
    ACTIONS,
    AuditFilter,
    AuditSearchError,
    parse_local,
    search_audit,
)
from cloudfilm.console.data_common import archive_of, int_param, link
from cloudfilm.console.render import render_console, scope_of
from cloudfilm.console.session import ConsoleRefused, require_view
from cloudfilm.http.templating import lang_of, t

router = APIRouter(include_in_schema=False)
PATH = "/console/audit"
FIELDS = ("since", "until", "principal", "study", "action", "outcome", "hospital")


@router.get(PATH)
def audit_page(request: Request) -> Response:
    view = require_view(request, role_scope=scope_of(PATH))
    archive = archive_of(request)
    lang = lang_of(request)
    qp = request.query_params
    form = {k: qp.get(k, "").strip()[:128] for k in FIELDS}
    operator = view.user.hospital is None
    names = {h.pk: h.name or h.code for h in DIRECTORY.all(archive.db)} if operator else {}
    context: dict[str, object] = {
        "form": form,
        "operator": operator,
        "hospitals": DIRECTORY.all(archive.db) if operator else [],
        "hospital_names": names,
        "actions": ACTIONS,
        "rows": [],
        "older_href": "",
        "newest_href": "",
    }
    status = 200
    before = int_param(qp.get("before"))
    try:
        flt = AuditFilter(
            hospital=int_param(form["hospital"]) if operator else None,
            since=parse_local(form["since"]),
            until=parse_local(form["until"], end=True),
            principal=form["principal"],
            study_uid=form["study"],
            action=form["action"],
            outcome=form["outcome"],
        )
        found = search_audit(archive, view.principal, flt, before=before)
    except AuditSearchError as exc:
        context.update(message=t(lang, "console_bad_term", detail=str(exc)), message_kind="error")
        status = 400
    except AccessDenied:
        raise ConsoleRefused(403, "console.err_hospital", view) from None
    else:
        keep = {k: v for k, v in form.items() if v}
        context["rows"] = found.rows
        if found.next_before is not None:
            context["older_href"] = link(PATH, {**keep, "before": found.next_before})
        if before is not None:
            context["newest_href"] = link(PATH, keep)
    return render_console(request, view, "console/audit.html", context, status=status)

"""``/console/worklist``: the search form and one page of results (GET parameters, so a page
of results is a link that can be kept or sent). Each row opens the viewer, which the console
cookie authenticates, and, for the film desk's roles, that study's film desk."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cloudfilm.access import AccessDenied
from cloudfilm.accounts.hospitals import DIRECTORY
from cloudfilm.console.data_common import archive_of, int_param, link, sex_age
from cloudfilm.console.render import render_console, scope_of
from cloudfilm.console.session import ConsoleRefused, require_view
from cloudfilm.console.similar_banner import similar_banner
from cloudfilm.console.worklist import WorklistError, WorklistFilter, search_studies
from cloudfilm.http.templating import lang_of, t

router = APIRouter(include_in_schema=False)
PATH = "/console/worklist"
FIELDS = ("name", "pid", "acc", "from", "to", "modality", "hospital")


@router.get(PATH)
def worklist_page(request: Request) -> Response:
    view = require_view(request, role_scope=scope_of(PATH))
    archive = archive_of(request)
    lang = lang_of(request)
    qp = request.query_params
    form = {k: qp.get(k, "")[:64] for k in FIELDS}
    operator = view.user.hospital is None
    flt = WorklistFilter(
        name=form["name"],
        patient_id=form["pid"],
        accession=form["acc"],
        date_from=form["from"],
        date_to=form["to"],
        modality=form["modality"],
        hospital=int_param(form["hospital"]) if operator else None,
    )
    page_no = int_param(qp.get("page"), 1) or 1
    context: dict[str, object] = {
        "form": form,
        "operator": operator,
        "hospitals": DIRECTORY.all(archive.db) if operator else [],
        "can_desk": "film" in view.principal.scopes,
        "rows": [],
        "prev_href": "",
        "next_href": "",
        "page_no": page_no,
        "similar": None,
    }
    status = 200
    try:
        found = search_studies(archive, view.principal, flt, page_no)
    except WorklistError as exc:
        context.update(message=t(lang, "console_bad_term", detail=str(exc)), message_kind="error")
        status = 400
    except AccessDenied:
        raise ConsoleRefused(403, "console.err_hospital", view) from None
    else:
        keep = {k: v for k, v in form.items() if v}
        context["rows"] = [{"row": r, "sex_age": sex_age(lang, r.sex, r.age)} for r in found.rows]
        context["similar"] = similar_banner(archive, view.principal, found.rows, lang)
        if page_no > 1:
            context["prev_href"] = link(PATH, {**keep, "page": page_no - 1 if page_no > 2 else ""})
        if found.has_next:
            context["next_href"] = link(PATH, {**keep, "page": page_no + 1})
    return render_console(request, view, "console/worklist.html", context, status=status)

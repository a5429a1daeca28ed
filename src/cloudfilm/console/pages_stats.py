"""``/console/stats``: the dashboard. Totals as text, the three charts (drawn by console.js
from the ``cf-stats`` JSON the page embeds, see ``console.stats``), a date range, and for
operators a hospital or region choice and the grouping of the per-organisation chart."""

from __future__ import annotations

import json
from datetime import date, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup

from cloudfilm.access import AccessDenied
from cloudfilm.accounts.hospitals import DIRECTORY
from cloudfilm.console.data_common import archive_of, int_param
from cloudfilm.console.data_texts import size_text
from cloudfilm.console.render import render_console, scope_of
from cloudfilm.console.session import ConsoleRefused, require_view
from cloudfilm.console.stats import (
    DEFAULT_DAYS,
    MAX_YEAR,
    METRICS,
    MIN_YEAR,
    StatsError,
    StatsRequest,
    hospital_stats,
)
from cloudfilm.http.templating import lang_of, t

router = APIRouter(include_in_schema=False)
PATH = "/console/stats"


def embedded_json(value: object) -> Markup:
    """JSON for a ``<script type="application/json">``: nothing in it can end the script
    (``</script>`` in a hospital's name) or start a comment; JSON.parse reads it unchanged."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return Markup(text)


def _date(text: str) -> date | None:
    """A typed date, or None (empty, malformed, or outside the years statistics cover)."""
    try:
        day = date.fromisoformat(text.strip()) if text.strip() else None
    except ValueError:
        return None
    return day if day is not None and MIN_YEAR <= day.year <= MAX_YEAR else None


@router.get(PATH)
def stats_page(request: Request) -> Response:
    view = require_view(request, role_scope=scope_of(PATH))
    archive = archive_of(request)
    lang = lang_of(request)
    qp = request.query_params
    operator = view.user.hospital is None
    default = StatsRequest.last_days(DEFAULT_DAYS)
    form = {k: qp.get(k, "")[:16] for k in ("from", "to", "hospital", "region", "group")}
    first, last = _date(form["from"]), _date(form["to"])
    bad = (form["from"] and first is None) or (form["to"] and last is None)
    if first is None and last is not None:
        first = last - timedelta(days=DEFAULT_DAYS - 1)
    req = StatsRequest(
        date_from=first or default.date_from,
        date_to=last or (default.date_to if first is None else max(first, default.date_to)),
        hospital=int_param(form["hospital"]) if operator else None,
        region=form["region"].strip() if operator else "",
        group_by="region" if operator and form["group"] == "region" else "hospital",
    )
    context: dict[str, object] = {
        "form": {**form, "from": req.date_from.isoformat(), "to": req.date_to.isoformat()},
        "operator": operator,
        "hospitals": DIRECTORY.all(archive.db) if operator else [],
        "stats": None,
        "stats_json": "",
        "totals": [],
    }
    status = 200
    try:
        if bad:
            raise StatsError(t(lang, "console_from") + " / " + t(lang, "console_to"))
        stats = hospital_stats(archive, view.principal, req, lang=lang)
    except StatsError as exc:
        context.update(message=t(lang, "console_bad_term", detail=str(exc)), message_kind="error")
        status = 400
    except AccessDenied:
        raise ConsoleRefused(403, "console.err_hospital", view) from None
    else:
        context["stats"] = stats
        context["stats_json"] = embedded_json(stats)
        context["totals"] = [
            {
                "metric": m,
                "label": t(lang, f"console_m_{m}"),
                "value": size_text(stats["totals"][m])
                if m == "bytes"
                else f"{stats['totals'][m]:,}",
            }
            for m in METRICS
        ]
        context["size_text"] = size_text
    return render_console(request, view, "console/stats.html", context, status=status)

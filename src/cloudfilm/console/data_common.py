"""What the console's data pages share: the archive, query strings for pager links, the
access check's refusal as the console's error page, and small display helpers."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from urllib.parse import urlencode

from fastapi import Request

from cloudfilm.access import AccessDenied, Action, Decision
from cloudfilm.archive import Archive
from cloudfilm.console import data_texts as _data_texts  # noqa: F401  (registers the texts)
from cloudfilm.console.session import ConsoleRefused, ConsoleView
from cloudfilm.http.params import id_int
from cloudfilm.http.templating import t


def archive_of(request: Request) -> Archive:
    return request.app.state.archive


def authorized(
    request: Request, view: ConsoleView, action: Action, study_uid: str | None, detail: str
) -> Decision:
    """The one access check (audited); a refusal is the console's 403 page."""
    try:
        return archive_of(request).authorize(view.principal, action, study_uid, detail=detail)
    except AccessDenied:
        raise ConsoleRefused(403, "console.err_hospital", view) from None


def link(path: str, params: Mapping[str, object]) -> str:
    """``path?a=1&b=2`` with the empty parameters left out (short, shareable pager links)."""
    kept = {k: str(v) for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def int_param(value: str | None, default: int | None = None) -> int | None:
    """Not a number, or one no row can have: ``default``."""
    number = id_int(value)
    return default if number is None else number


def svg_data_uri(svg: bytes) -> str:
    """A standalone SVG file as an ``img`` source the console's CSP allows (``img-src 'self'
    data:``)."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode()


def sex_age(lang: str, sex: str, age: str) -> str:
    """``F`` and ``045Y`` → 女 / 45岁 (F / 45 y)."""
    parts = []
    if sex in ("M", "F", "O"):
        parts.append(t(lang, f"console_sex_{sex}"))
    if len(age) == 4 and age[:3].isdigit() and age[3] in "DWMY":
        parts.append(t(lang, f"console_age_{age[3]}", n=int(age[:3])))
    return " / ".join(parts)

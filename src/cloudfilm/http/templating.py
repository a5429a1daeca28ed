"""One Jinja2 setup for every server-rendered page: the patient pages, next the hospital console.

Pages used to be f-strings with ``html.escape`` by hand, and one forgotten call is an XSS hole
on a page that shows patient names. Here every ``{{ value }}`` in an ``.html`` template is
escaped unless the template says otherwise, and a misspelt variable fails loudly
(``StrictUndefined``) instead of printing nothing.

Templates are named by their folder's prefix, ``portal/film.html``, so two packages may both
have a ``base.html``. A new folder (e.g. the console's) is one line in ``FOLDERS``. Texts are
looked up with ``t(lang, key)`` in Python and in templates alike; each package registers its
table once with ``add_texts`` (keys are shared, so a clash is refused rather than shadowed).
The language is the ``cf_lang`` cookie (or ``?lang=``), the same for every page family.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, PrefixLoader, StrictUndefined, select_autoescape

PACKAGE = Path(__file__).resolve().parent.parent
"""``src/cloudfilm``: template folders are named relative to it (they ship as package data)."""
FOLDERS: dict[str, str] = {
    "http": "http/templates",
    "portal": "portal/templates",
    "console": "console/templates",
    "gateway": "gateway/templates",
}
"""Template name prefix → folder. Folders are read, not imported: no import of the packages."""

LANG_COOKIE = "cf_lang"
LANG_SWITCH = "/p/lang/"
"""``/p/lang/{zh|en}?next=<path>`` sets the cookie and goes back (portal/pages.py); any page
family may link to it."""
BEIJING = timezone(timedelta(hours=8))
"""Times are shown in China Standard Time: the patients and hospitals are there."""

_TEXTS: dict[str, tuple[str, str]] = {}


def add_texts(table: Mapping[str, tuple[str, str]]) -> None:
    """Register (Chinese, English) texts; the same key with another text is a bug, refused."""
    for key, value in table.items():
        if _TEXTS.setdefault(key, value) != value:
            raise ValueError(f"text {key!r} is registered twice with different wording")


def lang_of(request: Request) -> str:
    """``zh`` (the default) or ``en``, from ``?lang=`` or the cookie."""
    wanted = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE) or "zh"
    return "en" if wanted == "en" else "zh"


def t(lang: str, key: str, **kw: object) -> str:
    """The text for ``key`` in ``lang``; ``{name}`` fields are filled from ``kw``."""
    zh, en = _TEXTS[key]
    text = en if lang == "en" else zh
    return text.format(**kw) if kw else text


def local(when: datetime | str) -> str:
    """A time as Beijing wall-clock minutes (naive times are UTC, as the index stores them)."""
    dt = datetime.fromisoformat(when) if isinstance(when, str) else when
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M")


def day(text: str) -> str:
    """DICOM dates (20240315) as people write them (2024-03-15); anything else unchanged."""
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def _environment() -> Environment:
    loader = PrefixLoader(
        {prefix: FileSystemLoader(PACKAGE / folder) for prefix, folder in FOLDERS.items()}
    )
    env = Environment(
        loader=loader,
        autoescape=select_autoescape(["html"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(local=local, day=day)
    env.globals.update(t=t)
    return env


env = _environment()


def render(
    request: Request, template_name: str, context: Mapping[str, Any], status: int = 200
) -> HTMLResponse:
    """The page as an HTML response, never cached (pages show personal data).

    Every template also gets ``lang`` (``zh``/``en``, for ``t``), ``html_lang`` (``zh-CN``/
    ``en``, for ``<html lang>``) and ``switch_href`` (the link to the other language, back to
    this page)."""
    lang = lang_of(request)
    other = "zh" if lang == "en" else "en"
    page = {
        "lang": lang,
        "html_lang": "en" if lang == "en" else "zh-CN",
        "switch_href": f"{LANG_SWITCH}{other}?next={quote(request.url.path)}",
        **context,
    }
    text = env.get_template(template_name).render(page)
    return HTMLResponse(text, status_code=status, headers={"Cache-Control": "no-store"})

"""Rendering a console page: the shell (top bar, left nav) around a page's ``content`` block.

Pages extend ``console/base.html`` and fill ``{% block content %}``; :func:`render_console`
gives every template the view (``view``, ``user``, ``hospital``, ``csrf``), the navigation the
user's role may use (``nav``), the language links (``lang_links``) and the role's name. The nav
is one table (``NAV``): an item shows only when the role has its scope, and the page behind it
asks ``require_view(request, role_scope=<the same scope>)`` (see :func:`scope_of`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse

from cloudfilm.accounts.users import ROLE_NAMES
from cloudfilm.console import texts as _texts  # noqa: F401  (registers the console's texts)
from cloudfilm.console.session import ConsoleView, here
from cloudfilm.http.templating import LANG_SWITCH, lang_of, render, t


@dataclass(frozen=True)
class NavItem:
    href: str
    key: str
    """Text key of its label."""
    scope: str
    """The role needs this scope to see the item (and to open the page)."""
    group: str = "work"
    """``work`` or ``admin`` (a heading in the nav)."""


NAV: tuple[NavItem, ...] = (
    NavItem("/console/worklist", "console.nav_worklist", "read"),
    NavItem("/console/desk", "console.nav_desk", "film"),
    NavItem("/console/regional", "console.nav_regional", "read"),
    NavItem("/console/stats", "console.nav_stats", "read"),
    NavItem("/console/audit", "console.nav_audit", "admin"),
    NavItem("/console/admin/users", "console.nav_users", "admin", "admin"),
    NavItem("/console/admin/aes", "console.nav_aes", "admin", "admin"),
    NavItem("/console/admin/tokens", "console.nav_tokens", "admin", "admin"),
    NavItem("/console/admin/fixity", "console.nav_fixity", "admin", "admin"),
    NavItem("/console/admin/retention", "console.nav_retention", "admin", "admin"),
    NavItem("/console/admin/hospitals", "console.nav_hospitals", "operator", "admin"),
)


def scope_of(href: str) -> str:
    """The scope a nav page requires (so a page and its nav item never disagree)."""
    for item in NAV:
        if item.href == href:
            return item.scope
    raise KeyError(href)


def home_of(scopes: frozenset[str]) -> str:
    """The first page a role with these scopes may open: where a login without ``next`` lands."""
    for item in NAV:
        if item.scope in scopes:
            return item.href
    return "/console/password"


def nav_for(request: Request, view: ConsoleView) -> list[dict[str, Any]]:
    path = request.url.path
    lang = lang_of(request)
    out: list[dict[str, Any]] = []
    for item in NAV:
        if item.scope not in view.principal.scopes:
            continue
        out.append(
            {
                "href": item.href,
                "label": t(lang, item.key),
                "group": item.group,
                "current": path == item.href or path.startswith(item.href + "/"),
            }
        )
    return out


def lang_links(request: Request) -> list[dict[str, Any]]:
    back = quote(here(request), safe="/")
    lang = lang_of(request)
    return [
        {"href": f"{LANG_SWITCH}{code}?next={back}", "label": label, "current": lang == code}
        for code, label in (("zh", "中文"), ("en", "English"))
    ]


def render_console(
    request: Request,
    view: ConsoleView | None,
    template: str,
    context: Mapping[str, Any],
    status: int = 200,
) -> HTMLResponse:
    """A console page. ``view`` None: a page without the shell (login, errors before login)."""
    lang = lang_of(request)
    page: dict[str, Any] = {
        "view": view,
        "lang_links": lang_links(request),
        "next": "",
        "message": "",
        "message_kind": "info",
    }
    if view is not None:
        zh, en = ROLE_NAMES.get(view.user.role, (view.user.role, view.user.role))
        page.update(
            user=view.user,
            hospital=view.hospital,
            csrf=view.csrf,
            nav=nav_for(request, view),
            role_name=en if lang == "en" else zh,
            brand=(view.hospital.name or view.hospital.code)
            if view.hospital
            else t(lang, "console.platform"),
        )
    page.update(context)
    return render(request, template, page, status=status)

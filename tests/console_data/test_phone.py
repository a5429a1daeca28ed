"""The data pages in real Chromium at a phone's 375 px: logged in through the form, the
worklist's search and results, the film desk and the dashboard fit the screen (nothing makes
the page itself scroll sideways; a wide table scrolls in its own box), and the dashboard's
charts draw the figures the page embeds. The app runs under uvicorn over the test's archive."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from cloudfilm.http.app import create_app
from cloudfilm.portal.films import film_for_study
from tests.conftest import free_port
from tests.console_data.conftest import PASSWORD, World

pytestmark = pytest.mark.timeout(300)
PHONE = {"width": 375, "height": 740}


@pytest.fixture
def live(world: World) -> Iterator[str]:
    port = free_port()
    app = create_app(world.archive, background=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _login(browser, base: str, username: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport=PHONE, device_scale_factor=1, locale="zh-CN")
    page = context.new_page()
    page.goto(f"{base}/")
    page.fill('input[name="login"]', username)
    page.fill('input[name="password"]', PASSWORD)
    page.click('button[type="submit"]')
    page.wait_for_load_state("load")
    return context, page


def _fits(page) -> None:  # type: ignore[no-untyped-def]
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways: {width} px"


def _inside(page, selector: str) -> None:  # type: ignore[no-untyped-def]
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not shown"
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 0.5, (selector, box)


def test_the_worklist_and_desk_at_375_px(browser, live: str, world: World) -> None:  # type: ignore[no-untyped-def]
    world.report_and_film("a1")
    context, page = _login(browser, live, "a-desk")
    try:
        page.goto(f"{live}/console/worklist")
        _fits(page)
        for selector in ('input[name="name"]', 'input[name="from"]', 'button[type="submit"]'):
            _inside(page, selector)
        page.fill('input[name="name"]', "王秀英")
        page.locator('form[role="search"] button[type="submit"]').click()
        page.wait_for_load_state("load")
        assert "name=" in page.url
        rows = page.locator("#cf-worklist tbody tr[data-study]")
        assert (
            rows.count() == 1 and rows.first.get_attribute("data-study") == world.studies["a1"].uid
        )
        _fits(page)
        _inside(page, "#cf-worklist tbody tr a")  # the name opens the viewer, on screen
        href = page.locator("#cf-worklist tbody tr a").first.get_attribute("href")
        assert href == f"/viewer/?study={world.studies['a1'].uid}"
        wrap = page.locator(".cf-table-wrap").first
        assert wrap.evaluate("e => e.clientWidth") <= PHONE["width"]

        page.locator("#cf-worklist tbody tr a", has_text="胶片").first.click()
        page.wait_for_load_state("load")
        assert "/console/desk?study=" in page.url
        _fits(page)
        _inside(page, "#cf-print")
        qr = page.locator("#cf-film-qr")
        assert qr.evaluate("img => img.complete && img.naturalWidth > 0"), "the QR code loads"
        film = film_for_study(world.archive, world.studies["a1"].uid)
        assert film is not None
        assert page.locator("#cf-print").get_attribute("href") == (
            f"/api/films/{film.film_id}/printable.pdf"
        )
        page.fill('input[name="days"]', "3")
        page.locator('form[action="/console/desk/share"] button').click()
        page.wait_for_load_state("load")
        made = page.locator("#cf-new-share img")
        assert made.evaluate("img => img.complete && img.naturalWidth > 0"), "the share's QR"
        _fits(page)
    finally:
        context.close()


def test_the_dashboard_draws_the_embedded_figures_at_375_px(
    browser, live: str, world: World
) -> None:  # type: ignore[no-untyped-def]
    context, page = _login(browser, live, "ops")
    try:
        page.goto(f"{live}/console/stats?from=2026-01-09&to=2026-01-11")
        page.wait_for_function("window.cfCharts && window.cfCharts.ready")
        _fits(page)
        embedded = json.loads(page.locator("#cf-stats").text_content() or "null")
        assert embedded["totals"]["studies"] == 6
        assert page.evaluate("window.cfCharts.stats.totals.studies") == 6
        drawn = page.evaluate(
            """() => {
                const el = document.querySelector('.cf-chart[data-chart="days"]');
                const chart = window.cfCharts.getInstanceByDom(el);
                const series = chart.getOption().series;
                return series.find(s => s.id === 'studies').data;
            }"""
        )
        assert drawn == [d["studies"] for d in embedded["days"]] == [1, 4, 1]
        groups = page.evaluate("document.querySelectorAll('.cf-chart canvas').length")
        assert groups == 3, "days, modalities and hospitals are drawn"
        for selector in ('.cf-chart[data-chart="days"]', "#cf-totals"):
            _inside(page, selector)
    finally:
        context.close()

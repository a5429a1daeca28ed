"""The console's statistics charts (web/console, built into static/console) in real Chromium.

A static page laid out like a console page embeds a known ``cf-stats`` JSON and loads the built
``/console/static/console.js`` and ``console.css`` from a local HTTP server; the checks read the
charts back through ECharts (``window.cfCharts.getInstanceByDom``) and compare every series with
the JSON's numbers, look at the canvas pixels, the tooltips a person hovers, and the page's
geometry at 1280 and 375 px.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "src" / "cloudfilm" / "static" / "console"
GiB = 1024**3
MiB = 1024**2

DAYS = [
    {
        "date": f"2026-12-{d:02d}",
        "studies": 10 + d,
        "instances": 1200 + 37 * d,
        "bytes": (d * 300 + 17) * MiB,
        "films": d % 5,
        "views": 2 * d,
        "shares": d % 3,
        "sms": d % 4 + 1,
    }
    for d in range(1, 15)
]
MODALITIES = [
    {"modality": "CT", "studies": 120, "instances": 48000, "bytes": 24 * GiB},
    {"modality": "MR", "studies": 64, "instances": 30500, "bytes": 9 * GiB},
    {"modality": "DX", "studies": 210, "instances": 420, "bytes": 3 * GiB // 2},
    {"modality": "US", "studies": 33, "instances": 990, "bytes": 700 * MiB},
]
HOSTILE = '<img src=x onerror="window.pwned=1">医院'
GROUPS = [
    {
        "code": "H001",
        "name": "市第一人民医院",
        "studies": 300,
        "instances": 60000,
        "bytes": 30 * GiB,
    },
    {
        "code": "H002",
        "name": "某某省某某市某某区中西医结合医院影像中心（东院区）",
        "studies": 90,
        "instances": 15000,
        "bytes": 5 * GiB,
    },
    {"code": "H003", "name": HOSTILE, "studies": 37, "instances": 3910, "bytes": 3 * GiB // 2},
]


def stats(lang: str = "zh", **over: object) -> dict:
    keys = ("studies", "instances", "bytes", "films", "views", "shares", "sms")
    return {
        "lang": lang,
        "title": "市第一人民医院" if lang == "zh" else "City Hospital No. 1",
        "totals": {k: sum(d[k] for d in DAYS) for k in keys},
        "days": DAYS,
        "modalities": MODALITIES,
        "groups": GROUPS,
        **over,
    }


def console_page(data: dict | None) -> str:
    """A page shaped like the server's console pages (top bar, nav, totals, cards, a table)."""
    script = ""
    if data is not None:
        # As the server must embed it: no "</" can end the script early.
        script = (
            '<script type="application/json" id="cf-stats">'
            + json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")
            + "</script>"
        )
    rows = "".join(
        f"<tr><td>{d['date']}</td>"
        + "".join(f'<td class="cf-num">{v}</td>' for v in d.values())
        + "<td>一段很长的备注文字，说明这一天的情况</td></tr>"
        for d in DAYS
    )
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>统计</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="/console/static/console.css">
<script type="module" src="/console/static/console.js"></script>
</head><body class="cf-body">
<header class="cf-top"><a class="cf-brand" href="#">市第一人民医院 · 云胶片管理台</a>
<span class="cf-spacer"></span><span class="cf-user">张三 · 管理员</span>
<nav class="cf-lang"><a href="#" aria-current="true">中文</a><a href="#">EN</a></nav>
<form class="cf-logout"><button class="cf-btn cf-btn-small" type="button">退出</button></form>
</header>
<div class="cf-layout">
<nav class="cf-nav"><a href="#" aria-current="page">统计概览</a><a href="#">检查列表</a>
<a href="#">胶片</a><a href="#">分享</a><a href="#">短信记录</a><a href="#">用户管理</a>
<a href="#">设备 AE</a><a href="#">审计日志</a></nav>
<main class="cf-main"><h1>统计</h1>
<div class="cf-banner cf-banner-warn">存储空间已使用 85%</div>
<dl class="cf-totals"><div><dt>检查数</dt><dd>1,234</dd></div><div><dt>图像数</dt>
<dd>456,789</dd></div><div><dt>存储量</dt><dd>1.2 TB</dd></div><div><dt>胶片</dt>
<dd>321</dd></div></dl>
<section class="cf-card"><h2>每日趋势</h2><div class="cf-chart" data-chart="days"></div></section>
<div class="cf-grid">
<section class="cf-card"><h2>按设备类型</h2>
<div class="cf-chart" data-chart="modalities"></div></section>
<section class="cf-card"><h2>按机构</h2><div class="cf-chart" data-chart="groups"></div></section>
</div>
<section class="cf-card"><h2>明细</h2><div class="cf-table-wrap"><table class="cf-table">
<thead><tr><th>日期</th><th>日期</th><th>检查</th><th>图像</th><th>字节</th><th>胶片</th>
<th>查看</th><th>分享</th><th>短信</th><th>备注</th></tr></thead><tbody>{rows}</tbody></table>
</div><nav class="cf-pager"><span>‹</span><a href="#" aria-current="page">1</a><a href="#">2</a>
<span class="cf-pager-gap">…</span><a href="#">9</a><a href="#">›</a>
<span class="cf-pager-info">共 9 页</span></nav></section>
{script}
</main></div></body></html>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The built console files at /console/static/ and the fixture pages, over real HTTP."""
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-web.sh"), "console"],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0 or not (BUILD / "console.js").is_file():
        pytest.fail(f"console build failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    root = tmp_path_factory.mktemp("console-site")
    shutil.copytree(BUILD, root / "console" / "static")
    pages = {
        "zh.html": stats("zh"),
        "en.html": stats("en", groups=[]),
        "plain.html": None,
    }
    for name, data in pages.items():
        (root / name).write_text(console_page(data), encoding="utf-8")

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def open_page(browser: object, site: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Opens a fixture page at a width; keeps the browser console, screenshots a failure."""
    pages: list[object] = []
    errors: list[str] = []

    def _open(name: str, width: int = 1280, height: int = 900):  # type: ignore[no-untyped-def]
        ctx = browser.new_context(  # type: ignore[attr-defined]
            viewport={"width": width, "height": height}, device_scale_factor=1
        )
        page = ctx.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        pages.append(page)
        page.goto(f"{site}/{name}")
        page.wait_for_function("() => window.cfCharts && window.cfCharts.ready", timeout=20_000)
        settle(page)
        return page

    _open.errors = errors  # type: ignore[attr-defined]
    yield _open
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        for i, page in enumerate(pages):
            with contextlib.suppress(Exception):
                page.screenshot(  # type: ignore[attr-defined]
                    path=str(ARTIFACTS / f"console-{request.node.name}-{i}.png"), full_page=True
                )
    for page in pages:
        with contextlib.suppress(Exception):
            page.context.close()  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def settle(page) -> None:  # type: ignore[no-untyped-def]
    """Two animation frames (a resize is applied in one) and the end of ECharts' animation."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.wait_for_timeout(1200)


READ_CHARTS = """() => [...document.querySelectorAll('.cf-chart')].map(el => {
  const chart = window.cfCharts.getInstanceByDom(el);
  const canvas = el.querySelector('canvas');
  const box = el.getBoundingClientRect();
  let inked = 0;
  if (canvas) {
    const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < px.length; i += 4) if (px[i] > 0) inked++;
  }
  const opt = chart ? chart.getOption() : null;
  return {
    kind: el.dataset.chart,
    text: el.textContent,
    instance: !!chart,
    box: {x: box.x, y: box.y, w: box.width, h: box.height},
    canvas: canvas ? {w: canvas.width, h: canvas.height, inked} : null,
    series: opt ? opt.series.map(s => ({id: s.id, name: s.name, data: s.data})) : [],
    legend: opt ? opt.legend[0].data : [],
  };
})"""


def charts(page) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {c["kind"]: c for c in page.evaluate(READ_CHARTS)}


def overflow(page) -> int:  # type: ignore[no-untyped-def]
    """How many px the page is wider than the window (a horizontal scroll bar if > 0)."""
    return page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")


def column(rows: list[dict], key: str) -> list[int]:
    return [r[key] for r in rows]


@pytest.mark.parametrize("width", [1280, 375])
def test_three_charts_carry_the_json_numbers(open_page, width: int) -> None:  # type: ignore[no-untyped-def]
    page = open_page("zh.html", width=width)
    got = charts(page)
    assert set(got) == {"days", "modalities", "groups"}
    for kind, c in got.items():
        assert c["instance"], f"no ECharts instance on {kind}"
        assert c["canvas"] is not None, f"no canvas in {kind}"
        # The canvas matches its box and something was drawn on it.
        assert abs(c["canvas"]["w"] - c["box"]["w"]) <= 1, (kind, c["canvas"], c["box"])
        assert c["canvas"]["inked"] > 2000, (kind, c["canvas"])
        assert 0 < c["box"]["w"] <= width

    days = {s["id"]: s["data"] for s in got["days"]["series"]}
    for key in ("studies", "instances", "bytes", "films", "views", "shares", "sms"):
        assert days[key] == column(DAYS, key), key
    for kind, rows in (("modalities", MODALITIES), ("groups", GROUPS)):
        series = {s["id"]: s["data"] for s in got[kind]["series"]}
        for key in ("studies", "instances", "bytes"):
            assert series[key] == column(rows, key), (kind, key)

    # Chinese labels first.
    assert got["days"]["legend"] == ["检查数", "图像数", "存储量", "胶片", "查看", "分享", "短信"]
    assert got["groups"]["legend"] == ["检查数", "图像数", "存储量"]

    assert overflow(page) <= 0, f"the page scrolls sideways at {width} px"
    mod, grp = got["modalities"]["box"], got["groups"]["box"]
    if width == 375:
        # Stacked: one under the other, each nearly the phone's width.
        assert grp["y"] >= mod["y"] + mod["h"], (mod, grp)
        assert got["days"]["box"]["w"] >= 300
    else:
        # Side by side in the two-column card grid.
        assert abs(grp["y"] - mod["y"]) < 2 and grp["x"] > mod["x"] + mod["w"], (mod, grp)
    if width == 375:
        # The wide table scrolls inside its box instead of widening the page.
        assert page.evaluate(
            "() => { const w = document.querySelector('.cf-table-wrap');"
            " return w.scrollWidth > w.clientWidth; }"
        ), "the table should scroll sideways on a phone"
    assert open_page.errors == []


def test_charts_follow_the_window_size(open_page) -> None:  # type: ignore[no-untyped-def]
    page = open_page("zh.html", width=1280)
    wide = charts(page)
    page.set_viewport_size({"width": 375, "height": 800})
    settle(page)
    narrow = charts(page)
    for kind in ("days", "modalities", "groups"):
        before, after = wide[kind], narrow[kind]
        assert after["canvas"]["w"] < before["canvas"]["w"], kind
        assert abs(after["canvas"]["w"] - after["box"]["w"]) <= 1, (kind, after)
        assert after["box"]["w"] <= 375
        assert after["canvas"]["inked"] > 2000
    assert overflow(page) <= 0
    # And back: the charts grow again.
    page.set_viewport_size({"width": 1280, "height": 900})
    settle(page)
    again = charts(page)
    assert again["days"]["canvas"]["w"] == wide["days"]["canvas"]["w"]


def tooltip_text(page, kind: str, data_index: int) -> str:  # type: ignore[no-untyped-def]
    """Hover a chart's row or day (ECharts' showTip, what a pointer over it dispatches) and
    read the tooltip a person sees."""
    return page.evaluate(
        """([kind, i]) => new Promise(resolve => {
          const el = document.querySelector(`.cf-chart[data-chart="${kind}"]`);
          const chart = window.cfCharts.getInstanceByDom(el);
          chart.dispatchAction({type: 'showTip', seriesIndex: 0, dataIndex: i});
          setTimeout(() => {
            const tips = [...el.querySelectorAll('div')].filter(
              d => d.style.position === 'absolute' && getComputedStyle(d).display !== 'none'
                   && d.textContent.trim() && getComputedStyle(d).visibility !== 'hidden');
            resolve(tips.map(d => d.textContent).join('\\n'));
          }, 400);
        })""",
        [kind, data_index],
    )


def test_tooltips_show_readable_bytes_and_escape_names(open_page) -> None:  # type: ignore[no-untyped-def]
    page = open_page("zh.html", width=1280)
    text = tooltip_text(page, "groups", 2)
    # The hostile hospital name is shown as text, not run as HTML.
    assert HOSTILE in text, text
    assert "1.5 GB" in text and "检查数" in text and "3,910" in text, text
    assert page.evaluate("() => window.pwned") is None
    assert page.evaluate("() => document.querySelectorAll('.cf-chart img').length") == 0

    day = DAYS[4]
    text = tooltip_text(page, "days", 4)
    assert day["date"] in text, text
    assert "1.48 GB" in text, text  # (5*300+17) MiB = 1517 MiB
    assert "存储量" in text and "胶片" in text, text

    text = tooltip_text(page, "modalities", 0)
    assert "CT" in text and "24 GB" in text and "48,000" in text, text


def test_bar_chart_legend_switches_metric_and_axis_unit(open_page) -> None:  # type: ignore[no-untyped-def]
    page = open_page("zh.html", width=375)
    read = """(kind) => {
      const el = document.querySelector(`.cf-chart[data-chart="${kind}"]`);
      const o = window.cfCharts.getInstanceByDom(el).getOption();
      return {selected: o.legend[0].selected,
              tick: o.xAxis[0].axisLabel.formatter(o.xAxis[0].interval || 1024 ** 3)};
    }"""
    before = page.evaluate(read, "modalities")
    assert before["selected"] == {"检查数": True, "图像数": False, "存储量": False}
    # What a tap on the legend's "存储量" dispatches.
    page.evaluate(
        """() => window.cfCharts.getInstanceByDom(
             document.querySelector('.cf-chart[data-chart="modalities"]'))
           .dispatchAction({type: 'legendToggleSelect', name: '存储量'})"""
    )
    settle(page)
    after = page.evaluate(read, "modalities")
    assert after["selected"] == {"检查数": False, "图像数": False, "存储量": True}
    assert after["tick"].endswith(" GB"), after  # the value axis now reads in bytes
    # The choice survives a resize (the option is rebuilt then).
    page.set_viewport_size({"width": 700, "height": 800})
    settle(page)
    assert page.evaluate(read, "modalities")["selected"]["存储量"] is True
    assert overflow(page) <= 0


def test_english_labels_and_empty_groups(open_page) -> None:  # type: ignore[no-untyped-def]
    page = open_page("en.html", width=375)
    got = charts(page)
    assert got["days"]["legend"] == [
        "Studies",
        "Images",
        "Storage",
        "Films",
        "Views",
        "Shares",
        "SMS",
    ]
    assert got["modalities"]["instance"]
    # No groups: no chart, a plain "No data" in its place.
    assert not got["groups"]["instance"] and got["groups"]["canvas"] is None
    assert got["groups"]["text"].strip() == "No data"
    axis = page.evaluate(
        """() => { const o = window.cfCharts.getInstanceByDom(
              document.querySelector('.cf-chart[data-chart="days"]')).getOption();
            const y = o.yAxis[2];
            const labels = [0, y.interval, y.max].map(v => y.axisLabel.formatter(v));
            return {name: y.name, max: y.max, labels}; }"""
    )
    # Steps in whole binary units: the largest day is 4217 MiB = 4.12 GB.
    assert axis["name"] == "Storage"
    assert axis["max"] == 6 * GiB, axis
    assert axis["labels"] == ["0 GB", "2 GB", "6 GB"], axis
    assert overflow(page) <= 0
    assert open_page.errors == []


def test_page_without_stats_draws_nothing_and_fails_nothing(open_page) -> None:  # type: ignore[no-untyped-def]
    page = open_page("plain.html", width=375)
    assert page.evaluate("() => window.cfCharts.charts.length") == 0
    assert page.evaluate("() => document.querySelectorAll('.cf-chart canvas').length") == 0
    # The stylesheet still lays the page out: nav under the top bar, nothing sideways.
    top = page.evaluate("() => document.querySelector('.cf-top').getBoundingClientRect().bottom")
    nav = page.evaluate("() => document.querySelector('.cf-nav').getBoundingClientRect().top")
    assert nav >= top - 1
    assert overflow(page) <= 0
    assert open_page.errors == []

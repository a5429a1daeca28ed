"""The viewer in a real browser (Chromium + SwiftShader WebGL) against ``cloudfilm serve``.

Every check reads real values: screen pixels of a screenshot compared with the grey levels the
phantom's known HU must give under the window in force, measurement results compared with the
phantom's known geometry, slice positions from the metadata.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pydicom
import pytest
from PIL import Image

from .conftest import ViewerServer

pytestmark = pytest.mark.timeout(180)


# ----------------------------------------------------------------------------------------------
# helpers


def open_viewer(page, url: str, timeout: float = 60_000) -> dict:  # type: ignore[no-untyped-def]
    page.goto(url)
    page.wait_for_function(
        "() => window.cloudfilmViewer && window.cloudfilmViewer.state"
        " && window.cloudfilmViewer.state().firstImageAt",
        timeout=timeout,
    )
    settle(page)
    return state(page)


def settle(page, ms: int = 150) -> None:  # type: ignore[no-untyped-def]
    """Let Cornerstone finish a render (two animation frames) and a little more."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.wait_for_timeout(ms)


def state(page) -> dict:  # type: ignore[no-untyped-def]
    return page.evaluate("() => window.cloudfilmViewer.state()")


def wait_state(page, js_condition: str, timeout: float = 30_000) -> dict:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        f"() => {{ const s = window.cloudfilmViewer.state(); return {js_condition}; }}",
        timeout=timeout,
    )
    settle(page)
    return state(page)


def wait_stat(page, count: int, key: str) -> dict:  # type: ignore[no-untyped-def]
    """Wait for ``count`` measurements, the last one with its statistic ``key`` computed."""
    last = f"s.measurements[{count - 1}]"
    return wait_state(
        page,
        f"s.measurements.length === {count} && {last}.stats && {last}.stats.{key} !== undefined",
    )


def screen(page) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(int)


def at(page, col: float, row: float, slot: int = 0) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Page coordinates of the centre of image pixel (col, row) in viewport ``slot``."""
    x, y = page.evaluate(f"() => window.cloudfilmViewer.imageToPage({slot}, {col}, {row})")
    return x, y


def grey(img: np.ndarray, xy: tuple[float, float], r: int = 1) -> float:
    x, y = round(xy[0]), round(xy[1])
    return float(img[y - r : y + r + 1, x - r : x + r + 1].mean())


def expected(hu: float, voi: dict) -> float:
    """Grey level of ``hu`` under a linear VOI from voi['lower'] to voi['upper']."""
    g = (hu - voi["lower"]) / (voi["upper"] - voi["lower"]) * 255
    return min(255.0, max(0.0, g))


WATER_SPOT = (127.5, 100.0)
"""A pixel of pure water: between the lungs, above the disc (the water ellipse's own centre is
covered by the disc on the middle slices)."""


def region(vs: ViewerServer, name: str) -> tuple[float, float, int]:
    reg = vs.demo.ct.region(name)
    if name == "water":
        return WATER_SPOT[0], WATER_SPOT[1], reg.hu
    if name == "fat":  # the fat ring, on the horizontal axis, right of the centre
        ring = (reg.semi_axes_mm[0] + vs.demo.ct.region("water").semi_axes_mm[0]) / 2
        return reg.center_px[1] + ring / vs.demo.ct.pixel_spacing_mm, reg.center_px[0], reg.hu
    row, col = reg.center_px
    return col, row, reg.hu


def ct_study(vs: ViewerServer) -> str:
    return vs.demo.study("ct").study_uid


def click(page, xy: tuple[float, float]) -> None:  # type: ignore[no-untyped-def]
    page.mouse.move(*xy)
    page.wait_for_timeout(50)
    page.mouse.down()
    page.wait_for_timeout(50)
    page.mouse.up()
    page.wait_for_timeout(50)


def drag(page, a: tuple[float, float], b: tuple[float, float], steps: int = 12) -> None:  # type: ignore[no-untyped-def]
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=steps)
    page.mouse.up()


# ----------------------------------------------------------------------------------------------
# 1. first image, scrolling, window/level


def test_first_image_shows_the_right_grey_levels(viewer_server: ViewerServer, new_page) -> None:
    page = new_page()
    st = open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    vp = st["viewports"][0]
    assert vp["kind"] == "stack" and vp["modality"] == "CT" and vp["rendered"]
    assert vp["total"] == 40 and vp["index"] == 19  # opens on the middle slice
    assert vp["voi"]["wc"] == pytest.approx(40) and vp["voi"]["ww"] == pytest.approx(400)
    assert st["previewAt"] is not None and st["firstPaintAt"] <= st["firstImageAt"]
    img = screen(page)
    for name in ("water", "fat", "lung_left", "lung_right", "bone", "disc"):
        col, row, hu = region(viewer_server, name)
        assert grey(img, at(page, col, row)) == pytest.approx(expected(hu, vp["voi"]), abs=5), name
    # Overlays: patient, series, image number, W/L; orientation markers of an axial slice.
    ov = vp["overlay"]
    assert "王小东" in ov["tl"] and "1000234567" in ov["tl"]
    assert "20/40" in ov["tr"] and "W: 400 L: 40" in ov["br"]
    assert vp["orient"] == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    # The series panel lists both CT series with their load progress.
    assert page.locator(".cf-thumb").count() == 2
    st = wait_state(page, "s.series.every(x => x.loaded === x.total)")
    assert [x["loaded"] for x in st["series"]] == [40, 8]


def test_streaming_loads_each_frame_once(viewer_server: ViewerServer, new_page) -> None:
    """The slice on screen first, then outwards from it; every frame fetched once, and scrolling
    back and forth afterwards fetches nothing."""
    page = new_page()
    frames: list[str] = []
    page.on("request", lambda r: frames.append(r.url) if "/frames/" in r.url else None)
    open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    wait_state(page, "s.series.every(x => x.loaded === x.total)")
    ct = viewer_server.demo.study("ct")
    thin = ct.series[0]
    order = [
        next(i for i, sop in enumerate(thin.sop_instance_uids) if sop in u)
        for u in frames
        if thin.series_uid in u
    ]
    # The preview (boot.ts) and the viewer ask for the middle slice first.
    assert order[0] == 19
    # Outwards from it: the first dozen requests stay within ±8 slices of the middle.
    assert all(abs(i - 19) <= 8 for i in order[1:13]), order[:13]
    # The series under view comes before the other one.
    first_thick = next(i for i, u in enumerate(frames) if ct.series[1].series_uid in u)
    assert sum(1 for u in frames[:first_thick] if thin.series_uid in u) >= 30
    assert len(set(order)) == 40
    assert len(frames) <= 40 + 8 + 1  # each frame once (+ the preview's own request)
    n = len(frames)
    page.keyboard.press("Home")
    wait_state(page, "s.viewports[0].index === 0")
    page.keyboard.press("End")
    wait_state(page, "s.viewports[0].index === 39")
    for _ in range(10):
        page.keyboard.press("PageUp")
    settle(page, 300)
    assert len(frames) == n


def test_scrolling_changes_the_slice(viewer_server: ViewerServer, new_page) -> None:
    page = new_page()
    open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    disc_col, disc_row, disc_hu = region(viewer_server, "disc")
    disc_slices = viewer_server.demo.ct.region("disc").instance_numbers
    voi = state(page)["viewports"][0]["voi"]
    xy = at(page, disc_col, disc_row)
    assert 20 in disc_slices
    assert grey(screen(page), xy) == pytest.approx(expected(disc_hu, voi), abs=5)
    # Mouse wheel: one notch, one slice.
    page.mouse.move(*xy)
    for _ in range(3):
        page.mouse.wheel(0, 100)
        page.wait_for_timeout(60)
    st = wait_state(page, "s.viewports[0].index === 22")
    assert st["viewports"][0]["instanceNumber"] == 23
    # Keys: Home goes to the first slice, which has no disc: the pixel turns to water.
    page.keyboard.press("Home")
    st = wait_state(page, "s.viewports[0].index === 0")
    assert 1 not in disc_slices
    assert grey(screen(page), xy) == pytest.approx(expected(0, voi), abs=5)
    assert "1/40" in st["viewports"][0]["overlay"]["tr"]
    page.keyboard.press("ArrowDown")
    wait_state(page, "s.viewports[0].index === 1")
    # The slider.
    page.locator(".cf-slider").first.fill("15")
    st = wait_state(page, "s.viewports[0].index === 15")
    assert grey(screen(page), xy) == pytest.approx(expected(disc_hu, voi), abs=5)


def test_window_level_presets_and_drag(viewer_server: ViewerServer, new_page) -> None:
    page = new_page()
    open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    page.select_option("#cf-preset", "lung")
    st = wait_state(page, "Math.round(s.viewports[0].voi.ww) === 1500")
    voi = st["viewports"][0]["voi"]
    assert voi["wc"] == pytest.approx(-600)
    img = screen(page)
    for name in ("water", "lung_left", "fat"):
        col, row, hu = region(viewer_server, name)
        assert grey(img, at(page, col, row)) == pytest.approx(expected(hu, voi), abs=5), name
    page.keyboard.press("3")  # bone preset
    st = wait_state(page, "Math.round(s.viewports[0].voi.ww) === 1800")
    # Drag with the W/L tool (the default left-button tool): the window changes, and so do pixels.
    before = st["viewports"][0]["voi"]
    centre = at(page, 128, 128)
    drag(page, centre, (centre[0] + 120, centre[1] + 60))
    st = wait_state(page, f"Math.abs(s.viewports[0].voi.ww - {before['ww']}) > 20")
    after = st["viewports"][0]["voi"]
    assert after["ww"] != pytest.approx(before["ww"]) and after["wc"] != pytest.approx(before["wc"])
    col, row, hu = region(viewer_server, "water")
    assert grey(screen(page), at(page, col, row)) == pytest.approx(expected(hu, after), abs=5)
    assert f"W: {round(after['ww'])}" in st["viewports"][0]["overlay"]["br"]


# ----------------------------------------------------------------------------------------------
# 2. measurements


def test_length_between_the_markers_reads_100_mm(viewer_server: ViewerServer, new_page) -> None:
    page = new_page()
    open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    ct = viewer_server.demo.ct
    m1, m2 = ct.markers
    page.click('[data-tool="length"]')
    drag(page, at(page, m1.col, m1.row), at(page, m2.col, m2.row))
    st = wait_state(page, "s.measurements.length === 1 && s.measurements[0].stats")
    stats = st["measurements"][0]["stats"]
    assert st["measurements"][0]["tool"] == "Length"
    assert stats["unit"] == "mm"
    assert stats["length"] == pytest.approx(ct.marker_distance_mm, rel=0.01)
    # Delete it with the keyboard after selecting it... or clear all.
    page.click('[data-action="clear"]')
    wait_state(page, "s.measurements.length === 0")


def test_roi_statistics_in_hu(viewer_server: ViewerServer, new_page) -> None:
    page = new_page()
    open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    ps = viewer_server.demo.ct.pixel_spacing_mm
    # Ellipse inside the bone disc (1000 HU, radius 15 mm = 9.6 px), drawn from its centre.
    bcol, brow, bhu = region(viewer_server, "bone")
    page.click('[data-tool="ellipse"]')
    drag(page, at(page, bcol, brow), at(page, bcol + 5, brow + 5))
    st = wait_stat(page, 1, "mean")
    e = st["measurements"][0]["stats"]
    assert e["mean"] == pytest.approx(bhu, abs=0.5)
    assert e["stdDev"] == pytest.approx(0, abs=0.5)
    assert e["min"] == pytest.approx(bhu) and e["max"] == pytest.approx(bhu)
    assert e["modalityUnit"] == "HU"
    assert e["area"] == pytest.approx(math.pi * (5 * ps) ** 2, rel=0.05)
    # Rectangle in pure water between the lungs, above the disc.
    page.click('[data-tool="rect"]')
    drag(page, at(page, 116, 92), at(page, 139, 114))
    st = wait_stat(page, 2, "mean")
    r = st["measurements"][1]["stats"]
    assert r["mean"] == pytest.approx(0, abs=0.5) and r["stdDev"] == pytest.approx(0, abs=0.5)
    assert r["area"] == pytest.approx((139 - 116) * (114 - 92) * ps * ps, rel=0.02)
    # Probe: the HU of one pixel of lung.
    lcol, lrow, lhu = region(viewer_server, "lung_left")
    page.click('[data-tool="probe"]')
    click(page, at(page, lcol, lrow + 25))  # below the rectangle's text box
    st = wait_stat(page, 3, "value")
    assert st["measurements"][2]["stats"]["value"] == pytest.approx(lhu)


def test_angle_tool(viewer_server: ViewerServer, new_page) -> None:
    page = new_page()
    open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    page.keyboard.press("a")
    # A right angle: (100,150) -> (100,100) -> (150,100).
    for c, r in ((100, 150), (100, 100), (150, 100)):
        click(page, at(page, c, r))
    st = wait_stat(page, 1, "angle")
    assert st["measurements"][0]["stats"]["angle"] == pytest.approx(90, abs=1)


# ----------------------------------------------------------------------------------------------
# 3. invert / rotate / flip / reset


def test_invert_rotate_flip_reset(viewer_server: ViewerServer, new_page) -> None:
    page = new_page()
    st = open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    voi = st["viewports"][0]["voi"]
    wcol, wrow, whu = region(viewer_server, "water")
    bcol, brow, _ = region(viewer_server, "bone")
    water_xy = at(page, wcol, wrow)
    bone_xy = at(page, bcol, brow)
    page.click('[data-action="invert"]')
    st = wait_state(page, "s.viewports[0].invert")
    assert grey(screen(page), water_xy) == pytest.approx(255 - expected(whu, voi), abs=5)
    page.keyboard.press("i")
    wait_state(page, "!s.viewports[0].invert")
    # Rotate 90° clockwise: the bone (below the centre) moves to the left of the centre.
    cx, cy = at(page, 127.5, 127.5)
    dist = bone_xy[1] - cy
    page.click('[data-action="rotate"]')
    st = wait_state(page, "s.viewports[0].rotation === 90")
    assert (
        st["viewports"][0]["orient"]["top"] == "R" and st["viewports"][0]["orient"]["right"] == "A"
    )
    img = screen(page)
    assert grey(img, (cx - dist, cy)) == pytest.approx(255, abs=5)
    assert grey(img, bone_xy) < 200
    assert at(page, bcol, brow)[0] == pytest.approx(cx - dist, abs=2)
    page.click('[data-action="reset"]')
    wait_state(page, "s.viewports[0].rotation === 0")
    # Flip horizontally: left and right swap, and so do the orientation markers.
    llcol, llrow, _ = region(viewer_server, "lung_left")
    left_before = at(page, llcol, llrow)[0]
    page.click('[data-action="flipH"]')
    st = wait_state(page, "s.viewports[0].flipH")
    assert (
        st["viewports"][0]["orient"]["right"] == "R" and st["viewports"][0]["orient"]["left"] == "L"
    )
    left_after = at(page, llcol, llrow)[0]
    assert left_after == pytest.approx(2 * cx - left_before, abs=2)
    assert grey(screen(page), at(page, llcol, llrow)) < 5  # the lung (black) is there now
    page.click('[data-action="flipV"]')
    st = wait_state(page, "s.viewports[0].flipV")
    assert st["viewports"][0]["orient"]["top"] == "P"
    page.keyboard.press("0")
    st = wait_state(page, "!s.viewports[0].flipH && !s.viewports[0].flipV")
    assert st["viewports"][0]["orient"] == {"top": "A", "bottom": "P", "left": "R", "right": "L"}


# ----------------------------------------------------------------------------------------------
# 4. several viewports


def test_two_viewports_scroll_in_sync(viewer_server: ViewerServer, new_page) -> None:
    page = new_page()
    open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    page.click('[data-layout="1x2"]')
    st = wait_state(page, "s.viewports.length === 2 && s.viewports.every(v => v.rendered)")
    thin, thick = st["viewports"]
    assert thin["seriesUID"] != thick["seriesUID"] and thick["total"] == 8
    assert st["syncScroll"]
    # Scroll the thin series: the 5 mm series follows to the slab that holds the same position.
    page.evaluate("() => window.cloudfilmViewer.jumpTo(5, 0)")
    st = wait_state(page, "s.viewports[0].index === 5 && s.viewports[1].index === 1")
    page.evaluate("() => window.cloudfilmViewer.jumpTo(33, 0)")
    st = wait_state(page, "s.viewports[0].index === 33 && s.viewports[1].index === 6")

    def loc(v: dict) -> float:
        return float(v["overlay"]["bl"].split(":")[1].split("mm")[0])

    assert abs(loc(st["viewports"][0]) - loc(st["viewports"][1])) <= 2.5
    # Unlinked, the other viewport stays where it is.
    page.click('[data-toggle="syncScroll"]')
    page.evaluate("() => window.cloudfilmViewer.jumpTo(2, 0)")
    st = wait_state(page, "s.viewports[0].index === 2")
    page.wait_for_timeout(300)
    assert state(page)["viewports"][1]["index"] == 6


def test_synchronised_window_level_and_zoom(viewer_server: ViewerServer, new_page) -> None:
    page = new_page()
    open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    page.click('[data-layout="1x2"]')
    wait_state(page, "s.viewports.length === 2 && s.viewports.every(v => v.rendered)")
    # Not linked: a preset on the left leaves the right alone.
    page.select_option("#cf-preset", "bone")
    st = wait_state(page, "Math.round(s.viewports[0].voi.ww) === 1800")
    assert round(st["viewports"][1]["voi"]["ww"]) == 400
    page.click('[data-toggle="syncWL"]')
    page.click('[data-toggle="syncZoom"]')
    page.select_option("#cf-preset", "lung")
    st = wait_state(page, "Math.round(s.viewports[1].voi.ww) === 1500")
    assert st["viewports"][1]["voi"]["wc"] == pytest.approx(-600)
    # Zoom with the right mouse button on the left viewport: the right one follows.
    z0 = st["viewports"][1]["zoom"]
    centre = at(page, 128, 128)
    page.mouse.move(*centre)
    page.mouse.down(button="right")
    page.mouse.move(centre[0], centre[1] + 120, steps=10)
    page.mouse.up(button="right")
    st = wait_state(page, f"Math.abs(s.viewports[1].zoom - {z0}) > 0.2")
    assert st["viewports"][0]["zoom"] == pytest.approx(st["viewports"][1]["zoom"], rel=0.02)


def test_comparison_of_two_studies(viewer_server: ViewerServer, new_page) -> None:
    """Several studies in one link (a study and a prior): side by side, one per viewport."""
    page = new_page()
    mr = viewer_server.demo.study("mr")
    open_viewer(page, viewer_server.url(ct_study(viewer_server), mr.study_uid))
    st = wait_state(page, "s.viewports.length === 2 && s.viewports.every(v => v.rendered)")
    assert st["layout"] == "1x2"
    assert st["viewports"][0]["modality"] == "CT" and st["viewports"][1]["modality"] == "MR"
    assert page.locator(".cf-study-head").count() == 2
    assert page.locator(".cf-thumb").count() == 2 + len(mr.series)
    assert "王小东" in st["viewports"][0]["overlay"]["tl"]
    assert "李秀英" in st["viewports"][1]["overlay"]["tl"]
    # Drag a series from the panel into the left viewport.
    page.drag_and_drop(".cf-thumb >> nth=3", '.cf-cell[data-index="0"]')
    st = wait_state(page, f"s.viewports[0].seriesUID === '{mr.series[1].series_uid}'")
    assert st["viewports"][0]["rendered"]


def test_2x2_layout_mr_series_and_reference_lines(viewer_server: ViewerServer, new_page) -> None:
    page = new_page()
    mr = viewer_server.demo.study("mr")
    open_viewer(page, viewer_server.url(mr.study_uid))
    page.click('[data-layout="2x2"]')
    st = wait_state(
        page, "s.viewports.length === 4 && s.viewports.filter(v => v.rendered).length === 3"
    )
    shown = [v["seriesUID"] for v in st["viewports"][:3]]
    assert shown == [s.series_uid for s in mr.series]
    # The sagittal and coronal series carry their own orientation markers.
    orients = [v["orient"] for v in st["viewports"][:3]]
    assert orients[0]["left"] == "R" and orients[0]["top"] == "A"
    assert orients[1]["left"] in ("A", "P") and orients[1]["top"] == "H"
    assert orients[2]["left"] == "R" and orients[2]["top"] == "H"
    # Reference lines: the axial slice position is drawn as a line in the sagittal viewport.
    assert st["refLines"]
    lines = page.evaluate(
        '() => document.querySelectorAll(\'.cf-cell[data-index="1"] svg line, '
        '.cf-cell[data-index="1"] svg path\').length'
    )
    assert lines >= 1


# ----------------------------------------------------------------------------------------------
# 5. MPR / MIP / 3D


def test_mpr_shows_three_planes(viewer_server: ViewerServer, new_page) -> None:
    page = new_page()
    open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    wait_state(page, "s.series[0].loaded === s.series[0].total")
    page.click('[data-action="mpr"]')
    st = wait_state(
        page,
        "s.mode === 'mpr' && s.viewports.filter(v => v.kind === 'mpr').length === 3",
        timeout=60_000,
    )
    page.wait_for_timeout(1500)
    st = state(page)
    normals = [tuple(round(abs(c)) for c in v["viewPlaneNormal"]) for v in st["viewports"][:3]]
    assert sorted(normals) == sorted([(0, 0, 1), (1, 0, 0), (0, 1, 0)])
    assert [v["orientation"] for v in st["viewports"][:3]] == ["axial", "sagittal", "coronal"]
    img = screen(page)
    for i in range(3):
        box = page.locator(f'.cf-cell[data-index="{i}"]').bounding_box()
        cut = img[
            int(box["y"]) + 20 : int(box["y"] + box["height"]) - 20,
            int(box["x"]) + 20 : int(box["x"] + box["width"]) - 30,
        ]
        # Each plane shows the phantom: soft tissue grey next to black air.
        values = cut.mean(axis=2)
        assert (np.abs(values - expected(0, {"lower": -160, "upper": 240})) < 8).mean() > 0.02, i
        assert (values < 5).mean() > 0.05, i
    # The sagittal plane through the middle of the body crosses the bone disc (1000 HU: white).
    box = page.locator('.cf-cell[data-index="1"]').bounding_box()
    cut = img[
        int(box["y"]) : int(box["y"] + box["height"]), int(box["x"]) : int(box["x"] + box["width"])
    ]
    assert (cut.mean(axis=2) > 250).sum() > 30
    # Crosshairs are drawn.
    assert page.locator('.cf-cell[data-index="0"] svg line').count() >= 2
    page.click('[data-action="mip"]')
    st = wait_state(page, "s.mip")
    page.click('[data-action="vr"]')
    st = wait_state(page, "s.vr && s.viewports[3].kind === 'vr'", timeout=60_000)
    page.wait_for_timeout(1500)
    img = screen(page)
    box = page.locator('.cf-cell[data-index="3"]').bounding_box()
    cut = img[
        int(box["y"]) + 30 : int(box["y"] + box["height"]) - 30,
        int(box["x"]) + 30 : int(box["x"] + box["width"]) - 30,
    ]
    assert cut.std() > 10  # the rendered volume, not an empty background
    page.click('[data-action="mpr"]')
    wait_state(page, "s.mode === 'stack' && s.viewports[0].rendered")


# ----------------------------------------------------------------------------------------------
# 6. modalities: MONOCHROME1, colour, multi-frame; codecs


def _flat_spot(arr: np.ndarray, r: int = 12) -> tuple[int, int]:
    best, where = None, (0, 0)
    h, w = arr.shape[:2]
    for y in range(r + h // 10, h - r - h // 10, max(1, h // 12)):
        for x in range(r + w // 10, w - r - w // 10, max(1, w // 12)):
            block = arr[y - r : y + r + 1, x - r : x + r + 1]
            s = float(block.std())
            if best is None or s < best:
                best, where = s, (x, y)
    return where


def test_monochrome1_shows_inverted(viewer_server: ViewerServer, new_page) -> None:
    dx = viewer_server.demo.study("dx")
    ds = pydicom.dcmread(viewer_server.demo.root / dx.series[0].files[0])
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    arr = ds.pixel_array.astype(float) * float(getattr(ds, "RescaleSlope", 1)) + float(
        getattr(ds, "RescaleIntercept", 0)
    )
    page = new_page()
    st = open_viewer(page, viewer_server.url(dx.study_uid))
    vp = st["viewports"][0]
    voi = vp["voi"]
    x, y = _flat_spot(arr)
    value = float(arr[y - 2 : y + 3, x - 2 : x + 3].mean())
    want = 255 - expected(value, voi)
    assert grey(screen(page), at(page, x, y)) == pytest.approx(want, abs=8)
    # Only ImagerPixelSpacing: measurements say so.
    assert "ImagerPixelSpacing" in ds and "PixelSpacing" not in ds
    assert "探测器" in vp["overlay"]["bl"]


def test_colour_and_multiframe_cine(viewer_server: ViewerServer, new_page) -> None:
    us = viewer_server.demo.study("us")
    still, cine = us.series
    ds = pydicom.dcmread(viewer_server.demo.root / still.files[0])
    rgb = ds.pixel_array
    page = new_page()
    open_viewer(page, viewer_server.url(us.study_uid))
    # The red (flow) disc: its centre in the file, then the same pixel on screen.
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
    ys, xs = np.nonzero(red)
    x, y = int(xs.mean()), int(ys.mean())
    want = rgb[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(axis=0)
    assert want[0] > 150
    img = screen(page)
    px, py = at(page, x, y)
    got = (
        img[round(py) - 1 : round(py) + 2, round(px) - 1 : round(px) + 2]
        .reshape(-1, 3)
        .mean(axis=0)
    )
    assert np.abs(got - want).max() < 10, (got, want)
    # The cine series: 24 frames; play runs through them.
    page.evaluate(f"() => window.cloudfilmViewer.showSeries(0, '{cine.series_uid}')")
    st = wait_state(
        page, f"s.viewports[0].seriesUID === '{cine.series_uid}' && s.viewports[0].rendered"
    )
    assert st["viewports"][0]["total"] == 24
    wait_state(page, "s.series.find(x => x.total === 24).loaded === 24")
    # A cine loop plays by itself; the button (or the space bar) stops and starts it.
    assert st["cine"]
    page.click('[data-action="cine"]')
    wait_state(page, "!s.cine")
    stopped = state(page)["viewports"][0]["index"]
    page.wait_for_timeout(300)
    assert state(page)["viewports"][0]["index"] == stopped
    page.fill("#cf-fps", "30")
    page.dispatch_event("#cf-fps", "change")
    page.evaluate("() => document.activeElement.blur()")
    page.keyboard.press(" ")
    wait_state(page, "s.cine")
    seen = set()
    for _ in range(20):
        seen.add(state(page)["viewports"][0]["index"])
        page.wait_for_timeout(50)
    assert len(seen) >= 5


def test_every_codec_decodes(viewer_server: ViewerServer, new_page) -> None:
    """One instance per transfer syntax (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000,
    HTJ2K, RLE, deflate...): each is decoded by the WASM codecs and shows the same image as the
    uncompressed reference (lossless syntaxes) or close to it."""
    codecs = viewer_server.demo.study("codecs")
    written = {c.series_uid: c for c in viewer_server.demo.codecs if c.status == "written"}
    page = new_page(width=900, height=700)
    open_viewer(page, viewer_server.url(codecs.study_uid))
    wait_state(
        page, "s.series.every(x => x.loaded + x.failed === x.total && x.total > 0)", timeout=90_000
    )
    st = state(page)
    failed = [x for x in st["series"] if x["failed"]]
    assert not failed, [written[x["uid"]].name for x in failed if x["uid"] in written]
    ref_img = None
    for c in written.values():
        if c.name not in (
            "ref-ct-int16",
            "jpeg-ls-lossless",
            "jpeg2000-lossless",
            "rle-lossless",
            "jpeg-lossless-sv1",
        ):
            continue
        page.evaluate(f"() => window.cloudfilmViewer.showSeries(0, '{c.series_uid}')")
        wait_state(
            page, f"s.viewports[0].seriesUID === '{c.series_uid}' && s.viewports[0].rendered"
        )
        page.evaluate("() => window.cloudfilmViewer.applyPreset('mediastinum')")
        settle(page, 300)
        img = screen(page)
        box = page.locator('.cf-cell[data-index="0"]').bounding_box()
        cut = img[
            int(box["y"]) + 60 : int(box["y"] + box["height"]) - 60,
            int(box["x"]) + 60 : int(box["x"] + box["width"]) - 60,
        ]
        if ref_img is None:
            ref_img = cut
            assert cut.std() > 20
        else:
            assert np.abs(cut - ref_img).mean() < 1.0, c.name


# ----------------------------------------------------------------------------------------------
# 7. phone


def _gesture(page, frames: list[list[tuple[float, float]]]) -> None:  # type: ignore[no-untyped-def]
    """Real touch events through the DevTools protocol: start, moves, end."""
    cdp = page.context.new_cdp_session(page)

    def send(kind: str, points: list[tuple[float, float]]) -> None:
        pts = [{"x": x, "y": y, "id": i} for i, (x, y) in enumerate(points)]
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": pts})

    send("touchStart", frames[0])
    for f in frames[1:]:
        send("touchMove", f)
        page.wait_for_timeout(16)
    send("touchEnd", [])
    cdp.detach()


def test_phone_layout_and_touch(viewer_server: ViewerServer, new_page) -> None:
    page = new_page(375, 667, has_touch=True, is_mobile=True)
    st = open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    # No horizontal page scroll, the tool drawer is closed, text is readable.
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    assert (
        page.evaluate("() => getComputedStyle(document.querySelector('.cf-ov-tl')).fontSize")
        >= "12px"
    )
    toolbar = page.locator("#cf-toolbar").bounding_box()
    assert toolbar["y"] >= 667 - 1  # off screen until opened
    cell = page.locator('.cf-cell[data-index="0"]').bounding_box()
    assert cell["width"] >= 370
    cx, cy = cell["x"] + cell["width"] / 2, cell["y"] + cell["height"] / 2
    start = st["viewports"][0]["index"]
    # One-finger swipe up: scrolls slices.
    _gesture(page, [[(cx, cy + 80 - k * 20)] for k in range(9)])
    st = wait_state(page, f"s.viewports[0].index !== {start}")
    assert st["viewports"][0]["index"] > start
    # Pinch out: zoom in.
    zoom0 = st["viewports"][0]["zoom"]
    _gesture(page, [[(cx - 30 - 10 * k, cy), (cx + 30 + 10 * k, cy)] for k in range(8)])
    st = wait_state(page, f"s.viewports[0].zoom > {zoom0} * 1.5")
    # Two-finger drag: pans (the focal point moves), the slice stays.
    fp0, idx0 = st["viewports"][0]["focalPoint"], st["viewports"][0]["index"]
    _gesture(
        page, [[(cx - 40 + 12 * k, cy + 8 * k), (cx + 40 + 12 * k, cy + 8 * k)] for k in range(6)]
    )
    st = wait_state(page, f"Math.abs(s.viewports[0].focalPoint[0] - {fp0[0]}) > 5")
    assert st["viewports"][0]["index"] == idx0
    # W/L mode: a one-finger drag now changes the window.
    ww0 = st["viewports"][0]["voi"]["ww"]
    page.tap("#cf-touch-wl")
    _gesture(page, [[(cx + 15 * k, cy)] for k in range(6)])
    st = wait_state(page, f"s.viewports[0].voi.ww > {ww0} + 50")
    # The tool drawer opens and a measurement tool can be chosen by touch.
    page.tap("#cf-drawer")
    page.wait_for_timeout(400)
    assert page.locator("#cf-toolbar").bounding_box()["y"] < 667
    page.tap('[data-tool="length"]')
    st = wait_state(page, "s.primary === 'length' && s.touchMode === 'tool'")


# ----------------------------------------------------------------------------------------------
# 8. errors, language, export


def test_clear_error_messages(viewer_server: ViewerServer, new_page) -> None:
    page = new_page()
    page.goto(viewer_server.url("1.2.3.4.5.6.7.8.9"))
    page.wait_for_selector(".cf-error", timeout=30_000)
    assert page.evaluate("() => window.cloudfilmViewer.error") == "not_found"
    assert "未找到该检查" in page.inner_text(".cf-error")
    page.goto(viewer_server.url(ct_study(viewer_server), token=False))
    page.wait_for_selector(".cf-error", timeout=30_000)
    assert page.evaluate("() => window.cloudfilmViewer.error") in ("unauthorized", "forbidden")
    page.click(".cf-error .cf-lang")
    assert "session has expired" in page.inner_text(".cf-error") or "permission" in page.inner_text(
        ".cf-error"
    )
    page.click(".cf-error .cf-lang")
    # Network down.
    page2 = new_page()
    page2.route("**/dicom-web/**", lambda route: route.abort("internetdisconnected"))
    page2.goto(viewer_server.url(ct_study(viewer_server)))
    page2.wait_for_selector(".cf-error", timeout=30_000)
    assert page2.evaluate("() => window.cloudfilmViewer.error") == "network"
    assert "网络连接中断" in page2.inner_text(".cf-error")
    # No study in the link.
    page2.unroute("**/dicom-web/**")
    page2.goto(f"{viewer_server.server.http_url}/viewer/")
    page2.wait_for_selector(".cf-error")
    assert page2.evaluate("() => window.cloudfilmViewer.error") == "no_study"


def test_token_stays_out_of_the_url_and_language_switch(
    viewer_server: ViewerServer, new_page
) -> None:
    page = new_page()
    open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    assert "token" not in page.url
    assert page.locator('[data-tool="length"]').get_attribute("title").startswith("长度")
    page.click("#cf-lang")
    assert page.locator('[data-tool="length"]').get_attribute("title").startswith("Length")
    assert "Im: 20/40" in state(page)["viewports"][0]["overlay"]["tr"]
    page.click("#cf-lang")
    assert state(page)["lang"] == "zh"


def test_export_png(viewer_server: ViewerServer, new_page) -> None:
    page = new_page()
    open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    with page.expect_download() as dl:
        page.click('[data-action="export"]')
    path = dl.value.path()
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert dl.value.suggested_filename.endswith(".png")
    assert img.shape[0] > 200 and img.std() > 20
    # The exported image carries the same grey levels as the screen: bone white, lung black.
    assert (img.mean(axis=2) > 250).sum() > 50 and (img.mean(axis=2) < 5).sum() > 1000


def test_serving(viewer_server: ViewerServer) -> None:
    import httpx

    base = viewer_server.server.http_url
    r = httpx.get(f"{base}/viewer/?study=1.2.3", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
    assert "text/html" in r.headers["content-type"]
    assets = [p for p in (VIEWER_DIR / "assets").iterdir() if p.suffix in (".js", ".wasm")]
    wasm = next(p for p in assets if p.suffix == ".wasm")
    r = httpx.get(f"{base}/viewer/assets/{wasm.name}", headers={"Accept-Encoding": "br"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/wasm"
    assert "immutable" in r.headers["cache-control"] and r.headers["content-encoding"] == "br"
    assert r.content == wasm.read_bytes()  # httpx decodes br
    assert httpx.get(f"{base}/viewer/assets/../../../cli.py").status_code == 404
    assert httpx.get(f"{base}/viewer/nope.js").status_code == 404
    r = httpx.get(f"{base}/viewer?study=1.2.3", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/viewer/?study=1.2.3"


VIEWER_DIR = (
    __import__("pathlib").Path(__file__).resolve().parents[2] / "src/cloudfilm/static/viewer"
)

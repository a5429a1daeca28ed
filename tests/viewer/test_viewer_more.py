"""More of the viewer in a real browser: the magnifier, deleting one selected measurement with
the Delete key, and the network dropping while a series streams in.

Same setup as test_viewer.py (one ``cloudfilm serve`` with the demo CT, Debian's Chromium with
SwiftShader WebGL); every check reads what a user would see: screen pixels, the status line,
the overlay, the measurements of the test hook.
"""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import ViewerServer
from .test_viewer import (
    at,
    click,
    ct_study,
    drag,
    expected,
    grey,
    open_viewer,
    region,
    screen,
    settle,
    state,
    wait_stat,
    wait_state,
)

pytestmark = pytest.mark.timeout(180)


# ----------------------------------------------------------------------------------------------
# 1. magnifier


def _magnification(
    before: np.ndarray, during: np.ndarray, centre: tuple[float, float], half: int = 100
) -> tuple[float, float, float]:
    """How the square of ``half`` pixels around ``centre`` on ``during`` relates to ``before``:
    the factor k for which during[c + d] best matches before[c + d / k], the mean grey error at
    that k, and the error at k = 1 (nothing magnified)."""
    cx, cy = centre
    dy, dx = np.mgrid[-half : half + 1 : 4, -half : half + 1 : 4]
    got = during[np.round(cy + dy).astype(int), np.round(cx + dx).astype(int)].mean(axis=-1)

    def error(k: float) -> float:
        src = before[np.round(cy + dy / k).astype(int), np.round(cx + dx / k).astype(int)]
        return float(np.abs(src.mean(axis=-1) - got).mean())

    best = min(np.arange(1.0, 15.0, 0.05), key=error)
    return float(best), error(best), error(1.0)


def _box(page, selector: str) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    b = page.locator(selector).bounding_box()
    return round(b["x"]), round(b["y"]), round(b["width"]), round(b["height"])


def test_magnifier_enlarges_the_area_under_the_pointer(
    viewer_server: ViewerServer, new_page
) -> None:
    page = new_page()
    st = open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    voi = st["viewports"][0]["voi"]
    before = screen(page)
    # The toolbar button and the `m` key both select it (and `w` goes back to window/level).
    page.click('[data-tool="magnify"]')
    assert state(page)["primary"] == "magnify"
    assert page.get_attribute('[data-tool="magnify"]', "aria-pressed") == "true"
    page.keyboard.press("w")
    assert state(page)["primary"] == "wl"
    page.keyboard.press("m")
    assert state(page)["primary"] == "magnify"
    assert page.locator(".magnifyTool").count() == 0

    # Press and hold on the first marker (a small white square): a lens appears around it.
    m1 = viewer_server.demo.ct.markers[0]
    p = at(page, m1.col, m1.row)
    page.mouse.move(*p)
    page.wait_for_timeout(50)
    page.mouse.down()
    # Cornerstone holds a still press ~400 ms (double-click detection) before the tool sees it.
    page.wait_for_selector(".magnifyTool", state="visible", timeout=5_000)
    settle(page, 300)
    x, y, w, h = _box(page, ".magnifyTool")
    assert w >= 150 and h >= 150
    assert x + w / 2 == pytest.approx(p[0], abs=2) and y + h / 2 == pytest.approx(p[1], abs=2)
    during = screen(page)
    # Inside the lens: the neighbourhood of the pointer, enlarged (same grey levels, k times
    # bigger), not the unmagnified picture.
    k, err, err1 = _magnification(before, during, p)
    assert k >= 2.0, k
    assert err < 6 and err1 > 5 * err, (k, err, err1)
    # The marker now covers about k² times as many white pixels inside the lens.
    lens_before = before[y : y + h, x : x + w].min(axis=-1) > 250
    lens_during = during[y : y + h, x : x + w].min(axis=-1) > 250
    assert lens_before.sum() > 20
    assert lens_during.sum() / lens_before.sum() == pytest.approx(k * k, rel=0.35)
    # Outside the lens nothing changed.
    outside = np.ones(before.shape[:2], bool)
    outside[y : y + h, x : x + w] = False
    assert np.abs(during - before)[outside].mean() < 0.5

    # Drag to the lower edge of the bone disc: the lens follows and magnifies what is there now.
    bone = viewer_server.demo.ct.region("bone")
    bcol, brow, _ = region(viewer_server, "bone")
    q = at(page, bcol, brow + bone.semi_axes_mm[1] / viewer_server.demo.ct.pixel_spacing_mm)
    page.mouse.move(*q, steps=12)
    settle(page, 300)
    x2, y2, w2, h2 = _box(page, ".magnifyTool")
    assert x2 + w2 / 2 == pytest.approx(q[0], abs=2) and y2 + h2 / 2 == pytest.approx(q[1], abs=2)
    k2, err2, err21 = _magnification(before, screen(page), q)
    assert k2 == pytest.approx(k, rel=0.1) and err2 < 6 and err21 > 5 * err2, (k2, err2, err21)
    # The magnifier neither windows nor measures.
    st = state(page)
    assert st["viewports"][0]["voi"]["ww"] == pytest.approx(voi["ww"])
    assert st["viewports"][0]["voi"]["wc"] == pytest.approx(voi["wc"])
    assert st["measurements"] == []

    # Release: the lens goes away and the picture is as before.
    page.mouse.up()
    page.wait_for_selector(".magnifyTool", state="detached", timeout=5_000)
    settle(page, 200)
    assert np.abs(screen(page) - before).mean() < 0.5


# ----------------------------------------------------------------------------------------------
# 2. Delete removes the selected measurement only


SVG = '.cf-cell[data-index="0"] svg'


def _strokes(page, uid: str) -> set[str]:  # type: ignore[no-untyped-def]
    """Colours the shapes (lines, ellipse) of an annotation are drawn in."""
    return set(
        page.evaluate(
            f"""uid => [...document.querySelectorAll(`{SVG} [data-id^="${{uid}}"][stroke]`)]
                  .map(e => e.getAttribute('stroke').replace(/ /g, ''))""",
            uid,
        )
    )


def _drawn(page, uid: str) -> int:  # type: ignore[no-untyped-def]
    """SVG elements of an annotation on screen: its shapes and its text box."""
    return page.evaluate(
        f"""uid => document.querySelectorAll(
              `{SVG} [data-id^="${{uid}}"], {SVG} [data-annotation-uid="${{uid}}"]`).length""",
        uid,
    )


def _tinted(img: np.ndarray, colour: str, box: tuple[int, int, int, int]) -> int:
    """Pixels of ``box`` (x0, y0, x1, y1) drawn green or yellow: annotation strokes, blended
    into the grey image by anti-aliasing (the image itself has R = G = B)."""
    x0, y0, x1, y1 = box
    r, g, b = np.moveaxis(img[y0:y1, x0:x1], -1, 0)
    if colour == "green":
        return int((g - np.maximum(r, b) > 40).sum())
    return int((np.minimum(r, g) - b > 40).sum())


def test_delete_key_removes_only_the_selected_measurement(
    viewer_server: ViewerServer, new_page
) -> None:
    page = new_page()
    st = open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    voi = st["viewports"][0]["voi"]
    ct = viewer_server.demo.ct
    # First an ellipse ROI inside the bone disc, then the length between the markers.
    bcol, brow, bhu = region(viewer_server, "bone")
    page.keyboard.press("e")
    drag(page, at(page, bcol, brow), at(page, bcol + 5, brow + 5))
    wait_stat(page, 1, "mean")
    m1, m2 = ct.markers
    page.keyboard.press("l")
    drag(page, at(page, m1.col, m1.row), at(page, m2.col, m2.row))
    st = wait_state(page, "s.measurements.length === 2 && s.measurements[1].stats")
    ellipse, length = st["measurements"]
    assert ellipse["tool"] == "EllipticalROI" and length["tool"] == "Length"
    assert length["stats"]["length"] == pytest.approx(ct.marker_distance_mm, rel=0.01)

    # Select the length by clicking on its line (window/level tool: the click must not window).
    page.keyboard.press("w")
    a, b = at(page, m1.col, m1.row), at(page, m2.col, m2.row)
    click(page, ((a[0] + b[0]) / 2, a[1]))
    page.mouse.move(*at(page, 10, 245))  # away from both, so nothing is merely hovered
    settle(page, 200)
    assert _strokes(page, length["uid"]) == {"rgb(0,220,0)"}
    assert _strokes(page, ellipse["uid"]) == {"rgb(255,255,0)"}
    st = state(page)
    assert st["viewports"][0]["voi"]["ww"] == pytest.approx(voi["ww"])
    # On screen: the line between the markers is drawn green, the ellipse yellow.
    line_band = (round(a[0]) + 15, round(a[1]) - 3, round(b[0]) - 15, round(a[1]) + 4)
    e0 = at(page, bcol - 8, brow - 8)
    e1 = at(page, bcol + 8, brow + 8)
    ellipse_box = (round(e0[0]), round(e0[1]), round(e1[0]), round(e1[1]))
    img = screen(page)
    assert _tinted(img, "green", line_band) > 50
    assert _tinted(img, "yellow", ellipse_box) > 20

    page.keyboard.press("Delete")
    st = wait_state(page, "s.measurements.length === 1")
    (left,) = st["measurements"]
    assert left["uid"] == ellipse["uid"] and left["tool"] == "EllipticalROI"
    assert left["stats"]["mean"] == pytest.approx(bhu, abs=0.5)
    img = screen(page)
    assert _tinted(img, "green", line_band) == 0  # the line is gone
    # ... and the image under it shows again (the water between the markers).
    wcol, _, whu = region(viewer_server, "water")
    assert grey(img, at(page, wcol, m1.row)) == pytest.approx(expected(whu, voi), abs=5)
    assert _tinted(img, "yellow", ellipse_box) > 20  # the ellipse stays
    assert _drawn(page, length["uid"]) == 0 and _drawn(page, ellipse["uid"]) > 0
    # Nothing is selected any more: a second Delete removes nothing.
    page.keyboard.press("Delete")
    settle(page, 200)
    assert len(state(page)["measurements"]) == 1


# ----------------------------------------------------------------------------------------------
# 3. the network drops while the series streams in


class Network:
    """Routes every DICOMweb request of a page. Until ``drop()``, frames other than the one shown
    first are held (the series is still loading); ``drop()`` fails the held ones and all later
    requests as a lost connection would (``offline``: the browser also knows it is offline);
    ``restore()`` lets everything through again."""

    def __init__(self, page, vs: ViewerServer, offline: bool = True) -> None:  # type: ignore[no-untyped-def]
        thin = vs.demo.study("ct").series[0]
        self.page = page
        self.first_sop = thin.sop_instance_uids[(len(thin.sop_instance_uids) - 1) // 2]
        self.offline = offline
        self.mode = "hold"
        self.held: list[object] = []
        page.route("**/dicom-web/**", self._handle)

    def _handle(self, route) -> None:  # type: ignore[no-untyped-def]
        url = route.request.url
        if self.mode == "down":
            route.abort("internetdisconnected")
        elif self.mode == "hold" and "/frames/" in url and self.first_sop not in url:
            self.held.append(route)
        else:
            route.continue_()

    def drop(self) -> None:
        if self.offline:
            self.page.context.set_offline(True)
        self.mode = "down"
        held, self.held = self.held, []
        for r in held:
            r.abort("internetdisconnected")  # type: ignore[attr-defined]

    def restore(self) -> None:
        if self.offline:
            self.page.context.set_offline(False)
        self.mode = "up"


STATUS = """() => { const e = document.getElementById('cf-status');
  return e ? {text: e.textContent, opacity: getComputedStyle(e).opacity} : null }"""


def _status(page) -> dict | None:  # type: ignore[no-untyped-def]
    return page.evaluate(STATUS)


def _open_then_drop(page, vs: ViewerServer, offline: bool = True):  # type: ignore[no-untyped-def]
    """The CT on its first (middle) image while the rest still loads, then the network goes."""
    net = Network(page, vs, offline=offline)
    st = open_viewer(page, vs.url(ct_study(vs)))
    assert st["viewports"][0]["index"] == 19 and "20/40" in st["viewports"][0]["overlay"]["tr"]
    assert st["series"][0]["loaded"] < 40  # still streaming
    net.drop()
    # Every frame not fetched yet has failed by now: the viewer knows the network is gone.
    wait_state(page, "s.series[0].loaded + s.series[0].failed === 40")
    return net


def _image_box(page) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    """The phantom's body on screen (well above the status line at the bottom)."""
    x0, y0 = at(page, 40, 50)
    x1, y1 = at(page, 216, 200)
    return round(x0), round(y0), round(x1), round(y1)


def _same_image(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    return float(np.abs(a[y0:y1, x0:x1] - b[y0:y1, x0:x1]).mean())


def test_network_drop_keeps_the_image_and_slices_load_once_it_is_back(
    viewer_server: ViewerServer, new_page
) -> None:
    page = new_page()
    net = Network(page, viewer_server, offline=True)
    st = open_viewer(page, viewer_server.url(ct_study(viewer_server)))
    voi = st["viewports"][0]["voi"]
    assert st["series"][0]["loaded"] < 40
    disc_col, disc_row, disc_hu = region(viewer_server, "disc")
    disc_xy = at(page, disc_col, disc_row)
    box = _image_box(page)
    before = screen(page)
    assert grey(before, disc_xy) == pytest.approx(expected(disc_hu, voi), abs=5)

    net.drop()
    wait_state(page, "s.series[0].loaded + s.series[0].failed === 40")
    # A message on the status line (what it says: see the test below), on screen with its
    # dark amber background; never a blank screen nor an error page: the viewer and the image
    # shown stay.
    page.wait_for_function(
        "() => { const e = document.getElementById('cf-status');"
        " return e && e.textContent.trim() && getComputedStyle(e).opacity === '1'; }",
        timeout=10_000,
    )
    assert page.locator(".cf-error").count() == 0
    img = screen(page)
    assert _same_image(img, before, box) < 1
    assert grey(img, disc_xy) == pytest.approx(expected(disc_hu, voi), abs=5)
    sx, sy, sw, sh = _box(page, "#cf-status")
    assert sw > 50 and sh > 10
    status_bg = img[sy + 2 : sy + 4, sx + 2 : sx + 4].reshape(-1, 3).mean(axis=0)
    assert np.abs(status_bg - np.array([0x40, 0x2A, 0x00])).max() < 10
    # Scrolling to a slice that never arrived keeps the image on screen.
    page.keyboard.press("End")
    settle(page, 800)
    img = screen(page)
    assert _same_image(img, before, box) < 1
    assert page.locator(".cf-error").count() == 0

    # The network is back: slices the user goes to load and show.
    net.restore()
    page.keyboard.press("Home")
    st = wait_state(page, "s.series[0].loaded >= 2 && s.viewports[0].overlay.tr.includes('1/40')")
    img = screen(page)  # the first slice has no disc: water where the disc was
    assert grey(img, disc_xy) == pytest.approx(expected(0, voi), abs=5)
    assert st["viewports"][0]["instanceNumber"] == 1
    page.keyboard.press("End")
    st = wait_state(page, "s.series[0].loaded >= 3 && s.viewports[0].overlay.tr.includes('40/40')")
    assert grey(screen(page), disc_xy) == pytest.approx(expected(0, voi), abs=5)
    page.keyboard.press("PageUp")
    wait_state(page, "s.series[0].loaded >= 4 && s.viewports[0].overlay.tr.includes('30/40')")
    page.keyboard.press("PageUp")  # slice 20 again, from the cache: the disc
    wait_state(page, "s.viewports[0].overlay.tr.includes('20/40')")
    assert grey(screen(page), disc_xy) == pytest.approx(expected(disc_hu, voi), abs=5)
    assert page.locator(".cf-error").count() == 0


@pytest.mark.parametrize("offline", [True, False], ids=["browser-offline", "server-unreachable"])
def test_network_drop_message_names_the_network(
    viewer_server: ViewerServer, new_page, offline: bool
) -> None:
    page = new_page()
    _open_then_drop(page, viewer_server, offline=offline)
    settle(page, 400)
    st = _status(page)
    assert st is not None and st["opacity"] == "1"
    assert "网络连接中断" in st["text"], st["text"]
    # Still said while the network stays down and the user keeps scrolling.
    page.keyboard.press("End")
    page.wait_for_timeout(7_000)
    st = _status(page)
    assert st["opacity"] == "1" and "网络连接中断" in st["text"], st


def test_failed_slice_does_not_relabel_the_image_on_screen(
    viewer_server: ViewerServer, new_page
) -> None:
    page = new_page()
    net = _open_then_drop(page, viewer_server)
    disc_col, disc_row, disc_hu = region(viewer_server, "disc")
    disc_xy = at(page, disc_col, disc_row)
    page.keyboard.press("Home")  # slice 1 never arrived
    settle(page, 800)
    page.keyboard.press("2")  # mediastinum window: the overlay is redrawn
    st = wait_state(page, "Math.round(s.viewports[0].voi.ww) === 350")
    voi = st["viewports"][0]["voi"]
    img = screen(page)
    assert grey(img, disc_xy) == pytest.approx(expected(disc_hu, voi), abs=5)  # slice 20 shown
    vp = st["viewports"][0]
    assert "20/40" in vp["overlay"]["tr"], vp["overlay"]["tr"]
    assert vp["index"] == 19 and vp["instanceNumber"] == 20
    # Network back: Home goes to the first slice.
    net.restore()
    page.keyboard.press("Home")
    wait_state(page, "s.viewports[0].overlay.tr.includes('1/40')", timeout=10_000)
    assert grey(screen(page), disc_xy) == pytest.approx(expected(0, voi), abs=5)


def test_streaming_resumes_when_the_network_is_back(viewer_server: ViewerServer, new_page) -> None:
    page = new_page()
    net = _open_then_drop(page, viewer_server)
    net.restore()
    wait_state(page, "s.series.every(x => x.loaded === x.total)", timeout=8_000)

"""Viewer benchmark: time to first image and to a fully loaded 300-slice CT, in Chromium.

    .venv/bin/python -m bench.viewer [--runs 5] [--slices 300] [--size 512] [--no-throttle]

``cloudfilm serve`` holds the demo CT study (a 300-slice 512×512 thin series and its 5 mm
reconstruction); Debian's Chromium (Playwright, SwiftShader WebGL) opens
``/viewer/?study=…#token=…`` in a fresh browser context each run (cold browser cache), on
loopback and then throttled through the DevTools protocol to 30 Mbit/s down, 10 ms latency.
Times are from navigation start:

- first image: the middle slice on screen (the 2D fast path of boot.ts: real pixels, modality
  LUT and window applied in the browser, before the WebGL viewer has started);
- viewer ready: the same slice drawn by Cornerstone3D (WebGL), tools usable;
- series loaded: every frame of the 300-slice series fetched, decoded and cached.

Targets (issue 4): first image < 300 ms on loopback and < 1 s throttled; all 300 slices loaded
in < 3 s on loopback. Results go to bench/results/viewer-*.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from tests.browser import CHROMIUM, CHROMIUM_ARGS  # the same browser set-up as the tests

from bench.common import WORK, ct_files, save, start_cloudfilm

THROTTLE = {
    "offline": False,
    "latency": 10,
    "downloadThroughput": 30_000_000 / 8,
    "uploadThroughput": 30_000_000 / 8,
}


def one_run(browser, url: str, series_uid: str, throttle: bool, full: bool, timeout: float):  # type: ignore[no-untyped-def]
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
    page = ctx.new_page()
    if throttle:
        cdp = ctx.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", THROTTLE)
    try:
        page.goto(url)
        page.wait_for_function(
            "() => window.cloudfilmViewer && window.cloudfilmViewer.state"
            " && window.cloudfilmViewer.state().firstImageAt",
            timeout=timeout * 1000,
        )
        result = {}
        if full:
            # loadedAt(uid) is cheap; state() builds a snapshot (layout reads) at every poll.
            page.wait_for_function(
                f"() => window.cloudfilmViewer.loadedAt"
                f" ? window.cloudfilmViewer.loadedAt('{series_uid}')"
                f" : (window.cloudfilmViewer.state().series.find(s => s.uid === '{series_uid}')"
                " || {}).loadedAt",
                timeout=timeout * 1000,
                polling=50,
            )
        st = page.evaluate("() => window.cloudfilmViewer.state()")
        series = next(s for s in st["series"] if s["uid"] == series_uid)
        result = {
            "first_image_ms": st["firstPaintAt"],
            "preview_ms": st["previewAt"],
            "viewer_ready_ms": st["firstImageAt"],
            "series_loaded_ms": series["loadedAt"],
            "frames_loaded": series["loaded"],
            "frames_failed": series["failed"],
            "frames": series["total"],
            "shown_index": st["viewports"][0]["index"],
            "frame_workers": page.evaluate(
                "() => window.cloudfilmViewer.frameStats"
                " ? window.cloudfilmViewer.frameStats() : null"
            ),
        }
        return result
    finally:
        ctx.close()


def summarise(runs: list[dict], key: str) -> dict:
    vals = [r[key] for r in runs if r.get(key) is not None]
    if not vals:
        return {}
    return {
        "median": round(statistics.median(vals)),
        "min": round(min(vals)),
        "max": round(max(vals)),
        "n": len(vals),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--no-throttle", action="store_true")
    ap.add_argument(
        "--throttled-full",
        action="store_true",
        help="also time the full series load throttled (slow)",
    )
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from cloudfilm.access.tokens import create_token
    from cloudfilm.demo import DemoManifest
    from cloudfilm.storage.database import Database

    build = subprocess.run(["bash", "scripts/build-web.sh"], capture_output=True, text=True)
    if build.returncode != 0:
        sys.exit(f"viewer build failed:\n{build.stderr[-2000:]}")
    files = ct_files(args.slices, args.size)
    demo_dir = files[0].parents[2]
    manifest = DemoManifest.load(demo_dir)
    study = manifest.study("ct")
    thin = study.series[0]

    root = WORK / f"viewer-{int(time.time())}"
    db_url = f"sqlite:///{root / 'index.sqlite3'}"
    root.mkdir(parents=True)
    env = {"CLOUDFILM_DATABASE_URL": db_url, "CLOUDFILM_DATA_DIR": str(root / "data")}
    imp = subprocess.run(
        [sys.executable, "-m", "cloudfilm.cli", "import", str(demo_dir / "ct")],
        env={**os.environ, **env, "CLOUDFILM_CONFIG": str(root / "none.toml")},
        capture_output=True,
        text=True,
    )
    if imp.returncode != 0:
        sys.exit(f"import failed:\n{imp.stdout}\n{imp.stderr}")
    db = Database(db_url)
    try:
        _info, token = create_token(db, "bench-viewer", "read", hospital=1)
    finally:
        db.dispose()
    server = start_cloudfilm(root / "data", db_url)
    url = f"{server.http_url}/viewer/?study={study.study_uid}#token={token}"
    print(
        f"CT: {thin.number_of_instances} slices {thin.rows}x{thin.columns},"
        f" server {server.http_url}"
    )
    report: dict = {
        "load_average_before": os.getloadavg(),
        "slices": thin.number_of_instances,
        "size": [thin.rows, thin.columns],
        "series_bytes": sum((demo_dir / f).stat().st_size for f in thin.files),
        "scenarios": {},
    }
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            # Warm-up: server caches (series metadata) and the browser binary itself.
            one_run(browser, url, thin.series_uid, False, True, 120)
            scenarios = [("loopback", False, True)]
            if not args.no_throttle:
                scenarios.append(("30 Mbit/s, 10 ms", True, args.throttled_full))
            for name, throttle, full in scenarios:
                runs = [
                    one_run(browser, url, thin.series_uid, throttle, full, 300)
                    for _ in range(args.runs)
                ]
                report["scenarios"][name] = {
                    "runs": runs,
                    "first_image_ms": summarise(runs, "first_image_ms"),
                    "viewer_ready_ms": summarise(runs, "viewer_ready_ms"),
                    "series_loaded_ms": summarise(runs, "series_loaded_ms") if full else {},
                }
            browser.close()
    finally:
        server.stop()
    report["load_average_after"] = os.getloadavg()
    path = save("viewer", report)
    print()
    print(f"{'scenario':<20} {'first image':>14} {'viewer ready':>14} {'300 slices loaded':>18}")
    for name, sc in report["scenarios"].items():

        def fmt(d: dict) -> str:
            return f"{d['median']} ms" if d else "-"

        print(
            f"{name:<20} {fmt(sc['first_image_ms']):>14} {fmt(sc['viewer_ready_ms']):>14}"
            f" {fmt(sc['series_loaded_ms']):>18}"
        )
    print(
        "(medians of", args.runs, "runs; targets: first image < 300 ms loopback, < 1 s throttled;"
    )
    print(" all slices < 3 s loopback)")
    la, lb = report["load_average_before"], report["load_average_after"]
    print(f"load average (1/5/15 min) before {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f},", end=" ")
    print(f"after {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f}")
    print(f"saved {path}")


if __name__ == "__main__":
    main()

"""Without a built viewer, /viewer/ says how to build it (503, in both languages); once
index.html is there it is served instead. No browser needed."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloudfilm.http.viewer import mount_viewer


def test_without_a_build_the_viewer_says_how_to_build_it(tmp_path: Path) -> None:
    app = FastAPI()
    mount_viewer(app, tmp_path)
    with TestClient(app) as client:
        for path in ("/viewer/?study=1.2.3", "/viewer/assets/index.js"):
            r = client.get(path)
            assert r.status_code == 503, path
            assert r.headers["retry-after"] == "60" and r.headers["cache-control"] == "no-store"
            assert r.text.startswith("<!doctype html>")
            assert "影像浏览器尚未构建" in r.text and "The viewer has not been built" in r.text
            assert "<code>bash scripts/build-web.sh</code>" in r.text
        (tmp_path / "index.html").write_text("<!doctype html><title>viewer</title>")
        built = client.get("/viewer/?study=1.2.3")
        assert built.status_code == 200 and built.text == "<!doctype html><title>viewer</title>"

"""Browser tests of the viewer: one ``cloudfilm serve`` with the demo data (small CT) for the
whole session, Debian's Chromium driven by Playwright (software WebGL through SwiftShader, as
NOTES.md says), a fresh page per test. A failed test leaves a screenshot and the browser
console under test-artifacts/.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cloudfilm.access.tokens import create_token
from cloudfilm.demo import DemoManifest, write_demo
from cloudfilm.storage.database import Database
from tests.conftest import ARTIFACTS, ServerProcess

REPO = Path(__file__).resolve().parents[2]
VIEWER_BUILD = REPO / "src" / "cloudfilm" / "static" / "viewer" / "index.html"
CT_SLICES = 40
CT_SIZE = 256


@dataclass
class ViewerServer:
    server: ServerProcess
    demo: DemoManifest
    token: str

    def url(self, *studies: str, token: bool = True, **query: str) -> str:
        q = "&".join([f"study={s}" for s in studies] + [f"{k}={v}" for k, v in query.items()])
        frag = f"#token={self.token}" if token else ""
        return f"{self.server.http_url}/viewer/?{q}{frag}"


def _ensure_built() -> None:
    run = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-web.sh")], capture_output=True, text=True
    )
    if run.returncode != 0 or not VIEWER_BUILD.is_file():
        pytest.fail(f"viewer build failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")


@pytest.fixture(scope="session")
def viewer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerServer]:
    _ensure_built()
    root = tmp_path_factory.mktemp("viewer")
    demo = write_demo(
        root / "demo", ct_slices=CT_SLICES, ct_size=CT_SIZE, include_pydicom_files=False
    )
    demo.root = root / "demo"
    server = ServerProcess(
        data_dir=root / "data", database_url=f"sqlite:///{root / 'index.sqlite3'}"
    )
    server.data_dir.mkdir(parents=True, exist_ok=True)
    imp = subprocess.run(
        [sys.executable, "-m", "cloudfilm.cli", "import"]
        + [str(demo.root / d) for d in ("ct", "mr", "dx", "us", "codecs")],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert imp.returncode == 0, imp.stdout + imp.stderr
    db = Database(server.database_url)
    try:
        _info, token = create_token(db, "viewer-tests", "read", hospital=1)
    finally:
        db.dispose()
    server.start()
    try:
        yield ViewerServer(server=server, demo=demo, token=token)
    finally:
        server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


class PageFactory:
    def __init__(self, browser: object) -> None:
        self.browser = browser
        self.pages: list[object] = []
        self.console: list[str] = []

    def __call__(self, width: int = 1280, height: int = 800, **kw: object):  # type: ignore[no-untyped-def]
        ctx = self.browser.new_context(  # type: ignore[attr-defined]
            viewport={"width": width, "height": height}, device_scale_factor=1, **kw
        )
        page = ctx.new_page()
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.pages.append(page)
        return page


@pytest.fixture
def new_page(browser: object, request: pytest.FixtureRequest) -> Iterator[PageFactory]:
    factory = PageFactory(browser)
    yield factory
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        for i, page in enumerate(factory.pages):
            with contextlib.suppress(Exception):  # the page may be gone
                page.screenshot(path=str(ARTIFACTS / f"viewer-{request.node.name}-{i}.png"))  # type: ignore[attr-defined]
        (ARTIFACTS / f"viewer-{request.node.name}-console.txt").write_text(
            "\n".join(factory.console)
        )
    for page in factory.pages:
        with contextlib.suppress(Exception):
            page.context.close()  # type: ignore[attr-defined]

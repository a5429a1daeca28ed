"""A study moved to the cold folder opens in the viewer (Chromium, the built viewer), every
slice loaded: the cold tier is invisible to a radiologist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cloudfilm.access.tokens import create_token
from cloudfilm.demo import write_demo
from cloudfilm.storage.database import Database
from tests.conftest import ServerProcess
from tests.viewer.conftest import VIEWER_BUILD
from tests.viewer.test_viewer import open_viewer, wait_state

pytestmark = pytest.mark.timeout(300)
SLICES = 8


def _cli(server: ServerProcess, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cloudfilm.cli", *args],
        env=server.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_cold_study_opens_in_the_viewer(tmp_path: Path, browser: object) -> None:
    if not VIEWER_BUILD.is_file():
        pytest.fail("the viewer is not built (bash scripts/build-web.sh viewer)")
    demo = write_demo(tmp_path / "demo", ct_slices=SLICES, ct_size=64, include_pydicom_files=False)
    cold = tmp_path / "cold"
    server = ServerProcess(
        data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'index.sqlite3'}",
        env_extra={"CLOUDFILM_COLD_BLOB_URL": cold.as_uri()},
    )  # fmt: skip
    server.data_dir.mkdir(parents=True)
    _cli(server, "import", str(tmp_path / "demo" / "ct"))
    study = demo.study("ct")
    out = _cli(server, "tier", "run", "--study", study.study_uid)
    assert f"{study.number_of_instances} blob(s) moved" in out
    assert not list((server.data_dir / "blobs" / "instances").rglob("*.dcm"))
    assert len(list(cold.rglob("*.dcm"))) == study.number_of_instances
    db = Database(server.database_url)
    try:
        _info, token = create_token(db, "viewer", "read", hospital=1)
    finally:
        db.dispose()
    server.start()
    try:
        ctx = browser.new_context(viewport={"width": 1024, "height": 768})  # type: ignore[attr-defined]
        page = ctx.new_page()
        url = f"{server.http_url}/viewer/?study={study.study_uid}#token={token}"
        st = open_viewer(page, url)
        assert st["viewports"][0]["rendered"] and st["viewports"][0]["modality"] == "CT"
        st = wait_state(page, "s.series.every(x => x.loaded === x.total)")
        assert sum(x["total"] for x in st["series"]) == study.number_of_instances
        ctx.close()
    finally:
        server.stop()

"""Shared fixtures: real index engines (SQLite and the machine's PostgreSQL), a real archive,
and ``cloudfilm serve`` running as a subprocess for tests that talk to it over the network.

PostgreSQL tests never skip: when the server at CLOUDFILM_TEST_PG (default
postgresql+psycopg://postgres@127.0.0.1:5432/postgres) cannot be reached they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from cloudfilm.archive import Archive
from cloudfilm.config import Settings

PG_ADMIN_URL = os.environ.get(
    "CLOUDFILM_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
ENGINES = ["sqlite", "postgresql"]
DCMTK = Path("/usr/bin")
"""dcmtk's tools, by absolute path: pynetdicom installs its own echoscu/findscu in the venv."""
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
if os.environ.get("CLOUDFILM_TEST_BLOB_ENCRYPTION") == "1":
    # the same suites on an envelope-encrypted file store (docs/keeping.md): every Settings()
    # and every `cloudfilm serve` of the run reads this KEK (a fixed test key, not a secret)
    os.environ.setdefault(
        "CLOUDFILM_BLOB_KEK", "test-kek:" + "Y2xvdWRmaWxtIHRlc3Qga2VrLCBub3Qgc2VjcmV0ISE="
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PG_DSN = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
_templates: dict[str, str] = {}
"""Per test process: an index of each engine migrated once, which every fresh index copies.

Migrating takes ~1 s on PostgreSQL and ~0.6 s on SQLite; a copy (``CREATE DATABASE ...
TEMPLATE``, a file copy) is what a fresh index costs instead, hundreds of times per run. The
copy is what ``cloudfilm serve`` makes of an empty index; tests of migrating itself ask for an
index never migrated (``@pytest.mark.unmigrated_index``)."""


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def _template(engine: str) -> str:
    if engine not in _templates:
        from cloudfilm.storage.database import Database

        if engine == "sqlite":
            path = Path(tempfile.mkdtemp(prefix="cf-template-")) / "index.sqlite3"
            url, _templates[engine] = f"sqlite:///{path}", str(path)
        else:
            name = f"cf_template_{uuid.uuid4().hex[:12]}"
            _pg_admin(f'CREATE DATABASE "{name}"')
            url, _templates[engine] = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}", name
        db = Database(url)
        db.upgrade()
        db.dispose()  # no connection may stay open on a PostgreSQL template
        if engine == "sqlite":
            assert not Path(f"{path}-wal").exists(), "the template's WAL was not checkpointed"
    return _templates[engine]


@pytest.fixture(scope="session", autouse=True)
def _drop_templates() -> Iterator[None]:
    yield
    if "postgresql" in _templates:
        _pg_admin(f'DROP DATABASE IF EXISTS "{_templates.pop("postgresql")}" WITH (FORCE)')
    if "sqlite" in _templates:
        shutil.rmtree(Path(_templates.pop("sqlite")).parent, ignore_errors=True)


def _pg_database(migrated: bool = True) -> Iterator[str]:
    name = f"cf_test_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{_template("postgresql")}"' if migrated else ""
    _pg_admin(f'CREATE DATABASE "{name}"{template}')
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _sqlite_database(path: Path, migrated: bool = True) -> str:
    if migrated:
        shutil.copyfile(_template("sqlite"), path)
    return f"sqlite:///{path}"


def _index(engine: str, folder: Path, migrated: bool) -> Iterator[str]:
    if engine == "sqlite":
        yield _sqlite_database(folder / "index.sqlite3", migrated)
    else:
        yield from _pg_database(migrated)


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh index on each engine, holding what a first start leaves: the schema at the
    newest revision (empty with ``@pytest.mark.unmigrated_index``)."""
    migrated = request.node.get_closest_marker("unmigrated_index") is None
    yield from _index(request.param, tmp_path, migrated)


@pytest.fixture(scope="module", params=ENGINES)
def module_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh index on each engine, shared by one test module's server."""
    yield from _index(request.param, tmp_path_factory.mktemp("idx"), True)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def archive(settings: Settings) -> Iterator[Archive]:
    a = Archive(settings)
    yield a
    a.close()


@dataclass
class ServerProcess:
    """``cloudfilm serve`` in a subprocess, on free loopback ports."""

    data_dir: Path
    database_url: str
    env_extra: dict[str, str] = field(default_factory=dict)
    ae_title: str = "CLOUDFILM"
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "CLOUDFILM_DATA_DIR": str(self.data_dir),
                "CLOUDFILM_DATABASE_URL": self.database_url,
                "CLOUDFILM_AE_TITLE": self.ae_title,
                "CLOUDFILM_DICOM_HOST": "127.0.0.1",
                "CLOUDFILM_DICOM_PORT": str(self.dicom_port),
                "CLOUDFILM_HTTP_HOST": "127.0.0.1",
                "CLOUDFILM_HTTP_PORT": str(self.http_port),
                "CLOUDFILM_CONFIG": str(self.data_dir / "none.toml"),
                # one DICOM and one HTTP process unless a test asks for more: servers start
                # faster (the DICOMweb tests run with two HTTP processes)
                "CLOUDFILM_DICOM_WORKERS": "1",
                "CLOUDFILM_HTTP_WORKERS": "1",
            }
        )
        env.update(self.env_extra)
        return env

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"server-{self.http_port}.log"
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cloudfilm.cli", "serve"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.http_url}/healthz", timeout=1).status_code == 200:
                    with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                        return
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def server_factory(tmp_path: Path, database_url: str) -> Iterator[type[ServerProcess] | object]:
    started: list[ServerProcess] = []

    def make(**kw: object) -> ServerProcess:
        s = ServerProcess(
            data_dir=kw.pop("data_dir", tmp_path / "data"),  # type: ignore[arg-type]
            database_url=database_url,
            **kw,  # type: ignore[arg-type]
        )
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def server(server_factory) -> ServerProcess:  # type: ignore[no-untyped-def]
    s = server_factory()
    s.start()
    return s


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One Chromium for the whole run (each test opens its own contexts): Playwright's sync
    API cannot start a second instance while one is running, whatever the test order."""
    from tests.browser import chromium

    with chromium() as b:
        yield b


def dcmtk(tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run one of dcmtk's tools with Nagle off (see NOTES.md) and capture its output."""
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.run(
        [str(DCMTK / tool), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep server logs of failed tests under test-artifacts/ for CI readers."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name in ("server", "server_factory"):
            if name in getattr(item, "funcargs", {}):
                tmp = item.funcargs.get("tmp_path")
                if tmp:
                    ARTIFACTS.mkdir(exist_ok=True)
                    for log in Path(tmp).glob("server-*.log"):
                        shutil.copy(log, ARTIFACTS / f"{item.name}-{log.name}")


SLOW_FILES_FIRST = (
    "tests/gateway/test_gateway.py",
    "tests/test_dimse.py",
    "tests/viewer/test_viewer.py",
    "tests/test_schemathesis.py",
    "tests/dimse/test_store_interop.py",
    "tests/portal/test_security.py",
    "tests/keeping/test_rebuild.py",
    "tests/test_isolation.py",
    "tests/console_data/test_pages.py",
    "tests/dimse/test_pdu.py",
    "tests/keeping/test_retention.py",
    "tests/test_crash.py",
    "tests/viewer/test_viewer_more.py",
    "tests/portal/test_reports.py",
    "tests/keeping/test_replica.py",
)
"""The files that take longest (``--durations=0``), handed out first: with one process per
core taking whole files, a long file left for the end keeps one core busy while the other
idles (minutes of a run, measured). The rest keep their order."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``@pytest.mark.engines("sqlite")``: a test whose subject is not the index (a viewer, a
    DICOM transport, a file store) runs on one engine instead of both; each engine's own
    behaviour is tested by the tests left on both."""
    marker = metafunc.definition.get_closest_marker("engines")
    if marker is None:
        return
    unknown = set(marker.args) - set(ENGINES)
    assert marker.args and not unknown, f"engines({marker.args}): known are {ENGINES}"
    for fixture, scope in (("database_url", "function"), ("module_db", "module")):
        if fixture in metafunc.fixturenames:
            # as a parametrize mark, which takes precedence over the fixture's own params
            mark = pytest.mark.parametrize(fixture, list(marker.args), indirect=True, scope=scope)
            metafunc.definition.add_marker(mark)

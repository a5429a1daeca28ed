"""Shared pieces of the benchmarks: data, servers (cloudfilm and Orthanc), result files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = Path(os.environ.get("CLOUDFILM_BENCH_DIR", "/tmp/cloudfilm-bench"))
PG_ADMIN = os.environ.get("CLOUDFILM_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ct_files(slices: int = 300, size: int = 512) -> list[Path]:
    """The demo's CT series (written once, reused between runs)."""
    from cloudfilm.demo import DemoManifest, write_demo

    dest = WORK / f"demo-{slices}-{size}"
    if not (dest / "manifest.json").exists():
        write_demo(dest, ct_slices=slices, ct_size=size, include_pydicom_files=False)
    manifest = DemoManifest.load(dest)
    series = manifest.study("ct").series[0]
    return [manifest.path(f) for f in series.files]


def save(name: str, result: dict) -> Path:  # type: ignore[type-arg]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    return path


@contextmanager
def pg_database(template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (a copy of ``template``, a database name, when given)."""
    import psycopg

    name = f"cf_bench_{uuid.uuid4().hex[:10]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{copy}')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + (
            f"/{name}"
        )
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Server:
    """A DICOM (+ HTTP) server under test: cloudfilm or Orthanc."""

    name: str
    ae_title: str
    dicom_port: int
    http_port: int
    proc: subprocess.Popen[bytes]
    data_dir: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _wait(url: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except (httpx.HTTPError, OSError):
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not start")


def start_cloudfilm(
    data_dir: Path, database_url: str | None = None, env: dict[str, str] | None = None
) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    dicom, http = free_port(), free_port()
    e = dict(os.environ)
    e.update(
        {
            "CLOUDFILM_DATA_DIR": str(data_dir),
            "CLOUDFILM_DICOM_HOST": "127.0.0.1",
            "CLOUDFILM_DICOM_PORT": str(dicom),
            "CLOUDFILM_HTTP_HOST": "127.0.0.1",
            "CLOUDFILM_HTTP_PORT": str(http),
            "CLOUDFILM_CONFIG": str(data_dir / "none.toml"),
        }
    )
    if database_url:
        e["CLOUDFILM_DATABASE_URL"] = database_url
    e.update(env or {})
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudfilm.cli", "serve"],
        env=e,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _wait(f"http://127.0.0.1:{http}/healthz", dicom, proc)
    time.sleep(float(os.environ.get("CLOUDFILM_BENCH_SETTLE", "4")))  # DICOM workers importing
    return Server("cloudfilm", "CLOUDFILM", dicom, http, proc, data_dir)


def orthanc_available() -> bool:
    return Path(ORTHANC).exists()


def start_orthanc(data_dir: Path, *, dicomweb: bool = False) -> Server:
    data_dir.mkdir(parents=True, exist_ok=True)
    dicom, http = free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(data_dir / "storage"),
        "IndexDirectory": str(data_dir / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom,
        "HttpPort": http,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DefaultEncoding": "Utf8",
        "DicomCheckCalledAet": False,
        "UnknownSopClassAccepted": True,
        "StorageCompression": False,
        "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"] if dicomweb else [],
        "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/"},
    }
    cfg = data_dir / "orthanc.json"
    cfg.write_text(json.dumps(config))
    env = dict(os.environ, TCP_NODELAY="1")
    log = open(data_dir / "orthanc.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([ORTHANC, str(cfg)], env=env, stdout=log, stderr=subprocess.STDOUT)
    _wait(f"http://127.0.0.1:{http}/system", dicom, proc)
    return Server("orthanc", "ORTHANC", dicom, http, proc, data_dir)


def storescu(server: Server, files: list[Path], *, timeout: float = 600) -> None:
    """One association carrying ``files`` (dcmtk, Nagle off as NOTES.md says)."""
    env = dict(os.environ, TCP_NODELAY="1")
    proc = subprocess.run(
        [
            "/usr/bin/storescu",
            "-aec",
            server.ae_title,
            "127.0.0.1",
            str(server.dicom_port),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"storescu failed: {proc.stderr[-2000:]}")


def timed_parallel(server: Server, files: list[Path], associations: int) -> float:
    """Seconds to send ``files`` split over ``associations`` concurrent storescu processes."""
    import threading

    chunks = [files[i::associations] for i in range(associations)]
    errors: list[BaseException] = []

    def run(chunk: list[Path]) -> None:
        try:
            storescu(server, chunk)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (DICOM/HTTP workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks

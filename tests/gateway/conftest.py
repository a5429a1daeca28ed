"""A real cloud (``cloudfilm serve``), a real gateway (``cloudfilm gateway``) between it and
the modalities, and a proxy on the uplink that can cut it, slow it or make it answer 500."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from bench.netproxy import NetProxy

from cloudfilm.access.tokens import create_token
from cloudfilm.storage.database import Database
from tests.conftest import ServerProcess, free_port
from tests.gateway.studies import hashes
from tests.portal.conftest import SmsGateway


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The cloud's index engine does not matter to the gateway: SQLite only, for time."""
    return f"sqlite:///{tmp_path / 'cloud.sqlite3'}"


@dataclass
class GatewayProcess:
    """``cloudfilm gateway`` in a subprocess."""

    spool_dir: Path
    cloud_url: str
    token: str
    env_extra: dict[str, str] = field(default_factory=dict)
    dicom_port: int = field(default_factory=free_port)
    status_port: int = field(default_factory=free_port)
    hl7_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    """Default: next to the spool (a test that puts the spool on a tiny disk sets another)."""

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
        env.update(
            {
                "CLOUDFILM_GATEWAY_CONFIG": str(self.spool_dir.parent / "none.toml"),
                "CLOUDFILM_GATEWAY_CLOUD_URL": self.cloud_url,
                "CLOUDFILM_GATEWAY_TOKEN": self.token,
                "CLOUDFILM_GATEWAY_SPOOL_DIR": str(self.spool_dir),
                "CLOUDFILM_GATEWAY_DICOM_HOST": "127.0.0.1",
                "CLOUDFILM_GATEWAY_DICOM_PORT": str(self.dicom_port),
                "CLOUDFILM_GATEWAY_STATUS_PORT": str(self.status_port),
                "CLOUDFILM_GATEWAY_HL7_HOST": "127.0.0.1",
                "CLOUDFILM_GATEWAY_HL7_PORT": str(self.hl7_port),
                "CLOUDFILM_GATEWAY_RETRY_INITIAL_SECONDS": "0.2",
                "CLOUDFILM_GATEWAY_RETRY_MAX_SECONDS": "2",
            }
        )
        env.update(self.env_extra)
        return env

    def start(self, timeout: float = 30) -> None:
        self.log_path = self.log_path or self.spool_dir.parent / "gateway.log"
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloudfilm.cli", "gateway"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log()}")
            try:
                httpx.get(f"{self.status_url}/healthz", timeout=1).raise_for_status()
                with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                    return
            except (httpx.HTTPError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"gateway did not start:\n{self.log()}")

    def log(self) -> str:
        path = self.log_path
        return path.read_text(errors="replace") if path and path.exists() else ""

    def status(self) -> dict:  # type: ignore[type-arg]
        return httpx.get(f"{self.status_url}/status.json", timeout=5).json()

    def wait_until(self, check, timeout: float = 120, every: float = 0.2) -> dict:  # type: ignore[no-untyped-def,type-arg]
        deadline = time.monotonic() + timeout
        last: dict = {}  # type: ignore[type-arg]
        while time.monotonic() < deadline:
            last = self.status()
            if check(last):
                return last
            time.sleep(every)
        raise AssertionError(f"gateway status never matched: {last}\n{self.log()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Site:
    """One hospital's setup: the cloud, the uplink proxy, the gateway, the SMS receiver."""

    cloud: ServerProcess
    proxy: NetProxy
    gateway: GatewayProcess
    sms: SmsGateway
    token: str
    token_id: str
    read_token: str

    def cloud_instances(self) -> list[dict]:  # type: ignore[type-arg]
        r = httpx.get(
            f"{self.cloud.http_url}/dicom-web/instances",
            params={"limit": "100000"},
            headers={"Authorization": f"Bearer {self.read_token}"},
            timeout=30,
        )
        r.raise_for_status()
        return r.json() if r.status_code == 200 else []

    def cloud_blob_hashes(self, *, dimse: bool = True) -> list[str]:
        """SHA-256 of every instance in the cloud's storage area, computed afresh from the
        files: of their data sets (what C-STORE carried) or of the whole files."""
        root = self.cloud.data_dir / "blobs" / "instances"
        return hashes([p for p in root.rglob("*.dcm") if p.is_file()], dimse=dimse)

    def spool_hashes(self) -> list[str]:
        """The whole-file SHA-256 the gateway's spool recorded for what it acknowledged."""
        import sqlite3

        db = sqlite3.connect(self.gateway.spool_dir / "queue.sqlite3")
        try:
            return sorted(h for (h,) in db.execute("SELECT sha256 FROM items"))
        finally:
            db.close()


@pytest.fixture
def site(tmp_path: Path, server_factory) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    sms = SmsGateway()
    cloud = server_factory(
        env_extra={
            "CLOUDFILM_FILM_STABLE_SECONDS": "1",
            "CLOUDFILM_SMS_BACKEND": "webhook",
            "CLOUDFILM_SMS_WEBHOOK_URL": sms.url,
        }
    )
    db = Database(cloud.database_url)
    db.upgrade()
    info, token = create_token(db, "gateway", "write", hospital=1)
    _info, read_token = create_token(db, "checker", "read", hospital=1)
    db.dispose()
    cloud.start()
    proxy = NetProxy("127.0.0.1", cloud.http_port)
    spool = tmp_path / "gw" / "spool"
    spool.parent.mkdir(parents=True)
    gateway = GatewayProcess(spool_dir=spool, cloud_url=proxy.url, token=token)
    yield Site(cloud, proxy, gateway, sms, token, info.token_id, read_token)
    gateway.stop()
    proxy.close()
    sms.close()

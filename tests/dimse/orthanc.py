"""Debian's Orthanc as a DICOM peer in tests: its own storage in a temporary folder, loaded and
driven through its REST API, stopped at the end.

Tests that need it fail (never skip) when it is not installed: a green run must mean that
cloudfilm really talked to Orthanc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port

ORTHANC = Path("/usr/sbin/Orthanc")
INSTALL_HINT = (
    "CLOUDFILM_SETUP_TEST=1 scripts/setup.sh (or: apt-get install orthanc orthanc-dicomweb)"
)


@dataclass
class Orthanc:
    """One Orthanc process on free loopback ports; ``modalities`` is its DicomModalities."""

    work_dir: Path
    modalities: dict[str, Any] = field(default_factory=dict)
    ae_title: str = "ORTHANC"
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "orthanc.log"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "cloudfilm-tests",
            "StorageDirectory": str(self.work_dir / "storage"),
            "IndexDirectory": str(self.work_dir / "index"),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            # no bind-address option: refusing remote HTTP clients is the closest (NOTES.md)
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            # without it Orthanc drops the ideographic groups of Chinese names (NOTES.md)
            "DefaultEncoding": "Utf8",
            "DicomModalities": self.modalities,
            "Plugins": [],  # the REST API and the DICOM server are all these tests use
        }

    def start(self, timeout: float = 30.0) -> None:
        if not ORTHANC.exists():
            pytest.fail(f"Orthanc is not installed ({ORTHANC} is missing): run {INSTALL_HINT}")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.work_dir / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=2))
        env = dict(os.environ, TCP_NODELAY="1")  # dcmtk inside Orthanc: Nagle off (NOTES.md)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(ORTHANC), str(cfg)], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.http_url}/system", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"Orthanc's REST API did not answer within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(method, f"{self.http_url}{path}", timeout=120, **kw)
        if r.status_code != 200:
            raise AssertionError(f"Orthanc {method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None  # PUT /modalities answers with no body

    def upload(self, data: bytes) -> dict[str, str]:
        """POST one DICOM file; Orthanc's answer names the instance and its parents' IDs."""
        answer = self._request("POST", "/instances", content=data)
        assert answer["Status"] == "Success", answer
        return dict(answer)

    def set_modality(self, name: str, ae_title: str, host: str, port: int) -> None:
        """Re-point a DicomModalities entry (kept in memory: DicomModalitiesInDatabase is off)."""
        self._request(
            "PUT", f"/modalities/{name}", json={"AET": ae_title, "Host": host, "Port": port}
        )

    def store(self, modality: str, resources: list[str]) -> dict[str, Any]:
        """Orthanc's C-STORE SCU: send ``resources`` (any level) to ``modality``, waiting."""
        return dict(
            self._request(
                "POST",
                f"/modalities/{modality}/store",
                json={"Resources": resources, "Synchronous": True},
            )
        )

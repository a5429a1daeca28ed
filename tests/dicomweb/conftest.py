"""DICOMweb test fixtures: one real ``cloudfilm serve`` per engine per module, loaded once with
the demo data set through STOW-RS, plus API tokens of each scope.

Tests talk to it over HTTP with dicomweb-client (the reference Python client) and httpx; nothing
of ours is mocked. Tests that store must use fresh UIDs so they do not disturb the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from cloudfilm.access.tokens import create_token
from cloudfilm.demo import DemoManifest, write_demo
from cloudfilm.storage.database import Database
from tests.conftest import ServerProcess

CT_SLICES = 6
CT_SIZE = 64


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoManifest:
    """The demo data set (small CT), written once per test session."""
    root = tmp_path_factory.mktemp("demo")
    manifest = write_demo(root, ct_slices=CT_SLICES, ct_size=CT_SIZE, include_pydicom_files=False)
    manifest.root = root
    return manifest


@dataclass
class DicomWeb:
    """A running server with tokens of each scope and helpers to reach it."""

    server: ServerProcess
    tokens: dict[str, str] = field(default_factory=dict)
    token_ids: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> str:
        return f"{self.server.http_url}/dicom-web"

    def client(self, scope: str = "read") -> DICOMwebClient:
        return DICOMwebClient(
            url=self.root, headers={"Authorization": f"Bearer {self.tokens[scope]}"}
        )

    def http(self, scope: str | None = "read") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[scope]}"} if scope else {}
        return httpx.Client(base_url=self.server.http_url, headers=headers, timeout=60)

    def new_token(self, name: str, scopes: str) -> tuple[str, str]:
        db = Database(self.server.database_url)
        try:
            info, token = create_token(db, name, scopes, hospital=1)
        finally:
            db.dispose()
        return info.token_id, token


BOUNDARY = "cloudfilm-test-boundary"


def multipart_body(parts: list[bytes], content_type: str = "application/dicom") -> bytes:
    out = b""
    for data in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def stow(
    http: httpx.Client, parts: list[bytes], study: str | None = None, **headers: str
) -> httpx.Response:
    """STOW-RS of exact bytes (dicomweb-client re-encodes data sets; the archive must keep the
    original bytes, so the fixture stores files as they are)."""
    url = "/dicom-web/studies" + (f"/{study}" if study else "")
    ctype = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    return http.post(
        url,
        content=multipart_body(parts),
        headers={"Content-Type": ctype, "Accept": "application/dicom+json", **headers},
    )


def start_server(tmp: Path, database_url: str, **env: str) -> DicomWeb:
    server = ServerProcess(data_dir=tmp / "data", database_url=database_url, env_extra=env)
    server.start()
    dw = DicomWeb(server)
    for scope, scopes in (("read", "read"), ("write", "write"), ("admin", "admin")):
        dw.token_ids[scope], dw.tokens[scope] = dw.new_token(f"test-{scope}", scopes)
    return dw


@pytest.fixture(scope="module")
def dw(
    module_db: str, tmp_path_factory: pytest.TempPathFactory, demo: DemoManifest
) -> Iterator[DicomWeb]:
    """A server holding every demo study, stored through STOW-RS by dicomweb-client.

    Two HTTP processes, as in production: requests land on either, so every DICOMweb test
    also checks that nothing depends on state kept in one process."""
    dw = start_server(tmp_path_factory.mktemp("srv"), module_db, CLOUDFILM_HTTP_WORKERS="2")
    try:
        assert demo.root is not None
        with dw.http("write") as http:
            for study in demo.studies:
                data = [(demo.root / f).read_bytes() for f in study.files]
                r = stow(http, data)
                assert r.status_code == 200, r.text
        yield dw
    finally:
        dw.server.stop()

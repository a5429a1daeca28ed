"""Settings from the environment and a TOML file, the way a hospital's IT would set them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudfilm.config import Settings

TOML = """
data_dir = "/srv/cloudfilm"
database_url = "postgresql+psycopg://cf@db/cf"
blob_url = "s3://pacs/hospital-a"
s3_endpoint_url = "https://oss-cn-hangzhou.aliyuncs.com"
ae_title = "NJ1H_ARCHIVE"
dicom_port = 104

[[allowed_callers]]
ae_title = "CT01"
host = "10.2.3.4"
services = ["echo", "store"]

[[allowed_callers]]
ae_title = "READING1"

[[move_destinations]]
ae_title = "WS1"
host = "10.2.3.20"
port = 11112
"""


def test_toml_file_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "cloudfilm.toml"
    cfg.write_text(TOML)
    monkeypatch.setenv("CLOUDFILM_CONFIG", str(cfg))
    monkeypatch.setenv("CLOUDFILM_DICOM_PORT", "11112")  # the environment wins over the file
    s = Settings()
    assert s.data_dir == Path("/srv/cloudfilm")
    assert s.resolved_database_url == "postgresql+psycopg://cf@db/cf"
    assert s.resolved_blob_url == "s3://pacs/hospital-a"
    assert s.ae_title == "NJ1H_ARCHIVE"
    assert s.dicom_port == 11112
    # per-service, per-host allow-list
    assert s.caller_allowed("CT01", "10.2.3.4", "store")
    assert not s.caller_allowed("CT01", "10.2.3.5", "store")  # wrong host
    assert not s.caller_allowed("CT01", "10.2.3.4", "find")  # service not granted
    assert s.caller_allowed("READING1", "192.168.1.9", "move")  # no host: any host, all services
    assert not s.caller_allowed("STRANGER", "10.2.3.4", "echo")
    dest = s.move_destination("WS1")
    assert dest is not None and (dest.host, dest.port) == ("10.2.3.20", 11112)
    assert s.move_destination("NOPE") is None


def test_defaults_are_the_embedded_deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDFILM_CONFIG", str(tmp_path / "absent.toml"))
    for var in ("CLOUDFILM_DATA_DIR", "CLOUDFILM_DATABASE_URL", "CLOUDFILM_BLOB_URL"):
        monkeypatch.delenv(var, raising=False)
    s = Settings()
    assert s.resolved_database_url.startswith("sqlite:///")
    assert s.resolved_database_url.endswith("data/index.sqlite3")
    assert s.resolved_blob_url.startswith("file:///") and s.resolved_blob_url.endswith("/blobs")
    assert (s.ae_title, s.dicom_port, s.http_port) == ("CLOUDFILM", 11112, 8000)
    assert s.caller_allowed("ANYONE", "1.2.3.4", "store")  # empty allow-list: everyone

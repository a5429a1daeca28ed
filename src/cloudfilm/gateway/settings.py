"""The gateway's own settings (``CLOUDFILM_GATEWAY_*``), apart from the archive's.

A gateway is installed once per hospital on a machine inside the hospital's network; it shares
no index, no storage area and no secret with the cloud beyond the hospital's gateway token, so
it must never read the archive's ``CLOUDFILM_*`` settings by accident.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from cloudfilm.config import AllowedCaller

GiB = 1024**3


def _toml_path() -> Path:
    return Path(os.environ.get("CLOUDFILM_GATEWAY_CONFIG", "gateway.toml"))


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLOUDFILM_GATEWAY_", env_nested_delimiter="__", extra="ignore"
    )

    cloud_url: str = "http://127.0.0.1:8000"
    """The archive's base URL (its DICOMweb is at ``/dicom-web``, reports at ``/api/reports``)."""
    token: SecretStr | None = None
    """The hospital's API token with scope ``write`` (``cloudfilm token create --scope write
    --hospital CODE`` on the cloud): the owner of everything this gateway uploads."""
    ca_bundle: Path | None = None
    """PEM file of the CAs to trust for the cloud's HTTPS (a hospital's own CA); None: the
    system's."""
    client_cert: Path | None = None
    """PEM client certificate for mutual TLS (with ``client_key`` unless the file holds both)."""
    client_key: Path | None = None

    ae_title: str = "CLOUDFILM_GW"
    dicom_host: str = "0.0.0.0"
    dicom_port: int = 11112
    allowed_callers: list[AllowedCaller] = Field(default_factory=list)
    """The modalities allowed to echo and store (same shape as the archive's); empty: all."""
    max_associations: int = 32
    max_instance_bytes: int = 4 * GiB
    dicom_artim_timeout: float = 30.0
    dicom_idle_timeout: float = 60.0

    spool_dir: Path = Path("./gateway-spool")
    max_spool_bytes: int = 200 * GiB
    """Bytes waiting for the cloud beyond which new instances are refused (Out of Resources):
    a cloud away for days must not fill the disk and take the gateway's database with it."""
    min_free_bytes: int = 1 * GiB
    """Free disk the spool always leaves (refuses below it, whatever ``max_spool_bytes`` says)."""

    hl7_host: str = "0.0.0.0"
    hl7_port: int = 2575
    """MLLP listener for ORU^R01 reports from the reporting system (0: off)."""
    drop_folder: Path | None = None
    """Watched folder of the virtual printer: PDF reports, each with an optional JSON sidecar."""

    status_host: str = "127.0.0.1"
    status_port: int = 8100
    """The local status page, ``/status.json`` and ``/metrics`` (0: off)."""

    bandwidth: str = ""
    """Upload rate by time of day: ``08:00-18:00=50M, *=unlimited`` (Mbit/s; ``paused`` holds
    uploads in a window). Empty: unlimited at all hours. See gateway/throttle.py."""
    timezone: str = "Asia/Shanghai"
    """The clock the bandwidth windows are read in (the hospital's, not the server's UTC)."""
    compression: Literal["zstd", "gzip", "none"] = "zstd"
    batch_instances: int = 16
    batch_bytes: int = 64 * 1024 * 1024
    """One STOW-RS request carries up to this many instances / bytes (uncompressed)."""
    retry_initial_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    request_timeout_seconds: float = 120.0
    transient_attempts: int = 20
    """A single instance the cloud keeps failing to process (not a network error) is set aside
    after this many tries, not retried forever."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=_toml_path()),
        )

    @property
    def stow_url(self) -> str:
        return f"{self.cloud_url.rstrip('/')}/dicom-web/studies"

    @property
    def reports_url(self) -> str:
        return f"{self.cloud_url.rstrip('/')}/api/reports"

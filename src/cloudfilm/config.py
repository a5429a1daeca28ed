"""One settings object for every process of cloudfilm.

Values come from, highest priority first: keyword arguments (tests), ``CLOUDFILM_*``
environment variables, a TOML file (``CLOUDFILM_CONFIG`` or ``./cloudfilm.toml``), defaults.
The defaults describe the embedded deployment (SQLite + a folder in the data dir), so a fresh
checkout runs with no configuration at all; the same names point at PostgreSQL and S3 at scale.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class AllowedCaller(BaseModel):
    """A calling AE allowed to use some DIMSE services (optionally only from one host)."""

    ae_title: str
    host: str | None = None
    hospital: str | None = None
    """The owning hospital's code (None: the deployment's first hospital)."""
    services: list[Literal["echo", "store", "find", "get", "move"]] = Field(
        default_factory=lambda: ["echo", "store", "find", "get", "move"]
    )


class MoveDestination(BaseModel):
    """Where a C-MOVE for a destination AE title is sent: the standard needs a static table."""

    ae_title: str
    host: str
    port: int


def caller_allowed(
    callers: list[AllowedCaller], ae_title: str, host: str | None, service: str
) -> bool:
    """True when the allow-list is empty or names this AE (and host) for this service (the
    archive's settings and the gateway's share the rule)."""
    if not callers:
        return True
    ae = ae_title.strip()
    return any(
        c.ae_title.strip() == ae and (c.host is None or c.host == host) and service in c.services
        for c in callers
    )


def _toml_path() -> Path:
    return Path(os.environ.get("CLOUDFILM_CONFIG", "cloudfilm.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLOUDFILM_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path("./data")
    database_url: str | None = None
    """SQLAlchemy URL; default ``sqlite:///<data_dir>/index.sqlite3``."""
    blob_url: str | None = None
    """``file:///path`` or ``s3://bucket/prefix``; default the ``blobs`` folder of the data dir."""
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None

    # Encryption at rest (cloudfilm.storage.sse, .encrypted, .kek; docs/keeping.md).
    s3_sse: Literal["none", "AES256", "aws:kms"] = "none"
    """Server-side encryption named on every S3 write and checked at start (a probe object):
    the archive refuses to start when the store does not apply it."""
    s3_sse_kms_key_id: str | None = None
    """The KMS key (id, ARN or alias) of ``aws:kms``; None: the store's default KMS key."""
    blob_kek: str | None = None
    """Envelope encryption of file stores: the key-encryption key, ``[<id>:]<base64 of 32
    bytes>`` (``cloudfilm keys generate`` makes one). Set: every blob is AES-256-GCM with its
    own data key, wrapped by this one."""
    blob_kek_file: Path | None = None
    """Instead of ``blob_kek``: a file of such lines, the current key first."""
    blob_kek_previous: list[str] = Field(default_factory=list)
    """Older KEKs, for reading blobs they wrapped until ``cloudfilm keys rotate`` is done."""

    ae_title: str = "CLOUDFILM"
    dicom_host: str = "0.0.0.0"
    dicom_port: int = 11112
    http_host: str = "0.0.0.0"
    http_port: int = 8000
    public_url: str | None = None
    """The URL people reach the HTTP server at (printed links, QR codes)."""
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    """Reverse proxies (addresses or networks such as ``10.0.0.0/8``) whose X-Forwarded-For and
    X-Forwarded-Proto are believed. Behind a TLS proxy on another host, list it here, or every
    patient has the proxy's address: one shared guessing limit, one address in the audit.
    Anyone else's forwarding headers are ignored, so they cannot dodge the per-address limit."""
    metrics_networks: list[str] = Field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    """Client addresses or networks that may read ``/metrics`` without a token (the client
    address as ``trusted_proxies`` decide it); anyone else needs a platform operator's token.
    The figures give every hospital's volumes, so they must not be open to the internet."""
    cors_origins: list[str] | None = None
    """Origins allowed to call DICOMweb from a browser (None: any origin, bearer tokens only)."""

    allowed_callers: list[AllowedCaller] = Field(default_factory=list)
    """Empty: every calling AE may use every service (a warning says so at start)."""
    move_destinations: list[MoveDestination] = Field(default_factory=list)

    duplicate_policy: Literal["keep-first", "replace", "reject"] = "keep-first"
    """What a re-sent SOP Instance UID with *different* bytes does. Same bytes always succeed."""
    max_instance_bytes: int = 4 * 1024**3
    max_associations: int = 32
    dicom_artim_timeout: float = 30.0
    """Seconds a new connection has to send its A-ASSOCIATE-RQ, and a peer to close after the
    release or abort (the ARTIM timer, PS3.8 9.1.5): a silent connection costs nothing for long."""
    dicom_idle_timeout: float = 60.0
    """An established association on which nothing arrives for this long is aborted."""
    dicom_store_path: Literal["event-loop", "pynetdicom"] = "event-loop"
    """Who serves associations that only store (and echo): our event-driven upper layer, or
    pynetdicom like every other association (kept for comparison and as a fall-back)."""
    dicom_max_pdu: int = 0
    """The largest PDU we accept (the Maximum Length we announce); 0: unlimited, fewest
    round trips. Peers' own limits are always kept when we send."""

    # The patient's cloud film (cloudfilm.portal).
    secret_key: str | None = None
    """Keys film links, access codes and sessions (HMAC). None: a random key kept in
    ``<data_dir>/secret.key`` (created once, mode 0600). Set it in the environment at scale."""
    film_stable_seconds: float = 60.0
    """A film is issued once its study had no new instance for this long and has a report."""
    session_seconds: int = 2 * 3600
    """Lifetime of a patient's or a share's browser session."""
    verify_max_attempts: int = 5
    """Wrong codes allowed (per film, and per client address) before a lockout."""
    verify_lockout_seconds: int = 300
    """First lockout; each further lockout doubles it (capped at a day)."""
    sms_backend: Literal["log", "webhook"] = "log"
    sms_webhook_url: str | None = None
    """POSTed ``{"phone", "message"}`` as JSON by the ``webhook`` backend."""
    hospital_name: str = "云胶片示范医院"
    """Shown on patient pages and the printed report when a report names no hospital."""
    dicom_workers: int = 0
    """DICOM server processes sharing the port (0: two per core, at most 8)."""
    http_workers: int = 0
    """HTTP server processes sharing the listening socket (0: one per core, at most 8)."""

    # The imaging index feed (cloudfilm.regional.feed, .webhook; docs/regional.md).
    index_id_system: str = "urn:cloudfilm:imaging-index-id"
    """The FHIR identifier system of imaging index IDs (set the regional platform's own URI)."""
    index_webhook_url: str | None = None
    """The regional platform's receiver: each page of the feed is POSTed there, in order,
    until it answers 2xx (None: no push; the platform reads GET /api/index/records)."""
    index_webhook_secret: str | None = None
    """Signs each push: ``X-Cloudfilm-Signature: sha256=<HMAC-SHA256 of "<timestamp>.<body>">``."""
    index_webhook_format: Literal["json", "fhir"] = "json"
    index_webhook_batch: int = 100
    """Changes per push."""
    index_webhook_retry_seconds: float = 2.0
    """Back-off after the first failed push; doubled per failure up to 10 minutes, jittered."""

    # The similar-exam warning (cloudfilm.regional.similar; docs/regional.md).
    similar_exam_days: dict[str, int] = Field(
        default_factory=lambda: {"CT": 30, "MR": 30, "DX": 14}
    )
    """Days back the similar-exam warning looks, per modality (regional.similar): CR, DR and DX
    are one family, so any of them sets radiography's; ``"*"`` sets every other modality's
    (default 30). Keys not given keep their defaults."""

    # Fixity and the second copy (cloudfilm.keeping.fixity, .replica; docs/keeping.md).
    verify_period_days: float = 30.0
    """One full pass of the fixity verifier over every blob per this many days (0: no
    background verifier; ``cloudfilm verify`` still works)."""
    verify_mbps: float = 20.0
    """The background verifier reads at most this many MB/s (viewing must not slow down)."""
    replica_url: str | None = None
    """The second blob store, ``file:///path`` or ``s3://bucket/prefix`` (None: no replica).
    Every stored blob is queued in the index transaction and copied in the background."""
    replica_s3_endpoint_url: str | None = None
    """The replica's S3 settings; None: the primary's ``s3_*`` values."""
    replica_s3_region: str | None = None
    replica_s3_access_key_id: str | None = None
    replica_s3_secret_access_key: str | None = None
    replica_retry_seconds: float = 5.0
    """Back-off after a failed copy; doubled per failure of that blob up to 10 minutes."""

    # Retention, tiering and the research export (cloudfilm.keeping; docs/keeping.md).
    retention_years: dict[str, int] = Field(
        default_factory=lambda: {"inpatient": 30, "outpatient": 15, "emergency": 15}
    )
    """Years a study is kept by patient class (住院 30, 门急诊 15); a hospital's rules in
    ``keeping_retention_rules`` override them; an unknown class gets the longest rule."""
    cold_after_days: float = 0.0
    """Studies whose last instance arrived longer ago move to the cold tier (0: never): ``serve``
    checks every ``tier_interval_seconds``; ``cloudfilm tier run`` does it by hand."""
    tier_interval_seconds: float = 3600.0
    """How often ``serve`` looks for studies to move (with ``cold_after_days`` set)."""
    cold_storage_class: str = "GLACIER_IR"
    """S3 storage class of the cold tier; one readable at once (``GLACIER_IR``,
    ``STANDARD_IA``, OSS ``IA``): classes that need a restore are refused."""
    cold_blob_url: str | None = None
    """Folder stores: the cold tier's folder (``file:///path``), read after the hot one."""
    export_stow_targets: list[str] = Field(default_factory=list)
    """DICOMweb roots ``POST /api/export`` may send de-identified studies to by STOW-RS (the
    command line may send anywhere); empty: the API only writes zips."""

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

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"

    @cached_property
    def resolved_blob_url(self) -> str:
        if self.blob_url:
            return self.blob_url
        return (self.data_dir / "blobs").resolve().as_uri()

    @property
    def http_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::") else self.http_host
        return f"http://{host}:{self.http_port}"

    def caller_allowed(self, ae_title: str, host: str | None, service: str) -> bool:
        return caller_allowed(self.allowed_callers, ae_title, host, service)

    def move_destination(self, ae_title: str) -> MoveDestination | None:
        ae = ae_title.strip()
        return next((d for d in self.move_destinations if d.ae_title.strip() == ae), None)

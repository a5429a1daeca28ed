"""Tiering: studies not touched for ``cold_after_days`` move to cheaper storage, still readable.

The blob key never changes, so every URL, the index and the viewer stay as they are:

- **S3** (and S3-compatible stores): each object is copied onto itself with the
  ``StorageClass`` of ``cold_storage_class`` (default ``GLACIER_IR``; ``STANDARD_IA``, Aliyun
  OSS's ``IA``...). Only classes that answer a GET at once are allowed: a class that needs a
  restore first (``GLACIER``, ``DEEP_ARCHIVE``, OSS ``Archive``) would make a study unreadable
  until someone restores it, and is refused.
- **Folders**: a second root (``cold_blob_url``, e.g. a large slow disk or an NFS mount). The
  file moves there under the same relative path; :class:`TieredBlobStore` reads the hot folder
  first, then the cold one (one failed ``open`` more for a cold blob). Encrypted folders stay
  encrypted: the ciphertext is moved as it is (its authentication is bound to the key, not
  the folder).

``studies.tier`` says where a study's blobs are (``hot``/``cold``). Instances that arrive after
their study went cold are stored hot (reads find both). The move is idempotent: run again
after an interruption and it finishes (a blob already cold is skipped).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from sqlalchemy import select, update

from cloudfilm.storage.blobs import BlobNotFound, BlobStore, FileBlobStore, S3BlobStore
from cloudfilm.storage.models import Instance, Series, Study

if TYPE_CHECKING:
    from cloudfilm.archive import Archive
    from cloudfilm.config import Settings

log = logging.getLogger(__name__)
NEEDS_RESTORE = frozenset({"GLACIER", "DEEP_ARCHIVE", "ARCHIVE", "COLDARCHIVE", "COLD_ARCHIVE"})
"""Storage classes whose objects cannot be read without a restore: never a tier of ours."""
COPY_CHUNK = 1024 * 1024


class TieredBlobStore:
    """A hot folder store and a cold one behind one :class:`BlobStore` interface."""

    def __init__(self, hot: FileBlobStore, cold: FileBlobStore) -> None:
        self.hot = hot
        self.cold = cold

    def __getattr__(self, name: str) -> Any:  # the hot store's extras (e.g. key rotation)
        return getattr(self.hot, name)

    def put(self, key: str, data: bytes) -> None:
        self.hot.put(key, data)

    def get(self, key: str) -> bytes:
        try:
            return self.hot.get(key)
        except BlobNotFound:
            return self.cold.get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            return self.hot.get_range(key, start, length)
        except BlobNotFound:
            return self.cold.get_range(key, start, length)

    def open_stream(self, key: str) -> Iterator[bytes]:
        try:
            return self.hot.open_stream(key)
        except BlobNotFound:
            return self.cold.open_stream(key)

    def exists(self, key: str) -> bool:
        return self.hot.exists(key) or self.cold.exists(key)

    def delete(self, key: str) -> None:
        self.hot.delete(key)
        self.cold.delete(key)

    def list_keys(self, prefix: str = "instances/") -> Iterator[tuple[str, float]]:
        yield from self.hot.list_keys(prefix)
        for key, mtime in self.cold.list_keys(prefix):
            if not self.hot.exists(key):  # a move caught half-way is listed once
                yield key, mtime

    def local_path(self, key: str) -> Path | None:
        hot = self.hot.local_path(key)
        if hot is None or hot.is_file():
            return hot
        cold = self.cold.local_path(key)
        return cold if cold is not None and cold.is_file() else hot

    def recover(self, older_than: float = 0.0) -> int:
        return self.hot.recover(older_than) + self.cold.recover(older_than)

    def close(self) -> None:
        self.hot.close()
        self.cold.close()

    def is_cold(self, key: str) -> bool:
        return not self.hot.exists(key) and self.cold.exists(key)

    def move_cold(self, key: str) -> bool:
        """Move one blob's file to the cold folder (copy, fsync, rename, then remove the hot
        one). Returns False when it was cold already."""
        src = self.hot._path(key)
        dst = self.cold._path(key)
        if not src.is_file():
            if dst.is_file():
                return False
            raise BlobNotFound(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cold.root / self.cold.TMP / f"{secrets.token_hex(8)}.part"
        try:
            with open(src, "rb") as fin, open(tmp, "xb") as fout:
                while chunk := fin.read(COPY_CHUNK):
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
            os.replace(tmp, dst)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(dst.parent)
        src.unlink()  # a crash before this leaves two equal copies: reads take either
        return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def with_cold_tier(store: BlobStore, settings: Settings, keys: Any = None) -> BlobStore:
    """The primary store with its cold folder when ``cold_blob_url`` names one."""
    root = _folder(settings.cold_blob_url)
    if root is None or not isinstance(store, FileBlobStore):
        return store
    from cloudfilm.storage.encrypted import open_file_store

    return TieredBlobStore(store, open_file_store(root, keys))


def _folder(url: str | None) -> Path | None:
    if not url:
        return None
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if not parsed.scheme:
        return Path(url)
    raise ValueError(f"cold_blob_url must be a folder (file:///path), not {url}")


def _unwrap(store: Any) -> Any:
    """The store that holds the bytes, under the replica's wrapper."""
    while hasattr(store, "primary") and not isinstance(store, (TieredBlobStore, S3BlobStore)):
        store = store.primary
    return store


def storage_class_of(store: Any, key: str) -> str:
    """An S3 object's storage class (``STANDARD`` when S3 says none)."""
    s3 = _unwrap(store)
    head = s3.client.head_object(Bucket=s3.bucket, Key=s3._k(key))
    return str(head.get("StorageClass") or "STANDARD")


def _move_s3(s3: S3BlobStore, key: str, storage_class: str) -> bool:
    from botocore.exceptions import ClientError

    name = s3._k(key)
    try:
        head = s3.client.head_object(Bucket=s3.bucket, Key=name)
    except ClientError as exc:
        raise BlobNotFound(key) from exc
    if (head.get("StorageClass") or "STANDARD") == storage_class:
        return False
    extra = {k: v for k, v in s3.write_args.items()} if hasattr(s3, "write_args") else {}
    s3.client.copy_object(
        Bucket=s3.bucket,
        Key=name,
        CopySource={"Bucket": s3.bucket, "Key": name},
        StorageClass=storage_class,
        MetadataDirective="COPY",
        **extra,
    )
    return True


@dataclass
class TierReport:
    studies: list[str] = field(default_factory=list)
    blobs_moved: int = 0
    blobs_already: int = 0
    missing: list[str] = field(default_factory=list)


def cold_storage_class(settings: Settings) -> str:
    wanted = settings.cold_storage_class.strip().upper()
    if wanted.replace("-", "_") in NEEDS_RESTORE:
        raise ValueError(
            f"storage class {wanted} needs a restore before a read: studies would not open "
            "(use GLACIER_IR, STANDARD_IA or OSS IA)"
        )
    return wanted


def run_lifecycle(
    archive: Archive,
    *,
    older_than_days: float | None = None,
    now: datetime | None = None,
    limit: int | None = None,
    study_uids: list[str] | None = None,
) -> TierReport:
    """Move the hot studies whose last instance arrived more than ``older_than_days`` ago
    (default ``cold_after_days``) to the cold tier; ``study_uids``: just these (any age)."""
    days = archive.settings.cold_after_days if older_than_days is None else older_than_days
    report = TierReport()
    store = _unwrap(archive.blobs)
    if isinstance(store, S3BlobStore):
        storage_class = cold_storage_class(archive.settings)
    elif not isinstance(store, TieredBlobStore):
        raise ValueError("no cold tier: set CLOUDFILM_COLD_BLOB_URL (folders) or use S3")
    if study_uids is None and not days:
        return report
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days or 0)
    with archive.db.read() as session:
        stmt = select(Study.pk, Study.study_uid, Study.hospital_pk).where(Study.tier == "hot")
        if study_uids is not None:
            stmt = stmt.where(Study.study_uid.in_(study_uids))
        else:
            stmt = stmt.where(Study.last_instance_at < cutoff)
        studies = session.execute(stmt.order_by(Study.pk).limit(limit)).all()
    for study_pk, uid, hospital in studies:
        with archive.db.read() as session:
            keys = list(
                session.execute(
                    select(Instance.blob_key)
                    .join(Series, Instance.series_pk == Series.pk)
                    .where(Series.study_pk == study_pk)
                ).scalars()
            )
        for key in keys:
            try:
                if isinstance(store, S3BlobStore):
                    moved = _move_s3(store, key, storage_class)
                else:
                    moved = store.move_cold(key)
            except BlobNotFound:
                report.missing.append(key)  # the fixity verifier reports and repairs it
                continue
            report.blobs_moved += moved
            report.blobs_already += not moved
        with archive.db.write() as session:
            session.execute(update(Study).where(Study.pk == study_pk).values(tier="cold"))
        report.studies.append(uid)
        archive.audit.record(
            principal="system:lifecycle", action="tier", resource=uid, outcome="allow",
            detail=f"cold tier: {len(keys)} blob(s)", hospital=hospital,
        )  # fmt: skip
    if report.studies:
        log.info("lifecycle: %d stud(ies) moved to the cold tier", len(report.studies))
    return report


class LifecycleWorker:
    """``run_lifecycle`` every ``tier_interval_seconds`` in ``serve`` (when ``cold_after_days``
    is set), under a lease: several ``serve`` against one index move each study once."""

    def __init__(self, archive: Archive) -> None:
        from cloudfilm.background import Lease

        self.archive = archive
        self.interval = max(0.5, archive.settings.tier_interval_seconds)
        self.lease = Lease(archive.db, "lease:lifecycle", seconds=max(60.0, 3 * self.interval))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lifecycle", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.lease.held():
                    run_lifecycle(self.archive)
            except ValueError as exc:  # no cold tier configured: nothing will ever move
                log.error("lifecycle stopped: %s", exc)
                return
            except Exception:
                log.exception("lifecycle run failed (tried again in %.0f s)", self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        with contextlib.suppress(Exception):
            self.lease.release()

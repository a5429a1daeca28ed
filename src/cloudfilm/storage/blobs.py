"""The storage area: where the received bytes of every instance live, untouched.

Kept apart from the index (as Orthanc does) so that either can move to another engine. Keys are
content-addressed (SHA-256), which makes a write idempotent: two writers of the same bytes can
never corrupt each other, and a re-sent instance with other bytes never overwrites the original.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import urlparse
from urllib.request import url2pathname

from cloudfilm.config import Settings

if TYPE_CHECKING:
    from cloudfilm.storage.kek import KeyRing

CHUNK = 1024 * 1024


class BlobNotFound(KeyError):
    """The key is not in the store."""


class BlobStore(Protocol):
    """What the archive needs from a storage area. ``put`` returns only once bytes are durable."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def get_range(self, key: str, start: int, length: int) -> bytes: ...

    def open_stream(self, key: str) -> Iterator[bytes]: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list_keys(self, prefix: str = "instances/") -> Iterator[tuple[str, float]]:
        """Every key under ``prefix`` with its modification time (recovery, orphan sweep)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A filesystem path for zero-copy serving, when the store has one."""
        ...

    def recover(self) -> int:
        """Clean up what a crash left half-written; returns how many leftovers were removed."""
        ...

    def close(self) -> None:
        """Release connections (the archive closes its store when it closes)."""
        ...


def instance_key(sha256_hex: str, when: datetime | None = None, owner: str = "") -> str:
    """``instances/YYYY/MM/DD/HH/<sha256>[.<hospital code>].dcm``: the hour of writing is part
    of the key so that recovery can list just the blobs written since the index was last known
    durable, and the owning hospital's code (none for the first hospital) so that a blob's
    owner is known without the index."""
    t = when or datetime.now(UTC)
    tag = f".{owner}" if owner else ""
    return f"instances/{t:%Y/%m/%d/%H}/{sha256_hex}{tag}.dcm"


def key_owner(key: str) -> str:
    """The hospital code in an instance key ('' for the first hospital's)."""
    name = key.rsplit("/", 1)[-1]
    parts = name.split(".")
    return parts[1] if len(parts) == 3 else ""


def key_hour(key: str) -> datetime | None:
    """The UTC hour a key was written in, or None for keys of another shape."""
    parts = key.split("/")
    if len(parts) != 6 or parts[0] != "instances":
        return None
    try:
        return datetime(int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4]), tzinfo=UTC)
    except ValueError:
        return None


class FileBlobStore:
    """A folder on disk. Writes go to a temporary file, are fsynced, then renamed into place."""

    TMP = ".tmp"

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / self.TMP).mkdir(parents=True, exist_ok=True)
        self._dirs: set[Path] = set()
        """Folders known to exist (an hour's folder takes thousands of instances)."""
        self._dir_sync = _DirectorySync()

    def _path(self, key: str) -> Path:
        if ".." in key.split("/") or key.startswith("/"):
            raise ValueError(f"bad blob key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        final = self._path(key)
        try:
            if final.stat().st_size == len(data):
                return  # content-addressed: same key, same bytes
        except FileNotFoundError:
            pass
        if final.parent not in self._dirs:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(final.parent)
        tmp = self.root / self.TMP / f"{secrets.token_hex(8)}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, final)
        except BaseException:
            # a full disk must not also keep the half-written copy (it holds the space)
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._dir_sync.sync(final.parent)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as fh:
                fh.seek(start)
                return fh.read(length)
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def open_stream(self, key: str) -> Iterator[bytes]:
        try:
            fh: BinaryIO = open(self._path(key), "rb")  # noqa: SIM115 - closed by the generator
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc
        return _iter_file(fh)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def list_keys(self, prefix: str = "instances/") -> Iterator[tuple[str, float]]:
        base = self._path(prefix.rstrip("/"))
        if not base.exists():
            return
        for dirpath, dirs, files in os.walk(base):
            dirs.sort()  # hour folders oldest first: the order blobs were written in
            for name in files:
                p = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    yield p.relative_to(self.root).as_posix(), p.stat().st_mtime

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def recover(self, older_than: float = 0.0) -> int:
        """Remove temp files left by a crash. Only called at start, before any writer runs."""
        removed = 0
        now = time.time()
        for p in (self.root / self.TMP).glob("*.part"):
            with contextlib.suppress(FileNotFoundError):
                if now - p.stat().st_mtime >= older_than:
                    p.unlink()
                    removed += 1
        return removed

    def close(self) -> None:
        pass  # nothing held open between calls


def _iter_file(fh: BinaryIO) -> Iterator[bytes]:
    with fh:
        while chunk := fh.read(CHUNK):
            yield chunk


class _DirectorySync:
    """Group commit of directory fsyncs: the renames of every writer that arrived while an
    fsync of their folder ran are made durable by the next one, not by one fsync each.

    A writer renames, then asks; an fsync that *starts* after its request covers its rename.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = threading.Condition(self.lock)
        self.state: dict[Path, list[int]] = {}
        """folder -> [requests made, requests covered by a finished fsync, fsync running]"""

    def sync(self, path: Path) -> None:
        with self.lock:
            st = self.state.setdefault(path, [0, 0, 0])
            st[0] += 1
            mine = st[0]
            while st[1] < mine:
                if st[2]:
                    self.done.wait()
                    continue
                st[2] = 1
                covers = st[0]
                self.lock.release()
                try:
                    _fsync_dir(path)
                finally:
                    self.lock.acquire()
                    st[2] = 0
                    self.done.notify_all()
                st[1] = max(st[1], covers)
            if len(self.state) > 64:
                self.state = {k: v for k, v in self.state.items() if v[2] or v[0] != v[1]}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3BlobStore:
    """Any S3-compatible object store (MinIO, Ceph, AWS S3, Aliyun OSS).

    A PUT is atomic and durable once S3 answers 200, so no temp objects are needed.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        write_args: dict[str, str] | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.write_args: dict[str, str] = dict(write_args or {})
        """Server-side encryption named on every write (storage/sse.py): ``put_object`` here,
        and any ``create_multipart_upload`` or ``copy_object`` a caller makes passes it too."""
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or "us-east-1",
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(
                max_pool_connections=64,
                retries={"max_attempts": 5, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )

    def _k(self, key: str) -> str:
        return self.prefix + key

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data, **self.write_args)

    def _get(self, key: str, **kw: str) -> BinaryIO:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key), **kw)["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise BlobNotFound(key) from exc
            raise

    def get(self, key: str) -> bytes:
        return self._get(key).read()

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        return self._get(key, Range=f"bytes={start}-{start + length - 1}").read()

    def open_stream(self, key: str) -> Iterator[bytes]:
        body = self._get(key)
        return _iter_file(body)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._k(key))
            return True
        except ClientError:
            return False

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def list_keys(self, prefix: str = "instances/") -> Iterator[tuple[str, float]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix
        )
        for page in pages:
            for obj in page.get("Contents", []):
                yield obj["Key"][len(self.prefix) :], obj["LastModified"].timestamp()

    def local_path(self, key: str) -> Path | None:
        return None

    def recover(self, older_than: float = 0.0) -> int:
        return 0

    def close(self) -> None:
        self.client.close()


def open_blob_store(settings: Settings) -> BlobStore:
    """The storage area of ``blob_url``; with ``replica_url``, wrapped so that reads fall back
    to the second copy when the primary fails (storage/replicated.py). Both are encrypted at
    rest as the settings say: S3 server-side encryption, envelope encryption of folders."""
    from cloudfilm.storage.kek import keyring_from_settings
    from cloudfilm.storage.sse import sse_write_args

    write_args, keys = sse_write_args(settings), keyring_from_settings(settings)
    store = open_store_url(
        settings.resolved_blob_url,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        write_args=write_args,
        keys=keys,
    )
    from cloudfilm.keeping.tiering import with_cold_tier

    store = with_cold_tier(store, settings, keys)  # the cold folder (cold_blob_url), if any
    if settings.replica_url:
        from cloudfilm.storage.replicated import ReplicatedBlobStore

        url = settings.replica_url

        def replica() -> BlobStore:  # opened on first use: a replica down must not stop us
            return open_store_url(
                url,
                endpoint_url=settings.replica_s3_endpoint_url or settings.s3_endpoint_url,
                region=settings.replica_s3_region or settings.s3_region,
                access_key_id=settings.replica_s3_access_key_id or settings.s3_access_key_id,
                secret_access_key=settings.replica_s3_secret_access_key
                or settings.s3_secret_access_key,
                check=False,  # the replica worker makes the bucket before its first copy
                write_args=write_args,
                keys=keys,
            )

        store = ReplicatedBlobStore(store, replica)
    return store


def open_store_url(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    check: bool = True,
    write_args: dict[str, str] | None = None,
    keys: KeyRing | None = None,
) -> BlobStore:
    """One store from its URL (``file:///path``, ``s3://bucket/prefix`` or a plain path).
    ``check``: make sure the bucket exists now (else at the first write that needs it), and
    that it applies the server-side encryption of ``write_args``. ``keys``: folders are
    envelope-encrypted with them (storage/encrypted.py)."""
    from cloudfilm.storage.encrypted import open_file_store

    parsed = urlparse(url)
    if parsed.scheme == "file":
        return open_file_store(Path(url2pathname(parsed.path)), keys)
    if parsed.scheme == "s3":
        store = S3BlobStore(
            parsed.netloc,
            parsed.path,
            endpoint_url=endpoint_url,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            write_args=write_args,
        )
        if check:
            from cloudfilm.storage.sse import check_sse

            store.ensure_bucket()
            check_sse(store)
        return store
    if not parsed.scheme:
        return open_file_store(Path(url), keys)
    raise ValueError(f"unsupported blob store URL scheme: {url}")

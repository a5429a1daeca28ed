"""The storage area with a second copy behind it: reads fall back to the replica.

Writes go to the primary only: ingest queues every new blob in its index transaction and the
replica worker (keeping/replica.py) copies it later, so a slow or absent replica never slows a
C-STORE. Reads try the primary first and, when it fails in any way (the file is gone, the
disk or the S3 endpoint errs), the replica: a lost primary disk keeps serving images while it is
restored. A blob that is *changed* on the primary is not noticed here (that would cost a hash
per read); the fixity verifier finds and repairs it.

The replica is opened on first use, not at start: a replica that is down when the archive
starts must not stop the archive (the copies wait in the queue).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from cloudfilm.metrics import instruments
from cloudfilm.storage.blobs import BlobNotFound, BlobStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class ReplicatedBlobStore:
    """A :class:`~cloudfilm.storage.blobs.BlobStore` over a primary and a replica."""

    def __init__(self, primary: BlobStore, replica: BlobStore | Callable[[], BlobStore]) -> None:
        self.primary = primary
        self._replica: BlobStore | None = None
        self._open_replica: Callable[[], BlobStore] | None = None
        if hasattr(replica, "get"):
            self._replica = replica  # type: ignore[assignment]
        else:
            self._open_replica = replica  # type: ignore[assignment]
        self._lock = threading.Lock()

    @property
    def replica(self) -> BlobStore:
        """The second store (opened now if it could not be before; raises while it cannot)."""
        if self._replica is None:
            with self._lock:
                if self._replica is None:
                    assert self._open_replica is not None
                    self._replica = self._open_replica()
        return self._replica

    def _read(self, key: str, how: Callable[[BlobStore], T]) -> T:
        try:
            return how(self.primary)
        except Exception as first:
            try:
                value = how(self.replica)
            except BlobNotFound:
                raise first from None
            except Exception:
                log.exception("replica read of %s failed too", key)
                raise first from None
            log.warning("primary read of %s failed (%s); served from the replica", key, first)
            instruments.replica_fallback_read()
            return value

    # -- the BlobStore interface ------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self.primary.put(key, data)

    def get(self, key: str) -> bytes:
        return self._read(key, lambda s: s.get(key))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self._read(key, lambda s: s.get_range(key, start, length))

    def open_stream(self, key: str) -> Iterator[bytes]:
        # Opening is what fails for a missing blob; an error in the middle of a stream has
        # already sent bytes and cannot be taken back.
        return self._read(key, lambda s: s.open_stream(key))

    def exists(self, key: str) -> bool:
        if self.primary.exists(key):
            return True
        try:
            return self.replica.exists(key)
        except Exception:
            log.exception("replica unreachable asking for %s", key)
            return False

    def delete(self, key: str) -> None:
        """Both copies: a deleted instance (retention, a replaced duplicate) must not live on
        in the replica."""
        self.primary.delete(key)
        try:
            self.replica.delete(key)
        except BlobNotFound:
            pass
        except Exception:
            log.exception("could not delete %s from the replica", key)

    def list_keys(self, prefix: str = "instances/") -> Iterator[tuple[str, float]]:
        return self.primary.list_keys(prefix)

    def local_path(self, key: str) -> Path | None:
        """The primary's file, only while it is there: a missing file makes callers read by
        range instead (``get_range``), which falls back to the replica."""
        path = self.primary.local_path(key)
        if path is None or not path.is_file():
            return None
        return path

    def recover(self, older_than: float = 0.0) -> int:
        return self.primary.recover(older_than=older_than)  # type: ignore[call-arg]

    def close(self) -> None:
        self.primary.close()
        if self._replica is not None:
            self._replica.close()


def primary_of(store: BlobStore) -> BlobStore:
    """The store itself, or the primary of a replicated one (what the verifier must check)."""
    return store.primary if isinstance(store, ReplicatedBlobStore) else store


def replica_of(store: BlobStore) -> BlobStore | None:
    """The second store, or None when none is configured (may raise while it is down)."""
    return store.replica if isinstance(store, ReplicatedBlobStore) else None

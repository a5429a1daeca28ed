"""The transcode cache, encrypted like the blobs when the file store is.

A transcoded instance is a whole Part-10 file (names, IDs, pixels): with blobs encrypted and
this cache in the clear, a stolen disk would still give every image anyone had viewed in
another syntax. So with a KEK configured the cache is an encrypted folder of its own
(``<data_dir>/cache/transcoded-encrypted``: the plain cache's folder may hold clear files from
before, which an encrypted store refuses to share a folder with; delete that one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from cloudfilm.config import Settings
from cloudfilm.imaging.transcode import TranscodeCache, transcode_instance
from cloudfilm.storage.blobs import BlobNotFound
from cloudfilm.storage.encrypted import EncryptedFileBlobStore
from cloudfilm.storage.kek import KeyRing, keyring_from_settings


class EncryptedTranscodeCache(TranscodeCache):
    """:class:`TranscodeCache` whose files are envelope-encrypted (same keys as the blobs)."""

    def __init__(self, root: Path, keys: KeyRing) -> None:
        super().__init__(root)
        self.store = EncryptedFileBlobStore(root, keys, cache_size=256)

    def get_or_make(
        self, sha256: str, target_ts: str, original: bytes | None, load: Callable[[], bytes]
    ) -> bytes:
        key = f"{sha256[:2]}/{sha256}.{target_ts}.dcm"
        try:
            return self.store.get(key)
        except BlobNotFound:
            pass
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            try:
                return self.store.get(key)
            except BlobNotFound:
                pass
            data = transcode_instance(original if original is not None else load(), target_ts)
            self.store.put(key, data)
        with self._guard:
            self._locks.pop(key, None)
        return data


def transcode_cache(settings: Settings, root: Path | None = None) -> TranscodeCache:
    """The archive's transcode cache: encrypted when a KEK is configured."""
    base = root or settings.data_dir / "cache" / "transcoded"
    keys = keyring_from_settings(settings)
    if keys is None:
        return TranscodeCache(base)
    return EncryptedTranscodeCache(base.with_name(base.name + "-encrypted"), keys)

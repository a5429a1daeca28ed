"""The server secret, and the HMAC every derived credential and pseudonymous key is made with.

Kept in ``access`` because several folders need it (the patient's portal, regional sharing, the
ingest that links a person): one secret, one way of keying values with it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading

from cloudfilm.config import Settings

log = logging.getLogger(__name__)
_lock = threading.Lock()
_cache: dict[str, bytes] = {}


def server_secret(settings: Settings) -> bytes:
    """``CLOUDFILM_SECRET_KEY`` or, for a single machine, a random key kept in the data dir."""
    if settings.secret_key:
        return settings.secret_key.encode("utf-8")
    path = (settings.data_dir / "secret.key").resolve()
    with _lock:
        hit = _cache.get(str(path))
        if hit is not None:
            return hit
        if not path.exists():
            # Several processes (DIMSE workers) may start at once: write a whole file aside,
            # then link it into place; whoever links first wins, the others read theirs.
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".secret.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
                log.warning("created %s; set CLOUDFILM_SECRET_KEY for several servers", path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        key = path.read_text().strip().encode("utf-8")
        _cache[str(path)] = key
        return key


def mac(secret: bytes, *parts: str) -> bytes:
    return hmac.new(secret, "\x1f".join(parts).encode("utf-8"), hashlib.sha256).digest()


def mac_hex(secret: bytes, *parts: str) -> str:
    return mac(secret, *parts).hex()

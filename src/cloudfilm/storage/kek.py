"""Key-encryption keys (KEKs) of the encrypted file store, from the settings.

A KEK never encrypts images: it wraps the random data key of each blob (storage/encrypted.py),
so replacing it (``cloudfilm keys rotate``) rewrites 40 bytes per blob, never the images.
Each KEK has an id that the blobs record, so a blob says which key it needs; the id is the
operator's name for it (``<id>:<base64>``) or, when none is given, a fingerprint of the key.

Where keys come from, one of:

- ``CLOUDFILM_BLOB_KEK``: ``[<id>:]<base64 of 32 bytes>`` (a secret manager's environment);
- ``CLOUDFILM_BLOB_KEK_FILE``: a file with one such line per key, the first being the current
  one (``#`` comments allowed), so a mounted secret can hold the new key and the old one;

plus ``CLOUDFILM_BLOB_KEK_PREVIOUS`` (JSON list of the same form): keys that only *read*
blobs wrapped before a rotation, needed until ``cloudfilm keys rotate`` has finished.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cloudfilm.config import Settings

log = logging.getLogger(__name__)

KEY_BYTES = 32
"""AES-256: a KEK and a data key are both 32 bytes."""
_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class KeyConfigError(ValueError):
    """The key settings cannot be used (the message says which and why, never the key)."""


@dataclass(frozen=True)
class Kek:
    """One key-encryption key. ``repr`` leaves the key out so it never reaches a log."""

    id: str
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class KeyRing:
    """The current KEK (wraps every new data key) and the ones that may still unwrap."""

    primary: Kek
    previous: tuple[Kek, ...] = ()

    def get(self, kek_id: str) -> Kek | None:
        if kek_id == self.primary.id:
            return self.primary
        return next((k for k in self.previous if k.id == kek_id), None)

    @property
    def ids(self) -> list[str]:
        return [self.primary.id, *(k.id for k in self.previous)]


def fingerprint(key: bytes) -> str:
    """The default id of a key: a hash of it (reveals nothing of a random 256-bit key)."""
    return "k-" + hashlib.sha256(b"cloudfilm blob kek id\0" + key).hexdigest()[:16]


def parse_kek(text: str, where: str) -> Kek:
    """``[<id>:]<base64>`` → a KEK; ``where`` names the setting in error messages."""
    text = text.strip()
    kek_id, sep, encoded = text.rpartition(":")  # base64 has no ':'
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError(f"{where}: not [<id>:]<base64 of 32 bytes>") from None
    if len(key) != KEY_BYTES:
        raise KeyConfigError(f"{where}: the key is {len(key)} bytes, AES-256 needs {KEY_BYTES}")
    if sep and not _ID.match(kek_id):
        raise KeyConfigError(f"{where}: a key id is 1-64 of A-Z a-z 0-9 . _ -")
    return Kek(kek_id if sep else fingerprint(key), key)


def new_kek_line(kek_id: str | None = None) -> str:
    """A fresh random KEK as ``<id>:<base64>`` (``cloudfilm keys generate``)."""
    key = secrets.token_bytes(KEY_BYTES)
    encoded = base64.b64encode(key).decode()
    if kek_id is not None and not _ID.match(kek_id):
        raise KeyConfigError("a key id is 1-64 of A-Z a-z 0-9 . _ -")
    return f"{kek_id or fingerprint(key)}:{encoded}"


def _file_lines(path: Path) -> list[str]:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except OSError as exc:
        raise KeyConfigError(f"CLOUDFILM_BLOB_KEK_FILE {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KeyConfigError(f"CLOUDFILM_BLOB_KEK_FILE {path}: not text") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the key file %s is readable by other users (chmod 600 it)", path)
    lines = [ln.strip() for ln in text.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def keyring_from_settings(settings: Settings) -> KeyRing | None:
    """The configured KEKs, or None when file-store encryption is off (no KEK set)."""
    if settings.blob_kek and settings.blob_kek_file:
        raise KeyConfigError("set CLOUDFILM_BLOB_KEK or CLOUDFILM_BLOB_KEK_FILE, not both")
    keys: list[Kek] = []
    if settings.blob_kek:
        keys.append(parse_kek(settings.blob_kek, "CLOUDFILM_BLOB_KEK"))
    elif settings.blob_kek_file:
        path = Path(os.path.expanduser(settings.blob_kek_file))
        lines = _file_lines(path)
        if not lines:
            raise KeyConfigError(f"CLOUDFILM_BLOB_KEK_FILE {path}: no key in it")
        keys += [parse_kek(ln, f"{path} line {i + 1}") for i, ln in enumerate(lines)]
    if not keys:
        if settings.blob_kek_previous:
            raise KeyConfigError("CLOUDFILM_BLOB_KEK_PREVIOUS is set but no current KEK")
        return None
    keys += [
        parse_kek(t, f"CLOUDFILM_BLOB_KEK_PREVIOUS[{i}]")
        for i, t in enumerate(settings.blob_kek_previous)
    ]
    seen: dict[str, bytes] = {}
    for k in keys:
        if k.id in seen and seen[k.id] != k.key:
            raise KeyConfigError(f"two different keys have the id {k.id!r}")
        seen[k.id] = k.key
    unique = [k for i, k in enumerate(keys) if k.id not in {x.id for x in keys[:i]}]
    return KeyRing(unique[0], tuple(unique[1:]))

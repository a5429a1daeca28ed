"""Envelope encryption of the file store: AES-256-GCM in 64 KiB chunks, one data key per blob.

Why this shape (docs/keeping.md, Encryption at rest, says more):

- a random data key per blob, wrapped by a KEK (AES key wrap, RFC 3394): rotating the KEK
  rewrites 40 bytes of each header, never the images;
- chunks with their own GCM nonce (the blob's random prefix + the chunk index): a frame is a
  byte range of the plaintext, and a range read decrypts only the chunks it touches;
- each chunk's associated data is the header's fixed fields, the blob key and the chunk index:
  a flipped bit, a truncation, reordered chunks or another blob's file is an error
  (:class:`BlobDamaged`), never other bytes (an empty blob still has one chunk);
- the plaintext is exactly what was received (keys and SHA-256s are of it, as before).

Layout: ``HEADER`` bytes, then chunk ``i`` at ``HEADER + i * (CHUNK + 16)``. At 0: magic
``CFBLOBE1``, chunk size (u32), plaintext length (u64), nonce prefix (8 bytes); at 512 and
1024: key slots A and B, each a generation (u32), a KEK id (u8 length + 64 bytes) and the
wrapped data key (40 bytes), all zero when empty. Rotation writes the new wrap into the empty
slot, fsyncs and checks it, and only then zeroes the old one: one slot always unwraps, and an
interrupted rotation is finished by the next run. Readers take the newest slot they can open.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from cloudfilm.storage.blobs import BlobNotFound, FileBlobStore
from cloudfilm.storage.kek import KeyRing

MAGIC = b"CFBLOBE1"
CHUNK = 64 * 1024
TAG = 16
HEADER = 4096
SLOT_OFFSETS = (512, 1024)
SLOT_BYTES = 512
MARKER = ".cloudfilm-encryption.json"
"""At the store's root: says the folder is encrypted, so a store opened without keys refuses
instead of serving ciphertext as DICOM."""
_FIXED = struct.Struct(">8sIQ8s")
_SLOT = struct.Struct(">IB64s40s")
_SCHEME = {"scheme": "cloudfilm envelope v1", "cipher": "AES-256-GCM", "chunk": CHUNK,
           "wrap": "AES key wrap (RFC 3394)", "header": HEADER}  # fmt: skip
_BATCH = 16
"""Chunks read and decrypted per step of a stream (1 MiB)."""


class BlobDamaged(OSError):
    """A blob's file fails authentication: changed, truncated, or another blob's file. An
    ``OSError`` so that callers treating an unreadable file as a storage fault (a replica
    fallback, the fixity verifier) treat this one the same."""


class KeyMissing(OSError):
    """No configured KEK unwraps this blob (its KEK id is named in the message)."""


class EncryptionConfigError(RuntimeError):
    """The folder and the settings disagree (encrypted folder without keys, or the reverse)."""


def ciphertext_size(plain_len: int) -> int:
    """Bytes on disk of a blob of ``plain_len`` bytes (header + chunks with their tags)."""
    chunks = max(1, -(-plain_len // CHUNK))
    return HEADER + plain_len + chunks * TAG


@dataclass(frozen=True)
class Slot:
    generation: int
    kek_id: str
    wrapped: bytes

    def pack(self) -> bytes:
        kid = self.kek_id.encode("ascii")
        return _SLOT.pack(self.generation, len(kid), kid, self.wrapped).ljust(SLOT_BYTES, b"\0")

    @staticmethod
    def parse(raw: bytes) -> Slot | None:
        gen, n, kid, wrapped = _SLOT.unpack_from(raw)
        if gen == 0 or n == 0 or n > 64:
            return None
        try:
            return Slot(gen, kid[:n].decode("ascii"), wrapped)
        except UnicodeDecodeError:
            return None


@dataclass(frozen=True)
class Header:
    chunk: int
    length: int
    nonce_prefix: bytes
    fixed: bytes
    slots: tuple[Slot | None, Slot | None]

    @staticmethod
    def parse(raw: bytes, key: str) -> Header:
        if len(raw) < HEADER or raw[:8] != MAGIC:
            raise BlobDamaged(f"blob {key}: not an encrypted blob (no header)")
        _magic, chunk, length, prefix = _FIXED.unpack_from(raw)
        if chunk != CHUNK:
            raise BlobDamaged(f"blob {key}: unknown chunk size {chunk}")
        slots = tuple(Slot.parse(raw[o : o + SLOT_BYTES]) for o in SLOT_OFFSETS)
        return Header(chunk, length, prefix, raw[: _FIXED.size], slots)  # type: ignore[arg-type]

    @property
    def chunks(self) -> int:
        return max(1, -(-self.length // self.chunk))


class _Cipher:
    """What reading one blob needs once its data key is unwrapped (kept in an LRU)."""

    __slots__ = ("aad", "aead", "header")

    def __init__(self, header: Header, data_key: bytes, key: str) -> None:
        self.header = header
        self.aead = AESGCM(data_key)
        self.aad = header.fixed + key.encode()

    def nonce(self, index: int) -> bytes:
        return self.header.nonce_prefix + index.to_bytes(4, "big")

    def decrypt_chunks(self, raw: bytes, first: int, last: int, key: str) -> bytearray:
        """Plaintext of chunks ``first..last``, whose ciphertext ``raw`` holds."""
        h = self.header
        expected = min(h.length, (last + 1) * h.chunk) - first * h.chunk
        if last >= h.chunks or len(raw) != expected + (last - first + 1) * TAG:
            raise BlobDamaged(f"blob {key}: truncated")
        out = bytearray(expected)
        view, dst = memoryview(raw), memoryview(out)
        pos = 0
        for i in range(first, last + 1):
            n = min(h.chunk, h.length - i * h.chunk)
            off = (i - first) * h.chunk
            try:
                self.aead.decrypt_into(
                    self.nonce(i),
                    view[pos : pos + n + TAG],
                    self.aad + i.to_bytes(8, "big"),
                    dst[off : off + n],
                )
            except InvalidTag:
                raise BlobDamaged(f"blob {key}: chunk {i} fails authentication") from None
            pos += n + TAG
        return out


class EncryptedFileBlobStore(FileBlobStore):
    """A folder on disk whose files are ciphertext (see the module's docstring).

    Same keys, atomic writes and recovery as :class:`FileBlobStore`; ``local_path`` is None
    (the file is not the DICOM), so frames are served through :meth:`get_range`.
    """

    def __init__(self, root: Path, keys: KeyRing, *, cache_size: int = 4096) -> None:
        _check_folder(root, encrypted=True)
        super().__init__(root)
        self.keys = keys
        self._ciphers: OrderedDict[str, _Cipher] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_size = cache_size

    # -- writing ---------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        """Write unless the blob is there *and* decrypts to ``data``: a re-sent instance costs
        a decryption instead of a write, and a damaged file is replaced (so the fixity repair's
        ``put`` heals it, where the plain store's size check would keep it)."""
        final = self._path(key)
        try:
            if final.stat().st_size == ciphertext_size(len(data)) and self._holds(key, data):
                return  # content-addressed: same key, same bytes
        except FileNotFoundError:
            pass
        self._forget(key)
        self._write(final, self._encrypt(key, data))

    def _holds(self, key: str, data: bytes) -> bool:
        self._forget(key)
        pos, view = 0, memoryview(data)
        try:
            for part in self.open_stream(key):
                if view[pos : pos + len(part)] != part:
                    return False
                pos += len(part)
        except (BlobDamaged, KeyMissing):
            return False
        return pos == len(data)

    def _encrypt(self, key: str, data: bytes) -> Iterator[bytes]:
        data_key = AESGCM.generate_key(256)
        prefix = secrets.token_bytes(8)
        fixed = _FIXED.pack(MAGIC, CHUNK, len(data), prefix)
        primary = self.keys.primary
        slot = Slot(1, primary.id, aes_key_wrap(primary.key, data_key))
        header = bytearray(HEADER)
        header[: len(fixed)] = fixed
        header[SLOT_OFFSETS[0] : SLOT_OFFSETS[0] + SLOT_BYTES] = slot.pack()
        yield bytes(header)
        aead, aad = AESGCM(data_key), fixed + key.encode()
        view = memoryview(data)
        for i in range(max(1, -(-len(data) // CHUNK))):
            part = view[i * CHUNK : (i + 1) * CHUNK]
            yield aead.encrypt(prefix + i.to_bytes(4, "big"), part, aad + i.to_bytes(8, "big"))

    def _write(self, final: Path, parts: Iterator[bytes]) -> None:
        """Temp file → fsync → rename → fsync the folder, as FileBlobStore.put does."""
        if final.parent not in self._dirs:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(final.parent)
        tmp = self.root / self.TMP / f"{secrets.token_hex(8)}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            batch: list[bytes] = []
            for part in parts:
                batch.append(part)
                if len(batch) >= _BATCH:
                    _write_all(fd, batch)
                    batch = []
            _write_all(fd, batch)
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, final)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        self._dir_sync.sync(final.parent)

    def delete(self, key: str) -> None:
        self._forget(key)
        super().delete(key)

    # -- reading ---------------------------------------------------------------------------
    def _open(self, key: str) -> int:
        try:
            return os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def _forget(self, key: str) -> None:
        with self._lock:
            self._ciphers.pop(key, None)

    def _cipher(self, key: str, fd: int, *, fresh: bool = False) -> _Cipher:
        if not fresh:
            with self._lock:
                c = self._ciphers.get(key)
                if c is not None:
                    self._ciphers.move_to_end(key)
                    return c
        header = Header.parse(os.pread(fd, HEADER, 0), key)
        c = _Cipher(header, self._unwrap(header, key)[1], key)
        with self._lock:
            self._ciphers[key] = c
            while len(self._ciphers) > self._cache_size:
                self._ciphers.popitem(last=False)
        return c

    def _unwrap(self, header: Header, key: str) -> tuple[int, bytes]:
        """(slot index, data key) of the newest slot a configured KEK unwraps."""
        order = sorted(
            (i for i, s in enumerate(header.slots) if s is not None),
            key=lambda i: -header.slots[i].generation,  # type: ignore[union-attr]
        )
        named, failed = [], []
        for i in order:
            slot = header.slots[i]
            assert slot is not None
            named.append(slot.kek_id)
            kek = self.keys.get(slot.kek_id)
            if kek is None:
                continue
            try:
                return i, aes_key_unwrap(kek.key, slot.wrapped)
            except InvalidUnwrap:
                failed.append(slot.kek_id)
        if not named:
            raise BlobDamaged(f"blob {key}: no wrapped data key in its header")
        if failed:
            raise BlobDamaged(
                f"blob {key}: its wrapped data key fails to unwrap with KEK {failed[0]!r} "
                "(a changed header, or another key under the same id)"
            )
        raise KeyMissing(
            f"blob {key} is wrapped by KEK {' or '.join(repr(n) for n in named)}; configured: "
            f"{', '.join(repr(n) for n in self.keys.ids)} (add the old key to "
            "CLOUDFILM_BLOB_KEK_PREVIOUS until `cloudfilm keys rotate` has finished)"
        )

    def _read_chunks(self, key: str, fd: int, first: int, last: int) -> bytearray:
        """Plaintext of chunks ``first..last``; a stale cached key (the blob was deleted and
        written again, by another process) is dropped and the header read once more."""
        for fresh in (False, True):
            c = self._cipher(key, fd, fresh=fresh)
            span = c.header.chunk + TAG
            raw = os.pread(fd, (last - first + 1) * span, HEADER + first * span)
            try:
                return c.decrypt_chunks(raw, first, last, key)
            except BlobDamaged:
                if fresh:
                    raise
        raise AssertionError("unreachable")

    def size(self, key: str) -> int:
        """The plaintext length of a blob (from its header)."""
        fd = self._open(key)
        try:
            return self._cipher(key, fd).header.length
        finally:
            os.close(fd)

    def get(self, key: str) -> bytes:
        fd = self._open(key)
        try:
            c = self._cipher(key, fd)
            if os.fstat(fd).st_size != ciphertext_size(c.header.length):
                c = self._cipher(key, fd, fresh=True)  # perhaps written again meanwhile
                if os.fstat(fd).st_size != ciphertext_size(c.header.length):
                    raise BlobDamaged(f"blob {key}: the file's size does not match its header")
            return bytes(self._read_chunks(key, fd, 0, c.header.chunks - 1))
        finally:
            os.close(fd)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        fd = self._open(key)
        try:
            h = self._cipher(key, fd).header
            end = min(start + max(length, 0), h.length)
            if start >= end:
                return b""
            first, last = start // h.chunk, (end - 1) // h.chunk
            plain = self._read_chunks(key, fd, first, last)
            base = first * h.chunk
            return bytes(memoryview(plain)[start - base : end - base])
        finally:
            os.close(fd)

    def open_stream(self, key: str) -> Iterator[bytes]:
        fd = self._open(key)
        try:
            chunks = self._cipher(key, fd).header.chunks
        except BaseException:
            os.close(fd)
            raise
        return self._stream(key, fd, chunks)

    def _stream(self, key: str, fd: int, chunks: int) -> Iterator[bytes]:
        try:
            for first in range(0, chunks, _BATCH):
                yield bytes(self._read_chunks(key, fd, first, min(chunks, first + _BATCH) - 1))
        finally:
            os.close(fd)

    ranges_inline = True
    """Range reads never wait on a network: the frames endpoint may serve them on its event
    loop (dicomweb/wado.py), as it does a plain file's pread."""

    def local_path(self, key: str) -> Path | None:
        return None  # the file is ciphertext

    def list_keys(self, prefix: str = "instances/") -> Iterator[tuple[str, float]]:
        return (kt for kt in super().list_keys(prefix) if not kt[0].startswith("."))

    def all_keys(self) -> Iterator[str]:
        """Every blob of every kind (instances, report PDFs), for rotation and its status."""
        for entry in sorted(self.root.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):
                yield from (k for k, _t in self.list_keys(entry.name + "/"))

    # -- rotation --------------------------------------------------------------------------
    def kek_of(self, key: str) -> list[str]:
        """The KEK ids in the blob's header, newest slot first (``cloudfilm keys status``)."""
        fd = self._open(key)
        try:
            header = Header.parse(os.pread(fd, HEADER, 0), key)
        finally:
            os.close(fd)
        slots = sorted((s for s in header.slots if s), key=lambda s: -s.generation)
        return [s.kek_id for s in slots]

    def rewrap(self, key: str) -> str:
        """Make the current KEK wrap this blob's data key, erasing the old wrap; returns
        ``current`` (nothing to do), ``finished`` (an interrupted rotation's old slot erased)
        or ``rotated``. Only the slot bytes change; the chunks are not touched."""
        try:
            fd = os.open(self._path(key), os.O_RDWR)
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc
        try:
            header = Header.parse(os.pread(fd, HEADER, 0), key)
            index, data_key = self._unwrap(header, key)
            slot = header.slots[index]
            assert slot is not None
            other = 1 - index
            primary = self.keys.primary
            if slot.kek_id == primary.id:
                if header.slots[other] is None and _zero(fd, SLOT_OFFSETS[other]):
                    return "current"
                _erase(fd, other)
                return "finished"
            # the key must open the blob before its only other wrap is thrown away
            _Cipher(header, data_key, key).decrypt_chunks(
                os.pread(fd, min(header.length, CHUNK) + TAG, HEADER), 0, 0, key
            )
            new = Slot(slot.generation + 1, primary.id, aes_key_wrap(primary.key, data_key))
            _pwrite_all(fd, new.pack(), SLOT_OFFSETS[other])
            os.fsync(fd)
            check = Slot.parse(os.pread(fd, SLOT_BYTES, SLOT_OFFSETS[other]))
            if check is None or aes_key_unwrap(primary.key, check.wrapped) != data_key:
                raise BlobDamaged(f"blob {key}: the new wrapped key did not read back")
            _erase(fd, index)
            return "rotated"
        finally:
            os.close(fd)


def _write_all(fd: int, parts: list[bytes]) -> None:
    if not parts:
        return
    total = sum(len(p) for p in parts)
    written = os.writev(fd, parts)
    if written < total:  # short write (a full disk reports itself on the next call)
        rest = b"".join(parts)[written:]
        view = memoryview(rest)
        while view:
            view = view[os.write(fd, view) :]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _zero(fd: int, offset: int) -> bool:
    return os.pread(fd, SLOT_BYTES, offset) == bytes(SLOT_BYTES)


def _erase(fd: int, index: int) -> None:
    _pwrite_all(fd, bytes(SLOT_BYTES), SLOT_OFFSETS[index])
    os.fsync(fd)


def is_encrypted_folder(root: Path) -> bool:
    return (root / MARKER).is_file()


def _check_folder(root: Path, *, encrypted: bool) -> None:
    """Refuse a folder that holds the other kind of blobs; mark a new encrypted folder."""
    marked = is_encrypted_folder(root)
    if not encrypted:
        if marked:
            raise EncryptionConfigError(
                f"the blob folder {root} is encrypted: set CLOUDFILM_BLOB_KEK or "
                "CLOUDFILM_BLOB_KEK_FILE (its files are ciphertext, not DICOM)"
            )
        return
    if marked:
        return
    root.mkdir(parents=True, exist_ok=True)
    held = [p.name for p in root.iterdir() if not p.name.startswith(".")]
    if held and not is_encrypted_folder(root):  # (another process may just have marked it)
        raise EncryptionConfigError(
            f"the blob folder {root} holds unencrypted blobs ({', '.join(sorted(held)[:3])}): "
            "encryption starts on an empty folder (see docs/keeping.md, Encryption at rest)"
        )
    tmp = root / f"{MARKER}.{secrets.token_hex(4)}.part"
    tmp.write_text(json.dumps(_SCHEME))
    os.replace(tmp, root / MARKER)


def check_plain_folder(root: Path) -> None:
    """For the plain store: refuse a folder that an encrypted store wrote."""
    _check_folder(root, encrypted=False)


def open_file_store(root: Path, keys: KeyRing | None) -> FileBlobStore:
    """The file store of a folder: encrypted when a KEK is configured, else plain (and then
    refused if the folder is an encrypted one)."""
    if keys is None:
        check_plain_folder(root)
        return FileBlobStore(root)
    return EncryptedFileBlobStore(root, keys)

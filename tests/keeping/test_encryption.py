"""Encryption at rest of the file store: envelope encryption in chunks, byte ranges, damage and
swaps detected, key rotation that rewrites only the wrapped keys (storage/encrypted.py)."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.storage.blobs import BlobNotFound, FileBlobStore, instance_key
from cloudfilm.storage.encrypted import (
    CHUNK,
    HEADER,
    SLOT_OFFSETS,
    BlobDamaged,
    EncryptedFileBlobStore,
    EncryptionConfigError,
    KeyMissing,
)
from cloudfilm.storage.kek import Kek, KeyConfigError, KeyRing, keyring_from_settings

from ..factory import make_instance

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7, 5 * 1024 * 1024 + 3]


def kek(name: str) -> Kek:
    return Kek(name, hashlib.sha256(name.encode()).digest())


def key_of(data: bytes) -> str:
    return instance_key(hashlib.sha256(data).hexdigest())


@pytest.fixture
def store(tmp_path: Path) -> EncryptedFileBlobStore:
    return EncryptedFileBlobStore(tmp_path / "blobs", KeyRing(kek("kek-2026")))


def test_round_trip_of_every_size(store: EncryptedFileBlobStore) -> None:
    rng = random.Random(12)
    for size in SIZES:
        data = rng.randbytes(size)
        key = key_of(data)
        store.put(key, data)
        store.put(key, data)  # idempotent, as the plain store
        assert store.exists(key)
        assert store.get(key) == data, size
        assert b"".join(store.open_stream(key)) == data, size
        assert store.size(key) == size
        assert store.local_path(key) is None  # the file is not the DICOM
        on_disk = (store.root / key).read_bytes()
        assert len(on_disk) > size
        if size >= 64:
            assert data[:64] not in on_disk and data[-64:] not in on_disk
    assert len(list(store.list_keys())) == len(SIZES)


def test_a_dicom_file_is_ciphertext_on_disk(store: EncryptedFileBlobStore) -> None:
    data = make_instance(
        patient_name="Zhang^San=张^三", patient_id="ID-330102", charset="ISO_IR 192"
    )
    key = key_of(data)
    store.put(key, data)
    raw = (store.root / key).read_bytes()
    assert b"DICM" not in raw and b"Zhang" not in raw and b"ID-330102" not in raw
    assert store.get(key) == data  # what was received, byte for byte


def test_ranges_across_chunk_boundaries_equal_the_plaintext(store: EncryptedFileBlobStore) -> None:
    data = random.Random(3).randbytes(5 * CHUNK + 123)
    key = key_of(data)
    store.put(key, data)
    n = len(data)
    ranges = [
        (0, 0),
        (0, 1),
        (CHUNK - 1, 2),
        (CHUNK - 10, CHUNK + 20),
        (CHUNK, CHUNK),
        (2 * CHUNK - 1, 2 * CHUNK + 2),
        (0, n),
        (n - 5, 100),  # past the end: what is there, as the plain store
        (n, 10),
        (n + 10, 10),
    ]
    rng = random.Random(4)
    ranges += [(rng.randrange(n), rng.randrange(1, 3 * CHUNK)) for _ in range(200)]
    plain = FileBlobStore(store.root.parent / "plain")
    plain.put(key, data)
    for start, length in ranges:
        got = store.get_range(key, start, length)
        assert got == data[start : start + length], (start, length)
        assert got == plain.get_range(key, start, length)


def test_a_flipped_byte_is_an_error_never_other_bytes(store: EncryptedFileBlobStore) -> None:
    data = random.Random(5).randbytes(4 * CHUNK + 50)
    key = key_of(data)
    store.put(key, data)
    path = store.root / key
    original = path.read_bytes()
    assert store.get(key) == data  # this store now has the data key cached, as a server would
    span = CHUNK + 16
    places = {
        "plaintext length in the header": 12,
        "nonce prefix": 22,
        "wrapped data key": SLOT_OFFSETS[0] + 80,
        "first chunk": HEADER + 3,
        "a middle chunk's tag": HEADER + 2 * span + CHUNK + 4,
        "the last chunk": len(original) - 20,
    }
    for where, offset in places.items():
        damaged = bytearray(original)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        fresh = EncryptedFileBlobStore(store.root, store.keys)  # no key cached
        with pytest.raises(BlobDamaged):
            fresh.get(key)
        with pytest.raises(BlobDamaged):
            b"".join(fresh.open_stream(key))
        if where == "a middle chunk's tag":
            # only the ranges that need the damaged chunk fail: the other frames still serve
            with pytest.raises(BlobDamaged):
                fresh.get_range(key, 2 * CHUNK + 10, 10)
            assert fresh.get_range(key, 10, 1000) == data[10:1010]
            assert fresh.get_range(key, 3 * CHUNK, 100) == data[3 * CHUNK : 3 * CHUNK + 100]
        # a server with the data key cached notices damaged chunks too (each is authenticated)
        if "chunk" in where:
            with pytest.raises(BlobDamaged):
                store.get(key)
    path.write_bytes(original[:-100])  # truncated
    with pytest.raises(BlobDamaged):
        EncryptedFileBlobStore(store.root, store.keys).get(key)
    path.write_bytes(original)
    assert store.get(key) == data


def test_a_blob_cannot_be_swapped_with_another(store: EncryptedFileBlobStore) -> None:
    a, b = os.urandom(3 * CHUNK), os.urandom(3 * CHUNK)
    ka, kb = key_of(a), key_of(b)
    store.put(ka, a)
    store.put(kb, b)
    file_a, file_b = (store.root / ka).read_bytes(), (store.root / kb).read_bytes()
    (store.root / kb).write_bytes(file_a)  # A's file under B's name
    with pytest.raises(BlobDamaged):
        EncryptedFileBlobStore(store.root, store.keys).get(kb)
    # B's chunks with A's wrapped data key (the header swapped)
    (store.root / kb).write_bytes(file_a[:HEADER] + file_b[HEADER:])
    with pytest.raises(BlobDamaged):
        EncryptedFileBlobStore(store.root, store.keys).get(kb)
    # two chunks of B exchanged
    span = CHUNK + 16
    c0, c1 = file_b[HEADER : HEADER + span], file_b[HEADER + span : HEADER + 2 * span]
    (store.root / kb).write_bytes(file_b[:HEADER] + c1 + c0 + file_b[HEADER + 2 * span :])
    with pytest.raises(BlobDamaged):
        EncryptedFileBlobStore(store.root, store.keys).get_range(kb, 0, 10)
    (store.root / kb).write_bytes(file_b)
    assert store.get(kb) == b and store.get(ka) == a


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloudfilm.cli", "keys", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _line(k: Kek) -> str:
    return f"{k.id}:{base64.b64encode(k.key).decode()}"


def test_rotation_rewraps_keys_only_and_the_old_kek_is_then_not_needed(tmp_path: Path) -> None:
    old, new = kek("kek-2026"), kek("kek-2027")
    root = tmp_path / "blobs"
    store = EncryptedFileBlobStore(root, KeyRing(old))
    blobs = {key_of(d): d for d in (os.urandom(n) for n in (0, 1, CHUNK + 1, 3 * CHUNK + 9))}
    blobs["reports/" + "ab" * 32 + ".pdf"] = b"%PDF-1.7 a report"
    for key, data in blobs.items():
        store.put(key, data)
    before = {key: (root / key).read_bytes() for key in blobs}
    base = {
        "CLOUDFILM_BLOB_URL": root.as_uri(),
        "CLOUDFILM_DATA_DIR": str(tmp_path / "data"),
        "CLOUDFILM_CONFIG": str(tmp_path / "none.toml"),
    }
    # 1. servers restart with the new KEK current and the old one for reading
    during = {
        **base,
        "CLOUDFILM_BLOB_KEK": _line(new),
        "CLOUDFILM_BLOB_KEK_PREVIOUS": f'["{_line(old)}"]',
    }
    status = _cli(during, "status", "--json")
    assert status.returncode == 1  # blobs still need the old key
    assert '"kek-2026": 5' in status.stdout
    # 2. rotate
    rotated = _cli(during, "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert "5 rotated" in rotated.stdout
    # only the two key slots changed; not one byte of the images
    for key in blobs:
        after = (root / key).read_bytes()
        old_bytes = before[key]
        assert len(after) == len(old_bytes)
        assert after[: SLOT_OFFSETS[0]] == old_bytes[: SLOT_OFFSETS[0]]
        assert after[SLOT_OFFSETS[1] + 512 :] == old_bytes[SLOT_OFFSETS[1] + 512 :]
        assert after[SLOT_OFFSETS[0] : SLOT_OFFSETS[1] + 512] != old_bytes[SLOT_OFFSETS[0] : 1536]
    # 3. the old KEK is not needed any more, and cannot read them any more
    only_new = EncryptedFileBlobStore(root, KeyRing(new))
    for key, data in blobs.items():
        assert only_new.get(key) == data
        assert only_new.kek_of(key) == ["kek-2027"]
    only_old = EncryptedFileBlobStore(root, KeyRing(old))
    for key in blobs:
        with pytest.raises(KeyMissing, match="kek-2027"):
            only_old.get(key)
    after_env = {**base, "CLOUDFILM_BLOB_KEK": _line(new), "CLOUDFILM_BLOB_KEK_PREVIOUS": "[]"}
    assert _cli(after_env, "status").returncode == 0
    again = _cli(after_env, "rotate")
    assert again.returncode == 0 and "5 current" in again.stdout


def test_an_interrupted_rotation_is_finished_by_the_next_run(tmp_path: Path) -> None:
    old, new = kek("kek-a"), kek("kek-b")
    root = tmp_path / "blobs"
    data = os.urandom(2 * CHUNK)
    key = key_of(data)
    EncryptedFileBlobStore(root, KeyRing(old)).put(key, data)
    first = (root / key).read_bytes()
    both = EncryptedFileBlobStore(root, KeyRing(new, (old,)))
    assert both.rewrap(key) == "rotated"
    # a crash after the new wrap was written, before the old one was erased
    raw = bytearray((root / key).read_bytes())
    raw[SLOT_OFFSETS[0] : SLOT_OFFSETS[0] + 512] = first[SLOT_OFFSETS[0] : SLOT_OFFSETS[0] + 512]
    (root / key).write_bytes(bytes(raw))
    assert both.kek_of(key) == ["kek-b", "kek-a"]
    assert EncryptedFileBlobStore(root, KeyRing(old)).get(key) == data  # still the old wrap
    assert both.rewrap(key) == "finished"
    assert both.kek_of(key) == ["kek-b"]
    with pytest.raises(KeyMissing):
        EncryptedFileBlobStore(root, KeyRing(old)).get(key)
    assert EncryptedFileBlobStore(root, KeyRing(new)).get(key) == data
    assert both.rewrap(key) == "current"


def test_key_settings(tmp_path: Path) -> None:
    k = kek("from-file")
    keyfile = tmp_path / "kek"
    keyfile.write_text(f"# current first\n{_line(k)}\n{_line(kek('older'))}\n")
    keyfile.chmod(0o600)
    ring = keyring_from_settings(Settings(data_dir=tmp_path, blob_kek=None, blob_kek_file=keyfile))
    assert ring is not None and ring.primary == k and ring.ids == ["from-file", "older"]
    bare = base64.b64encode(bytes(32)).decode()
    ring = keyring_from_settings(Settings(data_dir=tmp_path, blob_kek=bare, blob_kek_file=None))
    assert ring is not None and ring.primary.id.startswith("k-")  # a fingerprint
    for bad, message in [
        ("abc", "not \\[<id>:\\]<base64"),
        (base64.b64encode(bytes(16)).decode(), "16 bytes"),
        ("bad id!:" + bare, "key id"),
    ]:
        with pytest.raises(KeyConfigError, match=message):
            keyring_from_settings(Settings(data_dir=tmp_path, blob_kek=bad, blob_kek_file=None))
    assert "key=" not in repr(k) and repr(k.key) not in repr(k)  # never in a log line


def test_a_folder_and_settings_that_disagree_refuse_to_start(tmp_path: Path) -> None:
    encrypted = Settings(
        data_dir=tmp_path / "a", blob_kek=_line(kek("x")), blob_kek_file=None, database_url=None
    )
    Archive(encrypted).close()  # an empty folder becomes an encrypted one
    plain = Settings(data_dir=tmp_path / "a", blob_kek=None, blob_kek_file=None)
    with pytest.raises(EncryptionConfigError, match="is encrypted: set CLOUDFILM_BLOB_KEK"):
        Archive(plain)
    archive = Archive(Settings(data_dir=tmp_path / "b", blob_kek=None, blob_kek_file=None))
    archive.ingest(make_instance(), hospital=1)
    archive.close()
    later = Settings(data_dir=tmp_path / "b", blob_kek=_line(kek("x")), blob_kek_file=None)
    with pytest.raises(EncryptionConfigError, match="holds unencrypted blobs"):
        Archive(later)


def test_a_deleted_and_rewritten_blob_is_read_with_its_new_key(tmp_path: Path) -> None:
    """Another process (the same folder, its own key cache) wrote the blob again."""
    ring = KeyRing(kek("k"))
    reader = EncryptedFileBlobStore(tmp_path / "blobs", ring)
    writer = EncryptedFileBlobStore(tmp_path / "blobs", ring)
    data = os.urandom(CHUNK + 5)
    key = key_of(data)
    writer.put(key, data)
    assert reader.get_range(key, 0, 10) == data[:10]  # its data key now cached
    writer.delete(key)
    with pytest.raises(BlobNotFound):
        reader.get(key)
    writer.put(key, data)  # a new data key
    assert reader.get_range(key, 5, 10) == data[5:15]
    assert reader.get(key) == data


def test_the_encrypted_suite_switch_is_on_when_asked(archive: Archive) -> None:
    """With CLOUDFILM_TEST_BLOB_ENCRYPTION=1 the shared fixtures' archive is encrypted (the
    run of the DICOMweb/ingest/DIMSE/portal suites then proves them on an encrypted store)."""
    on = os.environ.get("CLOUDFILM_TEST_BLOB_ENCRYPTION") == "1"
    assert isinstance(archive.blobs, EncryptedFileBlobStore) == on


def test_writing_a_damaged_blob_again_heals_it(store: EncryptedFileBlobStore) -> None:
    """A re-sent instance (or the fixity repair's put from the replica's copy) replaces a
    damaged file; an intact one is left as it is."""
    data = os.urandom(2 * CHUNK + 1)
    key = key_of(data)
    store.put(key, data)
    path = store.root / key
    inode = path.stat().st_ino
    store.put(key, data)
    assert path.stat().st_ino == inode  # intact: not written again
    raw = bytearray(path.read_bytes())
    raw[HEADER + CHUNK + 100] ^= 0x80
    path.write_bytes(bytes(raw))
    with pytest.raises(BlobDamaged):
        store.get(key)
    store.put(key, data)
    assert path.stat().st_ino != inode
    assert store.get(key) == data

"""The storage area behind its interface: a folder on disk and a real S3 API server (moto)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest

from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.storage.blobs import BlobNotFound, FileBlobStore, S3BlobStore, instance_key

from .conftest import dcmtk, free_port
from .factory import make_dataset, make_instance, to_bytes

pytestmark = pytest.mark.engines("sqlite")  # the blob stores, not the index


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a loopback port: a real HTTP S3 API, not an in-process mock."""
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto_server did not start")
    yield url
    proc.terminate()
    proc.wait()


def s3_settings(tmp_path: Path, database_url: str, endpoint: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        blob_url=f"s3://cloudfilm-{os.urandom(4).hex()}/hospital-a",
        s3_endpoint_url=endpoint,
        s3_access_key_id="test",
        s3_secret_access_key="test",
    )


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str):  # type: ignore[no-untyped-def]
    if request.param == "file":
        yield FileBlobStore(tmp_path / "blobs")
        return
    s = S3BlobStore(
        f"b{os.urandom(4).hex()}",
        "prefix",
        endpoint_url=s3_endpoint,
        access_key_id="test",
        secret_access_key="test",
    )
    s.ensure_bucket()
    yield s
    s.close()


def test_put_get_range_stream_delete(store) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(3 * 1024 * 1024 + 17)
    key = instance_key(hashlib.sha256(data).hexdigest())
    assert not store.exists(key)
    store.put(key, data)
    store.put(key, data)  # idempotent
    assert store.exists(key)
    assert store.get(key) == data
    assert store.get_range(key, 1000, 5000) == data[1000:6000]
    assert b"".join(store.open_stream(key)) == data
    assert [k for k, _t in store.list_keys()] == [key]
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(BlobNotFound):
        store.get(key)


def test_file_store_never_exposes_partial_writes(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    # what a crash leaves: a temp file, never a file under its final key
    (tmp_path / "blobs" / ".tmp" / "dead.part").write_bytes(b"half")
    assert list(store.list_keys()) == []
    assert store.recover() == 1
    assert not list((tmp_path / "blobs" / ".tmp").iterdir())


def test_archive_on_s3_ingests_and_serves(
    tmp_path: Path, database_url: str, s3_endpoint: str
) -> None:
    archive = Archive(s3_settings(tmp_path, database_url, s3_endpoint))
    try:
        assert isinstance(archive.blobs, S3BlobStore)
        data = make_instance(patient_name="Chen^Jie=陈^杰", charset="GB18030")
        assert archive.ingest(data, hospital=1).outcome == "stored"
        assert archive.ingest(data, hospital=1).outcome == "duplicate"
        keys = [k for k, _t in archive.blobs.list_keys()]
        assert len(keys) == 1 and keys[0].endswith(hashlib.sha256(data).hexdigest() + ".dcm")
        assert archive.blobs.get(keys[0]) == data
        assert not (tmp_path / "data" / "blobs").exists()  # nothing went to local disk
    finally:
        archive.close()


def test_server_on_s3_store_and_get_with_dcmtk(
    server_factory, tmp_path: Path, s3_endpoint: str
) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(
        env_extra={
            "CLOUDFILM_BLOB_URL": f"s3://srv-{os.urandom(4).hex()}/pacs",
            "CLOUDFILM_S3_ENDPOINT_URL": s3_endpoint,
            "CLOUDFILM_S3_ACCESS_KEY_ID": "test",
            "CLOUDFILM_S3_SECRET_ACCESS_KEY": "test",
        }
    )
    server.start()
    study = pydicom.uid.generate_uid()
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.dcm"
        p.write_bytes(to_bytes(make_dataset(study_uid=study, instance_number=i + 1)))
        paths.append(p)
    proc = dcmtk(
        "storescu", "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port), *map(str, paths)
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "got"
    out.mkdir()
    proc = dcmtk(
        "getscu",
        "-aec",
        server.ae_title,
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study}",
        "127.0.0.1",
        str(server.dicom_port),
    )
    assert proc.returncode == 0, proc.stderr
    assert len(list(out.iterdir())) == 3

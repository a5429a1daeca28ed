"""Encryption at rest through real servers: S3 server-side encryption on every object written to
a real S3 API server (moto), refused when the store ignores it; frames of an envelope-encrypted
file store served by ``cloudfilm serve``."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import numpy as np
import pydicom
import pytest

from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.storage.blobs import S3BlobStore
from cloudfilm.storage.sse import SSENotHonoured

from ..conftest import dcmtk
from ..dicomweb.conftest import start_server, stow
from ..dicomweb.helpers import parts
from ..factory import make_dataset, make_instance, to_bytes
from ..test_blobs import s3_endpoint  # noqa: F401  (the moto S3 server fixture)

pytestmark = pytest.mark.engines("sqlite")  # the file store, not the index

KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
KEK = "kek-serve:" + base64.b64encode(hashlib.sha256(b"serve test").digest()).decode()


def every_object(endpoint: str, bucket: str) -> dict[str, dict[str, str | None]]:
    """Each object in the bucket with what the store says about its encryption."""
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            head = client.head_object(Bucket=bucket, Key=obj["Key"])
            found[obj["Key"]] = {
                "sse": head.get("ServerSideEncryption"),
                "kms": head.get("SSEKMSKeyId"),
            }
    return found


@pytest.mark.parametrize("mode", ["AES256", "aws:kms"])
def test_every_object_the_archive_writes_carries_sse(
    tmp_path: Path,
    database_url: str,
    s3_endpoint: str,  # noqa: F811
    mode: str,
) -> None:
    bucket = f"sse-{os.urandom(4).hex()}"
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        blob_url=f"s3://{bucket}/hospital-a",
        s3_endpoint_url=s3_endpoint,
        s3_access_key_id="test",
        s3_secret_access_key="test",
        s3_sse=mode,
        s3_sse_kms_key_id=KMS_KEY if mode == "aws:kms" else None,
    )
    archive = Archive(settings)
    try:
        assert isinstance(archive.blobs, S3BlobStore)
        sent = [make_instance(patient_name=f"Wang^{i}") for i in range(4)]
        for data in sent:
            assert archive.ingest(data, hospital=1).outcome == "stored"
        keys = [k for k, _t in archive.blobs.list_keys()]
        assert sorted(archive.blobs.get(k) for k in keys) == sorted(sent)
    finally:
        archive.close()
    objects = every_object(s3_endpoint, bucket)
    assert len(objects) == 4  # the start-up probe is gone
    for key, enc in objects.items():
        assert enc["sse"] == mode, key
        assert enc["kms"] == (KMS_KEY if mode == "aws:kms" else None), key


def test_a_server_on_sse_kms_stores_every_instance_encrypted(
    server_factory,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811
) -> None:
    bucket = f"srv-sse-{os.urandom(4).hex()}"
    server = server_factory(
        env_extra={
            "CLOUDFILM_BLOB_URL": f"s3://{bucket}/pacs",
            "CLOUDFILM_S3_ENDPOINT_URL": s3_endpoint,
            "CLOUDFILM_S3_ACCESS_KEY_ID": "test",
            "CLOUDFILM_S3_SECRET_ACCESS_KEY": "test",
            "CLOUDFILM_S3_SSE": "aws:kms",
            "CLOUDFILM_S3_SSE_KMS_KEY_ID": KMS_KEY,
        }
    )
    server.start()
    study = pydicom.uid.generate_uid()
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.dcm"
        p.write_bytes(to_bytes(make_dataset(study_uid=study, instance_number=i + 1)))
        paths.append(str(p))
    proc = dcmtk("storescu", "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port), *paths)
    assert proc.returncode == 0, proc.stderr
    objects = every_object(s3_endpoint, bucket)
    assert len(objects) == 3
    assert all(e == {"sse": "aws:kms", "kms": KMS_KEY} for e in objects.values()), objects


class _StripSSE(http.server.BaseHTTPRequestHandler):
    """An S3-compatible store that ignores server-side encryption: forwards every request to
    the real S3 server without the ``x-amz-server-side-encryption*`` headers."""

    protocol_version = "HTTP/1.1"
    upstream = ""

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {
            k: v
            for k, v in self.headers.items()
            if not k.lower().startswith("x-amz-server-side-encryption")
            and k.lower() not in ("host", "content-length", "connection", "expect")
        }
        with httpx.Client(timeout=30) as client:
            r = client.request(
                self.command, self.upstream + self.path, headers=headers, content=body
            )
        self.send_response(r.status_code)
        for k, v in r.headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        payload = b"" if self.command == "HEAD" else r.content
        length_out = r.headers.get("content-length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length_out or str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ignoring_store(s3_endpoint: str) -> Iterator[str]:  # noqa: F811
    handler = type("Handler", (_StripSSE,), {"upstream": s3_endpoint})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_a_store_that_ignores_sse_is_refused_at_start(
    tmp_path: Path,
    server_factory,  # type: ignore[no-untyped-def]
    ignoring_store: str,
) -> None:
    bucket = f"ign-{os.urandom(4).hex()}"
    s3 = {
        "blob_url": f"s3://{bucket}/pacs",
        "s3_endpoint_url": ignoring_store,
        "s3_access_key_id": "test",
        "s3_secret_access_key": "test",
    }
    # the same store without SSE asked works: the refusal is about encryption only
    Archive(Settings(data_dir=tmp_path / "plain", database_url=None, **s3)).close()
    with pytest.raises(SSENotHonoured, match="did not apply server-side encryption AES256"):
        Archive(Settings(data_dir=tmp_path / "a", database_url=None, s3_sse="AES256", **s3))
    server = server_factory(
        env_extra={
            "CLOUDFILM_BLOB_URL": s3["blob_url"],
            "CLOUDFILM_S3_ENDPOINT_URL": ignoring_store,
            "CLOUDFILM_S3_ACCESS_KEY_ID": "test",
            "CLOUDFILM_S3_SECRET_ACCESS_KEY": "test",
            "CLOUDFILM_S3_SSE": "AES256",
        }
    )
    with pytest.raises(RuntimeError, match="server exited early") as failed:
        server.start()
    assert "did not apply server-side encryption AES256 (it reports none)" in str(failed.value)


def test_frames_of_an_encrypted_file_store_are_served(tmp_path: Path, database_url: str) -> None:
    """A real ``cloudfilm serve`` on an encrypted folder: frames (byte ranges of the original
    that cross the 64 KiB chunks), the whole instance, a transcoded copy; nothing readable on
    disk."""
    dw = start_server(tmp_path, database_url, CLOUDFILM_BLOB_KEK=KEK)
    try:
        ds = make_dataset(
            patient_name="Li^Si=李^四", patient_id="PID-ENC-1", charset="ISO_IR 192", size=200
        )
        frames = [np.full((200, 200), 100 * (n + 1), dtype=np.int16) for n in range(5)]
        for n, f in enumerate(frames):
            f[n, :] = -n  # each frame its own bytes
        ds.NumberOfFrames = 5
        ds.PixelData = b"".join(f.tobytes() for f in frames)
        data = to_bytes(ds)
        with dw.http("write") as http:
            assert stow(http, [data]).status_code == 200
        path = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        path += f"/instances/{ds.SOPInstanceUID}"
        octet = 'multipart/related; type="application/octet-stream"'
        with dw.http("read") as http:
            for n in range(1, 6):
                r = http.get(f"{path}/frames/{n}", headers={"Accept": octet})
                assert r.status_code == 200, r.text
                assert parts(r)[0][1] == frames[n - 1].tobytes()
            r = http.get(f"{path}/frames/5,2,3", headers={"Accept": octet})
            assert [p[1] for p in parts(r)] == [frames[i].tobytes() for i in (4, 1, 2)]
            whole = 'multipart/related; type="application/dicom"; transfer-syntax=*'
            assert parts(http.get(path, headers={"Accept": whole}))[0][1] == data
            rle = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.5'
            r = http.get(path, headers={"Accept": rle})
            assert r.status_code == 200
            assert pydicom.dcmread(io.BytesIO(parts(r)[0][1])).PatientID == "PID-ENC-1"
        data_dir = dw.server.data_dir
        assert len(list((data_dir / "blobs" / "instances").rglob("*.dcm"))) == 1
        # the blobs and the transcoded copy (not the index: it is not encrypted, see the docs)
        files = [p for d in ("blobs", "cache") for p in (data_dir / d).rglob("*") if p.is_file()]
        assert len(files) >= 3  # the folder's marker, the instance, the RLE copy
        for f in files:
            raw = f.read_bytes()
            assert b"PID-ENC-1" not in raw and frames[2].tobytes()[:512] not in raw, f
    finally:
        dw.server.stop()

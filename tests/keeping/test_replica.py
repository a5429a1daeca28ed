"""The second copy: every stored blob reaches the replica (a folder, or a real S3 API server)
with the right SHA-256, also when the replica was down while the images arrived; reads fall
back to it when the primary's file is gone (DICOMweb frames and instances); blobs held before
the replica was configured are queued by ``cloudfilm replicate --catch-up``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from cloudfilm.access.tokens import create_token
from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.keeping.models import ReplicaItem
from cloudfilm.keeping.replica import copy_due, queue_recent
from cloudfilm.storage.blobs import BlobStore, FileBlobStore, S3BlobStore
from cloudfilm.storage.database import Database
from cloudfilm.storage.models import Instance
from tests.conftest import free_port
from tests.dicomweb.conftest import stow
from tests.dicomweb.helpers import parts
from tests.factory import make_dataset, make_instance, to_bytes

FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _moto(port: int) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def _ct(n: int) -> list[bytes]:
    study, series = generate_uid(), generate_uid()
    return [
        to_bytes(
            make_dataset(
                study_uid=study, series_uid=series, instance_number=i + 1, size=32, fill=100 + i
            )
        )
        for i in range(n)
    ]


def _token(database_url: str, scopes: str) -> str:
    db = Database(database_url)
    try:
        return create_token(db, f"t-{scopes}", scopes, hospital=1)[1]
    finally:
        db.dispose()


def _rows(database_url: str) -> tuple[dict[str, str], int, int]:
    """(blob key → SHA-256 of every instance, queue rows, queue rows that failed)."""
    db = Database(database_url)
    try:
        with db.read() as s:
            held = dict(s.execute(select(Instance.blob_key, Instance.sha256)).all())
            waiting = s.execute(select(func.count(ReplicaItem.pk))).scalar_one()
            failed = s.execute(
                select(func.count(ReplicaItem.pk)).where(ReplicaItem.attempts > 0)
            ).scalar_one()
        return held, waiting, failed
    finally:
        db.dispose()


def _wait(what: str, check, timeout: float = 90.0, log=lambda: "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen in time\n{log()}"
        time.sleep(0.25)


def _metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    line = next((x for x in text.splitlines() if x.startswith(name + " ")), None)
    return float(line.split()[-1]) if line else 0.0


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_replica_catches_up_after_being_down(
    server_factory, tmp_path: Path, database_url: str, kind: str
) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    moto: subprocess.Popen[bytes] | None = None
    if kind == "file":
        where = tmp_path / "replica"
        where.write_text("not mounted")  # a file where the folder should be: every copy fails
        env = {"CLOUDFILM_REPLICA_URL": where.as_uri()}
    else:
        env = {  # nothing listens there yet
            "CLOUDFILM_REPLICA_URL": "s3://second-copy/hospital-a",
            "CLOUDFILM_REPLICA_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "CLOUDFILM_REPLICA_S3_ACCESS_KEY_ID": "test",
            "CLOUDFILM_REPLICA_S3_SECRET_ACCESS_KEY": "test",
        }
    env.update(CLOUDFILM_REPLICA_RETRY_SECONDS="0.2", CLOUDFILM_VERIFY_PERIOD_DAYS="0")
    server = server_factory(env_extra=env)
    server.start()
    try:
        files = _ct(6)
        with httpx.Client(
            base_url=server.http_url,
            headers={"Authorization": f"Bearer {_token(database_url, 'write')}"},
            timeout=60,
        ) as http:
            r = stow(http, files)
            assert r.status_code == 200, r.text
        _wait("a failed copy", lambda: _rows(database_url)[2] > 0, log=server.log)
        held, waiting, _failed = _rows(database_url)
        assert len(held) == 6 and waiting == 6  # queued durably, nothing lost
        assert _metric(server.http_url, 'cloudfilm_replica_copies_total{outcome="failed"}') > 0

        # the replica comes back
        if kind == "file":
            where.unlink()
            where.mkdir()
            replica: BlobStore = FileBlobStore(where)
        else:
            moto = _moto(port)
            replica = S3BlobStore(
                "second-copy",
                "hospital-a",
                endpoint_url=env["CLOUDFILM_REPLICA_S3_ENDPOINT_URL"],
                access_key_id="test",
                secret_access_key="test",
            )
        _wait("the catch-up", lambda: _rows(database_url)[1] == 0, log=server.log)
        for key, sha in held.items():
            assert hashlib.sha256(replica.get(key)).hexdigest() == sha
        assert _metric(server.http_url, 'cloudfilm_replica_copies_total{outcome="copied"}') == 6
        assert _metric(server.http_url, "cloudfilm_replica_lag_seconds_count") == 6
        replica.close()
    finally:
        server.stop()
        if moto is not None:
            moto.terminate()
            moto.wait()


def test_reads_fall_back_to_the_replica_when_the_primary_file_is_gone(
    server_factory, tmp_path: Path, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    replica_dir = tmp_path / "replica"
    server = server_factory(
        env_extra={
            "CLOUDFILM_REPLICA_URL": replica_dir.as_uri(),
            "CLOUDFILM_VERIFY_PERIOD_DAYS": "0",
        }
    )
    server.start()
    try:
        files = _ct(4)
        datasets = [pydicom.dcmread(io.BytesIO(f)) for f in files]
        headers = {"Authorization": f"Bearer {_token(database_url, 'read,write')}"}
        with httpx.Client(base_url=server.http_url, headers=headers, timeout=60) as http:
            assert stow(http, files).status_code == 200
            _wait("the copies", lambda: _rows(database_url)[1] == 0, log=server.log)
            held, _w, _f = _rows(database_url)
            for key in held:  # the primary disk loses every file
                (server.data_dir / "blobs" / key).unlink()
                assert (replica_dir / key).is_file()
            for ds, original in zip(datasets, files, strict=True):
                path = (
                    f"/dicom-web/studies/{ds.StudyInstanceUID}/series/"
                    f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
                )
                r = http.get(f"{path}/frames/1", headers={"Accept": FRAMES})
                assert r.status_code == 200, r.text
                [(_h, frame)] = parts(r)
                assert frame == ds.PixelData
                r = http.get(
                    path, headers={"Accept": 'multipart/related; type="application/dicom"'}
                )
                assert r.status_code == 200, r.text
                [(_h, body)] = parts(r)
                assert body == original  # the received bytes, from the second copy
            study = datasets[0].StudyInstanceUID
            r = http.get(
                f"/dicom-web/studies/{study}/series/{datasets[0].SeriesInstanceUID}"
                f"/instances/{datasets[0].SOPInstanceUID}/rendered"
            )
            assert r.status_code == 200 and r.content
        assert _metric(server.http_url, "cloudfilm_replica_fallback_reads_total") >= 8
        assert "served from the replica" in server.log()
    finally:
        server.stop()


def test_catch_up_queues_what_was_stored_before_the_replica(
    tmp_path: Path, database_url: str
) -> None:
    first_store = Settings(data_dir=tmp_path / "data", database_url=database_url)
    archive = Archive(first_store)
    try:
        for data in _ct(3):
            archive.ingest(data, hospital=1)
        pdf = b"%PDF-1.4 a report\n"
        archive.blobs.put(f"reports/{hashlib.sha256(pdf).hexdigest()}.pdf", pdf)
        assert _rows(database_url)[1] == 0  # no replica: nothing queued
    finally:
        archive.close()
    replica_dir = tmp_path / "replica"
    env = dict(
        os.environ,
        CLOUDFILM_DATA_DIR=str(first_store.data_dir),
        CLOUDFILM_DATABASE_URL=database_url,
        CLOUDFILM_REPLICA_URL=replica_dir.as_uri(),
        CLOUDFILM_CONFIG=str(tmp_path / "none.toml"),
    )
    cmd = [sys.executable, "-m", "cloudfilm.cli", "replicate", "--catch-up", "--drain"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert (out["queued"], out["copied"], out["failed"], out["waiting"]) == (4, 4, 0, 0)
    held, _w, _f = _rows(database_url)
    for key, sha in held.items():
        assert hashlib.sha256((replica_dir / key).read_bytes()).hexdigest() == sha
    assert (replica_dir / "reports" / f"{hashlib.sha256(pdf).hexdigest()}.pdf").read_bytes() == pdf
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert json.loads(run.stdout.strip().splitlines()[-1])["queued"] == 0  # all there already

    # with the replica configured, each new blob is queued by ingest, once
    archive = Archive(
        Settings(
            data_dir=first_store.data_dir,
            database_url=database_url,
            replica_url=replica_dir.as_uri(),
        )
    )
    try:
        data = make_instance(size=16)
        assert archive.ingest(data, hospital=1).outcome == "stored"
        assert archive.ingest(data, hospital=1).outcome == "duplicate"
        assert _rows(database_url)[1] == 1
        # a report PDF written now is found by the worker's look at what is new
        later = b"%PDF-1.4 a corrected report\n"
        key = f"reports/{hashlib.sha256(later).hexdigest()}.pdf"
        archive.blobs.put(key, later)
        assert queue_recent(archive) == 1  # the earlier PDF is in the replica already
        assert copy_due(archive) == (2, 0)
        assert (replica_dir / key).read_bytes() == later
        assert queue_recent(archive) == 0
    finally:
        archive.close()
    shutil.rmtree(replica_dir)

"""kill -9 in the middle of a multi-instance C-STORE: nothing acknowledged may be lost, and the
index may never point at a blob that is not there."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import select

from cloudfilm.storage.blobs import FileBlobStore
from cloudfilm.storage.database import Database
from cloudfilm.storage.models import Instance

from .conftest import ServerProcess
from .factory import make_dataset, to_bytes

pytestmark = pytest.mark.timeout(300)


def dataset_part(part10: bytes) -> bytes:
    """The bytes after the file meta group: what the modality sent over the network."""
    meta_len = int.from_bytes(part10[140:144], "little")
    return part10[144 + meta_len :]


def send_until_killed(server: ServerProcess, files: list[bytes], kill_after: int) -> list[str]:
    """Send over one association; kill the server after ``kill_after`` acknowledgements."""
    acked: list[str] = []
    stopped: list[str] = []
    ae = AE(ae_title="CRASHSCU")
    ae.dimse_timeout = ae.acse_timeout = 120  # a loaded 2-core machine may stall for seconds
    ae.add_requested_context(CTImageStorage, pydicom.uid.ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    killer: threading.Thread | None = None
    for data in files:
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
        try:
            status = assoc.send_c_store(ds)
        except Exception as exc:
            stopped.append(f"send raised {exc!r}")
            break
        if not assoc.is_established or status is None or "Status" not in status:
            stopped.append(f"association ended before the kill (status {status!r})")
            break
        if status.Status == 0x0000:
            acked.append(ds.SOPInstanceUID)
        if len(acked) == kill_after and killer is None:
            # Kill from another thread while the next stores are in flight.
            killer = threading.Thread(target=lambda: (time_sleep(0.003), server.kill()))
            killer.start()
    if killer:
        killer.join()
    assoc.abort()
    assert killer is not None, f"after {len(acked)} acknowledgements: {stopped}"
    return acked


def time_sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def test_sigkill_during_c_store_loses_nothing_acknowledged(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(7)
    study = pydicom.uid.generate_uid()
    series = pydicom.uid.generate_uid()
    originals: dict[str, bytes] = {}
    files: list[bytes] = []
    for i in range(240):
        ds = make_dataset(
            study_uid=study, series_uid=series, instance_number=i + 1, size=256, fill=i
        )
        data = to_bytes(ds)
        originals[ds.SOPInstanceUID] = data
        files.append(data)

    server = server_factory()
    all_acked: list[str] = []
    remaining = files
    for _round in range(3):
        server.start()
        acked = send_until_killed(server, remaining, kill_after=rng.randint(20, 50))
        assert server.proc is not None and server.proc.returncode == -9
        assert acked, "nothing was acknowledged before the kill"
        all_acked += acked
        done = set(all_acked)
        remaining = [
            f
            for f in remaining
            if pydicom.dcmread(
                pydicom.filebase.DicomBytesIO(f), stop_before_pixels=True
            ).SOPInstanceUID
            not in done
        ]

    server.start()  # restart after the last kill: recovery must not lose anything either
    server.stop()

    db = Database(server.database_url)
    blobs = FileBlobStore(server.data_dir / "blobs")
    with db.read() as session:
        rows = session.execute(select(Instance.sop_uid, Instance.blob_key, Instance.sha256)).all()
    db.dispose()
    indexed = {uid: (key, sha) for uid, key, sha in rows}
    # every acknowledged instance is indexed and its stored data set is byte-identical
    for uid in all_acked:
        assert uid in indexed, f"acknowledged {uid} lost"
        key, sha = indexed[uid]
        stored = blobs.get(key)
        assert hashlib.sha256(stored).hexdigest() == sha
        assert dataset_part(stored) == dataset_part(originals[uid])
    # no index row points at a missing or different blob
    for uid, (key, sha) in indexed.items():
        assert blobs.exists(key), f"dangling index row for {uid}"
        assert hashlib.sha256(blobs.get(key)).hexdigest() == sha
    # half-written temporary files are never referenced by the index
    referenced = {key for key, _sha in indexed.values()}
    assert not any(k.startswith(".tmp") for k in referenced)

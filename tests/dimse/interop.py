"""Helpers of the receive-path interoperability tests: servers shared by a group of tests, what
to send (fresh copies, a large CT, storescu profiles) and what the archive kept (its blobs read
straight from the blob folder, its index through C-FIND).
"""

from __future__ import annotations

import contextlib
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from tests.conftest import ServerProcess, _pg_database, _sqlite_database, dcmtk
from tests.factory import make_dataset, to_bytes

from . import rawpeer as ul


def serve(
    engine: str, factory: pytest.TempPathFactory, env: dict[str, str]
) -> Iterator[ServerProcess]:
    """``cloudfilm serve`` on a fresh index of ``engine``, for a module-scoped fixture."""
    folder = factory.mktemp(f"interop-{engine}")
    with contextlib.ExitStack() as stack:
        if engine == "sqlite":
            url = _sqlite_database(folder / "index.sqlite3")
        else:
            url = stack.enter_context(contextlib.contextmanager(_pg_database)())
        server = ServerProcess(data_dir=folder / "data", database_url=url, env_extra=env)
        stack.callback(server.stop)
        server.start()
        yield server


# -- what the archive kept ------------------------------------------------------------------
_UIDS: dict[Path, str] = {}
"""SOP Instance UID of each blob seen (blobs never change)."""


def blob_of(server: ServerProcess, uid: str) -> Path | None:
    for path in sorted((server.data_dir / "blobs").rglob("*.dcm")):
        if path not in _UIDS:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            _UIDS[path] = str(ds.SOPInstanceUID)
        if _UIDS[path] == uid:
            return path
    return None


def findable(server: ServerProcess, uid: str) -> bool:
    ae = AE(ae_title="INTEROP")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    q = pydicom.Dataset()
    q.QueryRetrieveLevel = "IMAGE"
    q.SOPInstanceUID = uid
    found = [
        i.SOPInstanceUID
        for s, i in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind)
        if s and s.Status == 0xFF00
    ]
    assoc.release()
    return found == [uid]


def _comparable(data_set: bytes, ts: str) -> bytes:
    # A deflated data set may be re-deflated by its sender: compare what it inflates to.
    return zlib.decompress(data_set, -15) if ts == DeflatedExplicitVRLittleEndian else data_set


def assert_stored_as_sent(server: ServerProcess, sent: Path) -> None:
    """The archive holds the data set of ``sent`` byte for byte, in its transfer syntax, and
    its index finds it."""
    ds = pydicom.dcmread(sent, stop_before_pixels=True)
    uid, ts = str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID)
    blob = blob_of(server, uid)
    assert blob is not None, f"no blob for {sent.name}"
    kept = pydicom.dcmread(blob, stop_before_pixels=True)
    assert kept.file_meta.TransferSyntaxUID == ts, "stored in another transfer syntax"
    got = _comparable(ul.dataset_part(blob.read_bytes()), ts)
    assert got == _comparable(ul.dataset_part(sent.read_bytes()), ts), f"{sent.name} altered"
    assert findable(server, uid)


def assert_no_trace(server: ServerProcess, uid: str) -> None:
    """Nothing of the instance: not in the index, no blob, no half-written temporary file."""
    tmp = server.data_dir / "blobs" / ".tmp"
    deadline = time.monotonic() + 5
    while any(tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not list(tmp.iterdir()), "a temporary blob was left behind"
    for path in (server.data_dir / "blobs").rglob("*"):
        assert not (path.is_file() and uid.encode() in path.read_bytes()), f"{path} holds it"
    assert not findable(server, uid)


# -- what to send -----------------------------------------------------------------------------
def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def sop_ts(path: Path) -> tuple[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)


def fresh_copy(src: Path, dest: Path, ts: str | None = None) -> Path:
    """``src`` under a new SOP Instance UID (optionally in another uncompressed syntax)."""
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if ts:
        ds.file_meta.TransferSyntaxUID = ts
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, enforce_file_format=True)
    return dest


def big_ct(folder: Path, seed: int) -> Path:
    """A 512 x 512 16-bit CT slice (512 kB of pixels: many PDVs at any PDU size)."""
    ds = make_dataset(size=512)
    ds.PixelData = np.random.default_rng(seed).integers(-1024, 3000, (512, 512), np.int16).tobytes()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ct-{ds.SOPInstanceUID}.dcm"
    path.write_bytes(to_bytes(ds))
    return path


def profile(folder: Path, contexts: list[tuple[str, str]]) -> list[str]:
    """storescu options proposing exactly ``contexts`` (SOP class, transfer syntax), one
    presentation context each (storescu's -x options always add the uncompressed syntaxes,
    and the server would be free to pick one of those instead)."""
    lines = ["[[TransferSyntaxes]]"]
    lines += [f"[TS{i}]\nTransferSyntax1 = {ts}" for i, (_, ts) in enumerate(contexts)]
    lines += ["[[PresentationContexts]]", "[PCS]"]
    lines += [f"PresentationContext{i + 1} = {sop}\\TS{i}" for i, (sop, _) in enumerate(contexts)]
    lines += ["[[Profiles]]", "[INTEROP]", "PresentationContexts = PCS"]
    cfg = folder / f"storescu-{generate_uid()[-12:]}.cfg"
    cfg.write_text("\n".join(lines) + "\n")
    return ["-xf", str(cfg), "INTEROP"]


def storescu(server: ServerProcess, options: list[str], *files: Path, port: int = 0) -> str:
    """dcmtk's storescu, all ``files`` on one association; its verbose log."""
    proc = dcmtk("storescu", "-v", "-aec", server.ae_title, *options, "127.0.0.1",
                 str(port or server.dicom_port), *[str(f) for f in files])  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def pynetdicom_store(server: ServerProcess, path: Path) -> int:
    """pynetdicom proposing exactly the file's syntax and sending the file's data set bytes
    as they are (STORE_SEND_CHUNKED_DATASET must be on)."""
    sop, ts = sop_ts(path)
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(sop, [ts])
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established and assoc.accepted_contexts[0].transfer_syntax == [ts]
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()


def pydicom_samples() -> list[str]:
    """One of pydicom's files per transfer syntax: other encoders than the demo's (GDCM,
    vendors), odd but legal encodings; each with a SOP Instance UID no other chosen file has."""
    folder = Path(get_testdata_file("CT_small.dcm")).parent  # type: ignore[arg-type]
    chosen: dict[str, str] = {}
    uids: set[str] = set()
    for path in sorted(folder.glob("*.dcm")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                ts, uid = str(ds.file_meta.TransferSyntaxUID), str(ds.SOPInstanceUID)
                _ = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPClassUID
        except Exception:
            continue
        if ts not in chosen and uid not in uids and UID(ts).is_transfer_syntax:
            chosen[ts] = path.name
            uids.add(uid)
    return sorted(chosen.values())

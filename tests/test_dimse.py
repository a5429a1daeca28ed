"""DICOM network services against real peers: dcmtk's tools and pynetdicom as SCU."""

from __future__ import annotations

import io
import subprocess
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from cloudfilm.archive import Archive
from cloudfilm.config import Settings

from .conftest import ServerProcess, dcmtk, free_port
from .factory import make_dataset, to_bytes
from .procs import child_pids

pytestmark = pytest.mark.timeout(180)


def write_study(folder: Path, n: int, **kw: object) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    study = pydicom.uid.generate_uid()
    series = pydicom.uid.generate_uid()
    paths = []
    for i in range(n):
        ds = make_dataset(study_uid=study, series_uid=series, instance_number=i + 1, **kw)
        p = folder / f"{i:04d}.dcm"
        p.write_bytes(to_bytes(ds))
        paths.append(p)
    return paths


def store(server: ServerProcess, *paths: Path | str) -> subprocess.CompletedProcess[str]:
    return dcmtk(
        "storescu",
        "-aec",
        server.ae_title,
        "127.0.0.1",
        str(server.dicom_port),
        *[str(p) for p in paths],
    )


def find(server: ServerProcess, *keys: str, model: str = "-S") -> list[Dataset]:
    """findscu writing every response to a file (-X), read back with pydicom."""
    out = Path(server.data_dir).parent / f"find-{free_port()}"
    out.mkdir()
    args = ["findscu", model, "-aec", server.ae_title, "-X", "-od", str(out)]
    for k in keys:
        args += ["-k", k]
    proc = dcmtk(*args, "127.0.0.1", str(server.dicom_port))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_echo(server: ServerProcess) -> None:
    proc = dcmtk("echoscu", "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port))
    assert proc.returncode == 0, proc.stderr
    # no allow-list configured: the server says at start that everyone may connect
    assert "EVERY calling AE may" in server.log()


def test_store_find_get_round_trip_with_dcmtk(server: ServerProcess, tmp_path: Path) -> None:
    paths = write_study(
        tmp_path / "in",
        5,
        patient_name="Wang^XiaoDong=王^小东",
        charset="GB18030",
        patient_id="GB001",
        accession="ACC-GB",
    )
    proc = store(server, *paths)
    assert proc.returncode == 0, proc.stderr

    studies = find(
        server,
        "QueryRetrieveLevel=STUDY",
        "SpecificCharacterSet=ISO_IR 192",
        "PatientName=王*",
        "StudyInstanceUID",
        "NumberOfStudyRelatedInstances",
        "ModalitiesInStudy",
        "AccessionNumber",
    )
    assert len(studies) == 1
    rsp = studies[0]
    assert str(rsp.PatientName) == "Wang^XiaoDong=王^小东"
    assert int(rsp.NumberOfStudyRelatedInstances) == 5
    assert rsp.ModalitiesInStudy == "CT"
    study_uid = rsp.StudyInstanceUID
    # a client that sends UTF-8 without declaring it (common) still finds the patient
    undeclared = find(server, "QueryRetrieveLevel=STUDY", "PatientName=王*")
    assert [str(d.PatientName) for d in undeclared] == ["Wang^XiaoDong=王^小东"]

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
        f"StudyInstanceUID={study_uid}",
        "127.0.0.1",
        str(server.dicom_port),
    )
    assert proc.returncode == 0, proc.stderr
    got = sorted(out.iterdir())
    assert len(got) == 5
    sent = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in paths}
    for p in got:
        ds = pydicom.dcmread(p)
        assert ds.PixelData == sent[ds.SOPInstanceUID].PixelData
        assert str(ds.PatientName) == "Wang^XiaoDong=王^小东"


def test_find_matching_at_every_level(server: ServerProcess, tmp_path: Path) -> None:
    a = write_study(
        tmp_path / "a",
        3,
        patient_name="Zhang^San",
        patient_id="Z1",
        study_date="20250105",
        modality="CT",
    )
    b = write_study(
        tmp_path / "b",
        2,
        patient_name="Zhou^Si",
        patient_id="Z2",
        study_date="20260301",
        modality="MR",
    )
    c = write_study(
        tmp_path / "c",
        1,
        patient_name="Li^Wu",
        patient_id="L3",
        study_date="20260310",
        modality="CT",
    )
    assert store(server, *a, *b, *c).returncode == 0

    # wildcard, case-insensitive on names
    names = {str(d.PatientName) for d in find(server, "QueryRetrieveLevel=STUDY", "PatientName=z*")}
    assert names == {"Zhang^San", "Zhou^Si"}
    names = {
        str(d.PatientName) for d in find(server, "QueryRetrieveLevel=STUDY", "PatientName=Zh?u*")
    }
    assert names == {"Zhou^Si"}
    # date ranges
    dates = {d.StudyDate for d in find(server, "QueryRetrieveLevel=STUDY", "StudyDate=20260101-")}
    assert dates == {"20260301", "20260310"}
    dates = {
        d.StudyDate for d in find(server, "QueryRetrieveLevel=STUDY", "StudyDate=20260301-20260305")
    }
    assert dates == {"20260301"}
    # list of UIDs
    uid_a = pydicom.dcmread(a[0]).StudyInstanceUID
    uid_c = pydicom.dcmread(c[0]).StudyInstanceUID
    got = {
        d.StudyInstanceUID
        for d in find(server, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={uid_a}\\{uid_c}")
    }
    assert got == {uid_a, uid_c}
    # patient level (patient root)
    patients = find(
        server,
        "QueryRetrieveLevel=PATIENT",
        "PatientID=Z*",
        "PatientName",
        "NumberOfPatientRelatedStudies",
        model="-P",
    )
    assert {p.PatientID for p in patients} == {"Z1", "Z2"}
    assert all(int(p.NumberOfPatientRelatedStudies) == 1 for p in patients)
    # series level with modality
    series = find(
        server,
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={uid_a}",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
    )
    assert len(series) == 1 and series[0].Modality == "CT"
    assert int(series[0].NumberOfSeriesRelatedInstances) == 3
    # image level, return keys filled (InstanceNumber from the index, Rows as stored)
    images = find(
        server,
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={uid_a}",
        f"SeriesInstanceUID={series[0].SeriesInstanceUID}",
        "SOPInstanceUID",
        "InstanceNumber",
        "Rows",
        "PatientSex",
    )
    assert sorted(int(i.InstanceNumber) for i in images) == [1, 2, 3]
    assert {int(i.Rows) for i in images} == {16}
    assert {i.PatientSex for i in images} == {"F"}
    # modality in study
    mods = find(server, "QueryRetrieveLevel=STUDY", "ModalitiesInStudy=MR", "PatientID")
    assert [m.PatientID for m in mods] == ["Z2"]


def test_pynetdicom_find_japanese_and_chinese_files(server: ServerProcess) -> None:
    files = [get_charset_files("chrX2.dcm")[0], get_charset_files("chrH32.dcm")[0]]
    assert store(server, *files).returncode == 0
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    q = Dataset()
    q.SpecificCharacterSet = "ISO_IR 192"
    q.QueryRetrieveLevel = "STUDY"
    q.PatientName = "*"
    q.StudyInstanceUID = ""
    names = set()
    for status, ident in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind):
        if status and status.Status == 0xFF00:
            names.add(str(ident.PatientName))
    assoc.release()
    assert names == {"Wang^XiaoDong=王^小东", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"}


def test_move_to_configured_destination(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dest_port = free_port()
    server = server_factory(
        env_extra={
            "CLOUDFILM_MOVE_DESTINATIONS": (
                f'[{{"ae_title": "DEST", "host": "127.0.0.1", "port": {dest_port}}}]'
            )
        }
    )
    server.start()
    paths = write_study(tmp_path / "in", 4)
    assert store(server, *paths).returncode == 0
    study_uid = pydicom.dcmread(paths[0]).StudyInstanceUID
    out = tmp_path / "moved"
    out.mkdir()
    scp = subprocess.Popen(
        [
            "/usr/bin/storescp",
            "-aet",
            "DEST",
            "-od",
            str(out),
            "--sort-on-study-uid",
            "st",
            str(dest_port),
        ],
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )
    try:
        import time

        time.sleep(0.5)
        proc = dcmtk(
            "movescu",
            "-S",
            "-aec",
            server.ae_title,
            "-aem",
            "DEST",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid}",
            "127.0.0.1",
            str(server.dicom_port),
        )
        assert proc.returncode == 0, proc.stderr
        moved = [p for p in out.rglob("*") if p.is_file()]
        assert len(moved) == 4
        # an unknown destination is refused with 0xA801
        proc = dcmtk(
            "movescu",
            "-S",
            "-aec",
            server.ae_title,
            "-aem",
            "NOWHERE",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_uid}",
            "127.0.0.1",
            str(server.dicom_port),
        )
        assert "movedestinationunknown" in (proc.stdout + proc.stderr).lower()
    finally:
        scp.terminate()
        scp.wait()


@pytest.mark.engines("sqlite")  # DIMSE transport, not the index
def test_allow_list_refuses_unknown_ae_and_per_service(server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = server_factory(
        env_extra={
            "CLOUDFILM_ALLOWED_CALLERS": (
                '[{"ae_title": "MODALITY", "services": ["echo", "store"]},'
                ' {"ae_title": "VIEWER", "host": "127.0.0.1", "services": ["echo", "find", "get"]}]'
            )
        }
    )
    server.start()
    port = str(server.dicom_port)
    # unknown calling AE: association rejected
    proc = dcmtk("echoscu", "-aet", "STRANGER", "-aec", server.ae_title, "127.0.0.1", port)
    assert proc.returncode != 0
    assert "reject" in (proc.stdout + proc.stderr).lower()
    paths = write_study(tmp_path / "in", 1)
    # the modality may store but not query
    proc = dcmtk(
        "storescu", "-aet", "MODALITY", "-aec", server.ae_title, "127.0.0.1", port, str(paths[0])
    )
    assert proc.returncode == 0, proc.stderr
    assert _find_status(server, "MODALITY") == 0x0124  # Refused: Not Authorized
    # the viewer may query but not store
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(CTImageStorage, pydicom.uid.ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    assert assoc.send_c_store(make_dataset()).Status == 0x0124
    assoc.release()
    assert _find_status(server, "VIEWER") == 0x0000


def _find_status(server: ServerProcess, calling: str) -> int:
    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientName = ""
    last = None
    for status, _ in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind):
        last = status
    assoc.release()
    assert last is not None
    return int(last.Status)


def test_bad_data_over_c_store_gets_a_failure_status(server: ServerProcess) -> None:
    """pynetdicom sends a data set without a SOP Instance UID: refused with 0xC004."""
    ds = make_dataset()
    del ds.StudyInstanceUID
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0xC004
    assert "StudyInstanceUID" in str(status.get("ErrorComment", ""))


STORESCU_PROPOSE = {
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.57": "-xs",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.1.99": "-xd",
}


def one_file_per_transfer_syntax() -> dict[str, Path]:
    """From pydicom's bundled files: one per compressed syntax, all with distinct SOP UIDs."""
    folder = Path(get_testdata_file("CT_small.dcm")).parent  # type: ignore[arg-type]
    chosen: dict[str, Path] = {}
    seen: set[str] = set()
    for path in sorted(folder.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            ts, uid = str(ds.file_meta.TransferSyntaxUID), str(ds.SOPInstanceUID)
            _ = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPClassUID
        except Exception:
            continue
        if ts in STORESCU_PROPOSE and ts not in chosen and uid not in seen:
            chosen[ts] = path
            seen.add(uid)
    return chosen


def test_compressed_transfer_syntaxes_are_accepted(server: ServerProcess) -> None:
    """storescu proposes a compressed syntax only when told to: one call per codec."""
    stored = {}
    for ts, path in one_file_per_transfer_syntax().items():
        flag = STORESCU_PROPOSE.get(ts, "-x=")
        proc = dcmtk(
            "storescu",
            flag,
            "-aec",
            server.ae_title,
            "127.0.0.1",
            str(server.dicom_port),
            str(path),
        )
        assert proc.returncode == 0, f"{path.name} ({ts}): {proc.stdout}{proc.stderr}"
        stored[pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID] = path
    assert len(stored) >= 7
    images = find(server, "QueryRetrieveLevel=IMAGE", "SOPInstanceUID")
    assert {i.SOPInstanceUID for i in images} == set(stored)
    # stored as received: byte-identical data set (file meta is the receiver's own)
    # read through the storage area (an encrypted folder holds ciphertext on disk)
    store = Archive(Settings(data_dir=server.data_dir, database_url=server.database_url))
    try:
        keys = [key for key, _ in store.blobs.list_keys("instances/")]
        assert len(keys) == len(stored)
        for key in keys:
            got = pydicom.dcmread(io.BytesIO(store.blobs.get(key)))
            sent = pydicom.dcmread(stored[got.SOPInstanceUID])
            assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
            assert got.PixelData == sent.PixelData
    finally:
        store.close()


def test_many_associations_at_once(server: ServerProcess, tmp_path: Path) -> None:
    errors: list[str] = []

    def worker(i: int) -> None:
        paths = write_study(tmp_path / f"w{i}", 5, patient_id=f"PAR{i}")
        proc = store(server, *paths)
        if proc.returncode != 0:
            errors.append(proc.stderr)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    images = find(server, "QueryRetrieveLevel=IMAGE", "SOPInstanceUID")
    assert len(images) == 40


def test_get_with_pynetdicom_scu(server: ServerProcess, tmp_path: Path) -> None:
    paths = write_study(tmp_path / "in", 3)
    assert store(server, *paths).returncode == 0
    study_uid = pydicom.dcmread(paths[0]).StudyInstanceUID
    received: list[Dataset] = []

    def on_store(event):  # type: ignore[no-untyped-def]
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="PYGET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        "127.0.0.1",
        server.dicom_port,
        ae_title=server.ae_title,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.StudyInstanceUID = study_uid
    q.SeriesInstanceUID = pydicom.dcmread(paths[0]).SeriesInstanceUID
    final = None
    for status, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet):
        final = status
    assoc.release()
    assert final is not None and final.Status == 0x0000
    assert len(received) == 3
    # patient root C-FIND at the PATIENT level through pynetdicom too
    assoc = AE(ae_title="PYF")
    assoc.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    a = assoc.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
    q = Dataset()
    q.QueryRetrieveLevel = "PATIENT"
    q.PatientID = "P001"
    q.PatientName = ""
    results = [
        i
        for s, i in a.send_c_find(q, PatientRootQueryRetrieveInformationModelFind)
        if s and s.Status == 0xFF00
    ]
    a.release()
    assert [str(r.PatientName) for r in results] == ["Test^Patient"]


@pytest.mark.engines("sqlite")  # DIMSE transport, not the index
def test_worker_processes_share_the_port_and_die_with_the_server(
    server_factory,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    import time

    server = server_factory(env_extra={"CLOUDFILM_DICOM_WORKERS": "3"})
    server.start()
    deadline = time.monotonic() + 30
    while len(child_pids(server.proc.pid, b"dicom-worker")) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = child_pids(server.proc.pid, b"dicom-worker")
    assert len(workers) == 2
    time.sleep(3)  # let the workers finish importing and bind
    errors: list[str] = []

    def worker(i: int) -> None:
        proc = store(server, *write_study(tmp_path / f"w{i}", 3, patient_id=f"MW{i}"))
        if proc.returncode != 0:
            errors.append(proc.stderr)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(find(server, "QueryRetrieveLevel=IMAGE", "SOPInstanceUID")) == 27
    server.kill()  # SIGKILL: the workers must not linger holding the port
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(
        Path(f"/proc/{p}/cmdline").exists()
        and b"dicom-worker" in Path(f"/proc/{p}/cmdline").read_bytes()
        for p in workers
    )


@pytest.mark.engines("sqlite")  # DIMSE transport, not the index
def test_association_limit_is_a_clear_rejection(server_factory) -> None:  # type: ignore[no-untyped-def]
    """Out of resources at association level: a transient rejection, not a hang."""
    server = server_factory(
        env_extra={"CLOUDFILM_MAX_ASSOCIATIONS": "3", "CLOUDFILM_DICOM_WORKERS": "1"}
    )
    server.start()
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    held = []
    try:
        for _ in range(3):
            assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.ae_title)
            if not assoc.is_established:
                break
            held.append(assoc)
        assert 1 <= len(held) <= 3
        proc = dcmtk("echoscu", "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port))
        assert proc.returncode != 0
        out = (proc.stdout + proc.stderr).lower()
        assert "reject" in out and "transient" in out
    finally:
        for assoc in held:
            assoc.release()
    proc = dcmtk("echoscu", "-aec", server.ae_title, "127.0.0.1", str(server.dicom_port))
    assert proc.returncode == 0


@pytest.mark.engines("sqlite")  # DIMSE transport, not the index
def test_move_decompresses_for_a_destination_that_refuses_compression(
    server_factory,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """dcmtk's storescp accepts only uncompressed syntaxes by default, like many older
    workstations: a JPEG instance moved there arrives decompressed, pixels intact."""
    dest_port = free_port()
    server = server_factory(
        env_extra={
            "CLOUDFILM_MOVE_DESTINATIONS": (
                f'[{{"ae_title": "OLDWS", "host": "127.0.0.1", "port": {dest_port}}}]'
            )
        }
    )
    server.start()
    jpeg = one_file_per_transfer_syntax()["1.2.840.10008.1.2.4.70"]  # JPEG lossless SV1
    proc = dcmtk("storescu", "-xs", "-aec", server.ae_title, "127.0.0.1",
                 str(server.dicom_port), str(jpeg))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sent = pydicom.dcmread(jpeg)
    out = tmp_path / "moved"
    out.mkdir()
    scp = subprocess.Popen(
        ["/usr/bin/storescp", "-aet", "OLDWS", "-od", str(out), str(dest_port)],
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )
    try:
        import time

        time.sleep(0.5)
        proc = dcmtk(
            "movescu", "-S", "-aec", server.ae_title, "-aem", "OLDWS",
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={sent.StudyInstanceUID}",
            "127.0.0.1", str(server.dicom_port),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "Failed" not in proc.stderr or "Failed SOP" not in proc.stderr
    finally:
        scp.terminate()
        scp.wait(timeout=10)
    moved = [p for p in out.rglob("*") if p.is_file()]
    assert len(moved) == 1, proc.stderr
    got = pydicom.dcmread(moved[0])
    assert not got.file_meta.TransferSyntaxUID.is_compressed
    assert got.SOPInstanceUID == sent.SOPInstanceUID
    assert (got.pixel_array == sent.pixel_array).all()
    # C-GET with dcmtk's getscu (uncompressed only by default): the same, same instance UID
    got_dir = tmp_path / "got"
    got_dir.mkdir()
    proc = dcmtk(
        "getscu", "-aec", server.ae_title, "-od", str(got_dir),
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={sent.StudyInstanceUID}",
        "127.0.0.1", str(server.dicom_port),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    [fetched] = [pydicom.dcmread(p) for p in got_dir.iterdir()]
    assert not fetched.file_meta.TransferSyntaxUID.is_compressed
    assert fetched.SOPInstanceUID == sent.SOPInstanceUID
    assert (fetched.pixel_array == sent.pixel_array).all()

"""The one ingest function, on both index engines: what is stored, what is refused and why."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from sqlalchemy import func, select

from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.ingest import Rejected, RejectReason
from cloudfilm.storage.models import Instance, Patient, Series, Study
from cloudfilm.storage.query import Query, run_query

from .factory import make_dataset, make_instance, to_bytes


def counts(archive: Archive) -> tuple[int, int, int, int]:
    with archive.db.read() as s:
        return tuple(  # type: ignore[return-value]
            s.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (Patient, Study, Series, Instance)
        )


def blob_files(archive: Archive) -> list[Path]:
    root = archive.settings.data_dir / "blobs" / "instances"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_stores_received_bytes_unchanged_and_indexes(archive: Archive) -> None:
    data = make_instance(patient_name="Li^Lei", accession="A77")
    result = archive.ingest(data, hospital=1)
    assert result.outcome == "stored"
    with archive.db.read() as s:
        inst = s.execute(select(Instance)).scalar_one()
        study = s.execute(select(Study)).scalar_one()
    assert inst.blob_key.endswith(f"/{hashlib.sha256(data).hexdigest()}.dcm")
    assert archive.blobs.get(inst.blob_key) == data
    assert inst.sha256 == hashlib.sha256(data).hexdigest()
    assert inst.size_bytes == len(data)
    assert study.accession_number == "A77"
    assert study.num_instances == 1 and study.num_series == 1
    assert study.modalities == "CT"
    # native pixel data is located for byte-range frame serving
    assert data[inst.pixel_data_offset : inst.pixel_data_offset + inst.pixel_data_length] == (
        pydicom.dcmread(get_path_bytes(data)).PixelData
    )


def get_path_bytes(data: bytes):  # type: ignore[no-untyped-def]
    import io

    return io.BytesIO(data)


def test_same_bytes_twice_is_a_duplicate_not_a_second_row(archive: Archive) -> None:
    data = make_instance()
    assert archive.ingest(data, hospital=1).outcome == "stored"
    assert archive.ingest(data, hospital=1).outcome == "duplicate"
    assert counts(archive) == (1, 1, 1, 1)
    assert len(blob_files(archive)) == 1


def test_other_bytes_same_uid_keeps_first_with_warning(archive: Archive) -> None:
    ds = make_dataset()
    first = to_bytes(ds)
    ds.StudyDescription = "changed"
    second = to_bytes(ds)
    archive.ingest(first, hospital=1)
    result = archive.ingest(second, hospital=1)
    assert result.outcome == "kept-first" and result.is_warning
    with archive.db.read() as s:
        inst = s.execute(select(Instance)).scalar_one()
    assert archive.blobs.get(inst.blob_key) == first
    assert len(blob_files(archive)) == 1


@pytest.mark.parametrize("policy", ["replace", "reject"])
def test_duplicate_policies(tmp_path: Path, database_url: str, policy: str) -> None:
    archive = Archive(
        Settings(data_dir=tmp_path / "d", database_url=database_url, duplicate_policy=policy)
    )
    try:
        ds = make_dataset()
        first = to_bytes(ds)
        ds.StudyDescription = "corrected"
        second = to_bytes(ds)
        archive.ingest(first, hospital=1)
        if policy == "reject":
            with pytest.raises(Rejected) as exc:
                archive.ingest(second, hospital=1)
            assert exc.value.reason is RejectReason.CONFLICT
            expected = first
        else:
            assert archive.ingest(second, hospital=1).outcome == "replaced"
            expected = second
        with archive.db.read() as s:
            inst = s.execute(select(Instance)).scalar_one()
            study = s.execute(select(Study)).scalar_one()
        assert archive.blobs.get(inst.blob_key) == expected
        assert study.num_instances == 1
        assert study.size_bytes == len(expected)
        assert len(blob_files(archive)) == 1  # the replaced original's blob is gone
    finally:
        archive.close()


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("GB18030", "Wang^XiaoDong=王^小东="),
        ("GBK", "Zhang^San=张^三="),
        ("ISO_IR 192", "Li^Na=李^娜="),
        (None, "Smith^John"),
    ],
)
def test_chinese_names_index_and_query_right(archive: Archive, charset: str, name: str) -> None:
    data = make_instance(patient_name=name, charset=charset)
    if charset:
        assert name.split("=")[1].encode("utf-8") not in data or charset == "ISO_IR 192"
    archive.ingest(data, hospital=1)
    with archive.db.read() as s:
        patient = s.execute(select(Patient)).scalar_one()
        assert patient.name == name.rstrip("=")  # an empty trailing group is not kept
        ideographic = name.split("=")[1] if "=" in name else ""
        assert patient.name_ideographic == ideographic
        if ideographic:
            family = ideographic.split("^")[0]
            rows = run_query(s, Query("STUDY", {"PatientName": f"{family}*"})).rows
            assert [r["PatientName"] for r in rows] == [name.rstrip("=")]
        alphabetic = name.split("=")[0].split("^")[0].lower()
        rows = run_query(s, Query("STUDY", {"PatientName": f"{alphabetic}*"})).rows
        assert [r["PatientName"] for r in rows] == [name.rstrip("=")]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("chrX2.dcm", "Wang^XiaoDong=王^小东"), ("chrX1.dcm", "Wang^XiaoDong=王^小東")],
)
def test_pydicom_chinese_files_round_trip(archive: Archive, name: str, expected: str) -> None:
    """pydicom's own GB18030 (chrX2) and UTF-8 (chrX1) files."""
    (path,) = get_charset_files(name)
    archive.ingest(Path(path).read_bytes(), hospital=1)
    with archive.db.read() as s:
        assert s.execute(select(Patient.name)).scalar_one() == expected


def test_gb2312_alias_is_read_as_gb18030(archive: Archive) -> None:
    """Chinese modalities often write the non-standard 'GB2312': accept it, decode right."""
    ds = make_dataset(patient_name="Zhao^Wei=赵^伟=", charset="GB18030")
    data = to_bytes(ds).replace(b"GB18030", b"GB2312 ")
    archive.ingest(data, hospital=1)
    with archive.db.read() as s:
        assert s.execute(select(Patient.name)).scalar_one() == "Zhao^Wei=赵^伟"


# -- bad input: one test per class; each must leave the archive unchanged ---------------------


def _assert_refused(archive: Archive, data: bytes, reason: RejectReason) -> Rejected:
    before = counts(archive)
    with pytest.raises(Rejected) as exc:
        archive.ingest(data, hospital=1)
    assert exc.value.reason is reason, exc.value.message
    assert exc.value.message  # a reason a person can read
    assert counts(archive) == before
    assert blob_files(archive) == []
    return exc.value


def test_refuses_non_dicom(archive: Archive) -> None:
    _assert_refused(archive, b"%PDF-1.7\n" + b"x" * 500, RejectReason.NOT_DICOM)
    _assert_refused(archive, b"", RejectReason.NOT_DICOM)


def test_refuses_truncated(archive: Archive) -> None:
    data = make_instance(size=64)
    exc = _assert_refused(archive, data[: len(data) - 1000], RejectReason.TRUNCATED)
    assert "truncated" in exc.message
    # cut inside the file meta / header too
    with pytest.raises(Rejected):
        archive.ingest(data[:150], hospital=1)
    assert counts(archive) == (0, 0, 0, 0)


@pytest.mark.parametrize("missing", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_refuses_missing_uid(archive: Archive, missing: str) -> None:
    ds = make_dataset()
    delattr(ds, missing)
    exc = _assert_refused(archive, to_bytes(ds), RejectReason.MISSING_UID)
    assert missing in exc.message


def test_refuses_bad_vr_length(archive: Archive) -> None:
    """Rows (US) with a 3-byte value cannot be decoded."""
    data = make_instance()
    tag = struct.pack("<HH", 0x0028, 0x0010) + b"US" + struct.pack("<H", 2)
    pos = data.index(tag)
    bad = data[:pos] + struct.pack("<HH", 0x0028, 0x0010) + b"US" + struct.pack("<H", 3)
    bad += data[pos + 8 : pos + 10] + b"\x00" + data[pos + 10 :]
    _assert_refused(archive, bad, RejectReason.MALFORMED)


def test_refuses_unknown_charset_with_non_ascii_text(archive: Archive) -> None:
    ds = make_dataset(patient_name="Zhao^Wei=赵^伟=", charset="GB18030")
    data = to_bytes(ds).replace(b"GB18030", b"KLINGON")
    exc = _assert_refused(archive, data, RejectReason.CHARSET)
    assert "KLINGON" in exc.message


def test_unknown_charset_with_ascii_text_is_stored(archive: Archive) -> None:
    ds = make_dataset(patient_name="Zhao^Wei", charset="ISO_IR 100")
    data = to_bytes(ds).replace(b"ISO_IR 100", b"KLINGON   ")
    assert archive.ingest(data, hospital=1).outcome == "stored"


def test_refuses_oversized_element(archive: Archive) -> None:
    """An element that claims more bytes than the file has (a classic attack and a bug)."""
    data = make_instance(size=16)
    marker = struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\x00\x00"
    pos = data.index(marker)
    bad = data[: pos + 8] + struct.pack("<I", 0x7FFFFFF0) + data[pos + 12 :]
    _assert_refused(archive, bad, RejectReason.TRUNCATED)


def test_refuses_instance_over_the_size_limit(tmp_path: Path, database_url: str) -> None:
    archive = Archive(
        Settings(data_dir=tmp_path / "d", database_url=database_url, max_instance_bytes=2000)
    )
    try:
        _assert_refused(archive, make_instance(size=64), RejectReason.TOO_LARGE)
    finally:
        archive.close()


def test_pydicom_shipped_files_every_outcome_is_explained(archive: Archive) -> None:
    """pydicom's odd and broken test files: each is stored or refused with a reason."""

    names = [
        "CT_small.dcm",
        "MR_small.dcm",
        "rtplan.dcm",
        "JPEG2000.dcm",
        "no_meta.dcm",
        "emri_small_RLE.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "JPGLosslessP14SV1_1s_1f_8b.dcm",
    ]
    stored = 0
    for name in names:
        path = get_testdata_file(name)
        assert path, name
        try:
            archive.ingest(Path(path).read_bytes(), hospital=1)
            stored += 1
        except Rejected as exc:
            assert exc.message
    assert stored >= 6


def test_series_of_one_study_stored_at_once_keep_every_modality(archive: Archive) -> None:
    """A PET/CT or a multi-modality exam arrives over parallel associations: each new
    series adds its modality to the study, none overwrites another's."""
    from concurrent.futures import ThreadPoolExecutor

    from pydicom.uid import generate_uid

    modalities = ["CT", "PT", "MR", "US", "DX", "CR", "NM", "SR"]
    for attempt in range(3):
        study_uid = generate_uid()
        blobs = [
            make_instance(study_uid=study_uid, modality=m, accession=f"MOD{attempt}")
            for m in modalities
        ]
        with ThreadPoolExecutor(len(blobs)) as pool:
            results = list(pool.map(lambda b: archive.ingest(b, hospital=1), blobs))
        assert {r.outcome for r in results} == {"stored"}
        with archive.db.read() as s:
            study = s.execute(select(Study).where(Study.study_uid == study_uid)).scalar_one()
        assert sorted(study.modalities.split("\\")) == sorted(modalities)
        assert study.num_series == len(modalities) and study.num_instances == len(modalities)

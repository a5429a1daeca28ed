"""Tests of the demo data set generator (cloudfilm.demo).

The demo set is what the archive, DICOMweb and viewer tests stand on, so these tests check
the files themselves (read back with pydicom), not only the manifest that describes them.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_modality_lut

from cloudfilm.demo import CTPhantom, DemoManifest, Region, write_demo

SLICES = 12
SIZE = 128

REQUIRED_SYNTAXES = {
    "1.2.840.10008.1.2": "implicit VR little endian",
    "1.2.840.10008.1.2.1": "explicit VR little endian",
    "1.2.840.10008.1.2.1.99": "deflated",
    "1.2.840.10008.1.2.5": "RLE lossless",
    "1.2.840.10008.1.2.4.50": "JPEG baseline",
    "1.2.840.10008.1.2.4.51": "JPEG extended 12-bit",
    "1.2.840.10008.1.2.4.57": "JPEG lossless process 14",
    "1.2.840.10008.1.2.4.70": "JPEG lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
}
HTJ2K_SYNTAXES = {"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.203"}

CODEC_NAMES = [
    "implicit-vr-le",
    "deflated-explicit-vr-le",
    "rle-lossless",
    "jpeg-lossless-sv1",
    "jpeg-lossless-p14",
    "jpeg-ls-lossless",
    "jpeg-ls-near-lossless",
    "jpeg2000-lossless",
    "jpeg2000",
    "jpeg-extended-12bit",
    "htj2k-lossless",
    "htj2k",
    "jpeg-baseline",
    "jpeg-baseline-ybr-full-422",
    "rle-lossless-rgb",
    "jpeg-baseline-multiframe",
    "jpeg-ls-lossless-multiframe",
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoManifest]:
    dest = tmp_path_factory.mktemp("demo") / "a"
    manifest = write_demo(dest, ct_slices=SLICES, ct_size=SIZE)
    yield manifest
    shutil.rmtree(dest, ignore_errors=True)


def _read(demo: DemoManifest, rel: str) -> pydicom.Dataset:
    return pydicom.dcmread(demo.path(rel))


def _hu_volume(demo: DemoManifest, series_index: int = 0) -> tuple[list, np.ndarray]:
    """Datasets and rescaled (HU) pixels of a CT series, in instance order."""
    series = demo.study("ct").series[series_index]
    dss = sorted((_read(demo, f) for f in series.files), key=lambda d: int(d.InstanceNumber))
    hu = np.stack([apply_modality_lut(d.pixel_array, d) for d in dss])
    return dss, hu


# ------------------------------------------------------------------------------ manifest


def test_manifest_file_matches_returned_manifest(demo: DemoManifest) -> None:
    assert demo.root is not None
    on_disk = json.loads((demo.root / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(demo.to_json())
    assert DemoManifest.load(demo.root) == demo
    assert on_disk["arguments"] == {
        "ct_slices": SLICES,
        "ct_size": SIZE,
        "include_pydicom_files": True,
        "include_codecs": True,
    }
    assert "王" in (demo.root / "manifest.json").read_text(encoding="utf-8")  # not \u-escaped


def test_manifest_lists_exactly_the_files_on_disk(demo: DemoManifest) -> None:
    assert demo.root is not None
    on_disk = {p.relative_to(demo.root).as_posix() for p in demo.root.rglob("*") if p.is_file()}
    listed = set(demo.relative_files())
    assert len(listed) == len(demo.relative_files()) == demo.total_files
    assert on_disk == listed | {"manifest.json"}
    assert all(f.endswith(".dcm") for f in listed)
    assert demo.total_bytes == sum(demo.path(f).stat().st_size for f in listed)


def test_studies_and_patients(demo: DemoManifest) -> None:
    keys = [s.key for s in demo.studies]
    assert keys == ["ct", "mr", "dx", "us", "codecs"]
    assert len({s.patient_id for s in demo.studies}) == 5
    assert {s.specific_character_set for s in demo.studies} == {"GB18030", "GBK", "ISO_IR 192", ""}
    ct = demo.study("ct")
    assert ct.number_of_instances == SLICES + SLICES // 5
    assert [s.number_of_instances for s in ct.series] == [SLICES, SLICES // 5]
    assert demo.study("mr").number_of_instances == 60
    assert len({s.study_uid for s in demo.studies}) == 5
    assert len({a.accession_number for a in demo.studies}) == 5


def test_every_instance_matches_its_manifest_entry(demo: DemoManifest) -> None:
    sop_uids: set[str] = set()
    for study in demo.studies:
        for series in study.series:
            assert len(series.files) == series.number_of_instances
            for rel, sop in zip(series.files, series.sop_instance_uids, strict=True):
                ds = pydicom.dcmread(demo.path(rel), stop_before_pixels=True)
                meta = ds.file_meta
                assert meta.TransferSyntaxUID == series.transfer_syntax_uid
                assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == sop
                assert meta.MediaStorageSOPClassUID == ds.SOPClassUID == series.sop_class_uid
                assert ds.StudyInstanceUID == study.study_uid
                assert ds.SeriesInstanceUID == series.series_uid
                assert ds.PatientID == study.patient_id
                assert ds.AccessionNumber == study.accession_number
                assert ds.Modality == series.modality
                sop_uids.add(sop)
    pyd = {p.sop_instance_uid for p in demo.pydicom_files}
    assert len(pyd) == len(demo.pydicom_files)
    assert not sop_uids & pyd
    assert len(sop_uids) == sum(s.number_of_instances for s in demo.studies)


# ------------------------------------------------------------------------------- names

NAME_BYTES = {"GB18030": "gb18030", "GBK": "gbk", "ISO_IR 192": "utf-8"}


@pytest.mark.parametrize("key", ["ct", "mr", "dx", "us", "codecs"])
def test_names_round_trip(demo: DemoManifest, key: str) -> None:
    study = demo.study(key)
    rel = study.series[-1].files[0]
    ds = _read(demo, rel)
    raw = demo.path(rel).read_bytes()
    assert str(ds.PatientName) == study.patient_name
    assert str(ds.ReferringPhysicianName) == study.referring_physician_name
    assert ds.InstitutionName == study.institution_name
    assert ds.StudyDescription == study.study_description
    if not study.specific_character_set:
        assert "SpecificCharacterSet" not in ds
        assert study.patient_name.isascii()
        assert study.patient_name.encode("ascii") in raw
        return
    assert ds.SpecificCharacterSet == study.specific_character_set
    alphabetic, ideographic = study.patient_name.split("=")
    assert ds.PatientName.alphabetic == alphabetic
    assert ds.PatientName.ideographic == ideographic
    assert not ideographic.isascii()
    # The bytes on disk are in the declared character set, not UTF-8 everywhere.
    encoding = NAME_BYTES[study.specific_character_set]
    assert study.patient_name.encode(encoding) in raw
    assert study.study_description.encode(encoding) in raw


def test_gb18030_name_is_not_gbk_decodable(demo: DemoManifest) -> None:
    """The codec patient's name needs real GB18030: a GBK decoder would get it wrong."""
    name = demo.study("codecs").patient_name
    encoded = name.encode("gb18030")
    with pytest.raises(UnicodeEncodeError):
        name.encode("gbk")
    assert encoded.decode("gbk", errors="replace") != name


# ---------------------------------------------------------------------------------- CT


def test_ct_geometry(demo: DemoManifest) -> None:
    ct = demo.ct
    dss, _ = _hu_volume(demo)
    thick, _ = _hu_volume(demo, 1)
    assert len(dss) == SLICES
    for ds in dss + thick:
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == [ct.pixel_spacing_mm] * 2
        assert (ds.Rows, ds.Columns) == (SIZE, SIZE)
        assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 16, 1)
        assert float(ds.RescaleSlope) == 1 and float(ds.RescaleIntercept) == -1024
        assert ds.FrameOfReferenceUID == dss[0].FrameOfReferenceUID
        assert float(ds.ImagePositionPatient[2]) == float(ds.SliceLocation)
    assert ct.pixel_spacing_mm * SIZE == ct.field_of_view_mm == 400.0
    pos = np.array([[float(v) for v in d.ImagePositionPatient] for d in dss])
    steps = np.diff(pos, axis=0)
    assert np.array_equal(steps, np.tile([0.0, 0.0, -1.0], (SLICES - 1, 1)))
    assert pos[0, 2] == ct.first_slice_z_mm
    assert [int(d.InstanceNumber) for d in dss] == list(range(1, SLICES + 1))
    assert all(float(d.SliceThickness) == float(d.SpacingBetweenSlices) == 1 for d in dss)
    tz = [float(d.ImagePositionPatient[2]) for d in thick]
    assert np.array_equal(np.diff(tz), [-5.0] * (len(tz) - 1))
    assert all(float(d.SliceThickness) == 5 for d in thick)
    assert pos[:, 2].min() <= min(tz) and max(tz) <= pos[:, 2].max()


def test_ct_markers_are_100_mm_apart_on_every_slice(demo: DemoManifest) -> None:
    ct = demo.ct
    dss, hu = _hu_volume(demo)
    assert ct.marker_distance_mm == 100.0
    a, b = ct.markers
    spacing = [float(v) for v in dss[0].PixelSpacing]
    distance = np.hypot((a.row - b.row) * spacing[0], (a.col - b.col) * spacing[1])
    assert distance == 100.0
    for k, img in enumerate(hu):
        # Find the markers from the image alone: exactly two 3x3 blocks above 1500 HU.
        rows, cols = np.nonzero(img > 1500)
        assert rows.size == 18, f"slice {k + 1}"
        left = cols < cols.mean()
        for sel, marker in ((left, a), (~left, b)):
            assert rows[sel].mean() == marker.row and cols[sel].mean() == marker.col
            assert np.all(img[rows[sel], cols[sel]] == 2000)
        # Physical positions from IPP + spacing agree with the manifest.
        x0, y0 = (float(v) for v in dss[k].ImagePositionPatient[:2])
        assert x0 + a.col * spacing[1] == a.position_mm[0]
        assert y0 + a.row * spacing[0] == a.position_mm[1]


def _grid(ct: CTPhantom) -> tuple[np.ndarray, np.ndarray]:
    """Patient y and x (mm) of every pixel centre, from the FOV and spacing alone."""
    axis = -ct.field_of_view_mm / 2 + ct.pixel_spacing_mm * (np.arange(ct.rows) + 0.5)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    return yy, xx


def _region_mask(ct: CTPhantom, name: str) -> np.ndarray:
    """Pixels whose centre is inside ``name`` and inside no region painted after it."""
    yy, xx = _grid(ct)

    def inside(r: Region) -> np.ndarray:
        (cx, cy), (ax, ay) = r.center_mm, r.semi_axes_mm
        return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1

    names = [r.name for r in ct.regions]
    mask = inside(ct.region(name))
    for later in ct.regions[names.index(name) + 1 :]:
        mask &= ~inside(later)
    for m in ct.markers:
        mask[m.row - 1 : m.row + 2, m.col - 1 : m.col + 2] = False
    return mask


def test_ct_regions_have_exact_hu(demo: DemoManifest) -> None:
    ct = demo.ct
    _, hu = _hu_volume(demo)
    assert {r.name: r.hu for r in ct.regions} == {
        "fat": -100,
        "water": 0,
        "lung_right": -800,
        "lung_left": -800,
        "bone": 1000,
        "disc": 100,
    }
    disc = ct.region("disc")
    assert disc.instance_numbers == list(range(SLICES // 3 + 1, 2 * SLICES // 3 + 1))
    assert disc.semi_axes_mm == [20.0, 20.0]
    for name in ("fat", "water", "lung_right", "lung_left", "bone"):
        mask = _region_mask(ct, name)
        assert mask.sum() > 10
        reg = ct.region(name)
        for k, img in enumerate(hu):
            assert np.all(img[mask] == reg.hu), (name, k + 1)
    disc_mask = _region_mask(ct, "disc")
    assert abs(disc_mask.sum() * ct.pixel_spacing_mm**2 - np.pi * 20.0**2) < 0.15 * np.pi * 400
    for k, img in enumerate(hu):
        expected = 100 if k + 1 in disc.instance_numbers else 0
        assert img[disc_mask].mean() == expected, k + 1
        assert np.all(img[disc_mask] == expected)
    row, col = (int(v) for v in disc.center_px)
    assert hu[disc.instance_numbers[0] - 1][row, col] == 100


def test_ct_air_has_mild_noise_only(demo: DemoManifest) -> None:
    _, hu = _hu_volume(demo)
    ct = demo.ct
    yy, xx = _grid(ct)
    fat = ct.region("fat")
    air = (xx / fat.semi_axes_mm[0]) ** 2 + (yy / fat.semi_axes_mm[1]) ** 2 > 1
    values = hu[:, air]
    assert abs(values.mean() - ct.air_hu) < 1.0
    assert 3.0 < values.std() < 7.0
    assert values.min() >= -1024
    assert not np.array_equal(hu[0][air], hu[1][air])  # noise differs between slices


def test_ct_thick_series_shows_disc_on_listed_slices(demo: DemoManifest) -> None:
    ct = demo.ct
    dss, hu = _hu_volume(demo, 1)
    disc = ct.region("disc")
    mask = _region_mask(ct, "disc")
    assert disc.thick_instance_numbers
    for ds, img in zip(dss, hu, strict=True):
        expected = 100 if int(ds.InstanceNumber) in disc.thick_instance_numbers else 0
        assert np.all(img[mask] == expected)


# ---------------------------------------------------------------------- MR, DX and US


def test_mr_three_planes_share_frame_of_reference(demo: DemoManifest) -> None:
    mr = demo.study("mr")
    assert [s.image_orientation for s in mr.series] == [
        [1, 0, 0, 0, 1, 0],
        [0, 1, 0, 0, 0, -1],
        [1, 0, 0, 0, 0, -1],
    ]
    frames = set()
    for series in mr.series:
        dss = [_read(demo, f) for f in series.files]
        assert len(dss) == 20
        iop = np.array([float(v) for v in dss[0].ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])
        pos = np.array([[float(v) for v in d.ImagePositionPatient] for d in dss])
        along = pos @ normal
        assert np.allclose(np.diff(along), 6.0)
        assert np.allclose(pos - np.outer(along, normal), pos[0] - along[0] * normal)
        for d in dss:
            assert d.SOPClassUID == pydicom.uid.MRImageStorage
            assert d.pixel_array.dtype == np.uint16 and d.pixel_array.max() <= 4095
        frames |= {d.FrameOfReferenceUID for d in dss}
    assert len(frames) == 1


def test_dx_is_monochrome1_with_imager_spacing(demo: DemoManifest) -> None:
    ds = _read(demo, demo.study("dx").series[0].files[0])
    assert ds.SOPClassUID == pydicom.uid.DigitalXRayImageStorageForPresentation
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    assert ds.PresentationLUTShape == "INVERSE"
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.2, 0.2]
    assert "PixelSpacing" not in ds
    img = ds.pixel_array
    assert img.shape == (2048, 1680)
    # MONOCHROME1: the lung (much X-ray through) is stored high, the spine low.
    lung = img[1000, 840 - 360]
    spine = img[1000, 840]
    outside = img[1000, 5]
    assert outside > lung > spine


def test_us_colour_and_cine(demo: DemoManifest) -> None:
    still_s, cine_s = demo.study("us").series
    still = _read(demo, still_s.files[0])
    assert still.PhotometricInterpretation == "RGB"
    rgb = still.pixel_array
    assert rgb.shape == (480, 640, 3)
    assert (rgb[..., 0].astype(int) - rgb[..., 2] > 100).any()  # red flow
    assert (rgb[..., 2].astype(int) - rgb[..., 0] > 100).any()  # blue flow
    assert still.SequenceOfUltrasoundRegions[0].PhysicalDeltaX == 0.025
    cine = _read(demo, cine_s.files[0])
    assert cine.SOPClassUID == pydicom.uid.UltrasoundMultiFrameImageStorage
    assert int(cine.NumberOfFrames) == cine_s.frames_per_instance == 24
    assert float(cine.FrameTime) == 40
    frames = cine.pixel_array
    assert frames.shape == (24, 480, 640)
    assert not np.array_equal(frames[0], frames[6])


# ------------------------------------------------------------------------------- codecs


def test_codec_study_covers_every_transfer_syntax(demo: DemoManifest) -> None:
    written = {c.transfer_syntax_uid for c in demo.codecs if c.status == "written"}
    missing = set(REQUIRED_SYNTAXES) - written
    assert not missing, [REQUIRED_SYNTAXES[m] for m in missing]
    htj2k = [c for c in demo.codecs if c.transfer_syntax_uid in HTJ2K_SYNTAXES]
    for c in htj2k:
        if shutil.which("ojph_compress"):
            assert c.status == "written", c.reason
        else:
            assert c.status == "skipped" and "ojph_compress" in c.reason
    assert [c.name for c in demo.codecs if c.reference] == CODEC_NAMES
    series_syntaxes = [s.transfer_syntax_uid for s in demo.study("codecs").series]
    assert sorted(series_syntaxes) == sorted(
        c.transfer_syntax_uid for c in demo.codecs if c.status == "written"
    )


@pytest.mark.parametrize("name", CODEC_NAMES)
def test_codec_sample_decodes(demo: DemoManifest, name: str) -> None:
    sample = demo.codec(name)
    if sample.status == "skipped":
        assert "not found on PATH" in sample.reason
        pytest.skip(sample.reason)
    assert sample.file and sample.reference
    ds = _read(demo, sample.file)
    ref = _read(demo, demo.codec(sample.reference).file or "")
    assert ds.file_meta.TransferSyntaxUID == sample.transfer_syntax_uid
    assert ds.SOPInstanceUID != ref.SOPInstanceUID
    assert ref.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    pixels, source = ds.pixel_array, ref.pixel_array
    assert pixels.shape == source.shape
    assert pixels.dtype == source.dtype
    error = int(np.abs(pixels.astype(np.int32) - source).max())
    assert error == sample.max_abs_error
    if sample.lossless:
        assert np.array_equal(pixels, source)
        assert ds.get("LossyImageCompression", "00") == "00"
    else:
        assert ds.LossyImageCompression == "01"
        assert error > 0
        # Lossy but faithful: small mean error (the max is high at sharp colour edges,
        # where 4:2:2 chroma subsampling cannot follow).
        mean_error = np.abs(pixels.astype(np.int32) - source).mean()
        assert mean_error < 0.01 * (int(source.max()) - int(source.min())), mean_error
    if name == "jpeg-ls-near-lossless":
        assert error <= 3  # the NEAR parameter bounds the error exactly
    if pydicom.uid.UID(sample.transfer_syntax_uid).is_compressed:
        frames = list(generate_frames(ds.PixelData, number_of_frames=sample.frames))
        assert len(frames) == sample.frames
    # Same rescale as the reference: lossy JPEG must not silently re-map stored values.
    assert ds.get("RescaleIntercept") == ref.get("RescaleIntercept")


def test_codec_specifics(demo: DemoManifest) -> None:
    signed = [c for c in demo.codecs if c.reference == "ref-ct-int16"]
    assert signed and all(c.pixel_representation == 1 for c in signed)
    ybr = demo.codec("jpeg-baseline-ybr-full-422")
    assert ybr.photometric_interpretation == "YBR_FULL_422"
    assert demo.codec("jpeg-baseline").photometric_interpretation == "MONOCHROME1"
    assert demo.codec("jpeg-extended-12bit").bits_stored == 12
    assert demo.codec("jpeg-baseline-multiframe").frames == 24
    # Deflate really compresses the data set: the patient ID is not readable in the bytes.
    deflated = demo.codec("deflated-explicit-vr-le")
    assert deflated.file
    raw = demo.path(deflated.file).read_bytes()
    assert demo.study("codecs").patient_id.encode() not in raw
    implicit = _read(demo, demo.codec("implicit-vr-le").file or "")
    assert implicit.original_encoding == (True, True)
    ht = demo.codec("htj2k-lossless")
    if ht.status == "written":
        ds = _read(demo, ht.file or "")
        stream = next(generate_frames(ds.PixelData, number_of_frames=1))
        assert stream[:2] == b"\xff\x4f"
        assert b"\xff\x50" in stream[:256]  # CAP marker: really HTJ2K, not Part 1
        assert ds.BitsStored == 12 and ds.PixelRepresentation == 0


# ------------------------------------------------------------------------ pydicom files


def test_pydicom_files_are_clean_and_unique(demo: DemoManifest) -> None:
    assert len(demo.pydicom_files) > 50
    sources = {p.source.split(": ", 1)[1] for p in demo.pydicom_files}
    assert "charset_files/chrX1.dcm" in sources  # UTF-8 Chinese
    assert "charset_files/chrX2.dcm" in sources  # GB18030 Chinese
    skipped = {s["source"]: s["reason"] for s in demo.pydicom_skipped}
    assert "test_files/CT_small.dcm" in sources, skipped.get("test_files/CT_small.dcm")
    for broken in (
        "test_files/MR_truncated.dcm",
        "test_files/no_meta.dcm",
        "test_files/rtplan_truncated.dcm",
        "test_files/MR_small_RLE.dcm",
    ):
        assert broken in skipped
    for entry in demo.pydicom_files:
        assert entry.file.startswith("pydicom/") and entry.file.endswith(".dcm")
        ds = _read(demo, entry.file)
        assert ds.SOPInstanceUID == entry.sop_instance_uid
        assert ds.StudyInstanceUID == entry.study_uid
        assert ds.file_meta.TransferSyntaxUID == entry.transfer_syntax_uid


# ---------------------------------------------------------------------- determinism etc


def test_deterministic_bytes(demo: DemoManifest, tmp_path: Path) -> None:
    again = write_demo(tmp_path / "b", ct_slices=SLICES, ct_size=SIZE, include_pydicom_files=False)
    assert again.studies == demo.studies
    assert again.ct == demo.ct
    assert again.codecs == demo.codecs
    for rel in again.relative_files():
        assert again.path(rel).read_bytes() == demo.path(rel).read_bytes(), rel


def test_other_size_gets_other_ct_uids_and_no_stale_files(
    demo: DemoManifest, tmp_path: Path
) -> None:
    dest = tmp_path / "c"
    write_demo(dest, ct_slices=9, ct_size=64, include_pydicom_files=False, include_codecs=False)
    small = write_demo(
        dest, ct_slices=6, ct_size=64, include_pydicom_files=False, include_codecs=False
    )
    on_disk = {p.relative_to(dest).as_posix() for p in dest.rglob("*.dcm")}
    assert on_disk == set(small.relative_files())
    assert [s.key for s in small.studies] == ["ct", "mr", "dx", "us"]
    assert small.study("ct").study_uid != demo.study("ct").study_uid
    assert small.study("mr").study_uid == demo.study("mr").study_uid  # same content
    assert small.ct.pixel_spacing_mm == 6.25 and small.ct.marker_distance_px == 16
    assert small.ct.marker_distance_mm == 100.0
    assert not small.ct.thick_series_uid or len(small.study("ct").series) == 2


@pytest.mark.parametrize(("slices", "size"), [(12, 130), (12, 32), (2, 128)])
def test_invalid_sizes_are_rejected(tmp_path: Path, slices: int, size: int) -> None:
    with pytest.raises(ValueError):
        write_demo(
            tmp_path,
            ct_slices=slices,
            ct_size=size,
            include_pydicom_files=False,
            include_codecs=False,
        )


def test_default_data_set_has_full_size(tmp_path: Path) -> None:
    """The full default set (300 × 512 × 512 CT and everything else); its speed is a benchmark
    matter (bench/), not a unit-test assertion."""
    manifest = write_demo(tmp_path / "full")
    ct = manifest.study("ct")
    assert ct.series[0].number_of_instances == 300 and ct.series[0].rows == 512
    assert manifest.ct.pixel_spacing_mm == 0.78125
    assert manifest.ct.marker_distance_px == 128
    assert manifest.total_bytes > 300 * 512 * 512 * 2
    mid = manifest.path(ct.series[0].files[150])
    ds = pydicom.dcmread(mid)
    disc = manifest.ct.region("disc")
    row, col = (int(v) for v in disc.center_px)
    assert apply_modality_lut(ds.pixel_array, ds)[row, col] == 100
    shutil.rmtree(tmp_path / "full")


def test_another_threads_warning_does_not_exclude_a_file(tmp_path: Path) -> None:
    """A server thread warning while the demo is written must not drop a clean file."""
    from cloudfilm.demo.pydicom_files import _reject_reason, pydicom_data_dir

    stop = threading.Event()

    def noisy() -> None:
        while not stop.is_set():
            warnings.warn("unrelated warning from another thread", UserWarning, stacklevel=1)
            time.sleep(0.0005)

    _reject_reason.cache_clear()
    thread = threading.Thread(target=noisy, daemon=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        thread.start()
        try:
            reason = _reject_reason(pydicom_data_dir() / "test_files" / "CT_small.dcm")
        finally:
            stop.set()
            thread.join()
    _reject_reason.cache_clear()
    assert reason == ""


def test_a_collected_sockets_warning_does_not_exclude_a_file(monkeypatch) -> None:
    """CI once dropped CT_small.dcm because the garbage collector finalised an unclosed socket
    (left by a server test) in the middle of the read: that ResourceWarning is not the file's."""
    from cloudfilm.demo import pydicom_files

    real_dcmread = pydicom.dcmread

    def dcmread_while_a_socket_is_collected(*args, **kwargs):  # type: ignore[no-untyped-def]
        sock = socket.socket()
        del sock  # unclosed: Python emits ResourceWarning right here, in this thread
        return real_dcmread(*args, **kwargs)

    monkeypatch.setattr(pydicom_files.pydicom, "dcmread", dcmread_while_a_socket_is_collected)
    pydicom_files._reject_reason.cache_clear()
    try:
        reason = pydicom_files._reject_reason(
            pydicom_files.pydicom_data_dir() / "test_files" / "CT_small.dcm"
        )
    finally:
        pydicom_files._reject_reason.cache_clear()
    assert reason == ""


def test_a_codecs_complaint_about_a_broken_file_stays_off_the_console(capfd) -> None:  # type: ignore[no-untyped-def]
    """OpenJPEG writes straight to file descriptor 2 when it meets one of pydicom's broken
    JPEG 2000 files; the demo keeps that out of ``serve --demo``'s console and in the reason."""
    from cloudfilm.demo.pydicom_files import _reject_reason, pydicom_data_dir

    broken = pydicom_data_dir() / "test_files" / "JPEG2000-embedded-sequence-delimiter.dcm"
    _reject_reason.cache_clear()
    try:
        reason = _reject_reason(broken)
    finally:
        _reject_reason.cache_clear()
    assert "Invalid number of tiles" in reason
    assert "Invalid number of tiles" not in capfd.readouterr().err

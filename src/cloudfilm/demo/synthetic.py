"""Synthetic cross-sectional studies: a CT phantom with exact truths and a 3-plane MR head.

The CT is the data set's measuring stick: every region has an exact HU value, two markers sit
exactly 100 mm apart and a lesion-like disc is present on a known range of slices, so viewer
and DICOMweb tests can assert numbers rather than "looks right". It is also the bulk of the
data set (300 × 512 × 512 by default), so it is generated with a handful of numpy slices and
one header template reused for every file: ~160 MB write in a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

from .base import (
    SeriesCollector,
    StudySpec,
    base_dataset,
    ds_number,
    header_copy,
    make_uid,
    study_info,
    write_instance,
)
from .manifest import CTPhantom, Marker, Region, StudyInfo

CT_FOV_MM = 400.0
MARKER_DISTANCE_MM = 100.0
HU_OFFSET = 1024
AIR_HU = -1000
AIR_NOISE_SD = 5.0
THICK_MM = 5
CT_FIRST_Z = -40.0

# (name, HU, centre x/y mm, semi-axes mm), in painting order. x is patient left (+),
# y is patient posterior (+), as in DICOM LPS, so lung_right is at negative x.
CT_REGIONS: list[tuple[str, int, tuple[float, float], tuple[float, float]]] = [
    ("fat", -100, (0.0, 0.0), (165.0, 115.0)),
    ("water", 0, (0.0, 0.0), (157.0, 107.0)),
    ("lung_right", -800, (-80.0, -15.0), (50.0, 70.0)),
    ("lung_left", -800, (80.0, -15.0), (50.0, 70.0)),
    ("bone", 1000, (0.0, 80.0), (15.0, 15.0)),
]
DISC_HU = 100
DISC_RADIUS_MM = 20.0
DISC_CENTER_MM = (0.0, 10.0)
MARKER_HU = 2000
MARKER_SIZE = 3
MARKER_Y_MM = -95.0


@dataclass
class CTResult:
    """What the CT step hands to the codec step and the manifest."""

    study: StudyInfo
    phantom: CTPhantom
    sample_hu: np.ndarray  # one disc slice in HU (int16), source of the codec samples
    sample_header: Dataset  # header of that slice (a copy)
    bytes: int


def ct_geometry(ct_size: int) -> tuple[float, float]:
    """Pixel spacing and x/y of the first pixel centre for a ``ct_size`` matrix.

    The FOV is 400 mm so that 100 mm is exactly ``ct_size / 4`` pixels and the spacing is an
    exact decimal (0.78125 mm at 512): a 0.7 mm spacing cannot put two pixel centres exactly
    100 mm apart.
    """
    spacing = float(ds_number(CT_FOV_MM / ct_size))
    first = -CT_FOV_MM / 2 + spacing / 2
    return spacing, first


def _ellipse(
    xx: np.ndarray, yy: np.ndarray, c: tuple[float, float], ax: tuple[float, float]
) -> np.ndarray:
    return ((xx - c[0]) / ax[0]) ** 2 + ((yy - c[1]) / ax[1]) ** 2 <= 1.0


def _to_px(value_mm: float, first: float, spacing: float) -> float:
    return (value_mm - first) / spacing


def write_ct(root: Path, study: StudySpec, ct_slices: int, ct_size: int) -> CTResult:
    """Write the thin (1 mm) and thick (5 mm) axial CT series and return their truths."""
    if ct_size < 64 or ct_size % 4:
        raise ValueError("ct_size must be a multiple of 4 and at least 64 (markers 100 mm apart)")
    if ct_slices < 3:
        raise ValueError("ct_slices must be at least 3 (the disc fills the middle third)")
    n = ct_size
    spacing, first = ct_geometry(n)
    axis = first + spacing * np.arange(n)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")

    hu = np.full((n, n), AIR_HU, dtype=np.int16)
    regions: list[Region] = []
    for name, value, c, ax in CT_REGIONS:
        hu[_ellipse(xx, yy, c, ax)] = value
        regions.append(
            Region(
                name,
                value,
                list(c),
                [_to_px(c[1], first, spacing), _to_px(c[0], first, spacing)],
                list(ax),
            )
        )
    air = hu == AIR_HU

    # The disc is centred on a pixel centre so its ROI is symmetric on every matrix size.
    dcol = round(_to_px(DISC_CENTER_MM[0], first, spacing))
    drow = round(_to_px(DISC_CENTER_MM[1], first, spacing))
    dcx, dcy = first + dcol * spacing, first + drow * spacing
    disc_mask = _ellipse(xx, yy, (dcx, dcy), (DISC_RADIUS_MM, DISC_RADIUS_MM))
    thin_disc = list(range(ct_slices // 3, 2 * ct_slices // 3))
    n_thick = ct_slices // THICK_MM
    thick_disc = [j for j in range(n_thick) if j * THICK_MM + THICK_MM // 2 in thin_disc]
    regions.append(
        Region(
            "disc",
            DISC_HU,
            [dcx, dcy],
            [float(drow), float(dcol)],
            [DISC_RADIUS_MM, DISC_RADIUS_MM],
            instance_numbers=[k + 1 for k in thin_disc],
            thick_instance_numbers=[j + 1 for j in thick_disc],
        )
    )

    dist_px = n // 4
    mrow = round(_to_px(MARKER_Y_MM, first, spacing))
    mcols = (n // 2 - dist_px // 2, n // 2 - dist_px // 2 + dist_px)
    markers = []
    half = MARKER_SIZE // 2
    for mc in mcols:
        hu[mrow - half : mrow + half + 1, mc - half : mc + half + 1] = MARKER_HU
        markers.append(
            Marker(mrow, mc, MARKER_SIZE, MARKER_HU, [first + mc * spacing, first + mrow * spacing])
        )

    plain = hu + np.int16(HU_OFFSET)
    with_disc = plain.copy()
    with_disc[disc_mask] = DISC_HU + HU_OFFSET

    # Noise only in air: one long stream, a different window of it per slice (cheap, and the
    # known regions stay exact). Clipped so the stored value never means < -1024 HU.
    air_idx = np.flatnonzero(air)
    stride = 7919
    rng = np.random.default_rng(20240315)
    total = ct_slices + n_thick
    stream = np.rint(rng.normal(0.0, AIR_NOISE_SD, air_idx.size + stride * total))
    stream = np.clip(stream, -(AIR_HU + HU_OFFSET), None).astype(np.int16)

    size_key = f"ct-{ct_slices}x{n}"
    thin = _ct_template(study, size_key, 1, "胸部平扫 1.0mm 软组织", 1.0, spacing, first, n)
    thick = _ct_template(study, size_key, 2, "胸部平扫 5.0mm", float(THICK_MM), spacing, first, n)
    thin.ConvolutionKernel = "B30f"
    thick.ConvolutionKernel = "B31s"
    total_bytes = 0
    sample_hu: np.ndarray | None = None
    sample_header: Dataset | None = None
    series = []
    for template, count, step, disc_set, center_off, folder in (
        (thin, ct_slices, 1.0, set(thin_disc), 0.0, "S001"),
        (thick, n_thick, float(THICK_MM), set(thick_disc), (THICK_MM - 1) / 2, "S002"),
    ):
        if count == 0:
            continue
        col = SeriesCollector(template, root, ExplicitVRLittleEndian)
        offset_base = 0 if template is thin else ct_slices
        for k in range(count):
            img = (with_disc if k in disc_set else plain).copy()
            start = (offset_base + k) * stride
            img.reshape(-1)[air_idx] += stream[start : start + air_idx.size]
            z = CT_FIRST_Z - center_off - k * step
            sop = make_uid(size_key, template.SeriesNumber, k + 1)
            template.SOPInstanceUID = sop
            template.InstanceNumber = k + 1
            template.ImagePositionPatient = [ds_number(first), ds_number(first), ds_number(z)]
            template.SliceLocation = ds_number(z)
            template.PixelData = img.tobytes()
            path = root / study.key / folder / f"I{k + 1:04d}.dcm"
            col.add(path, sop, write_instance(template, path))
            if template is thin and k == thin_disc[len(thin_disc) // 2]:
                sample_hu = (img - np.int16(HU_OFFSET)).astype(np.int16)
                sample_header = header_copy(template)
        total_bytes += col.bytes
        series.append(col.info())
    assert sample_hu is not None and sample_header is not None

    phantom = CTPhantom(
        study_key=study.key,
        series_uid=thin.SeriesInstanceUID,
        thick_series_uid=thick.SeriesInstanceUID if n_thick else None,
        rows=n,
        columns=n,
        pixel_spacing_mm=spacing,
        field_of_view_mm=spacing * n,
        slice_thickness_mm=1.0,
        thick_slice_thickness_mm=float(THICK_MM),
        first_slice_z_mm=CT_FIRST_Z,
        z_step_mm=-1.0,
        rescale_slope=1.0,
        rescale_intercept=float(-HU_OFFSET),
        window_center=40.0,
        window_width=400.0,
        air_hu=AIR_HU,
        air_noise_sd=AIR_NOISE_SD,
        regions=regions,
        markers=markers,
        marker_distance_mm=dist_px * spacing,
        marker_distance_px=dist_px,
    )
    return CTResult(study_info(study, series), phantom, sample_hu, sample_header, total_bytes)


def _ct_template(
    study: StudySpec,
    size_key: str,
    number: int,
    description: str,
    thickness: float,
    spacing: float,
    first: float,
    n: int,
) -> Dataset:
    """Header shared by every slice of one CT series (per-slice tags are overwritten)."""
    ds = base_dataset(study, "CT", CTImageStorage)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.AcquisitionTime = study.time
    ds.ContentTime = study.time
    ds.SeriesDescription = description
    ds.ProtocolName = "胸部常规 Chest routine"
    ds.SeriesInstanceUID = make_uid(size_key, "series", number)
    ds.SeriesNumber = number
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = make_uid(size_key, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.ScanOptions = "HELICAL"
    ds.SliceThickness = ds_number(thickness)
    ds.SpacingBetweenSlices = ds_number(thickness)
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = ds_number(spacing * n)
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ds.XRayTubeCurrent = 200
    ds.Exposure = 100
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = n
    ds.Columns = n
    ds.PixelSpacing = [ds_number(spacing), ds_number(spacing)]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.WindowCenter = ["40", "-600"]
    ds.WindowWidth = ["400", "1500"]
    ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "LUNG"]
    ds.RescaleIntercept = str(-HU_OFFSET)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.LossyImageCompression = "00"
    ds.SliceLocation = "0"
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [ds_number(first), ds_number(first), "0"]
    return ds


# --------------------------------------------------------------------------------------- MR

# (name, centre xyz mm, semi-axes mm, (T1, T2, FLAIR) signal), in painting order.
MR_TISSUES: list[
    tuple[str, tuple[float, float, float], tuple[float, float, float], tuple[int, int, int]]
] = [
    ("scalp", (0, 0, 0), (78, 98, 90), (700, 500, 400)),
    ("skull", (0, 0, 0), (74, 94, 86), (80, 60, 50)),
    ("csf", (0, 0, 0), (70, 90, 82), (250, 1900, 150)),
    ("grey", (0, 0, 0), (67, 87, 79), (550, 1100, 900)),
    ("white", (0, 0, 0), (58, 77, 69), (800, 700, 650)),
    ("cerebellum", (0, 45, -40), (40, 22, 16), (550, 1100, 900)),
    ("brainstem", (0, 15, -50), (12, 12, 28), (800, 700, 650)),
    ("eye_r", (-32, -80, -22), (12, 12, 12), (250, 1900, 150)),
    ("eye_l", (32, -80, -22), (12, 12, 12), (250, 1900, 150)),
    ("ventricle_r", (-9, -5, 12), (5, 25, 10), (250, 1900, 150)),
    ("ventricle_l", (9, -5, 12), (5, 25, 10), (250, 1900, 150)),
    ("lesion", (25, 20, 30), (8, 8, 8), (450, 1600, 1700)),
]

# (folder, number, description, weighting index, row dir, column dir, TR, TE, TI, window)
MR_SERIES = [
    ("S001", 1, "T1WI 轴位", 0, (1, 0, 0), (0, 1, 0), 500, 10, None, (500, 1000)),
    ("S002", 2, "T2WI 矢状位", 1, (0, 1, 0), (0, 0, -1), 4000, 100, None, (1000, 2000)),
    ("S003", 3, "T2 FLAIR 冠状位", 2, (1, 0, 0), (0, 0, -1), 9000, 120, 2500, (900, 1800)),
]
MR_SIZE = 256
MR_FOV = 230.0
MR_SLICES = 20
MR_STEP = 6.0
MR_THICKNESS = 5.0
MR_CENTER = np.array([0.0, 0.0, 10.0])


def write_mr(root: Path, study: StudySpec) -> tuple[StudyInfo, int]:
    """Write the axial T1, sagittal T2 and coronal FLAIR series sharing one frame of reference.

    Every series samples the same 3-D ellipsoid head, so reference lines, crosshairs and MPR
    line up between planes exactly as they would on a scanner.
    """
    spacing = MR_FOV / MR_SIZE  # 0.8984375, exact in decimal
    grid = (np.arange(MR_SIZE) - (MR_SIZE - 1) / 2) * spacing
    series = []
    total = 0
    for folder, number, desc, widx, rdir, cdir, tr, te, ti, (wc, ww) in MR_SERIES:
        r = np.array(rdir, dtype=float)
        c = np.array(cdir, dtype=float)
        normal = np.cross(r, c)
        ds = base_dataset(study, "MR", MRImageStorage)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.AcquisitionTime = study.time
        ds.ContentTime = study.time
        ds.SeriesDescription = desc
        ds.ProtocolName = desc
        ds.SeriesInstanceUID = make_uid("mr", "series", number)
        ds.SeriesNumber = number
        ds.FrameOfReferenceUID = make_uid("mr", "frame-of-reference")
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ds.ScanningSequence = ["SE", "IR"] if ti else "SE"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SequenceName = "*tse2d1"
        ds.RepetitionTime = str(tr)
        ds.EchoTime = str(te)
        if ti:
            ds.InversionTime = str(ti)
        ds.EchoTrainLength = 1 if widx == 0 else 16
        ds.MagneticFieldStrength = "3"
        ds.ImagingFrequency = "127.74"
        ds.ImagedNucleus = "1H"
        ds.NumberOfAverages = "1"
        ds.FlipAngle = "90"
        ds.PixelBandwidth = "200"
        ds.SliceThickness = ds_number(MR_THICKNESS)
        ds.SpacingBetweenSlices = ds_number(MR_STEP)
        ds.AcquisitionMatrix = [0, MR_SIZE, MR_SIZE, 0]
        ds.InPlanePhaseEncodingDirection = "ROW"
        ds.ImageOrientationPatient = [ds_number(v) for v in (*rdir, *cdir)]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = MR_SIZE
        ds.Columns = MR_SIZE
        ds.PixelSpacing = [ds_number(spacing), ds_number(spacing)]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = str(wc)
        ds.WindowWidth = str(ww)
        ds.LossyImageCompression = "00"
        col = SeriesCollector(ds, root, ExplicitVRLittleEndian)
        rng = np.random.default_rng(1000 + number)
        for k in range(MR_SLICES):
            centre = MR_CENTER + (k - (MR_SLICES - 1) / 2) * MR_STEP * normal
            pts = (
                centre[None, None, :]
                + grid[None, :, None] * r[None, None, :]
                + grid[:, None, None] * c[None, None, :]
            )
            img = _mr_signal(pts, widx)
            noise = rng.normal(0.0, 12.0, (2, MR_SIZE, MR_SIZE))
            img = np.hypot(img + noise[0], noise[1])  # Rician, as magnitude MR is
            pixels = np.clip(np.rint(img), 0, 4095).astype(np.uint16)
            ipp = centre - grid[-1] * r - grid[-1] * c
            sop = make_uid("mr", number, k + 1)
            ds.SOPInstanceUID = sop
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [ds_number(v) for v in ipp]
            ds.SliceLocation = ds_number(centre @ normal)
            ds.PixelData = pixels.tobytes()
            path = root / study.key / folder / f"I{k + 1:04d}.dcm"
            col.add(path, sop, write_instance(ds, path))
        total += col.bytes
        series.append(col.info())
    return study_info(study, series), total


def _mr_signal(pts: np.ndarray, widx: int) -> np.ndarray:
    """Signal of the head phantom at patient points ``pts`` (..., 3) for one weighting."""
    px, py, pz = (pts[..., i].astype(np.float32) for i in range(3))
    out = np.zeros(pts.shape[:-1], dtype=np.float32)
    for _name, (cx, cy, cz), (ax, ay, az), signal in MR_TISSUES:
        inside = ((px - cx) / ax) ** 2 + ((py - cy) / ay) ** 2 + ((pz - cz) / az) ** 2 <= 1.0
        out[inside] = signal[widx]
    # A gentle coil bias field, so the images are not perfectly flat.
    return out * (1.0 + 0.0015 * py - 0.001 * pz)

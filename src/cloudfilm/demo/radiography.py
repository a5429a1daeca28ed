"""Projection and ultrasound studies: a MONOCHROME1 chest DX and an echo with colour and cine.

These cover what the CT and MR do not: an inverted photometric interpretation with only
ImagerPixelSpacing (viewers must invert and still measure), a non-square matrix, RGB pixel
data with ultrasound calibration regions, and a multi-frame instance with a frame time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pydicom.uid import (
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from .base import (
    SeriesCollector,
    StudySpec,
    base_dataset,
    header_copy,
    make_uid,
    study_info,
    write_instance,
)
from .manifest import StudyInfo

DX_ROWS = 2048
DX_COLS = 1680
DX_SPACING = 0.2  # mm at the detector: 409.6 × 336 mm, a 14 × 17 inch plate

US_ROWS = 480
US_COLS = 640
US_FRAMES = 24
US_DELTA_CM = 0.025  # 0.25 mm per pixel


@dataclass
class Source:
    """Pixels and header of one written image, for the codec samples derived from it."""

    pixels: np.ndarray
    header: Dataset


def _box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur via cumulative sums: soft edges at the cost of two passes."""
    out = img
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis)
        hi = np.take(c, np.arange(2 * radius + 1, c.shape[axis]), axis=axis)
        lo = np.take(c, np.arange(0, c.shape[axis] - 2 * radius - 1), axis=axis)
        out = (hi - lo) / (2 * radius + 1)
    return out


def _chest_pixels() -> np.ndarray:
    """A PA chest radiograph in MONOCHROME1 (high stored value = more exposure = dark)."""
    # Anatomy on a half-resolution grid (it is blurred anyway), noise at full resolution.
    step = 2 * DX_SPACING
    y = (np.arange(DX_ROWS // 2, dtype=np.float32) * step + step / 2)[:, None]
    x = (np.arange(DX_COLS // 2, dtype=np.float32) * step + step / 2)[None, :]
    x = x - DX_COLS * DX_SPACING / 2  # mm from the midline, image right = patient left
    body = (np.abs(x) / 150) ** 4 + (np.abs(y - 250) / 230) ** 4 <= 1
    neck = (np.abs(x) < 55) & (y < 60)
    att = np.where(body | neck, 1.6 * np.sqrt(np.clip(1 - (x / 160) ** 2, 0, 1)), 0.0)
    for side in (-1, 1):
        lung = ((x - side * 72) / 58) ** 2 + ((y - 200) / 125) ** 2
        att -= np.where(lung <= 1, 0.9 * np.sqrt(np.clip(1 - lung, 0, 1)) + 0.2, 0)
    heart = ((x - 28) / 68) ** 2 + ((y - 265) / 62) ** 2 <= 1
    att += np.where(heart, 0.7, 0)
    att += np.where((np.abs(x) < 18) & (y > 20) & body, 0.8, 0)
    for i in range(10):  # posterior ribs: shallow arcs across each lung
        arc = 95 + 26 * i + 0.004 * x**2 - 0.08 * np.abs(x)
        att += np.where((np.abs(y - arc) < 5) & (np.abs(x) < 140) & (np.abs(x) > 20), 0.25, 0)
    for side in (-1, 1):  # clavicles
        t = np.clip((side * x - 15) / 95, 0, 1)
        line_y = 78 - 18 * t
        att += np.where((np.abs(y - line_y) < 6) & (side * x > 15) & (side * x < 110), 0.4, 0)
    att = np.repeat(np.repeat(att.astype(np.float32), 2, axis=0), 2, axis=1)
    att = _box_blur(att, 6)
    transmitted = np.exp(-1.4 * att)
    noise = np.random.default_rng(7).normal(0, 12, att.shape)
    pixels = 200 + 3700 * transmitted + noise
    # A lead "R" marker on the patient's right (image left): blocks the beam, shows white.
    letter = Image.new("L", (10, 12), 0)
    ImageDraw.Draw(letter).text((2, 0), "R", fill=255)
    mask = np.asarray(letter.resize((80, 96), Image.Resampling.NEAREST)) > 0
    pixels[120:216, 120:200][mask] = 260
    return np.clip(np.rint(pixels), 0, 4095).astype(np.uint16)


def write_dx(root: Path, study: StudySpec) -> tuple[StudyInfo, Source, int]:
    """Write one DX For Presentation PA chest image."""
    pixels = _chest_pixels()
    ds = base_dataset(study, "DX", DigitalXRayImageStorageForPresentation)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.AcquisitionTime = study.time
    ds.ContentTime = study.time
    ds.SeriesDescription = "胸部正位 PA"
    ds.ProtocolName = "胸部正位"
    ds.SeriesInstanceUID = make_uid("dx", "series", 1)
    ds.SeriesNumber = 1
    ds.SOPInstanceUID = make_uid("dx", 1, 1)
    ds.InstanceNumber = 1
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageLaterality = "U"
    ds.KVP = "125"
    ds.ExposureTime = "8"
    ds.XRayTubeCurrent = 320
    ds.Exposure = 3
    ds.DistanceSourceToDetector = "1800"
    ds.DetectorType = "SCINTILLATOR"
    ds.ImagerPixelSpacing = [str(DX_SPACING), str(DX_SPACING)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.Rows = DX_ROWS
    ds.Columns = DX_COLS
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE"
    lo, hi = np.percentile(pixels, [1, 99.5])
    ds.WindowCenter = str(int((lo + hi) / 2))
    ds.WindowWidth = str(int(hi - lo))
    ds.LossyImageCompression = "00"
    ds.PixelData = pixels.tobytes()
    col = SeriesCollector(ds, root, ExplicitVRLittleEndian)
    path = root / study.key / "S001" / "I0001.dcm"
    col.add(path, ds.SOPInstanceUID, write_instance(ds, path))
    header = header_copy(ds)
    return study_info(study, [col.info()]), Source(pixels, header), col.bytes


def _sector(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Depth (px from the probe) and in-sector mask of a phased-array fan."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    dy, dx = y - 40, x - cols / 2
    depth = np.hypot(dx, dy)
    angle = np.arctan2(dx, dy)
    inside = (np.abs(angle) < np.radians(38)) & (depth > 20) & (depth < rows - 50)
    return depth, inside


def _speckle(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Rayleigh speckle smeared laterally, roughly like a B-mode texture."""
    s = rng.rayleigh(1.0, shape).astype(np.float32)
    return (s + np.roll(s, 1, axis=1) + np.roll(s, -1, axis=1)) / 3


def _echo_frame(rng: np.random.Generator, phase: float) -> np.ndarray:
    """One 8-bit B-mode frame of a beating left ventricle at cardiac ``phase`` (0..1)."""
    depth, inside = _sector(US_ROWS, US_COLS)
    y, x = np.mgrid[0:US_ROWS, 0:US_COLS].astype(np.float32)
    squeeze = 1.0 - 0.18 * np.sin(np.pi * phase) ** 2
    cavity = ((x - 320) / (70 * squeeze)) ** 2 + ((y - 250) / (120 * squeeze)) ** 2
    wall = (cavity > 1) & (cavity < 1.9)
    level = np.where(wall, 150.0, 60.0) * np.exp(-depth / 900)
    level = np.where(cavity <= 1, 8.0, level)
    img = level * _speckle(rng, (US_ROWS, US_COLS)) * inside
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _colour_doppler(rng: np.random.Generator) -> np.ndarray:
    """An RGB frame: B-mode liver texture with a colour-flow box over two vessels."""
    depth, inside = _sector(US_ROWS, US_COLS)
    y, x = np.mgrid[0:US_ROWS, 0:US_COLS].astype(np.float32)
    grey = 90 * np.exp(-depth / 700) * _speckle(rng, (US_ROWS, US_COLS)) * inside
    rgb = np.repeat(np.clip(grey, 0, 255)[..., None], 3, axis=2)
    box = (x > 220) & (x < 420) & (y > 150) & (y < 330) & inside
    for cx, cy, r, colour in ((280, 230, 28, (220, 40, 30)), (365, 260, 22, (40, 90, 230))):
        vessel = ((x - cx) ** 2 + (y - cy) ** 2 <= r * r) & inside
        rgb[vessel] = 0
        flow = vessel & box
        shade = 0.6 + 0.4 * (1 - np.hypot(x - cx, y - cy) / r)
        for ch in range(3):
            rgb[..., ch] = np.where(flow, colour[ch] * shade, rgb[..., ch])
    edge = box & ~(
        (x > 222) & (x < 418) & (y > 152) & (y < 328)
    )  # the colour box outline, as scanners draw it
    rgb[edge] = (200, 200, 200)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _us_header(
    study: StudySpec, sop_class: str, number: int, desc: str, rows: int, cols: int, rgb: bool
) -> Dataset:
    ds = base_dataset(study, "US", sop_class)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIOLOGY", "0001"]
    ds.AcquisitionTime = study.time
    ds.ContentTime = study.time
    ds.SeriesDescription = desc
    ds.SeriesInstanceUID = make_uid("us", "series", number)
    ds.SeriesNumber = number
    ds.SOPInstanceUID = make_uid("us", number, 1)
    ds.InstanceNumber = 1
    ds.TransducerData = "S5-1"
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00"
    region = Dataset()
    region.RegionSpatialFormat = 1
    region.RegionDataType = 2 if rgb else 1
    region.RegionFlags = 0
    region.RegionLocationMinX0 = 0
    region.RegionLocationMinY0 = 40
    region.RegionLocationMaxX1 = cols - 1
    region.RegionLocationMaxY1 = rows - 50
    region.ReferencePixelX0 = cols // 2
    region.ReferencePixelY0 = 40
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.ReferencePixelPhysicalValueX = 0.0
    region.ReferencePixelPhysicalValueY = 0.0
    region.PhysicalDeltaX = US_DELTA_CM
    region.PhysicalDeltaY = US_DELTA_CM
    ds.SequenceOfUltrasoundRegions = [region]
    return ds


def write_us(root: Path, study: StudySpec) -> tuple[StudyInfo, Source, Source, int]:
    """Write an RGB colour-Doppler still and a 24-frame B-mode cine loop."""
    rng = np.random.default_rng(42)
    colour = _colour_doppler(rng)
    still = _us_header(
        study, UltrasoundImageStorage, 1, "Colour Doppler", US_ROWS, US_COLS, rgb=True
    )
    still.PixelData = colour.tobytes()
    c1 = SeriesCollector(still, root, ExplicitVRLittleEndian)
    path = root / study.key / "S001" / "I0001.dcm"
    c1.add(path, still.SOPInstanceUID, write_instance(still, path))

    frames = np.stack([_echo_frame(rng, f / US_FRAMES) for f in range(US_FRAMES)])
    cine = _us_header(
        study, UltrasoundMultiFrameImageStorage, 2, "Apical 4CH cine", US_ROWS, US_COLS, rgb=False
    )
    cine.NumberOfFrames = US_FRAMES
    cine.FrameIncrementPointer = 0x00181063  # Frame Time
    cine.FrameTime = "40"
    cine.CineRate = 25
    cine.RecommendedDisplayFrameRate = 25
    cine.HeartRate = 72
    cine.PixelData = frames.tobytes()
    c2 = SeriesCollector(cine, root, ExplicitVRLittleEndian, frames=US_FRAMES)
    path = root / study.key / "S002" / "I0001.dcm"
    c2.add(path, cine.SOPInstanceUID, write_instance(cine, path))

    still_h, cine_h = header_copy(still), header_copy(cine)
    info = study_info(study, [c1.info(), c2.info()])
    return info, Source(colour, still_h), Source(frames, cine_h), c1.bytes + c2.bytes

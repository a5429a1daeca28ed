"""Rendered images (PS3.18 8.3.5 /rendered, /thumbnail): what a display shows, as JPEG/PNG/GIF.

The grayscale pipeline follows PS3.3 C.11: stored values → modality LUT (rescale slope and
intercept, per frame for enhanced multi-frame) → VOI (the window from the query, else the
file's first window, else a VOI LUT, else the frame's min/max) → 8 bits, inverted for
MONOCHROME1. Colour images are shown as RGB (YBR decoded by pydicom, palette colour applied).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_voi_lut

RENDER_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif")
THUMBNAIL_SIZE = 128


class RenderError(Exception):
    """The instance has nothing that can be rendered (no pixel data, unknown photometric)."""


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = "image/jpeg"
    window: Window | None = None
    viewport: tuple[int, int] | None = None
    """(width, height) the image must fit in; aspect ratio is kept."""
    quality: int = 90


def parse_window(text: str) -> Window:
    """``center,width[,function]`` with function linear | linear-exact | sigmoid."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise ValueError("window must be center,width[,function]")
    center, width = float(parts[0]), float(parts[1])
    function = parts[2].lower() if len(parts) == 3 else "linear"
    if function not in ("linear", "linear-exact", "sigmoid"):
        raise ValueError(f"unknown window function {function!r}")
    if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
        raise ValueError("window width must be a positive number")
    if function == "linear" and width < 1:
        raise ValueError("a linear window needs width ≥ 1")
    return Window(center, width, function)


def parse_viewport(text: str) -> tuple[int, int]:
    """``vw,vh`` (PS3.18 viewport), each 1..4096; extra components (sx,sy,sw,sh) are ignored."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) < 2:
        raise ValueError("viewport must be width,height")
    w, h = int(parts[0]), int(parts[1])
    if not (0 < w <= 4096 and 0 < h <= 4096):
        raise ValueError("viewport dimensions must be 1..4096")
    return w, h


def decode_frame(data: bytes, index: int) -> tuple[Dataset, np.ndarray]:
    """(data set, decoded frame ``index``) of a Part-10 file; colour as RGB."""
    ds = pydicom.dcmread(io.BytesIO(data))
    if "PixelData" not in ds:
        raise RenderError("the instance has no pixel data")
    arr = pydicom.pixels.pixel_array(ds, index=index)
    return ds, arr


def native_frame_array(ds: Dataset, frame: bytes) -> np.ndarray:
    """Decode one little-endian native frame without reading the rest of the file."""
    bits = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    dtype = {8: "i1", 16: "<i2", 32: "<i4"}.get(bits) if signed else None
    dtype = dtype or {8: "u1", 16: "<u2", 32: "<u4"}.get(bits)
    if dtype is None:
        raise RenderError(f"{bits}-bit samples need the full decoder")
    rows, cols = int(ds.Rows), int(ds.Columns)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    arr = np.frombuffer(frame, dtype=dtype)[: rows * cols * spp]
    if spp > 1:
        if int(ds.get("PlanarConfiguration", 0) or 0) == 1:
            arr = arr.reshape(spp, rows, cols).transpose(1, 2, 0)
        else:
            arr = arr.reshape(rows, cols, spp)
    else:
        arr = arr.reshape(rows, cols)
    stored = int(ds.get("BitsStored", bits) or bits)
    if stored < bits and spp == 1:
        shift = bits - stored
        arr = (arr << shift) >> shift if signed else arr & ((1 << stored) - 1)
    return arr


def _frame_item(ds: Dataset, index: int, keyword: str) -> Dataset | None:
    """An item of a functional-group macro for this frame (per-frame first, then shared)."""
    for group_kw, idx in (
        ("PerFrameFunctionalGroupsSequence", index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(group_kw)
        if groups and len(groups) > idx:
            seq = groups[idx].get(keyword)
            if seq:
                return seq[0]
    return None


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        value = value[0] if len(value) else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def modality_values(ds: Dataset, arr: np.ndarray, index: int) -> np.ndarray:
    """Stored values → modality values (HU for CT)."""
    item = _frame_item(ds, index, "PixelValueTransformationSequence") or ds
    slope = _first(item.get("RescaleSlope"))
    intercept = _first(item.get("RescaleIntercept"))
    out = arr.astype(np.float64)
    if slope is not None and slope != 1.0:
        out *= slope
    if intercept:
        out += intercept
    return out


def file_window(ds: Dataset, index: int) -> Window | None:
    item = _frame_item(ds, index, "FrameVOILUTSequence") or ds
    center = _first(item.get("WindowCenter"))
    width = _first(item.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    function = str(item.get("VOILUTFunction", "LINEAR") or "LINEAR").lower().replace("_", "-")
    if function not in ("linear", "linear-exact", "sigmoid"):
        function = "linear"
    return Window(center, max(width, 1.0) if function == "linear" else width, function)


def apply_window(values: np.ndarray, w: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2: map modality values to 0..1."""
    c, width = w.center, w.width
    if w.function == "linear-exact":
        out = (values - c) / width + 0.5
    elif w.function == "sigmoid":
        out = 1.0 / (1.0 + np.exp(-4.0 * (values - c) / width))
    else:
        out = (values - (c - 0.5)) / (width - 1) + 0.5 if width > 1 else (values >= c) * 1.0
    return np.clip(out, 0.0, 1.0)


def to_display(ds: Dataset, arr: np.ndarray, index: int, window: Window | None) -> np.ndarray:
    """8-bit grayscale (H×W) or RGB (H×W×3) ready to encode."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        bits = 16 if rgb.dtype.itemsize > 1 else 8
        return (rgb / (2**bits - 1) * 255).round().astype(np.uint8) if bits > 8 else rgb
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        if arr.dtype != np.uint8:
            stored = int(ds.get("BitsStored", 16) or 16)
            arr = (arr.astype(np.float64) / (2**stored - 1) * 255).round().clip(0, 255)
        return arr[..., :3].astype(np.uint8)
    if not photometric.startswith("MONOCHROME"):
        raise RenderError(f"cannot render photometric interpretation {photometric}")
    values = modality_values(ds, arr, index)
    chosen = window or file_window(ds, index)
    if chosen is not None:
        unit = apply_window(values, chosen)
    elif "VOILUTSequence" in ds:
        lut = apply_voi_lut(arr, ds, index=0, prefer_lut=True).astype(np.float64)
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        unit = lut / float(2 ** int(descriptor[2]) - 1)
    else:
        lo, hi = float(values.min()), float(values.max())
        unit = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    out = (np.clip(unit, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


def encode(pixels: np.ndarray, options: RenderOptions) -> bytes:
    image = Image.fromarray(pixels, "RGB" if pixels.ndim == 3 else "L")
    if options.viewport is not None:
        vw, vh = options.viewport
        scale = min(vw / image.width, vh / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    if options.media_type == "image/png":
        image.save(buf, "PNG", compress_level=3)
    elif options.media_type == "image/gif":
        image.save(buf, "GIF")
    else:
        image.save(buf, "JPEG", quality=options.quality)
    return buf.getvalue()


def render(ds: Dataset, arr: np.ndarray, index: int, options: RenderOptions) -> bytes:
    return encode(to_display(ds, arr, index, options.window), options)

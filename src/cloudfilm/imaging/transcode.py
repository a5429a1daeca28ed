"""Transfer syntaxes: what we can decode, what we can encode, and the frames of a stored file.

The stored file is never changed. When a client asks for another transfer syntax the whole
instance is transcoded once into a derived file under ``<data_dir>/cache/transcoded`` (keyed by
the SHA-256 of the original and the target syntax), and frames are then cut from that file
exactly as from an original. Deleting the cache loses nothing.

Encoders available with pydicom 3 and the installed plugins: RLE Lossless, JPEG-LS (lossless and
near-lossless), JPEG 2000 (lossless and lossy), plus 8-bit JPEG baseline through Pillow, and the
uncompressed / deflated syntaxes. JPEG lossless (4.57/4.70), 12-bit JPEG and HTJ2K have no
encoder here: asking for them answers 406, while files stored in them are served as stored.
"""

from __future__ import annotations

import io
import os
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom import encaps
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.pixels import get_decoder
from pydicom.uid import UID

ELE = "1.2.840.10008.1.2.1"
ILE = "1.2.840.10008.1.2"
EBE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
RLE = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JLS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JLS_NEAR = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
J2K_PART2_LOSSLESS = "1.2.840.10008.1.2.4.92"
J2K_PART2 = "1.2.840.10008.1.2.4.93"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"

NATIVE = frozenset({ELE, ILE, EBE, DEFLATED})
"""Pixel data not encapsulated: frames are plain sample arrays."""
BYTE_RANGE_OK = frozenset({ELE, ILE})
"""Frames can be cut from the stored file by byte range, already little endian."""
LOSSY = frozenset({JPEG_BASELINE, JPEG_EXTENDED, JLS_NEAR, J2K, J2K_PART2, HTJ2K})

# PS3.18 Table 8.7.3-2: media type of a frame / bulk data in each transfer syntax.
FRAME_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "application/octet-stream": (ELE,),
    "image/jpeg": (JPEG_BASELINE, JPEG_EXTENDED, JPEG_LOSSLESS, JPEG_LOSSLESS_SV1),
    "image/dicom-rle": (RLE,),
    "image/jls": (JLS_LOSSLESS, JLS_NEAR),
    "image/jp2": (J2K_LOSSLESS, J2K),
    "image/jpx": (J2K_PART2_LOSSLESS, J2K_PART2),
    "image/jphc": (HTJ2K_LOSSLESS, HTJ2K_RPCL, HTJ2K),
}
MEDIA_TYPE_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}
MEDIA_TYPE_OF: dict[str, str] = {
    ts: media for media, syntaxes in FRAME_MEDIA_TYPES.items() for ts in syntaxes
}
for _ts in NATIVE:
    MEDIA_TYPE_OF[_ts] = "application/octet-stream"

_ENCODERS = frozenset({RLE, JLS_LOSSLESS, JLS_NEAR, J2K_LOSSLESS, J2K})
"""Encapsulated syntaxes pydicom can write with the installed plugins."""


class TranscodeError(Exception):
    """The requested syntax cannot be produced for this instance."""


def is_native(ts: str) -> bool:
    return ts in NATIVE


def can_decode(ts: str) -> bool:
    if ts in NATIVE:
        return True
    try:
        return bool(get_decoder(UID(ts)).is_available)
    except (NotImplementedError, ValueError):
        return False


def can_produce(stored_ts: str, target_ts: str, bits_allocated: int | None = None) -> bool:
    """Whether ``target_ts`` can be produced from an instance stored in ``stored_ts``."""
    if target_ts == stored_ts:
        return True
    if not can_decode(stored_ts):
        return False
    if target_ts in (ELE, ILE, DEFLATED) or target_ts in _ENCODERS:
        return True
    return target_ts == JPEG_BASELINE and bits_allocated == 8


def _decoded_le(ds: Dataset) -> Dataset:
    """The data set with native little-endian pixel data (decoded if it was compressed)."""
    ts = str(ds.file_meta.TransferSyntaxUID)
    if "PixelData" not in ds:
        return ds
    if ts == EBE:
        arr = ds.pixel_array
        for elem in ds.iterall():
            _ = elem.value  # decode every big-endian value before re-encoding
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OB" if ds.BitsAllocated <= 8 else "OW"
    elif ts not in NATIVE:
        ds.decompress(generate_instance_uid=False)
    return ds


def transcode_instance(data: bytes, target_ts: str) -> bytes:
    """Part-10 bytes of the same instance in ``target_ts`` (same SOP Instance UID)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    stored = str(ds.file_meta.TransferSyntaxUID)
    if stored == target_ts:
        return data
    if not can_produce(stored, target_ts, ds.get("BitsAllocated")):
        raise TranscodeError(f"cannot convert {stored} to {target_ts}")
    try:
        ds = _decoded_le(ds)
        if "PixelData" in ds and target_ts in _ENCODERS:
            kwargs = {}
            if target_ts == J2K:
                kwargs["j2k_cr"] = [10]
            elif target_ts == JLS_NEAR:
                kwargs["jls_error"] = 2
            ds.compress(target_ts, generate_instance_uid=False, **kwargs)
        elif "PixelData" in ds and target_ts == JPEG_BASELINE:
            _compress_jpeg_baseline(ds)
        else:
            ds.file_meta.TransferSyntaxUID = UID(target_ts)
        if target_ts in LOSSY and stored not in LOSSY:
            ds.LossyImageCompression = "01"
        out = io.BytesIO()
        implicit = target_ts == ILE
        dcmwrite(out, ds, implicit_vr=implicit, little_endian=True, force_encoding=True)
    except TranscodeError:
        raise
    except Exception as exc:  # codecs raise many types for data they cannot handle
        raise TranscodeError(f"cannot convert {stored} to {target_ts}: {exc}") from exc
    return out.getvalue()


def _compress_jpeg_baseline(ds: Dataset) -> None:
    """8-bit JPEG baseline with Pillow (pydicom has no JPEG encoder)."""
    from PIL import Image

    if ds.BitsAllocated != 8:
        raise TranscodeError("JPEG baseline needs 8-bit samples")
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    arr = arr.reshape((frames, *arr.shape[-3 if ds.SamplesPerPixel > 1 else -2 :]))
    encoded = []
    for frame in arr:
        buf = io.BytesIO()
        mode = "RGB" if ds.SamplesPerPixel == 3 else "L"
        Image.fromarray(np.ascontiguousarray(frame).astype(np.uint8), mode).save(
            buf, "JPEG", quality=90
        )
        encoded.append(buf.getvalue())
    ds.PixelData = encaps.encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if ds.SamplesPerPixel == 3:
        ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.file_meta.TransferSyntaxUID = UID(JPEG_BASELINE)


@dataclass(frozen=True)
class PixelGeometry:
    """What is needed to cut native frames out of a Pixel Data value."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    number_of_frames: int

    @property
    def frame_bits(self) -> int:
        return self.rows * self.columns * self.samples_per_pixel * self.bits_allocated

    def frame_range(self, index: int) -> tuple[int, int] | None:
        """(start, length) of 0-based frame ``index`` inside the value; None if not byte aligned."""
        if self.frame_bits % 8:
            return None
        size = self.frame_bits // 8
        return index * size, size


def native_frame(value: bytes, geometry: PixelGeometry, index: int) -> bytes:
    """One frame of native little-endian pixel data (also for unaligned 1-bit frames)."""
    rng = geometry.frame_range(index)
    if rng is not None:
        return value[rng[0] : rng[0] + rng[1]]
    bits = np.unpackbits(np.frombuffer(value, np.uint8), bitorder="little")
    n = geometry.frame_bits
    return np.packbits(bits[index * n : (index + 1) * n], bitorder="little").tobytes()


def geometry_of(ds: Dataset) -> PixelGeometry:
    return PixelGeometry(
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples_per_pixel=int(ds.get("SamplesPerPixel", 1) or 1),
        bits_allocated=int(ds.BitsAllocated),
        number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
    )


def frames_from_file(data: bytes) -> tuple[str, list[bytes]]:
    """(transfer syntax, every frame) of a Part-10 file, native frames little endian."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ts = str(ds.file_meta.TransferSyntaxUID)
    if "PixelData" not in ds:
        raise TranscodeError("the instance has no pixel data")
    geometry = geometry_of(ds)
    n = geometry.number_of_frames
    if ts in NATIVE:
        if ts == EBE:
            ds = _decoded_le(ds)
        value = ds.PixelData
        return ts, [native_frame(value, geometry, i) for i in range(n)]
    frames = list(
        encaps.generate_frames(
            ds.PixelData,
            number_of_frames=n,
            extended_offsets=(ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
            if "ExtendedOffsetTable" in ds
            else None,
        )
    )
    return ts, frames


class FrameCache:
    """A bounded in-memory LRU of the frames of encapsulated or derived files.

    A viewer fetches the frames of one multi-frame instance one request at a time; parsing the
    file once instead of once per frame is what makes that fast.
    """

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], tuple[str, list[bytes]]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[str, list[bytes]] | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple[str, str], item: tuple[str, list[bytes]]) -> None:
        size = sum(len(f) for f in item[1])
        if size > self.max_bytes // 4:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = item
            self._size += size
            while self._size > self.max_bytes and self._items:
                _, (_, old) = self._items.popitem(last=False)
                self._size -= sum(len(f) for f in old)


class TranscodeCache:
    """Derived files on disk: ``<root>/<sha[:2]>/<sha>.<target ts>.dcm``, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, sha256: str, target_ts: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.{target_ts}.dcm"

    def get_or_make(self, sha256: str, target_ts: str, original: bytes | None, load) -> bytes:  # type: ignore[no-untyped-def]
        """The transcoded bytes, made once per (instance, syntax) even under concurrency."""
        final = self.path(sha256, target_ts)
        if final.exists():
            return final.read_bytes()
        key = f"{sha256}.{target_ts}"
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if final.exists():
                return final.read_bytes()
            data = transcode_instance(original if original is not None else load(), target_ts)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f".{secrets.token_hex(6)}.part")
            tmp.write_bytes(data)
            os.replace(tmp, final)
        with self._guard:
            self._locks.pop(key, None)
        return data

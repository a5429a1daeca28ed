"""Helpers for DICOMweb tests: reading multipart responses and decoding returned frames."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

NATIVE = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
}


def parts(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related response: (headers, body)."""
    ctype = response.headers["content-type"]
    assert ctype.startswith("multipart/related"), ctype
    boundary = next(
        p.split("=", 1)[1].strip('"')
        for p in (x.strip() for x in ctype.split(";"))
        if p.lower().startswith("boundary=")
    )
    body = response.content
    delim = b"--" + boundary.encode()
    out = []
    for chunk in body.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.strip().split(b"\r\n"):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        assert content.endswith(b"\r\n")
        out.append((headers, content[:-2]))
    return out


def part_syntax(headers: dict[str, str]) -> str:
    for p in headers["content-type"].split(";"):
        name, _, value = p.strip().partition("=")
        if name == "transfer-syntax":
            return value
    raise AssertionError(f"no transfer-syntax in {headers['content-type']}")


def decode_frame(
    frame: bytes, ts: str, like: Dataset, photometric: str | None = None
) -> np.ndarray:
    """Decode one returned frame using the image attributes of the original instance."""
    ds = Dataset()
    for kw in (
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PhotometricInterpretation",
        "PlanarConfiguration",
    ):
        if kw in like:
            setattr(ds, kw, like.get(kw))
    if photometric:
        ds.PhotometricInterpretation = photometric
    if ds.SamplesPerPixel > 1 and "PlanarConfiguration" not in ds:
        ds.PlanarConfiguration = 0
    ds.NumberOfFrames = 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts if ts not in NATIVE else "1.2.840.10008.1.2.1"
    frame = bytes(frame)
    value = frame if ts in NATIVE else encapsulate([frame])
    ds.add(DataElement(0x7FE00010, "OW" if ts in NATIVE and ds.BitsAllocated > 8 else "OB", value))
    if ts not in NATIVE:
        ds["PixelData"].is_undefined_length = True
    return ds.pixel_array


def frame_of(ds: Dataset, index: int) -> np.ndarray:
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return arr[index] if frames > 1 else arr


def read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))

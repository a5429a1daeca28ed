"""One instance per transfer syntax, each in its own series of a dedicated "codec" study.

Archives, DICOMweb frame retrieval and the browser viewer all break first on transfer
syntaxes, so every syntax a Chinese PACS or modality may send is here, made by a real encoder
(pydicom's plugins, dcmtk's dcmcjpeg, OpenJPH's ojph_compress) and then decoded again with
pydicom before it is kept. A syntax whose encoder is missing or whose output does not decode
(or, when lossless, does not match its source) is recorded as ``skipped`` with the reason; no
file is ever faked. Each compressed sample names an uncompressed ``reference`` sample in the
same study holding the source pixels, so lossless equality can be checked from the files.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pydicom.uid import JPEGLossless as JPEGLosslessP14

from .base import (
    SeriesCollector,
    StudySpec,
    base_dataset,
    header_copy,
    make_uid,
    study_info,
    write_instance,
)
from .manifest import CodecSample, SeriesInfo, StudyInfo
from .radiography import Source

JLS_NEAR_ERROR = 3


@dataclass
class _Job:
    name: str
    ts: str
    lossless: bool
    tool: str
    reference: str
    encode: Callable[[Dataset, Path, Path], None] | None  # (dataset, tmp dir, out path)
    exe: str = ""  # external program the encoder needs, checked before running


def _pydicom_encoder(ts: str, **kwargs: object) -> Callable[[Dataset, Path, Path], None]:
    def run(ds: Dataset, _tmp: Path, out: Path) -> None:
        raw = len(ds.PixelData)
        # pydicom would otherwise give the instance a new random UID: not deterministic.
        ds.compress(ts, generate_instance_uid=False, **kwargs)
        _record_ratio(ds, raw)
        write_instance(ds, out, ts)

    return run


def _dcmtk(*options: str) -> Callable[[Dataset, Path, Path], None]:
    def run(ds: Dataset, tmp: Path, out: Path) -> None:
        src = tmp / "in.dcm"
        write_instance(ds, src)
        out.parent.mkdir(parents=True, exist_ok=True)
        _run(["dcmcjpeg", "+un", *options, str(src), str(out)])

    return run


def _ojph(lossless: bool) -> Callable[[Dataset, Path, Path], None]:
    def run(ds: Dataset, tmp: Path, out: Path) -> None:
        if int(ds.PixelRepresentation) != 0:
            raise ValueError("OpenJPH 0.9 signed output is read back wrong by OpenJPEG")
        arr = np.frombuffer(ds.PixelData, dtype="<u2").reshape(int(ds.Rows), int(ds.Columns))
        pgm = tmp / "in.pgm"
        maxval = (1 << int(ds.BitsStored)) - 1
        pgm.write_bytes(
            f"P5\n{ds.Columns} {ds.Rows}\n{maxval}\n".encode() + arr.astype(">u2").tobytes()
        )
        stream = tmp / "out.j2c"
        opts = ["-reversible", "true"] if lossless else ["-qstep", "0.0005"]
        _run(["ojph_compress", "-i", str(pgm), "-o", str(stream), *opts])
        raw = len(ds.PixelData)
        ds.PixelData = encapsulate([stream.read_bytes()])
        _record_ratio(ds, raw)
        ds["PixelData"].VR = "OB"
        write_instance(ds, out, HTJ2KLossless if lossless else HTJ2K)

    return run


def _record_ratio(ds: Dataset, raw_bytes: int) -> None:
    """Lossy Image Compression Ratio, as dcmcjpeg records it for its own lossy output."""
    if ds.get("LossyImageCompression") == "01":
        ds.LossyImageCompressionRatio = f"{raw_bytes / len(ds.PixelData):.2f}"


def _run(cmd: list[str]) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({res.returncode}): {res.stderr.strip()[:300]}")


def _jobs() -> list[_Job]:
    """Every sample, in series order. References come first in each group."""
    pyd = "pydicom"
    return [
        _Job("ref-ct-int16", ExplicitVRLittleEndian, True, pyd, "", None),
        _Job("implicit-vr-le", ImplicitVRLittleEndian, True, pyd, "ref-ct-int16", None),
        _Job(
            "deflated-explicit-vr-le",
            DeflatedExplicitVRLittleEndian,
            True,
            pyd,
            "ref-ct-int16",
            None,
        ),
        _Job(
            "rle-lossless",
            RLELossless,
            True,
            "pydicom (native RLE encoder)",
            "ref-ct-int16",
            _pydicom_encoder(ts=RLELossless, encoding_plugin="pydicom"),
        ),
        _Job(
            "jpeg-lossless-sv1",
            JPEGLosslessSV1,
            True,
            "dcmtk dcmcjpeg +e1",
            "ref-ct-int16",
            _dcmtk("+e1"),
            "dcmcjpeg",
        ),
        _Job(
            "jpeg-lossless-p14",
            JPEGLosslessP14,
            True,
            "dcmtk dcmcjpeg +el +sv 6",
            "ref-ct-int16",
            _dcmtk("+el", "+sv", "6"),
            "dcmcjpeg",
        ),
        _Job(
            "jpeg-ls-lossless",
            JPEGLSLossless,
            True,
            "pydicom + pyjpegls",
            "ref-ct-int16",
            _pydicom_encoder(ts=JPEGLSLossless),
        ),
        _Job(
            "jpeg-ls-near-lossless",
            JPEGLSNearLossless,
            False,
            "pydicom + pyjpegls",
            "ref-ct-int16",
            _pydicom_encoder(ts=JPEGLSNearLossless, jls_error=JLS_NEAR_ERROR),
        ),
        _Job(
            "jpeg2000-lossless",
            JPEG2000Lossless,
            True,
            "pydicom + pylibjpeg-openjpeg",
            "ref-ct-int16",
            _pydicom_encoder(ts=JPEG2000Lossless),
        ),
        _Job(
            "jpeg2000",
            JPEG2000,
            False,
            "pydicom + pylibjpeg-openjpeg",
            "ref-ct-int16",
            _pydicom_encoder(ts=JPEG2000, j2k_cr=[10]),
        ),
        _Job("ref-ct-uint12", ExplicitVRLittleEndian, True, pyd, "", None),
        _Job(
            "jpeg-extended-12bit",
            JPEGExtended12Bit,
            False,
            "dcmtk dcmcjpeg +ee +sr",
            "ref-ct-uint12",
            _dcmtk("+ee", "+sr"),
            "dcmcjpeg",
        ),
        _Job(
            "htj2k-lossless",
            HTJ2KLossless,
            True,
            "OpenJPH ojph_compress -reversible true",
            "ref-ct-uint12",
            _ojph(True),
            "ojph_compress",
        ),
        _Job(
            "htj2k",
            HTJ2K,
            False,
            "OpenJPH ojph_compress -qstep 0.0005",
            "ref-ct-uint12",
            _ojph(False),
            "ojph_compress",
        ),
        _Job("ref-dx-uint8", ExplicitVRLittleEndian, True, pyd, "", None),
        _Job(
            "jpeg-baseline",
            JPEGBaseline8Bit,
            False,
            "dcmtk dcmcjpeg +eb +sr",
            "ref-dx-uint8",
            _dcmtk("+eb", "+sr"),
            "dcmcjpeg",
        ),
        _Job("ref-us-rgb", ExplicitVRLittleEndian, True, pyd, "", None),
        _Job(
            "jpeg-baseline-ybr-full-422",
            JPEGBaseline8Bit,
            False,
            "dcmtk dcmcjpeg +eb (+cy +s2)",
            "ref-us-rgb",
            _dcmtk("+eb", "+sr"),
            "dcmcjpeg",
        ),
        _Job(
            "rle-lossless-rgb",
            RLELossless,
            True,
            "pydicom (native RLE encoder)",
            "ref-us-rgb",
            _pydicom_encoder(ts=RLELossless, encoding_plugin="pydicom"),
        ),
        _Job("ref-us-cine", ExplicitVRLittleEndian, True, pyd, "", None),
        _Job(
            "jpeg-baseline-multiframe",
            JPEGBaseline8Bit,
            False,
            "dcmtk dcmcjpeg +eb +sr",
            "ref-us-cine",
            _dcmtk("+eb", "+sr"),
            "dcmcjpeg",
        ),
        _Job(
            "jpeg-ls-lossless-multiframe",
            JPEGLSLossless,
            True,
            "pydicom + pyjpegls",
            "ref-us-cine",
            _pydicom_encoder(ts=JPEGLSLossless),
        ),
    ]


_DEBIAN_PACKAGE = {"dcmcjpeg": "dcmtk", "ojph_compress": "openjph-tools"}


def _missing_tool(job: _Job) -> str:
    """Why the job cannot run here, or "" if it can."""
    if job.exe and shutil.which(job.exe) is None:
        return f"{job.exe} not found on PATH (Debian package {_DEBIAN_PACKAGE[job.exe]})"
    return ""


def _sources(
    ct_hu: np.ndarray, ct_header: Dataset, dx: Source, still: Source, cine: Source
) -> dict[str, tuple[np.ndarray, Dataset]]:
    """Source pixels and headers of each reference sample."""
    int16 = (ct_hu + 1024).astype(np.int16)
    h16 = header_copy(ct_header)
    uint12 = np.clip(ct_hu.astype(np.int32) + 1024, 0, 4095).astype(np.uint16)
    h12 = header_copy(ct_header)
    h12.BitsStored, h12.HighBit, h12.PixelRepresentation = 12, 11, 0
    # The DX binned 2 × 2 and reduced to 8 bits: what a JPEG baseline export would carry.
    d = dx.pixels.astype(np.uint32)
    binned = (d[0::2, 0::2] + d[1::2, 0::2] + d[0::2, 1::2] + d[1::2, 1::2]) // 4
    uint8 = (binned >> 4).astype(np.uint8)
    h8 = header_copy(dx.header)
    h8.Rows, h8.Columns = uint8.shape
    h8.BitsAllocated, h8.BitsStored, h8.HighBit = 8, 8, 7
    h8.ImagerPixelSpacing = [str(2 * float(v)) for v in dx.header.ImagerPixelSpacing]
    h8.WindowCenter = str(int(dx.header.WindowCenter) // 16)
    h8.WindowWidth = str(int(dx.header.WindowWidth) // 16)
    return {
        "ref-ct-int16": (int16, h16),
        "ref-ct-uint12": (uint12, h12),
        "ref-dx-uint8": (uint8, h8),
        "ref-us-rgb": (still.pixels, header_copy(still.header)),
        "ref-us-cine": (cine.pixels, header_copy(cine.header)),
    }


def _rehome(
    src: Dataset, study: StudySpec, uid_key: str, number: int, name: str, ts: str
) -> Dataset:
    """A copy of ``src`` moved into the codec study as series ``number``."""
    ds = header_copy(src)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for elem in base_dataset(study, src.Modality, src.SOPClassUID):
        ds[elem.tag] = elem
    if not study.patient.charset and "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet
    ds.SeriesInstanceUID = make_uid(uid_key, "series", name)
    ds.SeriesNumber = number
    ds.SeriesDescription = f"{name} {ts}"  # ≤ 64 chars (LO)
    ds.SOPInstanceUID = make_uid(uid_key, "instance", name)
    ds.InstanceNumber = 1
    if "FrameOfReferenceUID" in ds:
        ds.FrameOfReferenceUID = make_uid(uid_key, "frame-of-reference")
    return ds


_LOSSY_METHOD = {
    JPEGBaseline8Bit: "ISO_10918_1",
    JPEGExtended12Bit: "ISO_10918_1",
    JPEGLSNearLossless: "ISO_14495_1",
    JPEG2000: "ISO_15444_1",
    HTJ2K: "ISO_15444_15",
}


def write_codecs(
    root: Path,
    study: StudySpec,
    uid_key: str,
    ct_hu: np.ndarray,
    ct_header: Dataset,
    dx: Source,
    still: Source,
    cine: Source,
) -> tuple[StudyInfo, list[CodecSample], int]:
    """Write every codec sample; return the study, the per-sample records and the bytes."""
    sources = _sources(ct_hu, ct_header, dx, still, cine)
    samples: list[CodecSample] = []
    series: list[SeriesInfo] = []
    total = 0
    with tempfile.TemporaryDirectory(prefix="cloudfilm-demo-") as tmpdir:
        tmp = Path(tmpdir)
        for number, job in enumerate(_jobs(), start=1):
            ref_name = job.reference or job.name
            pixels, header = sources[ref_name]
            ds = _rehome(header, study, uid_key, number, job.name, job.ts)
            if not job.lossless:
                ds.ImageType = ["DERIVED", "SECONDARY", *list(ds.ImageType)[2:]]
                if job.exe != "dcmcjpeg":  # dcmcjpeg records lossy compression itself
                    ds.LossyImageCompression = "01"
                    ds.LossyImageCompressionMethod = _LOSSY_METHOD[UID(job.ts)]
            ds.PixelData = pixels.tobytes()
            out = root / study.key / f"S{number:03d}" / "I0001.dcm"
            sample = CodecSample(
                name=job.name,
                transfer_syntax_uid=job.ts,
                transfer_syntax_name=UID(job.ts).name,
                status="written",
                lossless=job.lossless,
                tool=job.tool,
                source=_describe(ref_name),
                reference=job.reference or None,
            )
            samples.append(sample)
            reason = _missing_tool(job) if job.encode else ""
            check, decoded = None, None
            if not reason:
                reason, check, decoded = _produce(job, ds, tmp, out, pixels)
            if reason or check is None or decoded is None:
                sample.status, sample.reason = "skipped", reason
                out.unlink(missing_ok=True)
                continue
            sample.file = out.relative_to(root).as_posix()
            sample.series_uid = str(check.SeriesInstanceUID)
            sample.sop_instance_uid = str(check.SOPInstanceUID)
            sample.photometric_interpretation = str(check.PhotometricInterpretation)
            sample.bits_stored = int(check.BitsStored)
            sample.pixel_representation = int(check.PixelRepresentation)
            sample.frames = int(check.get("NumberOfFrames", 1) or 1)
            sample.max_abs_error = int(np.abs(decoded.astype(np.int32) - pixels).max())
            col = SeriesCollector(check, root, job.ts, frames=sample.frames)
            col.add(out, sample.sop_instance_uid, out.stat().st_size)
            series.append(col.info())
            total += col.bytes
    return study_info(study, series), samples, total


def _produce(
    job: _Job, ds: Dataset, tmp: Path, out: Path, pixels: np.ndarray
) -> tuple[str, Dataset | None, np.ndarray | None]:
    """Encode ``ds`` to ``out`` and verify it.

    Returns ("", the file as read back, its decoded pixels), or the reason it was not kept.
    A warning while decoding counts as a failure: a demo file must decode cleanly.
    """
    try:
        if job.encode is None:
            write_instance(ds, out, job.ts)
        else:
            job.encode(ds, tmp, out)
    except Exception as exc:  # an encoder we do not control: record why, never fake
        return f"encoder failed: {type(exc).__name__}: {exc}", None, None
    # pydicom logs a traceback for each decoder plugin it tries before the one that works
    # (GDCM cannot do 12-bit JPEG, say); that is not an error of ours.
    log = logging.getLogger("pydicom")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            check = pydicom.dcmread(out)
            decoded = check.pixel_array
    except Exception as exc:
        return f"written but pydicom cannot decode it: {type(exc).__name__}: {exc}", None, None
    finally:
        log.setLevel(level)
    if str(check.file_meta.TransferSyntaxUID) != job.ts:
        return f"encoder wrote {check.file_meta.TransferSyntaxUID}, not {job.ts}", None, None
    if decoded.shape != pixels.shape:
        return f"decoded shape {decoded.shape} != source {pixels.shape}", None, None
    if job.lossless and not np.array_equal(decoded, pixels):
        return "lossless encoding does not decode to the source pixels", None, None
    return "", check, decoded


def _describe(ref: str) -> str:
    return {
        "ref-ct-int16": "middle disc slice of the CT phantom, signed 16-bit (HU + 1024)",
        "ref-ct-uint12": "the same CT slice as unsigned 12-bit (BitsStored 12)",
        "ref-dx-uint8": "the chest DX binned 2x2 and reduced to 8 bits, MONOCHROME1",
        "ref-us-rgb": "the RGB colour-Doppler ultrasound frame",
        "ref-us-cine": "the 24-frame 8-bit ultrasound cine loop",
    }[ref]

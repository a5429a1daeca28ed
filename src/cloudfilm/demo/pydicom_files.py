"""Copy the usable DICOM test files that ship inside pydicom's wheel.

They add variety the synthetic studies cannot: files written by other toolkits (GDCM, dcmtk,
old scanners), big-endian and implicit-VR encodings, Japanese/Korean/Greek/… character sets,
RT and SR objects. Only files that pydicom reads without complaint, that decode, and that
carry valid Study/Series/SOP Instance and SOP Class UIDs are copied; the deliberately broken
ones stay out (they belong in bad-input tests, not in a demo archive). A file whose SOP
Instance UID repeats an earlier one (pydicom ships the same image in several encodings) is
skipped too, because an archive keeps one object per SOP Instance UID and a demo set with
conflicting copies would make instance counts ambiguous.

Files are read straight from the installed package: no download is attempted.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import pydicom
import pydicom.data
from pydicom.uid import UID

from .manifest import PydicomFile

SUBFOLDERS = ("test_files", "charset_files")
_REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
# Readable without warnings yet broken by design, named so by pydicom's own test suite.
_BROKEN_BY_NAME = ("truncated", "mismatch")


def pydicom_data_dir() -> Path:
    """Folder of pydicom's bundled data inside the installed package."""
    return Path(pydicom.data.__file__).parent


@lru_cache(maxsize=512)
def _reject_reason(path: Path) -> str:
    """ "" if ``path`` is a clean, complete instance, else why it is not copied.

    Cached: the files inside the installed wheel do not change during a process, and
    decoding all of them takes a couple of seconds.
    """
    if any(word in path.name.lower() for word in _BROKEN_BY_NAME):
        return "broken by design (file name)"
    with _warnings_of_this_thread() as caught, _native_stderr() as native:
        reason = _inspect(path)
    if reason:
        said = " ".join(native.decode(errors="replace").split())
        return f"{reason} ({said[:120]})" if said else reason
    if native:
        os.write(2, native)  # not about a rejected file: let it through
    if caught:
        return f"warning on read: {caught[0][:80]}"
    return ""


def _inspect(path: Path) -> str:
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        return f"unreadable: {type(exc).__name__}"
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if not ts:
        return "no transfer syntax in file meta"
    missing = [k for k in _REQUIRED if not ds.get(k)]
    if missing:
        return "missing " + ", ".join(missing)
    bad = [k for k in _REQUIRED if not UID(str(ds.get(k))).is_valid]
    if bad:
        return "invalid UID in " + ", ".join(bad)
    try:
        if "PixelData" in ds:
            _ = ds.pixel_array
        ds.to_json_dict()  # converts every value: catches bad VRs and encodings
    except Exception as exc:
        return f"cannot decode: {type(exc).__name__}"
    return ""


@contextmanager
def _warnings_of_this_thread() -> Iterator[list[str]]:
    """Collect the warnings raised by this thread; pass other threads' on unchanged.

    ``warnings.catch_warnings(record=True)`` is process-wide: a warning from any other
    thread (a server running in the same process, say) would be blamed on the file being
    read and the file wrongly left out. The hook runs in the thread that warns, so the
    thread id tells them apart. ResourceWarnings pass through too: they come from the garbage
    collector finalising some unclosed socket or file, and the collector runs in whatever
    thread happens to allocate at that moment, so they say nothing about the file being read.
    """
    me = threading.get_ident()
    caught: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        passthrough = warnings.showwarning

        def hook(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
            if threading.get_ident() == me and not issubclass(category, ResourceWarning):
                caught.append(str(message))
            else:
                passthrough(message, category, filename, lineno, file, line)

        warnings.showwarning = hook
        yield caught


@contextmanager
def _native_stderr() -> Iterator[bytearray]:
    """Capture what C libraries write straight to file descriptor 2 while a file is decoded.

    OpenJPEG prints "Invalid number of tiles…" for one of pydicom's deliberately broken files;
    on the console of ``cloudfilm serve --demo`` that reads like a failure of ours. The text
    becomes part of the file's skip reason in the manifest instead.
    """
    captured = bytearray()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.extend(sink.read())


def copy_pydicom_files(dest: Path, root: Path) -> tuple[list[PydicomFile], list[dict[str, str]]]:
    """Copy the clean test files under ``dest`` (a folder below ``root``).

    Returns the copied files and the skipped ones with reasons, both sorted by source path.
    Files without a ``.dcm`` suffix get one, so every DICOM file of the demo set matches
    ``*.dcm``.
    """
    base = pydicom_data_dir()
    copied: list[PydicomFile] = []
    skipped: list[dict[str, str]] = []
    seen: dict[str, str] = {}
    for sub in SUBFOLDERS:
        for src in sorted(p for p in (base / sub).rglob("*") if p.is_file()):
            rel = src.relative_to(base).as_posix()
            if src.suffix in (".txt", ".json", ".dump", ".gz", ".icc", ".py", ".pyc") or (
                src.name.startswith("README")
            ):
                continue
            reason = _reject_reason(src)
            ds = None
            if not reason:
                ds = pydicom.dcmread(src, stop_before_pixels=True)
                first = seen.get(str(ds.SOPInstanceUID))
                if first:
                    reason = f"same SOPInstanceUID as {first}"
            if reason or ds is None:
                skipped.append({"source": rel, "reason": reason})
                continue
            seen[str(ds.SOPInstanceUID)] = rel
            target_rel = rel if src.suffix == ".dcm" else rel + ".dcm"
            target = dest / target_rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            copied.append(
                PydicomFile(
                    file=target.relative_to(root).as_posix(),
                    source=f"pydicom {pydicom.__version__}: {rel}",
                    transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                    sop_class_uid=str(ds.SOPClassUID),
                    study_uid=str(ds.StudyInstanceUID),
                    series_uid=str(ds.SeriesInstanceUID),
                    sop_instance_uid=str(ds.SOPInstanceUID),
                )
            )
    return copied, skipped

"""CT series on disk for the gateway's tests and bench: what a modality would send."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from tests.factory import make_dataset, to_bytes


def ct_series(
    folder: Path,
    slices: int,
    *,
    size: int = 64,
    study_uid: str | None = None,
    series_count: int = 1,
    patient_name: str = "Wang^XiaoDong=王^小东",
    accession: str = "GW0001",
    seed: int = 7,
) -> tuple[str, list[Path]]:
    """``slices`` instances of one study (split over ``series_count`` series), a round body
    with noise in it as CT has (so compression has something real to do); returns the Study
    Instance UID and the files in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    study = study_uid or generate_uid()
    series = [generate_uid() for _ in range(series_count)]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size * 0.42) ** 2
    files = []
    for i in range(slices):
        ds = make_dataset(
            study_uid=study,
            series_uid=series[i * series_count // slices],
            instance_number=i + 1,
            size=size,
            patient_name=patient_name,
            patient_id="GW-P1",
            accession=accession,
            charset="ISO_IR 192",
        )
        pixels = np.where(body, 40, -1000) + rng.normal(0, 12, (size, size))
        ds.PixelData = pixels.astype(np.int16).tobytes()
        path = folder / f"slice{i + 1:04d}.dcm"
        path.write_bytes(to_bytes(ds))
        files.append(path)
    return study, files


def data_set(data: bytes) -> bytes:
    """The bytes after the file meta group: what C-STORE carries (the receiver writes the meta
    group of its own, naming itself as the implementation that made the file)."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]


def hashes(files: list[Path], *, dimse: bool = True) -> list[str]:
    """SHA-256 of each file's data set (``dimse``) or of the whole file."""
    return sorted(
        hashlib.sha256(data_set(p.read_bytes()) if dimse else p.read_bytes()).hexdigest()
        for p in files
    )

"""The index is rebuilt from the blobs: lost index commits (a power cut) or a lost index."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
from sqlalchemy import select

from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.storage.models import Instance, Patient, Study

from .factory import make_dataset, to_bytes


def _study(n: int, name: str = "Sun^Li=孙^丽", pid: str = "S1") -> list[bytes]:
    study, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    return [
        to_bytes(
            make_dataset(
                study_uid=study,
                series_uid=series,
                instance_number=i + 1,
                patient_name=name,
                patient_id=pid,
                charset="GB18030",
            )
        )
        for i in range(n)
    ]


def test_lost_index_commits_are_reindexed_from_blobs(tmp_path: Path) -> None:
    """Simulate a power cut that drops the last commits: restore an older index file."""
    settings = Settings(data_dir=tmp_path / "d")
    files = _study(8)
    archive = Archive(settings)
    for data in files[:5]:
        archive.ingest(data, hospital=1)
    archive.close()  # records the watermark durably
    snapshot = tmp_path / "index-before.sqlite3"
    shutil.copy(settings.data_dir / "index.sqlite3", snapshot)
    archive = Archive(settings)
    for data in files[5:]:
        archive.ingest(data, hospital=1)
    archive.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{settings.data_dir / 'index.sqlite3'}{suffix}").unlink(missing_ok=True)
    shutil.copy(snapshot, settings.data_dir / "index.sqlite3")

    archive = Archive(settings)
    try:
        with archive.db.read() as s:
            assert len(s.execute(select(Instance)).all()) == 5  # the commits are gone
        assert archive.recover() == 3
        with archive.db.read() as s:
            study = s.execute(select(Study)).scalar_one()
            assert study.num_instances == 8
            assert len(s.execute(select(Instance)).all()) == 8
        assert archive.recover() == 0  # idempotent
    finally:
        archive.close()


def test_whole_index_rebuilt_from_blobs(tmp_path: Path, database_url: str) -> None:
    blobs = tmp_path / "blobs"
    first = Archive(Settings(data_dir=tmp_path / "a", blob_url=blobs.as_uri()))
    files = _study(4) + _study(2, name="Zhou^Min=周^敏", pid="Z2")
    for data in files:
        first.ingest(data, hospital=1)
    first.close()
    # a new, empty index over the same storage area (e.g. the index disk was lost)
    archive = Archive(
        Settings(data_dir=tmp_path / "b", blob_url=blobs.as_uri(), database_url=database_url)
    )
    try:
        assert archive.recover() == 6
        with archive.db.read() as s:
            names = sorted(s.execute(select(Patient.name)).scalars())
            counts = sorted(s.execute(select(Study.num_instances)).scalars())
        assert names == ["Sun^Li=孙^丽", "Zhou^Min=周^敏"]
        assert counts == [2, 4]
    finally:
        archive.close()

"""The ``cloudfilm`` command as an operator runs it: import, db upgrade, audit verify."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from cloudfilm.storage.database import Database
from cloudfilm.storage.models import AuditEvent, Instance

from .factory import make_dataset, make_instance, to_bytes


def cli(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        {
            "CLOUDFILM_DATA_DIR": str(tmp_path / "data"),
            "CLOUDFILM_DATABASE_URL": database_url,
            "CLOUDFILM_CONFIG": str(tmp_path / "none.toml"),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "cloudfilm.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.engines("sqlite")  # the CLI's import, one ingest path tested on both
def test_import_folders_and_zips_with_summary(tmp_path: Path, database_url: str) -> None:
    src = tmp_path / "src"
    (src / "nested" / "deeper").mkdir(parents=True)
    good = [make_instance(patient_id=f"P{i}") for i in range(3)]
    (src / "a.dcm").write_bytes(good[0])
    (src / "nested" / "deeper" / "IM0001").write_bytes(good[1])  # no extension, as on CDs
    (src / "nested" / "notes.txt").write_text("not dicom")
    ds = make_dataset()
    del ds.SOPInstanceUID
    (src / "nested" / "broken.dcm").write_bytes(to_bytes(ds))
    with zipfile.ZipFile(tmp_path / "cd.zip", "w") as zf:
        zf.writestr("DICOM/IM1", good[2])
        zf.writestr("DICOM/IM2", good[0])  # a duplicate of a.dcm
    proc = cli(tmp_path, database_url, "import", str(src), str(tmp_path / "cd.zip"))
    assert proc.returncode == 1, proc.stdout + proc.stderr  # something was rejected
    out = proc.stdout
    assert "accepted 3, duplicate 1" in out
    assert "rejected 2" in out
    assert "notes.txt" in out and "not a DICOM" in out
    assert "broken.dcm" in out and "missing SOPInstanceUID" in out
    db = Database(database_url)
    with db.read() as s:
        assert s.execute(select(func.count()).select_from(Instance)).scalar_one() == 3
    db.dispose()
    # importing only good files exits 0
    proc = cli(tmp_path, database_url, "import", str(src / "a.dcm"))
    assert proc.returncode == 0
    assert "accepted 0, duplicate 1" in proc.stdout


def test_db_upgrade_is_idempotent(tmp_path: Path, database_url: str) -> None:
    for _ in range(2):
        proc = cli(tmp_path, database_url, "db", "upgrade")
        assert proc.returncode == 0, proc.stderr
    db = Database(database_url)
    with db.read() as s:
        assert s.execute(select(func.count()).select_from(Instance)).scalar_one() == 0
    db.dispose()


def test_audit_verify_detects_an_edited_record(tmp_path: Path, database_url: str) -> None:
    from cloudfilm.access import Action, Principal
    from cloudfilm.archive import Archive
    from cloudfilm.config import Settings

    archive = Archive(Settings(data_dir=tmp_path / "data", database_url=database_url))
    p = Principal(kind="ae", id="X@127.0.0.1", scopes=frozenset({"read"}), hospital=1)
    for i in range(5):
        archive.authorize(p, Action.READ, f"1.2.3.{i}")
    archive.close()
    proc = cli(tmp_path, database_url, "audit", "verify")
    assert proc.returncode == 0 and '"records": 5' in proc.stdout
    db = Database(database_url)
    with db.write() as s:
        s.execute(update(AuditEvent).where(AuditEvent.pk == 3).values(resource="1.2.3.999"))
    proc = cli(tmp_path, database_url, "audit", "verify")
    assert proc.returncode == 1 and "record 3" in proc.stdout
    with db.write() as s:
        s.execute(update(AuditEvent).where(AuditEvent.pk == 3).values(resource="1.2.3.2"))
        s.execute(AuditEvent.__table__.delete().where(AuditEvent.pk == 4))
    db.dispose()
    proc = cli(tmp_path, database_url, "audit", "verify")
    assert proc.returncode == 1 and "record 5" in proc.stdout

"""Retention, legal holds, deletion after approval, and the cold tier (keeping/retention.py,
deletion.py, tiering.py), on SQLite and PostgreSQL, against real servers where it matters.

What a hospital would notice: exactly the expired studies are listed (a held one never),
nothing goes before an admin approves it, a deleted study leaves tombstones and an audit
record and nothing else (no blobs, no QIDO answer), the same instance sent again is stored
anew — also through a server whose processes had it cached — recovery does not bring a
deleted blob back, and a study on the cold tier still opens through DICOMweb.
"""

from __future__ import annotations

import io
import time
from datetime import date
from pathlib import Path

import httpx
import pydicom
import pytest
from sqlalchemy import select

from cloudfilm.access.tokens import create_token
from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.keeping.deletion import delete_approved, delete_study, finish_blobs
from cloudfilm.keeping.models import Deletion, Tombstone
from cloudfilm.keeping.retention import approve, normalize_class, place_hold, scan, set_rule
from cloudfilm.keeping.tiering import cold_storage_class, run_lifecycle, storage_class_of
from cloudfilm.portal.reports import ReportFields, save_report
from cloudfilm.storage.database import Database
from cloudfilm.storage.models import AuditEvent, Instance, Series, Study
from cloudfilm.storage.query import Query, run_query
from tests.conftest import ServerProcess
from tests.dicomweb.conftest import stow
from tests.factory import make_dataset, to_bytes
from tests.test_blobs import s3_endpoint  # noqa: F401  (moto's S3 server, a fixture)

TODAY = date(2026, 12, 3)


def _study(archive: Archive, *, patient: str, years: int, modality: str = "CT", n: int = 2,
           inpatient: bool = False) -> tuple[str, list[bytes]]:  # fmt: skip
    """A study of ``n`` instances whose Study Date is ``years`` (and a day) ago."""
    uid = pydicom.uid.generate_uid()
    series = pydicom.uid.generate_uid()
    date_ = f"{TODAY.year - years}{TODAY:%m}{TODAY.day - 1:02d}"
    data = []
    for i in range(n):
        ds = make_dataset(
            patient_id=patient, study_uid=uid, series_uid=series, modality=modality,
            study_date=date_, instance_number=i + 1, accession=f"ACC-{uid[-6:]}",
        )  # fmt: skip
        if inpatient:
            ds.AdmissionID = "ZY2026-001"  # 住院号: an admitted patient
        raw = to_bytes(ds)
        assert archive.ingest(raw, hospital=1).outcome == "stored"
        data.append(raw)
    return uid, data


def _qido(archive: Archive, uid: str) -> list[dict]:
    with archive.db.read() as session:
        return run_query(session, Query(level="STUDY", keys={"StudyInstanceUID": uid})).rows


def _keys(archive: Archive, uid: str) -> list[str]:
    with archive.db.read() as session:
        return list(
            session.execute(
                select(Instance.blob_key)
                .join(Series, Instance.series_pk == Series.pk)
                .join(Study, Series.study_pk == Study.pk)
                .where(Study.study_uid == uid)
            ).scalars()
        )


def test_patient_classes_from_reports_hl7_codes_and_chinese() -> None:
    assert normalize_class("I") == "inpatient"
    assert normalize_class("住院") == "inpatient"
    assert normalize_class("门诊") == "outpatient"
    assert normalize_class("e") == "emergency"
    assert normalize_class("体检") == "checkup"
    assert normalize_class("N") == "" and normalize_class(None) == ""


def test_exactly_the_expired_studies_are_listed_and_nothing_goes_before_approval(
    archive: Archive,
) -> None:
    inpatient_old, _ = _study(archive, patient="IN1", years=31, inpatient=True)
    inpatient_young, _ = _study(archive, patient="IN2", years=29, inpatient=True)
    outpatient_old, _ = _study(archive, patient="OUT1", years=16)
    unknown_old, _ = _study(archive, patient="UNK1", years=16)  # no class: the longest rule
    held_study, _ = _study(archive, patient="OUT2", years=20)
    held_patient, _ = _study(archive, patient="OUT3", years=20)
    mammo, _ = _study(archive, patient="OUT4", years=20, modality="MG")
    for uid in (outpatient_old, held_study, held_patient, mammo):  # the RIS says outpatient
        save_report(
            archive, ReportFields(study_uid=uid, findings="未见异常", patient_class="门诊"),
            source="json", hospital=1,
        )  # fmt: skip
    set_rule(archive, 1, "outpatient", "MG", 40)  # this hospital keeps mammograms 40 years
    place_hold(archive, 1, by="legal", reason="lawsuit 2026-17", study_uid=held_study)
    place_hold(archive, 1, by="legal", reason="lawsuit 2026-18", patient_id="OUT3")

    listed = scan(archive, 1, today=TODAY)
    assert {d.study_uid for d in listed} == {inpatient_old, outpatient_old}
    assert {d.status for d in listed} == {"listed"}
    everything = (inpatient_old, inpatient_young, outpatient_old, unknown_old, held_study,
                  held_patient, mammo)  # fmt: skip
    # listing deletes nothing, and neither does a delete run without approval
    report = delete_approved(archive, 1, by="admin:wang", today=TODAY, grace=0)
    assert report.deleted == []
    for uid in everything:
        assert _qido(archive, uid), uid
        assert all(archive.blobs.exists(k) for k in _keys(archive, uid))
    with archive.db.read() as session:
        assert session.execute(select(Tombstone)).first() is None


def test_deleted_study_leaves_tombstones_audit_and_no_blobs_and_is_stored_anew(
    archive: Archive,
) -> None:
    gone, data = _study(archive, patient="IN9", years=31, inpatient=True, n=3)
    later_held, _ = _study(archive, patient="IN8", years=31, inpatient=True)
    keys = _keys(archive, gone)
    sops = {pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID for d in data}
    scan(archive, 1, today=TODAY)
    assert approve(archive, 1, [gone, later_held], by="admin:wang") == 2
    place_hold(archive, 1, by="legal", reason="held after approval", study_uid=later_held)

    report = delete_approved(archive, 1, by="admin:wang", today=TODAY, grace=0)
    archive.audit.flush()
    assert report.deleted == [gone] and report.instances == 3 and report.blobs_removed == 3
    assert _qido(archive, gone) == []
    assert _qido(archive, later_held)  # the hold came after the approval: still kept
    assert not any(archive.blobs.exists(k) for k in keys)
    with archive.db.read() as session:
        stones = list(
            session.execute(select(Tombstone).where(Tombstone.study_uid == gone)).scalars()
        )
        statuses = dict(session.execute(select(Deletion.study_uid, Deletion.status)).all())
        audit = list(
            session.execute(
                select(AuditEvent).where(AuditEvent.resource == gone, AuditEvent.action == "delete")
            ).scalars()
        )
    assert {s.sop_uid for s in stones} == sops
    assert {s.deleted_by for s in stones} == {"admin:wang"}
    assert all("approved by admin:wang" in s.reason and s.sha256 for s in stones)
    assert all(s.blob_key == "" for s in stones)  # their blobs are gone
    assert statuses == {gone: "deleted", later_held: "withdrawn"}
    assert len(audit) == 1 and audit[0].principal == "admin:wang"

    again = archive.ingest(data[0], hospital=1)  # the modality sends it once more
    assert again.outcome == "stored"
    rows = _qido(archive, gone)
    assert len(rows) == 1 and rows[0]["NumberOfStudyRelatedInstances"] == 1
    assert all(archive.blobs.exists(k) for k in _keys(archive, gone))


def test_a_process_with_the_deleted_series_cached_stores_the_resent_instance_anew(
    archive: Archive, settings: Settings
) -> None:
    """``archive`` (a DICOM worker, say) has the series' pks cached; another process deletes
    the study; the instance sent again at once must make a new study, not vanish into the
    deleted series' pk (which SQLite may give to the next new series)."""
    uid, data = _study(archive, patient="IN6", years=31, inpatient=True, n=1)
    series_uid = pydicom.dcmread(io.BytesIO(data[0])).SeriesInstanceUID
    assert series_uid in archive.series_pks
    other = Archive(settings)
    try:
        assert delete_study(other, 1, uid, by="admin:qian", reason="test") == 1
        newcomer, _ = _study(other, patient="NEW1", years=1, n=1)  # may take the freed pk
    finally:
        other.close()
    assert archive.ingest(data[0], hospital=1).outcome == "stored"
    rows = _qido(archive, uid)
    assert len(rows) == 1 and rows[0]["NumberOfStudyRelatedInstances"] == 1
    assert _qido(archive, newcomer)[0]["NumberOfStudyRelatedInstances"] == 1


def test_recovery_does_not_bring_back_a_deleted_blob(archive: Archive) -> None:
    gone, _ = _study(archive, patient="IN7", years=31, inpatient=True)
    keys = _keys(archive, gone)
    # the index commit happened, the blobs' removal did not (a crash in between)
    assert delete_study(archive, 1, gone, by="admin:li", reason="test") == 2
    assert all(archive.blobs.exists(k) for k in keys)
    assert archive.recover() == 0
    assert _qido(archive, gone) == []
    assert not any(archive.blobs.exists(k) for k in keys)
    finish_blobs(archive)  # the tombstones are settled: nothing is left to do
    assert finish_blobs(archive) == 0
    with archive.db.read() as session:
        names = session.execute(select(Tombstone.blob_key).where(Tombstone.study_uid == gone))
        assert set(names.scalars()) == {""}


@pytest.mark.engines("postgresql")  # storage tiers through serve; the index side is tested on both
def test_deleted_sop_sent_again_through_serve_is_stored_anew(
    tmp_path: Path, database_url: str
) -> None:
    """Two HTTP processes had the study's rows cached; the deletion is done by another
    process (the command line); the re-sent instances must land in a new study, not in
    the deleted series or one whose pk SQLite gave again."""
    server = ServerProcess(
        data_dir=tmp_path / "data", database_url=database_url,
        env_extra={"CLOUDFILM_HTTP_WORKERS": "2"},
    )  # fmt: skip
    server.start()
    try:
        db = Database(database_url)
        _info, token = create_token(db, "t", "read,write", hospital=1)
        db.dispose()
        uid, series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        data = [
            to_bytes(make_dataset(study_uid=uid, series_uid=series, instance_number=i + 1,
                                  study_date="19900102", patient_id="OLD1", fill=i))
            for i in range(3)
        ]  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.http_url, headers=headers, timeout=60) as http:
            assert stow(http, data).status_code == 200
            for _ in range(4):  # both processes read (and cache) its rows
                assert http.get(f"/dicom-web/studies/{uid}/metadata").status_code == 200
            archive = Archive(Settings(data_dir=server.data_dir, database_url=database_url))
            try:
                scan(archive, 1, today=TODAY)
                assert approve(archive, 1, [uid], by="admin:zhao") == 1
                report = delete_approved(archive, 1, by="admin:zhao", today=TODAY)
                assert report.deleted == [uid]
            finally:
                archive.close()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # every process forgets within a second
                codes = {
                    http.get(f"/dicom-web/studies/{uid}/metadata").status_code for _ in range(4)
                }
                if codes == {404}:
                    break
                time.sleep(0.2)
            assert codes == {404}
            assert http.get("/dicom-web/studies", params={"StudyInstanceUID": uid}).json() == []
            r = stow(http, data)  # sent again at once
            assert r.status_code == 200, r.text
            found = http.get("/dicom-web/studies", params={"StudyInstanceUID": uid}).json()
            assert len(found) == 1
            assert found[0]["00201208"]["Value"] == [3]
            meta = http.get(f"/dicom-web/studies/{uid}/metadata")
            assert meta.status_code == 200 and len(meta.json()) == 3
    finally:
        server.stop()


@pytest.mark.engines("postgresql")  # storage tiers through serve; the index side is tested on both
def test_cold_folder_study_still_opens_through_dicomweb(tmp_path: Path, database_url: str) -> None:
    cold = tmp_path / "cold"
    env = {"CLOUDFILM_COLD_BLOB_URL": cold.as_uri()}
    server = ServerProcess(data_dir=tmp_path / "data", database_url=database_url, env_extra=env)
    server.start()
    try:
        db = Database(database_url)
        _info, token = create_token(db, "t", "read,write", hospital=1)
        db.dispose()
        ds = make_dataset(size=64, fill=321)
        uid, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.http_url, headers=headers, timeout=60) as http:
            assert stow(http, [to_bytes(ds)]).status_code == 200
            settings = Settings(data_dir=server.data_dir, database_url=database_url,
                                cold_blob_url=cold.as_uri())  # fmt: skip
            archive = Archive(settings)
            try:
                (key,) = _keys(archive, uid)
                report = run_lifecycle(archive, study_uids=[uid])
                assert report.studies == [uid] and report.blobs_moved == 1
                with archive.db.read() as session:
                    tier = session.execute(select(Study.tier).where(Study.study_uid == uid))
                    assert tier.scalar() == "cold"
            finally:
                archive.close()
            assert not (server.data_dir / "blobs" / key).exists()
            assert (cold / key).is_file()
            meta = http.get(f"/dicom-web/studies/{uid}/metadata")
            assert meta.status_code == 200 and meta.json()[0]["00080018"]["Value"] == [sop]
            frame = http.get(
                f"/dicom-web/studies/{uid}/series/{series}/instances/{sop}/frames/1",
                headers={"Accept": 'multipart/related; type="application/octet-stream"'},
            )
            assert frame.status_code == 200
            assert ds.PixelData in frame.content
            whole = http.get(
                f"/dicom-web/studies/{uid}/series/{series}/instances/{sop}",
                headers={"Accept": 'multipart/related; type="application/dicom"'},
            )
            assert whole.status_code == 200 and to_bytes(ds) in whole.content
    finally:
        server.stop()


@pytest.mark.engines("postgresql")  # storage tiers through serve; the index side is tested on both
def test_serve_moves_old_studies_to_the_cold_folder_by_itself(
    tmp_path: Path, database_url: str
) -> None:
    cold = tmp_path / "cold"
    env = {
        "CLOUDFILM_COLD_BLOB_URL": cold.as_uri(),
        "CLOUDFILM_COLD_AFTER_DAYS": str(2 / 86400),  # two seconds, for the test
        "CLOUDFILM_TIER_INTERVAL_SECONDS": "0.5",
    }
    server = ServerProcess(data_dir=tmp_path / "data", database_url=database_url, env_extra=env)
    server.start()
    try:
        db = Database(database_url)
        _info, token = create_token(db, "t", "read,write", hospital=1)
        db.dispose()
        ds = make_dataset(size=32, fill=9)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.http_url, headers=headers, timeout=60) as http:
            assert stow(http, [to_bytes(ds)]).status_code == 200
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not list(cold.rglob("*.dcm")):
                time.sleep(0.2)
            assert len(list(cold.rglob("*.dcm"))) == 1
            assert not list((server.data_dir / "blobs" / "instances").rglob("*.dcm"))
            url = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            frame = http.get(
                f"{url}/instances/{ds.SOPInstanceUID}/frames/1",
                headers={"Accept": 'multipart/related; type="application/octet-stream"'},
            )
            assert frame.status_code == 200 and ds.PixelData in frame.content
    finally:
        server.stop()


@pytest.mark.engines("postgresql")  # storage tiers through serve; the index side is tested on both
def test_s3_cold_tier_is_a_storage_class_and_still_opens(
    tmp_path: Path,
    database_url: str,
    s3_endpoint: str,  # noqa: F811
) -> None:
    bucket = f"s3://cold-{int(time.time() * 1000) % 10**9}/hospital-a"
    s3 = {
        "CLOUDFILM_BLOB_URL": bucket, "CLOUDFILM_S3_ENDPOINT_URL": s3_endpoint,
        "CLOUDFILM_S3_ACCESS_KEY_ID": "test", "CLOUDFILM_S3_SECRET_ACCESS_KEY": "test",
    }  # fmt: skip
    server = ServerProcess(data_dir=tmp_path / "data", database_url=database_url, env_extra=s3)
    server.start()
    try:
        db = Database(database_url)
        _info, token = create_token(db, "t", "read,write", hospital=1)
        db.dispose()
        ds = make_dataset(size=64, fill=77)
        uid, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.http_url, headers=headers, timeout=60) as http:
            assert stow(http, [to_bytes(ds)]).status_code == 200
            archive = Archive(
                Settings(
                    data_dir=server.data_dir,
                    database_url=database_url,
                    blob_url=bucket,
                    s3_endpoint_url=s3_endpoint,
                    s3_access_key_id="test",
                    s3_secret_access_key="test",
                )
            )
            try:
                (key,) = _keys(archive, uid)
                assert storage_class_of(archive.blobs, key) == "STANDARD"
                report = run_lifecycle(archive, study_uids=[uid])
                assert report.blobs_moved == 1
                assert storage_class_of(archive.blobs, key) == "GLACIER_IR"
                assert archive.blobs.get(key) == to_bytes(ds)  # the same bytes, same key
            finally:
                archive.close()
            meta = http.get(f"/dicom-web/studies/{uid}/metadata")
            assert meta.status_code == 200
            frame = http.get(
                f"/dicom-web/studies/{uid}/series/{series}/instances/{sop}/frames/1",
                headers={"Accept": 'multipart/related; type="application/octet-stream"'},
            )
            assert frame.status_code == 200 and ds.PixelData in frame.content
    finally:
        server.stop()


def test_storage_classes_that_need_a_restore_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="restore"):
        cold_storage_class(Settings(data_dir=tmp_path, cold_storage_class="DEEP_ARCHIVE"))
    assert cold_storage_class(Settings(data_dir=tmp_path, cold_storage_class="standard_ia")) == (
        "STANDARD_IA"
    )


def test_cli_list_approve_delete(tmp_path: Path, database_url: str) -> None:
    """The command line an admin uses: list shows it, approve records who, delete removes."""
    import os
    import subprocess
    import sys

    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, database_url=database_url)
    archive = Archive(settings)
    try:
        uid, _ = _study(archive, patient="CLI1", years=40, inpatient=True)
        kept, _ = _study(archive, patient="CLI2", years=1, inpatient=True)
    finally:
        archive.close()
    env = dict(os.environ, CLOUDFILM_DATA_DIR=str(data_dir), CLOUDFILM_DATABASE_URL=database_url,
               CLOUDFILM_CONFIG=str(tmp_path / "none.toml"))  # fmt: skip

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "cloudfilm.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = run("retention", "list")
    assert uid in listed and kept not in listed and "listed" in listed
    assert "approved 1" in run("retention", "approve", "--by", "admin:sun", uid)
    assert "deleted 1 stud" in run("retention", "delete", "--by", "admin:sun")
    archive = Archive(settings)
    try:
        assert _qido(archive, uid) == [] and _qido(archive, kept)
    finally:
        archive.close()

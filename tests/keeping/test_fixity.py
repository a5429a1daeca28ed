"""Fixity: a damaged or missing blob is found by re-reading it, raised as an alarm (log, metric,
the fixity events table and console page, the audit trail) and repaired from the replica.

The archive runs on SQLite and PostgreSQL; blobs are real files that the tests damage the way
disks and people do (a flipped byte, a deleted file). The background verifier runs in a real
``cloudfilm serve`` and is seen through its console page and ``/metrics``.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydicom.uid import generate_uid
from sqlalchemy import select

from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.accounts.users import create_user
from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.http.app import create_app
from cloudfilm.keeping.fixity import PASS_KEY, PassState, verify
from cloudfilm.keeping.models import FixityEvent
from cloudfilm.keeping.replica import copy_due, queue_status
from cloudfilm.storage.models import AuditEvent, IndexState, Instance
from tests.factory import make_instance

pytestmark = pytest.mark.engines("sqlite")  # blobs re-read, not the index

PASSWORD = "Kx7-harbour-lantern"


def _store(archive: Archive, n: int, hospital: int = 1) -> list[tuple[str, str, bytes]]:
    """``n`` instances of one study: (study UID, blob key, bytes) each."""
    study, series = generate_uid(), generate_uid()
    out = []
    for i in range(n):
        data = make_instance(study_uid=study, series_uid=series, instance_number=i + 1, size=64)
        archive.ingest(data, hospital=hospital)
        with archive.db.read() as s:
            key = s.execute(
                select(Instance.blob_key).where(Instance.sha256 == hashlib.sha256(data).hexdigest())
            ).scalar_one()
        out.append((study, key, data))
    return out


def _flip(path: Path, offset: int = -10) -> None:
    """One bit of one byte near the end (in the pixels), in place: what a rotting disk does."""
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(raw)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _events(archive: Archive) -> list[FixityEvent]:
    with archive.db.read() as s:
        return list(s.execute(select(FixityEvent).order_by(FixityEvent.pk)).scalars())


def _audit(archive: Archive) -> list[AuditEvent]:
    archive.audit.flush()
    with archive.db.read() as s:
        query = select(AuditEvent).where(AuditEvent.action == "fixity").order_by(AuditEvent.pk)
        return list(s.execute(query).scalars())


def test_flipped_byte_is_found_and_repaired_from_the_replica(
    tmp_path: Path, database_url: str
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        replica_url=(tmp_path / "replica").as_uri(),
    )
    archive = Archive(settings)
    try:
        stored = _store(archive, 4)
        assert copy_due(archive) == (4, 0)  # the replica holds every blob
        assert queue_status(archive).waiting == 0
        study, key, original = stored[2]
        primary = settings.data_dir / "blobs" / key
        _flip(primary)
        assert primary.read_bytes() != original
        before = _sample("cloudfilm_fixity_alarms_total", outcome="repaired")

        tally = verify(archive)

        assert tally.checked == 4
        assert tally.alarms == {"repaired": 1}
        assert tally.unresolved == 0
        assert primary.read_bytes() == original  # the primary's copy is right again
        [event] = _events(archive)
        assert (event.blob_key, event.outcome, event.hospital_pk) == (key, "repaired", 1)
        assert "changed" in event.detail and hashlib.sha256(original).hexdigest() in event.detail
        [record] = _audit(archive)
        assert (record.principal, record.resource, record.outcome) == (
            "system:fixity",
            study,
            "repaired",
        )
        assert record.hospital_pk == 1 and key in record.detail
        assert _sample("cloudfilm_fixity_alarms_total", outcome="repaired") == before + 1
        assert verify(archive).alarms == {}  # nothing left to find
    finally:
        archive.close()


def test_missing_blob_without_replica_is_an_alarm_the_command_exits_1(
    tmp_path: Path, database_url: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    archive = Archive(settings)
    try:
        b = create_hospital(archive.db, "hb", "乙医院").pk
        ours = _store(archive, 3)
        theirs = _store(archive, 2, hospital=b)
        gone = theirs[0][1]
        (settings.data_dir / "blobs" / gone).unlink()
        _flip(settings.data_dir / "blobs" / ours[1][1])
    finally:
        archive.close()

    env = {
        "CLOUDFILM_DATA_DIR": str(settings.data_dir),
        "CLOUDFILM_DATABASE_URL": database_url,
        "CLOUDFILM_CONFIG": str(tmp_path / "none.toml"),
    }
    cmd = [sys.executable, "-m", "cloudfilm.cli", "verify"]
    run = subprocess.run([*cmd, "--hospital", "hb"], capture_output=True, text=True, env=env,
                         timeout=120)  # fmt: skip
    assert run.returncode == 1, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["checked"] == 2 and summary["alarms"] == {"missing": 1}  # only hb's blobs
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 1 and summary["checked"] == 5
    assert summary["alarms"] == {"missing": 1, "changed": 1}
    assert "fixity missing" in run.stderr and gone in run.stderr  # the log says which

    archive = Archive(settings)
    try:
        events = _events(archive)  # the second run went in index order: ours first
        assert [(e.blob_key, e.outcome) for e in events] == [
            (gone, "missing"), (ours[1][1], "changed"), (gone, "missing")
        ]  # fmt: skip
        assert [e.hospital_pk for e in events] == [b, 1, b]
        records = _audit(archive)
        assert [(r.resource, r.outcome, r.hospital_pk) for r in records] == [
            (theirs[0][0], "missing", b), (ours[1][0], "changed", 1), (theirs[0][0], "missing", b)
        ]  # fmt: skip
        # the console's page: each hospital's admin sees their own hospital's events only
        create_user(archive.db, username="a-admin", password=PASSWORD, role="admin", hospital=1)
        create_user(archive.db, username="b-admin", password=PASSWORD, role="admin", hospital=b)
        app = create_app(archive, background=False)
        for user, shown, hidden in (("a-admin", ours[1][1], gone), ("b-admin", gone, ours[1][1])):
            with TestClient(app) as c:
                _login(c, user)
                page = c.get("/console/admin/fixity")
                assert page.status_code == 200, page.text
                assert shown in page.text and hidden not in page.text
                assert 'href="/console/admin/fixity"' in page.text  # in the nav
    finally:
        archive.close()


def _login(c: TestClient, username: str) -> None:
    page = c.get("/")
    pre = re.search(r'name="pre" value="([^"]*)"', page.text)
    assert pre, page.text
    r = c.post(
        "/console/login",
        data={"login": username, "password": PASSWORD, "pre": pre.group(1)},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def test_background_verifier_in_serve_continues_its_pass_after_a_restart(
    server_factory, tmp_path: Path, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    """A pass stopped half-way (its cursor in index_state) goes on from the cursor: a blob
    damaged before the cursor waits for the next pass, one after it is found in this one."""
    data_dir = tmp_path / "data"
    settings = Settings(data_dir=data_dir, database_url=database_url)
    archive = Archive(settings)
    try:
        stored = _store(archive, 6)
        with archive.db.read() as s:
            pks = list(s.execute(select(Instance.pk).order_by(Instance.pk)).scalars())
        PassState(started=time.time() - 60, after=pks[2], checked=3).save(archive)
    finally:
        archive.close()
    _flip(data_dir / "blobs" / stored[1][1])  # before the cursor: checked already this pass
    _flip(data_dir / "blobs" / stored[4][1])  # after it
    server = server_factory(
        data_dir=data_dir,
        env_extra={"CLOUDFILM_VERIFY_PERIOD_DAYS": "30", "CLOUDFILM_VERIFY_MBPS": "5"},
    )
    server.start()
    archive = Archive(settings)
    try:
        deadline = time.monotonic() + 60
        while not PassState.load(archive).finished:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        state = PassState.load(archive)
        assert (state.checked, state.alarms, state.after) == (6, 1, pks[-1])
        assert [(e.blob_key, e.outcome) for e in _events(archive)] == [(stored[4][1], "changed")]
        metrics = httpx.get(f"{server.http_url}/metrics", timeout=10).text
        assert 'cloudfilm_fixity_alarms_total{outcome="changed"} 1.0' in metrics
        with archive.db.read() as s:
            lease = s.get(IndexState, "keeping.fixity_lease")
            assert lease is not None and lease.value.rsplit(" ", 1)[1] != "0"
            assert s.get(IndexState, PASS_KEY) is not None
        assert "fixity changed" in server.log()
    finally:
        archive.close()

"""The image index rebuilt from the blobs alone answers QIDO-RS like the original.

The demo studies (names in GB18030, GBK and UTF-8, several modalities, two hospitals) are
stored, a real ``cloudfilm serve`` is asked for every study, every study's series and every
series' instances, and a few searches; the index is deleted (``index rebuild --empty``, on
SQLite and PostgreSQL) or lost altogether (a new, empty index file), rebuilt with
``cloudfilm index rebuild``, and the same server asked again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from cloudfilm.access.tokens import create_token
from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.demo import write_demo
from cloudfilm.keeping.models import LegalHold
from cloudfilm.regional.index_id import valid_index_id
from cloudfilm.regional.models import IndexChange
from cloudfilm.storage.database import Database
from cloudfilm.storage.models import Patient, Study
from tests.conftest import ServerProcess

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
SEARCHES = [
    {"PatientName": "王*"},
    {"PatientName": "wang*"},
    {"ModalitiesInStudy": "MR"},
    {"StudyDate": "20000101-20991231"},
    {"PatientID": "*1*"},
]


def _uid(item: dict[str, Any], tag: str) -> str:
    return item[tag]["Value"][0]


def _get(http: httpx.Client, url: str, **params: str) -> list[dict[str, Any]]:
    r = http.get(url, params={"includefield": "all", "limit": "1000", **params})
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 else []


def _qido(server: ServerProcess, token: str) -> dict[str, Any]:
    """Every study, series and instance the token may see, and the searches' answers."""
    answers: dict[str, Any] = {}
    with httpx.Client(
        base_url=f"{server.http_url}/dicom-web",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    ) as http:
        studies = sorted(_get(http, "/studies"), key=lambda s: _uid(s, STUDY_UID))
        answers["studies"] = studies
        for study in studies:
            s_uid = _uid(study, STUDY_UID)
            series = sorted(
                _get(http, f"/studies/{s_uid}/series"), key=lambda s: _uid(s, SERIES_UID)
            )
            answers[s_uid] = series
            for one in series:
                se_uid = _uid(one, SERIES_UID)
                found = _get(http, f"/studies/{s_uid}/series/{se_uid}/instances")
                answers[se_uid] = sorted(found, key=lambda i: _uid(i, SOP_UID))
        for params in SEARCHES:
            found = _get(http, "/studies", **params)
            answers[json.dumps(params, ensure_ascii=False)] = sorted(
                _uid(s, STUDY_UID) for s in found
            )
        answers["instances?Modality=CT"] = len(_get(http, "/instances", Modality="CT"))
    return answers


def _without_index_ids(answers: dict[str, Any]) -> dict[str, Any]:
    """The study results' private block (0009,xxxx) holds the imaging index ID."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.startswith("0009")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(answers)


def _diff(before: Any, after: Any, path: str = "") -> list[str]:
    """Where two answers differ (for the failure message)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for k in sorted(set(before) | set(after)):
            out += _diff(before.get(k), after.get(k), f"{path}/{k}")
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            d
            for i, (x, y) in enumerate(zip(before, after, strict=True))
            for d in _diff(x, y, f"{path}[{i}]")
        ]
    return [] if before == after else [f"{path}: {before!r} -> {after!r}"]


def _index_ids(answers: dict[str, Any]) -> dict[str, str]:
    out = {}
    for study in answers["studies"]:
        values = [v for k, v in study.items() if k.startswith("0009") and k != "00090010"]
        out[_uid(study, STUDY_UID)] = values[0]["Value"][0]
    return out


def _cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, **{k: v for k, v in server.env().items() if k.startswith("CLOUDFILM")})
    return subprocess.run(
        [sys.executable, "-m", "cloudfilm.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _load(tmp_path: Path, settings: Settings) -> tuple[str, int, int]:
    """The demo studies into an archive, one of them owned by a second hospital; returns an
    operator's token, hospital B's pk and how many instances B holds."""
    demo = write_demo(tmp_path / "demo", ct_slices=4, ct_size=64, include_pydicom_files=False,
                      include_codecs=False)  # fmt: skip
    archive = Archive(settings)
    try:
        b = create_hospital(archive.db, "hb", "乙医院").pk
        for n, study in enumerate(demo.studies):
            for f in study.files:
                archive.ingest(demo.path(f).read_bytes(), hospital=b if n == 1 else 1)
        token = create_token(archive.db, "ops", "read,operator", hospital=None)[1]
    finally:
        archive.close()
    return token, b, len(demo.studies[1].files)


def test_rebuilt_index_answers_qido_like_the_original(
    server_factory, tmp_path: Path, database_url: str
) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    token, b, _n = _load(tmp_path, settings)
    db = Database(database_url)
    try:
        with db.write() as s:  # a legal hold on a patient, by primary key
            held = s.execute(select(Patient).where(Patient.hospital_pk == b)).scalars().first()
            assert held is not None
            s.add(LegalHold(hospital_pk=b, patient_pk=held.pk, reason="court order"))
            held_id = held.patient_id
            last_change = s.execute(select(func.max(IndexChange.seq))).scalar_one()
    finally:
        db.dispose()
    server = server_factory()
    server.start()
    before = _qido(server, token)
    assert len(before["studies"]) >= 4 and before['{"PatientName": "王*"}']
    refused = _cli(server, "index", "rebuild", "--empty", "--yes")
    assert refused.returncode == 2 and "a serve is running" in refused.stderr
    server.stop()

    run = _cli(server, "index", "rebuild", "--empty", "--yes")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["indexed"] == result["blobs"] > 0 and result["failed"] == 0
    assert result["deleted"]["instances"] == result["indexed"]
    assert result["carried"]["studies"] == len(before["studies"])
    assert result["carried"]["holds"] == 1

    server.start()
    after = _qido(server, token)
    assert after == before, _diff(before, after)  # the index IDs too: carried by Study UID
    server.stop()
    db = Database(database_url)
    try:
        with db.read() as s:
            hold = s.execute(select(LegalHold)).scalar_one()
            patient = s.get(Patient, hold.patient_pk)
            assert patient is not None and patient.patient_id == held_id
            assert patient.hospital_pk == b
            # the feed's readers are past the old change numbers: the new ones come after
            assert s.execute(select(func.min(IndexChange.seq))).scalar_one() > last_change
    finally:
        db.dispose()


def test_lost_index_is_rebuilt_with_new_index_ids(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'a.db'}")
    token, _b, in_b = _load(tmp_path, settings)
    first = ServerProcess(data_dir=settings.data_dir, database_url=settings.database_url)
    first.start()
    try:
        before = _qido(first, token)
    finally:
        first.stop()

    # the index disk is gone: a new, empty index over the same blobs
    lost = ServerProcess(data_dir=settings.data_dir, database_url=f"sqlite:///{tmp_path / 'b.db'}",
                         dicom_port=first.dicom_port, http_port=first.http_port)  # fmt: skip
    unknown = _cli(lost, "index", "rebuild")  # hospital hb is not in the new index yet
    assert unknown.returncode == 1
    assert json.loads(unknown.stdout.strip().splitlines()[-1])["unknown_hospital_codes"] == {
        "hb": in_b
    }
    assert _cli(lost, "hospital", "add", "hb", "--name", "乙医院").returncode == 0
    run = _cli(lost, "index", "rebuild")  # idempotent: the first hospital's are there already
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["failed"] == 0 and result["already_indexed"] > 0 and result["indexed"] > 0
    db = Database(lost.database_url)
    try:
        token = create_token(db, "ops", "read,operator", hospital=None)[1]
        with db.read() as s:
            assert s.execute(select(Study.index_id)).scalars().all()
    finally:
        db.dispose()
    lost.start()
    try:
        after = _qido(lost, token)
    finally:
        lost.stop()
    assert _without_index_ids(after) == _without_index_ids(before), _diff(before, after)
    old, new = _index_ids(before), _index_ids(after)
    assert old.keys() == new.keys()
    assert all(valid_index_id(v) for v in new.values())
    assert not set(old.values()) & set(new.values())  # new IDs, never an old one again
    assert all(int(v[19:26]) > 5_000_000 for v in new.values())  # numbered apart

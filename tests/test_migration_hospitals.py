"""Upgrading an index made before hospitals existed (migration head 0006) loses nothing.

The old index is built at revision 0006 with the rows the code of that time wrote: patients,
studies, series and instances taken from real parsed instances (their blobs under the old,
owner-less keys), a report, a film, an API token and a hash-chained audit trail. After
``cloudfilm``'s upgrade everything is there, owned by hospital 1, and still works: the old token
reads the study over DICOMweb, the audit chain verifies, and a second hospital may now hold a
patient with the same Patient ID.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from cloudfilm.access import verify_chain
from cloudfilm.access.audit import GENESIS, record_hash
from cloudfilm.access.tokens import hash_token, lookup_token
from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.ingest.parse import parse_instance
from cloudfilm.storage.blobs import instance_key
from cloudfilm.storage.database import alembic_config
from tests.factory import make_instance

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
OLD_TOKEN = "cf_" + "o" * 43


def _insert(conn: sa.Connection, table: sa.Table, **values: Any) -> int:
    """Insert a row into a reflected old table, filling the NOT NULL columns the old models
    filled by default (0, '' or now). Values of columns the old table did not have yet (what
    today's parser also extracts) are left out."""
    values = {k: v for k, v in values.items() if k in table.columns}
    for col in table.columns:
        if col.name in values or col.primary_key or col.nullable:
            continue
        python = col.type.python_type
        values[col.name] = NOW if python is datetime else (0 if python in (int, bool) else "")
    return int(conn.execute(table.insert().values(**values)).inserted_primary_key[0])


def _old_index(settings: Settings) -> dict[str, str]:
    """An index at revision 0006 holding one two-instance study, written as the old code did."""
    url = settings.resolved_database_url
    command.upgrade(alembic_config(url), "0006")
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine)
    assert "hospital_pk" not in meta.tables["studies"].c, "this must be the pre-tenancy schema"
    blobs = settings.data_dir / "blobs"
    study_uid = "1.2.826.0.1.3680043.8.498.7001"
    series_uid = study_uid + ".1"
    with engine.begin() as conn:
        patient_pk = series_pk = study_pk = 0
        for n in (1, 2):
            data = make_instance(
                patient_name="Wang^XiuYing=王^秀英",
                patient_id="P-0006",
                charset="ISO_IR 192",
                study_uid=study_uid,
                series_uid=series_uid,
                sop_uid=f"{series_uid}.{n}",
                instance_number=n,
            )
            parsed = parse_instance(data)
            sha = hashlib.sha256(data).hexdigest()
            key = instance_key(sha)
            assert "." not in key.rsplit("/", 1)[1].removesuffix(".dcm"), "old key shape"
            path = blobs / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            if n == 1:
                patient_pk = _insert(conn, meta.tables["patients"], **parsed.patient)
                study_pk = _insert(
                    conn,
                    meta.tables["studies"],
                    study_uid=study_uid,
                    patient_pk=patient_pk,
                    num_series=1,
                    num_instances=2,
                    modalities="CT",
                    **parsed.study,
                )
                series_pk = _insert(
                    conn,
                    meta.tables["series"],
                    series_uid=series_uid,
                    study_pk=study_pk,
                    num_instances=2,
                    **parsed.series,
                )
            _insert(
                conn,
                meta.tables["instances"],
                sop_uid=parsed.sop_instance_uid,
                series_pk=series_pk,
                sop_class_uid=parsed.sop_class_uid,
                transfer_syntax_uid=parsed.transfer_syntax_uid,
                blob_key=key,
                size_bytes=len(data),
                sha256=sha,
                meta_json=parsed.meta_json,
                received_at=NOW,
                **parsed.instance,
            )
        _insert(
            conn,
            meta.tables["portal_reports"],
            report_id="r0006",
            study_uid=study_uid,
            accession_number="ACC001",
            patient_name="王秀英",
            impression="右肺上叶小结节",
            version=1,
            current=True,
        )
        _insert(
            conn,
            meta.tables["portal_films"],
            film_id="f0006",
            study_uid=study_uid,
            generation=1,
            token_hash="a" * 64,
            code_hash="b" * 64,
            issued_at=NOW,
        )
        _insert(
            conn,
            meta.tables["api_tokens"],
            token_id="t0006",
            name="reporting system",
            token_hash=hash_token(OLD_TOKEN),
            scopes="read,write",
        )
        prev = GENESIS
        for i in range(3):
            row: dict[str, Any] = dict(
                at=NOW,
                principal="token:t0006",
                action="read",
                resource=study_uid,
                outcome="allow",
                detail=f"old record {i}",
                client="10.0.0.1",
            )

            class _Ev:
                pass

            ev = _Ev()
            ev.__dict__.update(row)
            digest = record_hash(prev, ev)  # type: ignore[arg-type]
            _insert(conn, meta.tables["audit_events"], prev_hash=prev, hash=digest, **row)
            prev = digest
    engine.dispose()
    return {"study_uid": study_uid, "sop": f"{series_uid}.1"}


@pytest.mark.unmigrated_index
def test_an_index_from_before_hospitals_upgrades_without_losing_anything(
    settings: Settings, tmp_path: Path
) -> None:
    old = _old_index(settings)
    archive = Archive(settings)  # upgrades to head, as `cloudfilm serve` does
    try:
        with archive.db.engine.connect() as conn:
            counts = {
                t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                for t in ("patients", "studies", "series", "instances", "portal_reports",
                          "portal_films", "api_tokens", "audit_events")
            }  # fmt: skip
            owners = {
                t: set(conn.execute(sa.text(f"SELECT DISTINCT hospital_pk FROM {t}")).scalars())
                for t in ("patients", "studies", "portal_reports", "portal_films", "api_tokens",
                          "audit_events")
            }  # fmt: skip
            hospital = conn.execute(sa.text("SELECT pk, code FROM hospitals")).all()
        assert counts == {
            "patients": 1, "studies": 1, "series": 1, "instances": 2, "portal_reports": 1,
            "portal_films": 1, "api_tokens": 1, "audit_events": 3,
        }  # fmt: skip
        assert hospital == [(1, "default")]
        assert all(v == {1} for v in owners.values()), owners
        ok, records, message = verify_chain(archive.db)
        assert ok and records == 3, message
        info = lookup_token(archive.db, OLD_TOKEN)
        assert info is not None and info.hospital == 1

        from cloudfilm.http.app import create_app

        with TestClient(create_app(archive, background=False)) as client:
            auth = {"Authorization": f"Bearer {OLD_TOKEN}"}
            found = client.get("/dicom-web/studies", params={"PatientName": "王*"}, headers=auth)
            assert found.status_code == 200
            assert [s["0020000D"]["Value"][0] for s in found.json()] == [old["study_uid"]]
            frame = client.get(
                f"/dicom-web/studies/{old['study_uid']}/series/{old['study_uid']}.1/instances/"
                f"{old['sop']}/frames/1",
                headers={**auth, "Accept": "multipart/related; type=application/octet-stream"},
            )
            assert frame.status_code == 200, "the old blob under its old key is still read"

        # Patient IDs are per hospital now: the same ID at a second hospital is another patient
        second = create_hospital(archive.db, "H2", "第二医院")
        archive.ingest(
            make_instance(patient_id="P-0006", patient_name="Li^Na=李^娜", charset="ISO_IR 192"),
            hospital=second.pk,
        )
        with archive.db.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT hospital_pk, name FROM patients WHERE patient_id = 'P-0006'")
            ).all()
        assert sorted(rows) == [(1, "Wang^XiuYing=王^秀英"), (second.pk, "Li^Na=李^娜")]
    finally:
        archive.close()

"""Fill an index with many synthetic rows quickly (for "does it slow down as it grows").

Rows go straight into the index tables (no blobs behind them): this measures the index, which
is what grows; the C-STORE path that is then timed is the real one.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from cloudfilm.storage.database import Database
from cloudfilm.storage.models import Instance, Patient, Series, Study

SURNAMES = ["Wang^", "Li^", "Zhang^", "Liu^", "Chen^", "Yang^", "Zhao^", "Huang^", "Zhou^", "Wu^"]
IDEO = ["王^", "李^", "张^", "刘^", "陈^", "杨^", "赵^", "黄^", "周^", "吴^"]


def fill_index(
    database_url: str, *, studies: int, instances_per_study: int, seed: int = 1
) -> dict[str, int]:
    db = Database(database_url)
    db.upgrade()
    rng = random.Random(seed)
    # an index of instances received yesterday, as a real one is: rows younger than the report
    # scanner's 30 s lag would be re-scanned by every film pass, which no real index sees
    now = datetime.now(UTC) - timedelta(days=1)
    patients = max(1, studies // 3)
    batch = 5000
    with db.engine.begin() as conn:
        rows = []
        for p in range(patients):
            i = rng.randrange(len(SURNAMES))
            given = f"Fill{p}"
            rows.append(
                {
                    "pk": p + 1,
                    "hospital_pk": 1,
                    "patient_id": f"FILL{p:07d}",
                    "issuer": "",
                    "name": f"{SURNAMES[i]}{given}={IDEO[i]}{given}",
                    "name_alphabetic": f"{SURNAMES[i]}{given}",
                    "name_ideographic": f"{IDEO[i]}{given}",
                    "name_phonetic": "",
                    "birth_date": f"19{rng.randrange(30, 99)}0101",
                    "sex": rng.choice("MF"),
                    "created_at": now,
                }
            )
        _chunks(conn, Patient, rows, batch)
        st_rows, se_rows, in_rows = [], [], []
        inst_pk = 0
        for s in range(studies):
            mod = rng.choice(["CT", "MR", "DX", "US", "CR"])
            st_rows.append(
                {
                    "pk": s + 1,
                    "study_uid": f"2.25.9{s:09d}",
                    "hospital_pk": 1,
                    "patient_pk": (s % patients) + 1,
                    "study_date": f"20{rng.randrange(10, 26)}{rng.randrange(1, 13):02d}"
                    f"{rng.randrange(1, 29):02d}",
                    "study_time": "101010",
                    "accession_number": f"FA{s:08d}",
                    "study_id": str(s),
                    "description": "synthetic",
                    "referring_physician": "",
                    "institution_name": "",
                    "modalities": mod,
                    "num_series": 1,
                    "num_instances": instances_per_study,
                    "size_bytes": 0,
                    "created_at": now,
                    "last_instance_at": now,
                }
            )
            se_rows.append(
                {
                    "pk": s + 1,
                    "series_uid": f"2.25.8{s:09d}",
                    "study_pk": s + 1,
                    "modality": mod,
                    "series_number": 1,
                    "description": "",
                    "body_part": "CHEST",
                    "series_date": "",
                    "series_time": "",
                    "num_instances": instances_per_study,
                    "size_bytes": 0,
                    "created_at": now,
                }
            )
            for k in range(instances_per_study):
                inst_pk += 1
                in_rows.append(
                    {
                        "pk": inst_pk,
                        "sop_uid": f"2.25.7{s:09d}{k:04d}",
                        "series_pk": s + 1,
                        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                        "instance_number": k + 1,
                        "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                        "rows": 512,
                        "columns": 512,
                        "number_of_frames": None,
                        "pixel_data_offset": None,
                        "pixel_data_length": None,
                        "blob_key": f"fill/{inst_pk}",
                        "size_bytes": 0,
                        "sha256": "0" * 64,
                        "meta_json": "{}",
                        "received_at": now,
                    }
                )
            if len(in_rows) >= batch:
                _chunks(conn, Study, st_rows, batch)
                _chunks(conn, Series, se_rows, batch)
                _chunks(conn, Instance, in_rows, batch)
                st_rows, se_rows, in_rows = [], [], []
        _chunks(conn, Study, st_rows, batch)
        _chunks(conn, Series, se_rows, batch)
        _chunks(conn, Instance, in_rows, batch)
    if not db.is_sqlite:
        with db.engine.begin() as conn:
            for table in ("patients", "studies", "series", "instances"):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'), "
                    f"(SELECT max(pk) FROM {table}))"
                )
                conn.exec_driver_sql(f"ANALYZE {table}")
    db.dispose()
    return {"patients": patients, "studies": studies, "instances": inst_pk}


def _chunks(conn, model, rows, size):  # type: ignore[no-untyped-def]
    for i in range(0, len(rows), size):
        part = rows[i : i + size]
        if part:
            conn.execute(insert(model), part)

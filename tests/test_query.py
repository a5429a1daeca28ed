"""The shared C-FIND/QIDO matching engine on a large index: both plans give the same pages."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.fill import fill_index
from sqlalchemy import select

from cloudfilm.storage.database import Database
from cloudfilm.storage.models import Patient
from cloudfilm.storage.query import Query, _walk_in_date_order, build_select, run_query


@pytest.fixture(scope="module")
def big_index(tmp_path_factory: pytest.TempPathFactory) -> Database:
    url = f"sqlite:///{tmp_path_factory.mktemp('q') / 'index.sqlite3'}"
    fill_index(url, studies=20000, instances_per_study=1)
    return Database(url)


def _alphabetic(db: Database, pk: int) -> str:
    with db.read() as session:
        return session.execute(select(Patient.name_alphabetic).where(Patient.pk == pk)).scalar_one()


NAMES = {
    "Wang*": lambda db: "Wang*",  # a tenth of the patients
    "王*": lambda db: "王*",
    "wang*": lambda db: "wang*",
    "<patient 12's surname>^Fill12*": lambda db: _alphabetic(db, 13).split("^")[0] + "^Fill12*",
    "<patient 1234>*": lambda db: _alphabetic(db, 1235) + "*",
    "<patient 15, last letter ?>": lambda db: _alphabetic(db, 16)[:-1] + "?",
}


@pytest.mark.parametrize(
    ("label", "walks"),
    [
        ("Wang*", True),
        ("王*", True),
        ("wang*", True),
        ("<patient 12's surname>^Fill12*", False),  # a few dozen patients
        ("<patient 1234>*", False),
        ("<patient 15, last letter ?>", False),
    ],
)
@pytest.mark.parametrize(("limit", "offset"), [(100, 0), (10, 50), (1000, 0)])
def test_common_name_prefix_walks_in_date_order_with_the_same_answer(
    big_index: Database, label: str, walks: bool, limit: int, offset: int
) -> None:
    name = NAMES[label](big_index)
    q = Query(level="STUDY", keys={"PatientName": name}, limit=limit, offset=offset)
    with big_index.read() as session:
        if limit == 100:
            assert _walk_in_date_order(session, q) is walks
        got = run_query(session, q).rows
        stmt, _ = build_select(q, name_index=True)
        via_index = [dict(r._mapping) for r in session.execute(stmt)]
    assert got == via_index
    assert got or offset, name
    dates = [(r["StudyDate"], r["StudyTime"], r["_study_pk"]) for r in got]
    assert dates == sorted(dates, reverse=True)


def test_other_keys_keep_the_index_plan(big_index: Database) -> None:
    q = Query(
        level="STUDY", keys={"PatientName": "Wang*", "AccessionNumber": "FA00000456"}, limit=100
    )
    with big_index.read() as session:
        assert not _walk_in_date_order(session, q)


def test_postgresql_is_left_to_its_planner(tmp_path: Path, database_url: str) -> None:
    db = Database(database_url)
    db.upgrade()
    q = Query(level="STUDY", keys={"PatientName": "Wang*"}, limit=100)
    with db.read() as session:
        assert not _walk_in_date_order(session, q)  # empty SQLite index or PostgreSQL
    db.dispose()

"""Regional sharing at province scale: the similar-exam query and the index feed on PostgreSQL.

A scratch database gets (by default) 1,000,000 studies of 300,000 persons in 50 hospitals,
filled with INSERT … SELECT generate_series and COPY, not through ingest; but every row a
query reads is one the archive would have written: persons with their national ID numbers as
HMACs of the server secret (``regional_identifiers``), 1.5 patient records per person at
different hospitals linked through ``regional_links``, one series per study with its Body Part
Examined, a current report for 60% of studies, one feed change per study. Study dates spread
over the last two years.

Then, through ``regional.similar.similar_exams`` (what the HIS's API runs, a session per call
as the API opens one):

- random persons and planned exams (most answers are empty: the window is short), and
- "hits": a person and the planned exam of one of their studies of the last 10 days;

p50/p90/p99/max, the SQL time per statement summed over the run (where the time goes), and
EXPLAIN (ANALYZE, BUFFERS) of each statement of one hit. Last, the index feed
(``regional.feed.records_after``) paged through from the start: records/s.

    .venv/bin/python bench/regional.py [--studies 1000000] [--persons 300000]
        [--hospitals 50] [--queries 2000] [--keep]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from sqlalchemy import event

from bench.common import PG_ADMIN, save
from cloudfilm.regional.checksum import mod11_2
from cloudfilm.regional.identifiers import NATIONAL_ID, Identifier
from cloudfilm.regional.persons import value_key
from cloudfilm.regional.similar import parse_exam, similar_exams
from cloudfilm.storage.database import Database

SECRET = b"bench-regional-secret"
EXAMS = [
    # modality, Body Part Examined, study description, report exam name
    ("CT", "CHEST", "胸部CT平扫", "胸部CT平扫"),
    ("CT", "HEAD", "头颅CT", "颅脑CT平扫"),
    ("CT", "ABDOMEN", "上腹部CT增强", "上腹部CT增强"),
    ("CT", "", "CT Chest W/O", "胸部CT"),
    ("MR", "HEAD", "头颅MR", "头颅MR平扫"),
    ("MR", "LSPINE", "腰椎MR", "腰椎MR平扫"),
    ("MR", "KNEE", "膝关节MR", "右膝关节MR"),
    ("MR", "CSPINE", "颈椎MR", "颈椎MR平扫"),
    ("DX", "CHEST", "胸部正位", "胸部DR正位"),
    ("CR", "LSPINE", "腰椎正侧位", "腰椎DR"),
    ("DX", "KNEE", "膝关节正侧位", "膝关节DR"),
    ("US", "ABDOMEN", "腹部彩超", "肝胆胰脾彩超"),
]
PLANNED = ["胸部CT", "头颅CT", "上腹部CT", "头颅MR", "腰椎MR", "膝关节MR", "颈椎MR", "胸部DR",
           "腰椎DR", "膝关节DR"]  # fmt: skip
DAYS_SPREAD = 730


def national_id_of(person: int) -> str:
    """Person ``n``'s GB 11643 number: unique per person, valid check character."""
    born = date(1940, 1, 1) + timedelta(days=person % 25000)
    body = f"110105{born:%Y%m%d}{person // 25000:03d}"
    return body + mod11_2(body)


def sql_array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def h(expr: str, mult: int, mod: int) -> str:
    """A pseudo-random 0..mod-1 of an integer SQL expression (multiplicative hashing)."""
    return f"((({expr})::bigint * {mult}) % 4294967291 % {mod})::int"


def columns(conn: psycopg.Connection, table: str) -> dict[str, tuple[str, bool]]:
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable = 'NO' AND column_default IS NULL "
        "FROM information_schema.columns WHERE table_name = %s",
        (table,),
    ).fetchall()
    return {name: (dtype, required) for name, dtype, required in rows}


def insert_select(conn: psycopg.Connection, table: str, given: dict[str, str], source: str) -> int:
    """INSERT INTO table SELECT … FROM source; required columns not given get a neutral value
    (so columns other migrations add do not break the bench)."""
    cols = dict(given)
    for name, (dtype, required) in columns(conn, table).items():
        if required and name not in cols:
            if "char" in dtype or dtype == "text":
                cols[name] = "''"
            elif "timestamp" in dtype:
                cols[name] = "now() - interval '1 day'"
            elif dtype == "boolean":
                cols[name] = "false"
            else:
                cols[name] = "0"
    sql = f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols.values())} FROM {source}"
    return conn.execute(sql).rowcount


def fill(url: str, studies: int, persons: int, hospitals: int) -> dict[str, Any]:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    patients = persons * 3 // 2
    timings: dict[str, float] = {}
    today = "(now() AT TIME ZONE 'Asia/Shanghai')::date"
    with psycopg.connect(dsn, autocommit=True) as conn:

        def step(name: str, fn: Any) -> None:
            t = time.perf_counter()
            fn()
            timings[name] = round(time.perf_counter() - t, 1)
            print(f"  {name}: {timings[name]} s", flush=True)

        step("hospitals", lambda: insert_select(conn, "hospitals", {
            "pk": "g", "code": "'h' || lpad(g::text, 3, '0')", "name": "'第' || g || '人民医院'",
            "region_code": "'320100'", "settings_json": "'{}'", "created_at": "now()",
        }, f"generate_series(2, {hospitals}) g"))  # fmt: skip
        step("persons", lambda: insert_select(conn, "regional_persons", {
            "pk": "g", "person_id": "substr(md5(g::text), 1, 16)", "created_at": "now()",
        }, f"generate_series(1, {persons}) g"))  # fmt: skip

        def identifiers() -> None:
            buf = io.StringIO()
            for n in range(1, persons + 1):
                ident = Identifier(NATIONAL_ID, national_id_of(n))
                buf.write(f"{n}\tnational_id\t{value_key(SECRET, ident)}\t{ident.masked}\t\t"
                          f"dicom\t2026-01-01 00:00:00+00\n")  # fmt: skip
            with conn.cursor().copy(
                'COPY regional_identifiers (person_pk, kind, value_key, masked, "check", '
                "source, created_at) FROM STDIN"
            ) as copy:
                copy.write(buf.getvalue())

        step("identifiers (HMAC + COPY)", identifiers)
        person_of = f"((g - 1) % {persons}) + 1"
        hospital_of = f"1 + ((({person_of}) * 7 + ((g - 1) / {persons}) * 13) % {hospitals})"
        step("patients", lambda: insert_select(conn, "patients", {
            "pk": "g", "hospital_pk": hospital_of, "patient_id": "'P' || g", "issuer": "''",
            "name": "'Wang^P' || g || '=王^P' || g", "name_alphabetic": "'Wang^P' || g",
            "name_ideographic": "'王^P' || g", "birth_date": "'19700101'", "sex": "'F'",
            "created_at": "now()",
        }, f"generate_series(1, {patients}) g"))  # fmt: skip
        step("links", lambda: insert_select(conn, "regional_links", {
            "patient_pk": "g", "person_pk": person_of, "hospital_pk": hospital_of,
            "source": "'dicom'", "created_at": "now()",
        }, f"generate_series(1, {patients}) g"))  # fmt: skip
        k = h("g", 2654435761, len(EXAMS))
        mods, parts = sql_array([e[0] for e in EXAMS]), sql_array([e[1] for e in EXAMS])
        descs, names = sql_array([e[2] for e in EXAMS]), sql_array([e[3] for e in EXAMS])
        study_date = f"to_char({today} - {h('g', 40503, DAYS_SPREAD)}, 'YYYYMMDD')"
        source = (f"generate_series(1, {studies}) g JOIN patients p "
                  f"ON p.pk = 1 + {h('g', 2246822519, patients)}")  # fmt: skip
        step("studies", lambda: insert_select(conn, "studies", {
            "pk": "g", "study_uid": "'2.25.1' || g", "index_id": "'B' || lpad(g::text, 25, '0')",
            "hospital_pk": "p.hospital_pk", "patient_pk": "p.pk", "study_date": study_date,
            "study_time": "'101010'", "accession_number": "'A' || g",
            "description": f"({descs})[1 + {k}]", "modalities": f"({mods})[1 + {k}]",
            "num_series": "1", "num_instances": "100", "created_at": "now()",
            "last_instance_at": "now()",
        }, source))  # fmt: skip
        step("series", lambda: insert_select(conn, "series", {
            "pk": "g", "series_uid": "'2.25.2' || g", "study_pk": "g",
            "modality": f"({mods})[1 + {k}]", "series_number": "1",
            "body_part": f"({parts})[1 + {k}]", "num_instances": "100", "created_at": "now()",
        }, f"generate_series(1, {studies}) g"))  # fmt: skip
        joined = f"generate_series(1, {studies}) g JOIN studies s ON s.pk = g"
        step("reports (60%)", lambda: insert_select(conn, "portal_reports", {
            "hospital_pk": "s.hospital_pk", "report_id": "'R' || g", "study_uid": "s.study_uid",
            "modality": f"({mods})[1 + {k}]", "exam_name": f"({names})[1 + {k}]",
            "findings": "'双肺纹理清晰。'", "source": "'json'", "version": "1", "current": "true",
            "received_at": "now()",
        }, f"{joined} WHERE g % 5 < 3"))  # fmt: skip
        step("feed changes", lambda: insert_select(conn, "regional_index_changes", {
            "seq": "g", "study_pk": "g", "hospital_pk": "s.hospital_pk", "kind": "'new'",
            "at": "now() - interval '1 day'",
        }, joined))  # fmt: skip

        def finish() -> None:
            tables = ["hospitals", "regional_persons", "regional_identifiers", "patients",
                      "regional_links", "studies", "series", "portal_reports"]  # fmt: skip
            for table, pk in [*((t, "pk") for t in tables), ("regional_index_changes", "seq")]:
                conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{pk}'), "
                             f"(SELECT max({pk}) FROM {table}))")  # fmt: skip
            conn.execute("VACUUM ANALYZE")
            # the bulk load's WAL is flushed now, not by a checkpoint in the middle of the
            # timed calls (a deployment does not load a million studies before each query)
            conn.execute("CHECKPOINT")

        step("setval + VACUUM ANALYZE + CHECKPOINT", finish)
        size = conn.execute(
            "SELECT pg_size_pretty(pg_database_size(current_database()))"
        ).fetchone()
    return {"seconds": timings, "total_s": round(sum(timings.values()), 1),
            "database_size": size[0] if size else ""}  # fmt: skip


class StatementClock:
    """SQL time per statement (by its first table), from the engine's cursor events."""

    def __init__(self, db: Database) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.last: list[tuple[str, Any]] = []
        self.on = False
        self.capture = False
        event.listen(db.engine, "before_cursor_execute", self._before)
        event.listen(db.engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, params, context, executemany) -> None:  # type: ignore[no-untyped-def]
        conn.info["t0"] = time.perf_counter()
        if self.capture:
            self.last.append((statement, params))

    def _after(self, conn, cursor, statement, params, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if not self.on:
            return
        words = statement.split()
        table = words[words.index("FROM") + 1] if "FROM" in words else words[0]
        self.spent[table] += time.perf_counter() - conn.info.pop("t0", time.perf_counter())
        self.count[table] += 1


def percentiles(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    q = {f"p{p}": round(s[min(len(s) - 1, int(len(s) * p / 100))], 2) for p in (50, 90, 99)}
    return q | {"max": round(s[-1], 2), "mean": round(statistics.fmean(s), 2), "n": len(s)}


def timed_queries(db: Database, clock: StatementClock, cases: list[tuple[int, str]]) -> dict:  # type: ignore[type-arg]
    now = datetime.now(UTC)
    ms, found = [], 0
    clock.spent.clear()
    clock.count.clear()
    clock.on = True
    for person, planned in cases:
        p = parse_exam(planned)
        ident = Identifier(NATIONAL_ID, national_id_of(person))
        t = time.perf_counter()
        with db.read() as session:
            exams = similar_exams(session, SECRET, [ident], p.modality, p.regions, now)
        ms.append((time.perf_counter() - t) * 1000)
        found += bool(exams)
    clock.on = False
    total = sum(ms)
    sql = {t: {"ms_total": round(v * 1000, 1), "calls": clock.count[t],
               "share_of_wall": round(v * 1000 / total, 3)}
           for t, v in sorted(clock.spent.items(), key=lambda kv: -kv[1])}  # fmt: skip
    return percentiles(ms) | {"answers_with_exams": found, "sql_by_statement": sql}


def hit_cases(dsn: str, n: int, rng: random.Random) -> list[tuple[int, str]]:
    """(person, planned exam) of studies of the last 10 days, as their own exam names."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT l.person_pk, s.modalities, se.body_part, s.description FROM studies s "
            "JOIN regional_links l ON l.patient_pk = s.patient_pk "
            "JOIN series se ON se.study_pk = s.pk "
            "WHERE s.study_date >= to_char((now() AT TIME ZONE 'Asia/Shanghai')::date - 10, "
            "'YYYYMMDD') AND s.modalities <> 'US' ORDER BY random() LIMIT %s",
            (n,),
        ).fetchall()
    by_exam = {(e[0], e[1], e[2]): e[3] for e in EXAMS}
    return [(person, by_exam[(mod, part, desc)]) for person, mod, part, desc in rows]


def explain(db: Database, clock: StatementClock, person: int, planned: str) -> list[dict]:  # type: ignore[type-arg]
    p = parse_exam(planned)
    clock.last.clear()
    clock.capture = True
    with db.read() as session:
        similar_exams(session, SECRET, [Identifier(NATIONAL_ID, national_id_of(person))],
                      p.modality, p.regions, datetime.now(UTC))  # fmt: skip
    clock.capture = False
    statements = [(s, prm) for s, prm in clock.last if s.lstrip().upper().startswith("SELECT")]
    plans = []
    with db.engine.connect() as conn:
        for statement, params in statements:
            if statement.strip() == "SELECT 1":
                continue  # the pool's pre-ping
            rows = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params).all()
            text = "\n".join(r[0] for r in rows)
            plans.append({"statement": " ".join(statement.split())[:160], "plan": text})
    return plans


def feed_rate(db: Database) -> dict[str, Any]:
    from cloudfilm.regional.feed import records_after

    after, records, pages = 0, 0, 0
    t = time.perf_counter()
    while True:
        with db.read() as session:
            page = records_after(session, after, 1000)
        if not page:
            break
        records += len(page)
        pages += 1
        after = page[-1].seq
    seconds = time.perf_counter() - t
    return {"records": records, "pages": pages, "seconds": round(seconds, 1),
            "records_per_s": round(records / seconds) if seconds else 0}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=1_000_000)
    ap.add_argument("--persons", type=int, default=300_000)
    ap.add_argument("--hospitals", type=int, default=50)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    ap.add_argument("--no-feed", action="store_true")
    args = ap.parse_args()
    rng = random.Random(7)
    name = f"cf_bench_regional_{args.studies}"
    admin = PG_ADMIN
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    dsn = f"{base}/{name}"
    url = dsn.replace("postgresql://", "postgresql+psycopg://")
    result: dict[str, Any] = {"studies": args.studies, "persons": args.persons,
                              "hospitals": args.hospitals}  # fmt: skip
    db = Database(url)
    try:
        db.upgrade()
        print(f"filling {name}: {args.studies:,} studies, {args.persons:,} persons, "
              f"{args.hospitals} hospitals", flush=True)  # fmt: skip
        result["fill"] = fill(url, args.studies, args.persons, args.hospitals)
        print(f"  total {result['fill']['total_s']} s, {result['fill']['database_size']}")
        clock = StatementClock(db)
        random_cases = [(rng.randint(1, args.persons), rng.choice(PLANNED))
                        for _ in range(args.queries)]  # fmt: skip
        hits = hit_cases(dsn, args.queries, rng)
        timed_queries(db, clock, random_cases[:200])  # warm the pool and the caches
        for label, cases in (("random", random_cases), ("hits", hits)):
            r = timed_queries(db, clock, cases)
            result[f"similar_{label}"] = r
            print(f"similar_exams, {label} persons: p50 {r['p50']} p90 {r['p90']} "
                  f"p99 {r['p99']} max {r['max']} ms ({r['n']} calls, "
                  f"{r['answers_with_exams']} with exams)")  # fmt: skip
            for table, v in r["sql_by_statement"].items():
                print(f"    {table:<24} {v['ms_total']:>8.1f} ms in {v['calls']} statements "
                      f"({v['share_of_wall']:.0%} of the wall time)")  # fmt: skip
        person, planned = hits[0]
        result["explain"] = explain(db, clock, person, planned)
        for p in result["explain"]:
            last = p["plan"].splitlines()[-1]
            print(f"  EXPLAIN {p['statement'][:90]}…\n    {last}")
        if not args.no_feed:
            result["feed"] = feed_rate(db)
            f = result["feed"]
            print(f"index feed: {f['records']:,} records in {f['pages']} pages, {f['seconds']} s:"
                  f" {f['records_per_s']:,} records/s")  # fmt: skip
        print(f"saved {save('regional', result)}")
    finally:
        db.dispose()
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

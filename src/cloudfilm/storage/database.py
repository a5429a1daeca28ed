"""Index engine set-up: SQLite (WAL) by default, PostgreSQL at scale, one code path for both."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


class Database:
    """An engine, a session factory and the write discipline for the engine behind it.

    SQLite allows one writer at a time: write transactions start with ``BEGIN IMMEDIATE`` (so a
    reader never has to upgrade its lock half-way, which fails at once instead of waiting) and
    are serialised inside the process by a lock, so threads queue instead of spinning on
    ``database is locked``. PostgreSQL needs neither.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 60}, pool_size=16
            )
            _configure_sqlite(self.engine)
        else:
            self.engine = create_engine(url, pool_size=16, max_overflow=16, pool_pre_ping=True)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._lock_file: int | None = None
        if self.is_sqlite and path and path != ":memory:":
            self._lock_file = os.open(f"{path}.writelock", os.O_RDWR | os.O_CREAT, 0o600)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._session() as session:
            yield session

    @contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Session]:
        """A transaction that commits on success.

        ``durable=True``: committed means on disk (SQLite synchronous=FULL, PostgreSQL
        synchronous_commit on). ``durable=False`` is for rows that can be rebuilt from durable
        data — the ingest path, whose blobs are fsynced first and re-indexed by
        ``Archive.recover()`` if a power cut drops the last commits; a process crash loses
        nothing either way.
        """
        lock = self._write_lock or contextlib.nullcontext()
        with lock, self._across_processes(), self._session() as session:
            # Opening the connection with these options starts the transaction as IMMEDIATE.
            conn = session.connection(
                execution_options={"cloudfilm_immediate": True, "cloudfilm_durable": durable}
            )
            if not durable and not self.is_sqlite:
                conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def _across_processes(self) -> Iterator[None]:
        """SQLite writers in other processes (DICOM and HTTP workers) queue on a file lock.

        Left to SQLite, a writer that finds the database locked sleeps in its busy handler
        (1, 2, 5, 10 ... 100 ms) and retries: four associations on four processes stored
        slower than one. A blocking ``flock`` wakes the next writer the moment the lock is
        released. Readers never take it (WAL lets them read during a write).
        """
        if self._lock_file is None:
            yield
            return
        fcntl.flock(self._lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def upgrade(self) -> None:
        """Bring the schema to the newest Alembic revision (``cloudfilm db upgrade``).

        An index already there is recognised with one query: Alembic itself (its import, the
        revision scripts, its environment) costs about half a second, paid by every ``serve``,
        worker process and CLI command that opens the archive."""
        if self.revision() == head_revision():
            return
        from alembic import command

        command.upgrade(alembic_config(self.url), "head")

    def revision(self) -> str | None:
        """The index's Alembic revision, None for an index never migrated."""
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        return rows[0][0] if len(rows) == 1 else None

    def dispose(self) -> None:
        self.engine.dispose()
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None


_REVISION = re.compile(r'^(down_)?revision(?:: [^=]+)? = "?([^"\n]*?)"?$', re.MULTILINE)


@functools.cache
def head_revision() -> str:
    """The newest revision of the scripts in migrations/versions, read as text: the one no
    other script names as its ``down_revision`` (tests/test_migrations.py holds this to what
    Alembic computes)."""
    revisions, downs = set(), set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        for down, value in _REVISION.findall(script.read_text(encoding="utf-8")):
            (downs if down else revisions).add(value)
    heads = revisions - downs
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have one head, found {sorted(heads)}")
    return heads.pop()


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        options = conn.get_execution_options()
        if options.get("cloudfilm_immediate"):
            durable = options.get("cloudfilm_durable", True)
            conn.exec_driver_sql(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

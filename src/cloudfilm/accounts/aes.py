"""The calling AE titles each hospital registered: which hospital a DICOM association is.

The door decides the owner: an instance stored by a hospital's modality belongs to that
hospital, and that AE finds and retrieves only that hospital's studies. Two sources, in order:

1. the ``application_entities`` table (managed in the console or by ``cloudfilm ae``), where
   one AE title may be registered by two hospitals only if each names its host;
2. the static ``allowed_callers`` of the settings (each may name a hospital ``code``; none
   means the first hospital), as before hospitals existed.

When both are empty every calling AE is allowed and belongs to the first hospital (a fresh
demo install; the server warns at start).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select

from cloudfilm.accounts.hospitals import DIRECTORY, HospitalError
from cloudfilm.accounts.models import FIRST_HOSPITAL, ApplicationEntity
from cloudfilm.config import Settings
from cloudfilm.storage.database import Database
from cloudfilm.storage.models import utcnow

SERVICES = ("echo", "store", "find", "get", "move", "commit")
AE_TITLE = re.compile(r"^[\x21-\x5b\x5d-\x7e](?:[\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")
"""PS3.5 AE VR: 1-16 characters of the default repertoire, no backslash, no control codes;
leading and trailing spaces are not significant (so not allowed here)."""
RECHECK_SECONDS = 2.0
"""A change made in the console reaches every DIMSE process within this time."""


class AeError(ValueError):
    pass


@dataclass(frozen=True)
class AeInfo:
    pk: int
    hospital: int
    ae_title: str
    host: str
    services: frozenset[str]
    description: str
    active: bool


@dataclass(frozen=True)
class Caller:
    """What the archive knows of a calling AE: ``hospital`` None means unknown."""

    hospital: int | None
    services: frozenset[str]


def _info(row: ApplicationEntity) -> AeInfo:
    return AeInfo(
        pk=row.pk,
        hospital=row.hospital_pk,
        ae_title=row.ae_title,
        host=row.host,
        services=frozenset(s for s in row.services.split(",") if s),
        description=row.description,
        active=row.disabled_at is None,
    )


def parse_services(text: str | list[str]) -> frozenset[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    wanted = frozenset(s.strip().lower() for s in items if s.strip())
    unknown = wanted - set(SERVICES)
    if unknown or not wanted:
        raise AeError(f"services: choose from {', '.join(SERVICES)}")
    return wanted


def register_ae(
    db: Database,
    hospital: int,
    ae_title: str,
    *,
    host: str = "",
    services: str | list[str] = "echo,store,find,get,move,commit",
    description: str = "",
) -> AeInfo:
    title = ae_title.strip()
    if not AE_TITLE.match(title):
        raise AeError(f"AE title {ae_title!r}: 1-16 printable characters, no backslash")
    wanted = parse_services(services)
    host = host.strip()
    with db.write() as session:
        same = list(
            session.execute(
                select(ApplicationEntity).where(
                    ApplicationEntity.ae_title == title, ApplicationEntity.disabled_at.is_(None)
                )
            ).scalars()
        )
        for other in same:
            if other.host == host:
                raise AeError(f"AE title {title} is already registered for this host")
            if other.hospital_pk != hospital and (not other.host or not host):
                raise AeError(
                    f"AE title {title} is used by another hospital: both must name their host"
                )
        row = ApplicationEntity(
            hospital_pk=hospital,
            ae_title=title,
            host=host,
            services=",".join(s for s in SERVICES if s in wanted),
            description=description.strip()[:128],
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        info = _info(row)
    CALLERS.forget()
    return info


def list_aes(db: Database, *, hospital: int | None = None) -> list[AeInfo]:
    with db.read() as session:
        stmt = select(ApplicationEntity).order_by(ApplicationEntity.pk)
        if hospital is not None:
            stmt = stmt.where(ApplicationEntity.hospital_pk == hospital)
        return [_info(r) for r in session.execute(stmt).scalars()]


def disable_ae(db: Database, pk: int, *, hospital: int | None = None) -> AeInfo:
    with db.write() as session:
        row = session.get(ApplicationEntity, pk)
        if row is None or (hospital is not None and row.hospital_pk != hospital):
            raise AeError(f"no AE title with id {pk}")
        if row.disabled_at is None:
            row.disabled_at = utcnow()
        info = _info(row)
    CALLERS.forget()
    return info


class CallerDirectory:
    """Registered AE titles, kept in memory for ``RECHECK_SECONDS`` (every association asks)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: dict[str, tuple[float, list[AeInfo]]] = {}

    def forget(self) -> None:
        with self._lock:
            self._tables.clear()

    def _registered(self, db: Database) -> list[AeInfo]:
        key = str(db.engine.url)
        hit = self._tables.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < RECHECK_SECONDS:
            return hit[1]
        rows = [a for a in list_aes(db) if a.active]
        with self._lock:
            self._tables[key] = (now, rows)
        return rows

    def open_door(self, settings: Settings, db: Database) -> bool:
        """True when no AE is registered anywhere: every caller is allowed (demo installs)."""
        return not settings.allowed_callers and not self._registered(db)

    def known_title(self, settings: Settings, db: Database, ae_title: str) -> bool:
        """Whether an association from this title may be accepted at all (hosts and services
        are checked per request)."""
        title = ae_title.strip()
        if self.open_door(settings, db):
            return True
        return any(a.ae_title == title for a in self._registered(db)) or any(
            c.ae_title.strip() == title for c in settings.allowed_callers
        )

    def caller(self, settings: Settings, db: Database, ae_title: str, host: str) -> Caller:
        title = ae_title.strip()
        registered = [a for a in self._registered(db) if a.ae_title == title]
        for exact in (True, False):
            for a in registered:
                if (a.host == host) if exact else not a.host:
                    return Caller(a.hospital, a.services)
        for c in settings.allowed_callers:
            if c.ae_title.strip() == title and (c.host is None or c.host == host):
                owner = FIRST_HOSPITAL
                if c.hospital:
                    try:
                        owner = DIRECTORY.by_code(db, c.hospital).pk
                    except HospitalError:
                        return Caller(None, frozenset())
                return Caller(owner, frozenset(c.services) | {"commit"})
        if self.open_door(settings, db):
            return Caller(FIRST_HOSPITAL, frozenset(SERVICES))
        return Caller(None, frozenset())


CALLERS = CallerDirectory()

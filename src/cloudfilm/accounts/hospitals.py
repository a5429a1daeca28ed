"""Hospitals: creating and finding them, and the process's cache of their codes.

A hospital's code is part of every blob key its instances are stored under (so the owner of a
blob is known from the storage area alone), which is why a code never changes once given.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass

from sqlalchemy import select

from cloudfilm.accounts.models import FIRST_HOSPITAL, Hospital
from cloudfilm.storage.database import Database
from cloudfilm.storage.models import utcnow

CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
REGION = re.compile(r"^\d{0,12}$")


class HospitalError(ValueError):
    """Bad arguments: a malformed or taken code, an unknown hospital."""


@dataclass(frozen=True)
class HospitalInfo:
    pk: int
    code: str
    name: str
    name_latin: str
    region_code: str
    sms_signature: str
    settings: dict[str, object]
    active: bool

    @property
    def label(self) -> str:
        return f"{self.name} ({self.code})" if self.name else self.code


def _info(row: Hospital) -> HospitalInfo:
    try:
        settings = json.loads(row.settings_json or "{}")
    except ValueError:
        settings = {}
    return HospitalInfo(
        pk=row.pk,
        code=row.code,
        name=row.name,
        name_latin=row.name_latin,
        region_code=row.region_code,
        sms_signature=row.sms_signature,
        settings=settings if isinstance(settings, dict) else {},
        active=row.disabled_at is None,
    )


def create_hospital(
    db: Database,
    code: str,
    name: str,
    *,
    name_latin: str = "",
    region_code: str = "",
    sms_signature: str = "",
) -> HospitalInfo:
    code = code.strip()
    if not CODE.match(code):
        raise HospitalError(
            f"hospital code {code!r}: use 1-32 letters, digits, '-' or '_', starting with a "
            "letter or digit"
        )
    if not REGION.match(region_code.strip()):
        raise HospitalError(f"region code {region_code!r}: digits only (GB/T 2260, e.g. 320100)")
    with db.write() as session:
        taken = session.execute(select(Hospital.pk).where(Hospital.code == code)).first()
        if taken is not None:
            raise HospitalError(f"hospital code {code!r} is already used")
        row = Hospital(
            code=code,
            name=name.strip()[:128],
            name_latin=name_latin.strip()[:128],
            region_code=region_code.strip(),
            sms_signature=sms_signature.strip()[:32],
            settings_json="{}",
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        info = _info(row)
    DIRECTORY.forget()
    return info


def update_hospital(db: Database, code: str, **changes: str) -> HospitalInfo:
    """Names, region and SMS signature may change; the code may not."""
    allowed = {"name", "name_latin", "region_code", "sms_signature"}
    unknown = set(changes) - allowed
    if unknown:
        raise HospitalError(f"cannot change {', '.join(sorted(unknown))}")
    if "region_code" in changes and not REGION.match(changes["region_code"]):
        raise HospitalError("region code: digits only")
    with db.write() as session:
        row = session.execute(select(Hospital).where(Hospital.code == code)).scalar_one_or_none()
        if row is None:
            raise HospitalError(f"no hospital with code {code!r}")
        for name, value in changes.items():
            setattr(row, name, value.strip())
        info = _info(row)
    DIRECTORY.forget()
    return info


def list_hospitals(db: Database) -> list[HospitalInfo]:
    with db.read() as session:
        return [_info(r) for r in session.execute(select(Hospital).order_by(Hospital.pk)).scalars()]


class HospitalDirectory:
    """pk <-> hospital, read once per process and again after a change (hospitals are few
    and are added rarely; every ingest and every page needs the code or the name)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_url: dict[str, dict[int, HospitalInfo]] = {}

    def _table(self, db: Database) -> dict[int, HospitalInfo]:
        key = str(db.engine.url)
        table = self._by_url.get(key)
        if table is None:
            with self._lock:
                table = {h.pk: h for h in list_hospitals(db)}
                self._by_url[key] = table
        return table

    def forget(self) -> None:
        with self._lock:
            self._by_url.clear()

    def get(self, db: Database, pk: int) -> HospitalInfo:
        table = self._table(db)
        if pk not in table:
            self.forget()  # added by another process since
            table = self._table(db)
        try:
            return table[pk]
        except KeyError:
            raise HospitalError(f"no hospital with pk {pk}") from None

    def by_code(self, db: Database, code: str) -> HospitalInfo:
        for attempt in range(2):
            for h in self._table(db).values():
                if h.code == code.strip():
                    return h
            if attempt == 0:
                self.forget()
        raise HospitalError(f"no hospital with code {code!r}")

    def all(self, db: Database) -> list[HospitalInfo]:
        return sorted(self._table(db).values(), key=lambda h: h.pk)


DIRECTORY = HospitalDirectory()


def blob_tag(db: Database, hospital_pk: int) -> str:
    """The hospital part of a blob key: empty for the first hospital (as before tenancy)."""
    return "" if hospital_pk == FIRST_HOSPITAL else DIRECTORY.get(db, hospital_pk).code


def hospital_of_tag(db: Database, tag: str) -> int:
    return FIRST_HOSPITAL if not tag else DIRECTORY.by_code(db, tag).pk

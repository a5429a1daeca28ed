"""The imaging index ID: one permanent, unique ID per study, given at its first ingest.

Format (27 characters, digits and a final check character, no separators so it survives every
form and barcode)::

    RRRRRR HHHHH YYYYMMDD NNNNNNN C
    320100 00001 20261203 0000042 7

- ``RRRRRR``: the hospital's administrative division code (GB/T 2260), ``000000`` when unset;
- ``HHHHH``: the hospital's number on this platform (its primary key, zero-padded);
- ``YYYYMMDD``: the day of first ingest, China Standard Time (UTC+8);
- ``NNNNNNN``: that hospital's sequence number of the day, from 1;
- ``C``: ISO 7064 MOD 11-2 over the 26 digits (``0``-``9`` or ``X``), as on the ID card.

The ID never changes when the study changes; the sequence lives in
``regional_index_sequences`` and is taken inside the transaction that creates the study, so
two IDs are never the same (the column is unique, too).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cloudfilm.regional.checksum import mod11_2, valid_mod11_2
from cloudfilm.regional.models import IndexSequence

CHINA = timezone(timedelta(hours=8), "CST")
PATTERN = re.compile(r"^\d{26}[\dX]$")


def format_index_id(region_code: str, hospital_pk: int, day: str, sequence: int) -> str:
    region = region_code if re.fullmatch(r"\d{6}", region_code or "") else "000000"
    body = f"{region}{hospital_pk:05d}{day}{sequence:07d}"
    if len(body) != 26:
        raise ValueError(f"index ID out of range: hospital {hospital_pk}, sequence {sequence}")
    return body + mod11_2(body)


def valid_index_id(value: str) -> bool:
    return bool(PATTERN.match(value)) and valid_mod11_2(value)


def china_day(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).astimezone(CHINA).strftime("%Y%m%d")


def next_sequence(session: Session, hospital_pk: int, day: str) -> int:
    """The hospital's next number of the day (the UPDATE holds the row lock on PostgreSQL)."""
    table = IndexSequence.__table__
    bumped = session.execute(
        update(table)
        .where(table.c.hospital_pk == hospital_pk, table.c.day == day)
        .values(last=table.c.last + 1)
        .returning(table.c.last)
    ).scalar()
    if bumped is not None:
        return int(bumped)
    # The day's first: two writers inserting at once make one IntegrityError, and the ingest
    # retries its whole transaction on that (ingest.service), finding the row the next time.
    session.add(IndexSequence(hospital_pk=hospital_pk, day=day, last=1))
    session.flush()
    return 1


def new_index_id(session: Session, hospital_pk: int, when: datetime | None = None) -> str:
    from cloudfilm.accounts.models import Hospital

    region = session.execute(
        select(Hospital.region_code).where(Hospital.pk == hospital_pk)
    ).scalar()
    day = china_day(when)
    return format_index_id(region or "", hospital_pk, day, next_sequence(session, hospital_pk, day))

"""What goes first and how fast: the spool's upload order and the bandwidth schedule."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from pathlib import Path

import pytest

from cloudfilm.gateway.spool import Spool
from cloudfilm.gateway.throttle import Schedule, ScheduleError, TokenBucket


def _add(spool: Spool, study: str, series: str, n: int) -> str:
    data = f"{study}/{series}/{n}".encode() * 10
    sop = f"{study}.{series}.{n}"
    spool.add_instance(
        data,
        sha256=hashlib.sha256(data).hexdigest(),
        study_uid=study,
        series_uid=f"{study}.{series}",
        sop_uid=sop,
        source="test",
    )
    return sop


def test_a_study_goes_in_arrival_order_with_its_first_series_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=1 << 30, min_free_bytes=0)
    # a modality interleaves two series of study 1, study 2 arrives in between
    arrivals = [("1", "a", 1), ("1", "b", 1), ("2", "x", 1), ("1", "a", 2), ("1", "b", 2)]
    for a in arrivals:
        _add(spool, *a)
    spool.add_report({"accession_number": "A1"}, None, source="test")
    _add(spool, "1", "a", 3)  # arrives after the report, still belongs with its study
    batch = spool.next_batch(100, 1 << 30)
    assert [i.sop_uid for i in batch] == [
        "1.a.1", "1.a.2", "1.a.3", "1.b.1", "1.b.2", "2.x.1",
    ]  # fmt: skip
    spool.done(batch, wire_bytes=0)
    assert spool.next_batch(100, 1 << 30)[0].kind == "report"
    spool.close()


def test_the_schedule_reads_the_hospitals_clock() -> None:
    s = Schedule("08:00-18:00=50M, 22:00-06:00=paused, *=unlimited", "Asia/Shanghai")
    at = lambda h: datetime(2026, 12, 2, h, 30, tzinfo=s.zone).timestamp()  # noqa: E731
    assert s.rate(at(9)) == 50e6 / 8
    assert s.rate(at(23)) == 0 and s.rate(at(3)) == 0  # wraps midnight
    assert s.rate(at(20)) is None
    for bad in ("08:00-18:00", "25:00-26:00=1M", "8-18=1M", "*=fast"):
        with pytest.raises(ScheduleError):
            Schedule(bad)


def test_the_cap_holds_the_rate() -> None:
    bucket = TokenBucket(Schedule("*=16M"))  # 2 MB/s
    started = time.monotonic()
    for _ in range(40):
        bucket.spend(100_000)  # 4 MB
    took = time.monotonic() - started
    assert 1.7 < took < 2.6, took

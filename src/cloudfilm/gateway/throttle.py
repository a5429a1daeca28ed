"""Upload bandwidth by time of day: a hospital's link is shared with its HIS and PACS by day.

``CLOUDFILM_GATEWAY_BANDWIDTH="08:00-18:00=50M, *=unlimited"``: windows of local time (the
``timezone`` setting) with a rate in Mbit/s (``50M``, ``50``, ``2.5M``, ``800K``), ``unlimited``,
or ``paused`` (nothing is uploaded in that window). A window may wrap midnight
(``20:00-06:00``). The first window that contains the current minute wins; ``*`` is the rate
at every other time (default unlimited). The rate counts bytes on the wire (after
compression), as the link sees them.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

UNLIMITED: float | None = None
PAUSED = 0.0

_RATE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([KMG]?)(?:bit/s|bps)?$", re.I)
_WINDOW = re.compile(r"^([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})$")


class ScheduleError(ValueError):
    pass


def parse_rate(text: str) -> float | None:
    """Bytes per second (None: unlimited, 0: paused)."""
    t = text.strip().lower()
    if t in ("unlimited", "none", "off", ""):
        return UNLIMITED
    if t in ("paused", "pause", "0"):
        return PAUSED
    m = _RATE.match(text.strip())
    if not m:
        raise ScheduleError(f"not a rate: {text!r} (say 50M for 50 Mbit/s, unlimited or paused)")
    scale = {"": 1e6, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    return float(m.group(1)) * scale / 8


@dataclass(frozen=True)
class Window:
    start: int
    """Minutes after midnight."""
    end: int
    rate: float | None

    def contains(self, minute: int) -> bool:
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end  # wraps midnight


class Schedule:
    def __init__(self, spec: str = "", timezone: str = "Asia/Shanghai") -> None:
        self.zone = ZoneInfo(timezone)
        self.windows: list[Window] = []
        self.default: float | None = UNLIMITED
        for raw in filter(None, (p.strip() for p in re.split(r"[,;]", spec))):
            when, sep, rate = raw.partition("=")
            if not sep:
                raise ScheduleError(f"{raw!r}: say HH:MM-HH:MM=RATE or *=RATE")
            if when.strip() == "*":
                self.default = parse_rate(rate)
                continue
            m = _WINDOW.match(when.strip())
            if not m:
                raise ScheduleError(f"{when!r}: a window is HH:MM-HH:MM")
            h1, m1, h2, m2 = (int(g) for g in m.groups())
            if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
                raise ScheduleError(f"{when!r}: no such time")
            self.windows.append(Window(h1 * 60 + m1, h2 * 60 + m2, parse_rate(rate)))

    def rate(self, now: float | None = None) -> float | None:
        local = datetime.fromtimestamp(time.time() if now is None else now, self.zone)
        minute = local.hour * 60 + local.minute
        for w in self.windows:
            if w.contains(minute):
                return w.rate
        return self.default

    def describe(self, rate: float | None) -> str:
        if rate is None:
            return "unlimited"
        if rate == 0:
            return "paused"
        return f"{rate * 8 / 1e6:g} Mbit/s"


class TokenBucket:
    """Paces the upload's writes to the schedule's current rate (re-read every call, so a
    window that opens or closes mid-upload takes effect within a chunk)."""

    BURST_SECONDS = 0.25

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.tokens = 0.0
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def spend(self, size: int, stop: threading.Event | None = None) -> None:
        """Block until ``size`` bytes may go on the wire (a paused window blocks until it
        ends or ``stop`` is set)."""
        while True:
            rate = self.schedule.rate()
            if rate is None:
                with self.lock:
                    self.tokens, self.stamp = 0.0, time.monotonic()
                return
            if rate == 0:
                self._sleep(1.0, stop)
                if stop is not None and stop.is_set():
                    return
                continue
            with self.lock:
                now = time.monotonic()
                burst = max(rate * self.BURST_SECONDS, 64 * 1024)
                self.tokens = min(burst, self.tokens + (now - self.stamp) * rate)
                self.stamp = now
                self.tokens -= size  # may go negative: the debt is paid by waiting
                debt = -self.tokens
            if debt > 0:
                self._sleep(debt / rate, stop)
            return

    @staticmethod
    def _sleep(seconds: float, stop: threading.Event | None) -> None:
        if stop is not None:
            stop.wait(seconds)
        else:
            time.sleep(seconds)

"""The console's statistics: what a hospital (or, for operators, a region or the platform)
received and gave out per day, per modality and per hospital, as the dashboard's JSON.

The JSON is the contract of the charts (web/console/charts.ts, embedded in the page as
``<script type="application/json" id="cf-stats">``)::

    {"lang", "title",
     "totals": {studies, instances, bytes, films, views, shares, sms},
     "days": [{date, studies, instances, bytes, films, views, shares, sms}],
     "modalities": [{modality, studies, instances, bytes}],
     "groups": [{code, name, studies, instances, bytes}]}

What each figure counts (a day is a Beijing calendar day, ``YYYY-MM-DD``):

- ``studies``: studies whose first instance the archive received that day (``studies.created_at``);
  per modality, those of them with a series of that modality (a CT+PET study counts in both).
- ``instances``/``bytes``: instances received that day and their stored size
  (``instances.received_at``, ``size_bytes``), per modality by their series' modality.
- ``films``: films issued that day (``portal_films.issued_at``).
- ``sms``: films whose link SMS went out that day (``notified_at``; a film re-sent after a phone
  correction counts on the day of its last SMS).
- ``shares``: shares created that day (by the patient or at the film desk).
- ``views``: patients and share visitors who looked at a study that day, from the audit trail:
  one per (visitor, study, day) among the allowed ``read`` records of ``patient:`` and ``share:``
  principals. A viewer makes hundreds of read records (one per frame), so records are not views.

Totals are the sums of the days. Every figure is limited like every other read: the access
decision's hospital for a hospital's users; operators choose a hospital, a region or all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import ColumnElement, String, func, or_, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import GenericFunction

from cloudfilm.access import Action, Principal
from cloudfilm.accounts.hospitals import DIRECTORY, HospitalError, HospitalInfo
from cloudfilm.http.templating import BEIJING
from cloudfilm.portal.models import Film, Share
from cloudfilm.storage.models import AuditEvent, Instance, Series, Study

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

MAX_DAYS = 366
MIN_YEAR, MAX_YEAR = 1990, 2999
DEFAULT_DAYS = 30
METRICS = ("studies", "instances", "bytes", "films", "views", "shares", "sms")
CLOCK_SLACK = timedelta(hours=1)
"""``studies.last_instance_at`` is the receive time of a study's latest instance, as the
process that stored it saw it: instances received in a range belong to studies whose latest
instance came no earlier than the range's start (less this slack for processes' clocks and
commit order), which lets the index on ``last_instance_at`` skip the older studies."""
Grouping = Literal["hospital", "region"]


class StatsError(ValueError):
    """A range or scope that cannot be used."""


class beijing_day(GenericFunction[str]):
    """A stored UTC timestamp's calendar day in China Standard Time, ``YYYY-MM-DD``.

    China keeps UTC+8 all year (as ``templating.BEIJING``), so a fixed offset is exact."""

    type = String()
    name = "beijing_day"
    inherit_cache = True


@compiles(beijing_day)
def _day_sqlite(element: beijing_day, compiler: Any, **kw: Any) -> str:
    # SQLAlchemy keeps SQLite timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' text, in UTC.
    return f"strftime('%Y-%m-%d', {compiler.process(element.clauses, **kw)}, '+8 hours')"


@compiles(beijing_day, "postgresql")
def _day_pg(element: beijing_day, compiler: Any, **kw: Any) -> str:
    col = compiler.process(element.clauses, **kw)
    return f"to_char(({col} AT TIME ZONE 'UTC') + INTERVAL '8 hours', 'YYYY-MM-DD')"


@dataclass(frozen=True)
class StatsRequest:
    date_from: date
    date_to: date
    """Inclusive, Beijing calendar days."""
    hospital: int | None = None
    """Operators: only this hospital. Hospital users: ignored (always their own)."""
    region: str = ""
    """Operators: only hospitals of this administrative division (``320000`` Jiangsu takes
    every ``32xxxx``; ``320100`` Nanjing every ``3201xx``)."""
    group_by: Grouping = "hospital"
    """Operators: the ``groups`` per hospital, or per the hospitals' region codes."""

    @classmethod
    def last_days(cls, days: int = DEFAULT_DAYS, **kw: Any) -> StatsRequest:
        today = datetime.now(BEIJING).date()
        return cls(date_from=today - timedelta(days=days - 1), date_to=today, **kw)

    def bounds(self) -> tuple[datetime, datetime]:
        """[start, end) in UTC: Beijing midnight of the first day to that after the last."""
        start = datetime.combine(self.date_from, time(0), BEIJING).astimezone(UTC)
        end = datetime.combine(self.date_to + timedelta(days=1), time(0), BEIJING)
        return start, end.astimezone(UTC)


def region_prefix(code: str) -> str:
    """``320000`` → ``32``, ``320100`` → ``3201``, ``320102`` → ``320102`` (GB/T 2260: two
    digits each of province, prefecture, county; zeros mean the whole level)."""
    code = code.strip()
    while code.endswith("00"):
        code = code[:-2]
    return code


def _scope(
    archive: Archive, principal: Principal, req: StatsRequest
) -> tuple[list[HospitalInfo] | None, str]:
    """The hospitals counted (None: every hospital, no filter) and the detail to audit."""
    if req.date_from.year < MIN_YEAR or req.date_to.year > MAX_YEAR:
        raise StatsError(f"dates between {MIN_YEAR} and {MAX_YEAR}")
    if req.date_to < req.date_from:
        raise StatsError("the range ends before it starts")
    if (req.date_to - req.date_from).days + 1 > MAX_DAYS:
        raise StatsError(f"at most {MAX_DAYS} days at a time")
    if req.region and not req.region.strip().isdigit():
        raise StatsError("a region code is digits (GB/T 2260, e.g. 320100)")
    what = f"console stats {req.date_from}..{req.date_to}"
    if principal.studies is not None:
        raise StatsError("statistics are for a hospital's staff and the platform's operators")
    if principal.hospital is not None:
        return [DIRECTORY.get(archive.db, principal.hospital)], what
    if req.hospital is not None:
        try:
            chosen = [DIRECTORY.get(archive.db, req.hospital)]
        except HospitalError:
            raise StatsError(f"no hospital {req.hospital}") from None
        return chosen, f"{what} hospital {req.hospital}"
    if req.region.strip():
        prefix = region_prefix(req.region)
        chosen = [h for h in DIRECTORY.all(archive.db) if h.region_code.startswith(prefix)]
        return chosen, f"{what} region {req.region.strip()}"
    return None, what


def _in(col: Any, pks: list[int] | None, steer: bool = False) -> ColumnElement[bool]:
    """The owner condition. ``steer`` (SQLite): as ``col + 0``, which no index serves, so the
    time range's index is used. SQLite has no statistics unless ANALYZE ran, and would pick
    the hospital index (an equality) and walk every study or record the hospital ever had:
    400 ms for an empty day of a 100,000-study hospital. PostgreSQL chooses from its own."""
    if pks is None:
        return true()
    return (col + 0).in_(pks) if steer else col.in_(pks)


def hospital_stats(
    archive: Archive, principal: Principal, req: StatsRequest, *, lang: str = "zh"
) -> dict[str, Any]:
    """The dashboard's JSON for ``principal``: see the module docstring. Raises AccessDenied
    (audited) or StatsError."""
    hospitals, detail = _scope(archive, principal, req)
    decision = archive.authorize(principal, Action.QUERY, None, detail=detail)
    if decision.hospital is not None:  # the access check's limit wins over any choice
        hospitals = [DIRECTORY.get(archive.db, decision.hospital)]
    pks = [h.pk for h in hospitals] if hospitals is not None else None
    start, end = bounds = req.bounds()
    days: dict[str, dict[str, Any]] = {}
    d = req.date_from
    while d <= req.date_to:
        key = d.isoformat()
        days[key] = {"date": key, **dict.fromkeys(METRICS, 0)}
        d += timedelta(days=1)
    archive.audit.flush(timeout=5)  # views come from the trail: count what was just recorded
    with archive.db.read() as session:
        steer = session.get_bind().dialect.name == "sqlite"
        recent = Study.last_instance_at >= start - CLOCK_SLACK
        owned = _in(Study.hospital_pk, pks, steer)
        created = (Study.created_at >= start) & (Study.created_at < end)
        by_modality: dict[str, dict[str, Any]] = {}
        per_hospital: dict[int, dict[str, int]] = {}

        # One pass over the studies received in the range: per day and per hospital.
        day = beijing_day(Study.created_at)
        for key, pk, n in session.execute(
            select(day, Study.hospital_pk, func.count())
            .where(owned, recent, created)
            .group_by(day, Study.hospital_pk)
        ):
            _add(days, key, studies=n)
            per_hospital.setdefault(pk, _counts())["studies"] += n
        # A study counts once per modality it holds, whatever its number of series.
        # (``IN`` a list of the range's studies: SQLite then starts from the time index
        # rather than from every series or instance.)
        in_range = select(Study.pk).where(owned, recent)
        for modality, n in session.execute(
            select(Series.modality, func.count(func.distinct(Series.study_pk)))
            .where(Series.study_pk.in_(in_range.where(created)))
            .group_by(Series.modality)
        ):
            by_modality.setdefault(modality or "", _counts(modality=modality or ""))["studies"] = n

        # One pass over the instances received in the range: per day, modality and hospital.
        received = (Instance.received_at >= start) & (Instance.received_at < end)
        day = beijing_day(Instance.received_at)
        for key, modality, pk, n, size in session.execute(
            select(
                day, Series.modality, Study.hospital_pk, func.count(), func.sum(Instance.size_bytes)
            )
            .select_from(Series)
            .join(Instance, Instance.series_pk == Series.pk)
            .join(Study, Study.pk == Series.study_pk)
            .where(Series.study_pk.in_(in_range), received)
            .group_by(day, Series.modality, Study.hospital_pk)
        ):
            size = int(size or 0)
            _add(days, key, instances=n, bytes=size)
            row = by_modality.setdefault(modality or "", _counts(modality=modality or ""))
            row["instances"] += n
            row["bytes"] += size
            row = per_hospital.setdefault(pk, _counts())
            row["instances"] += n
            row["bytes"] += size

        _count_days(session, days, "films", Film.issued_at, Film.hospital_pk, pks, bounds)
        _count_days(session, days, "sms", Film.notified_at, Film.hospital_pk, pks, bounds)
        _count_days(session, days, "shares", Share.created_at, Share.hospital_pk, pks, bounds)

        at = AuditEvent.at
        visits = (
            select(beijing_day(at).label("day"), AuditEvent.principal, AuditEvent.resource)
            .where(
                at >= start,
                at < end,
                _in(AuditEvent.hospital_pk, pks, steer),
                AuditEvent.action == str(Action.READ),
                AuditEvent.outcome == "allow",
                AuditEvent.resource != "",
                or_(AuditEvent.principal.like("patient:%"), AuditEvent.principal.like("share:%")),
            )
            .distinct()
            .subquery()
        )
        for key, n in session.execute(select(visits.c.day, func.count()).group_by(visits.c.day)):
            _add(days, key, views=n)

    day_rows = list(days.values())
    totals = {m: sum(int(r[m]) for r in day_rows) for m in METRICS}
    modalities = sorted(
        by_modality.values(), key=lambda r: (-r["studies"], -r["instances"], r["modality"])
    )
    groups = _groups(archive, principal, req, per_hospital, lang)
    return {
        "lang": "en" if lang == "en" else "zh",
        "title": _title(archive, principal, req, hospitals, lang),
        "totals": totals,
        "days": day_rows,
        "modalities": modalities,
        "groups": groups,
    }


def _counts(**extra: Any) -> dict[str, Any]:
    return {**extra, "studies": 0, "instances": 0, "bytes": 0}


def _add(days: dict[str, dict[str, Any]], key: str, **values: int) -> None:
    row = days.get(key)
    if row is None:  # a boundary instant rounded into the next day: cannot happen, but never crash
        return
    for name, value in values.items():
        row[name] += int(value or 0)


def _count_days(
    session: Any,
    days: dict[str, dict[str, Any]],
    metric: str,
    col: Any,
    owner: Any,
    pks: list[int] | None,
    bounds: tuple[datetime, datetime],
) -> None:
    start, end = bounds
    day = beijing_day(col)
    for key, n in session.execute(
        select(day, func.count()).where(col >= start, col < end, _in(owner, pks)).group_by(day)
    ):
        _add(days, key, **{metric: n})


def _groups(
    archive: Archive,
    principal: Principal,
    req: StatsRequest,
    per_hospital: dict[int, dict[str, int]],
    lang: str,
) -> list[dict[str, Any]]:
    """Operators: one row per hospital with data (or per region code); a hospital's users see
    their own figures everywhere else on the page, so none."""
    if principal.hospital is not None:
        return []
    rows: dict[str, dict[str, Any]] = {}
    for pk, counts in per_hospital.items():
        h = DIRECTORY.get(archive.db, pk)
        if req.group_by == "region":
            code = h.region_code
            name = "" if code else ("未设置地区" if lang != "en" else "No region")
        else:
            code, name = h.code, h.name
        row = rows.setdefault(code, {"code": code, "name": name, **_counts()})
        for metric in ("studies", "instances", "bytes"):
            row[metric] += counts[metric]
    return sorted(rows.values(), key=lambda r: (-r["studies"], -r["instances"], r["code"]))


def _title(
    archive: Archive,
    principal: Principal,
    req: StatsRequest,
    hospitals: list[HospitalInfo] | None,
    lang: str,
) -> str:
    en = lang == "en"
    if principal.hospital is not None or req.hospital is not None:
        assert hospitals
        who = hospitals[0].name or hospitals[0].code
    elif req.region.strip():
        who = f"Region {req.region.strip()}" if en else f"地区 {req.region.strip()}"
    else:
        who = "All hospitals" if en else "全部医院"
    return f"{who} · {req.date_from.isoformat()} – {req.date_to.isoformat()}"

"""Audit search: a hospital's admin finds their hospital's records by time, principal, study,
action and outcome, newest first, page after page; never another hospital's; operators any."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cloudfilm.access import AccessDenied, Action
from cloudfilm.console.audit_search import (
    AuditFilter,
    AuditSearchError,
    parse_local,
    search_audit,
)
from tests.console_data.conftest import World, patient


def search(world: World, who: str, **kw: object) -> list[tuple[str, str, str, str]]:
    page = search_audit(world.archive, world.principal(who), AuditFilter(**kw), page_size=500)  # type: ignore[arg-type]
    return [(r.principal, r.action, r.resource, r.outcome) for r in page.rows]


@pytest.fixture
def trail(world: World) -> World:
    """Reads of A's and B's studies by staff, a patient, and a refused attempt."""
    a1, b1 = world.studies["a1"].uid, world.studies["b1"].uid
    archive = world.archive
    archive.authorize(world.principal("a-doc"), Action.READ, a1, detail="viewer")
    archive.authorize(patient("FA1", a1), Action.READ, a1)
    archive.authorize(world.principal("b-admin"), Action.READ, b1, detail="viewer")
    with pytest.raises(AccessDenied):
        archive.authorize(world.principal("a-doc"), Action.READ, b1, detail="probe")
    archive.audit.flush()
    return world


def test_a_hospital_admin_sees_only_their_hospitals_records(trail: World) -> None:
    a1, b1 = trail.studies["a1"].uid, trail.studies["b1"].uid
    mine = search(trail, "a-admin")
    assert ("user:a-doc", "read", a1, "allow") in mine
    assert ("patient:FA1", "read", a1, "allow") in mine
    assert not [r for r in mine if b1 in r], "B's study is B's record, even A's user's probe"
    assert search(trail, "a-admin", study_uid=b1) == []
    assert search(trail, "a-admin", hospital=trail.b, study_uid=b1) == [], "no widening"
    theirs = search(trail, "b-admin", study_uid=b1)
    assert ("user:a-doc", "read", b1, "deny") in theirs, "B sees who probed its study"
    assert ("user:b-admin", "read", b1, "allow") in theirs
    assert not [r for r in search(trail, "b-admin") if a1 in r]


def test_the_filters(trail: World) -> None:
    a1 = trail.studies["a1"].uid
    assert search(trail, "a-admin", principal="patient:FA1") == [
        ("patient:FA1", "read", a1, "allow")
    ]
    assert {r[0] for r in search(trail, "a-admin", principal="patient:*")} == {"patient:FA1"}
    assert search(trail, "a-admin", principal="patient:") == [], "exact unless it ends in *"
    reads = search(trail, "a-admin", action="read", study_uid=a1)
    assert sorted(r[0] for r in reads) == ["patient:FA1", "user:a-doc"]
    denied = search(trail, "ops", outcome="deny", action="read")
    assert [r[0] for r in denied] == ["user:a-doc"]
    now = datetime.now(UTC)
    assert search(trail, "a-admin", until=now - timedelta(days=1)) == []
    assert len(search(trail, "a-admin", since=now - timedelta(minutes=5), action="read")) == 2
    with pytest.raises(AuditSearchError):
        search(trail, "a-admin", outcome="maybe")


def test_operators_search_any_hospital_or_all(trail: World) -> None:
    a1, b1 = trail.studies["a1"].uid, trail.studies["b1"].uid
    everything = {r[2] for r in search(trail, "ops", action="read")}
    assert {a1, b1} <= everything
    only_b = {r[2] for r in search(trail, "ops", hospital=trail.b, action="read")}
    assert only_b == {b1}


def test_pages_newest_first(trail: World) -> None:
    a1 = trail.studies["a1"].uid
    for n in range(7):
        trail.archive.authorize(trail.principal("a-doc"), Action.READ, a1, detail=f"frame {n}")
    principal = trail.principal("a-admin")
    flt = AuditFilter(principal="user:a-doc", action="read")
    seen: list[int] = []
    before = None
    while True:
        page = search_audit(trail.archive, principal, flt, before=before, page_size=3)
        seen += [r.pk for r in page.rows]
        if page.next_before is None:
            break
        before = page.next_before
    assert len(seen) == 8 and seen == sorted(seen, reverse=True)
    assert all(r.detail.startswith(("frame", "viewer")) for r in page.rows)


def test_only_admins_and_operators_read_the_trail(trail: World) -> None:
    for who in ("a-doc", "a-desk"):
        with pytest.raises(AccessDenied):
            search_audit(trail.archive, trail.principal(who), AuditFilter())
    # the search itself is on the record, under the hospital of the one who searched
    search_audit(trail.archive, trail.principal("a-admin"), AuditFilter(action="read"))
    mine = search(trail, "a-admin", action="admin")
    assert ("user:a-admin", "admin", "", "allow") in mine
    assert ("user:a-doc", "admin", "", "deny") in mine


def test_typed_times_are_beijing_wall_clock() -> None:
    assert parse_local("2026-01-10") == datetime(2026, 1, 9, 16, 0, tzinfo=UTC)
    assert parse_local("2026-01-10", end=True) == datetime(
        2026, 1, 10, 15, 59, 59, 999999, tzinfo=UTC
    )
    assert parse_local("2026-01-10T08:30") == datetime(2026, 1, 10, 0, 30, tzinfo=UTC)
    assert parse_local("") is None
    with pytest.raises(AuditSearchError):
        parse_local("10/01/2026")

"""The console worklist: names in any character set, the other search terms, paging newest
first, what each row says, and that a hospital's users never see another hospital's studies."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cloudfilm.access import AccessDenied, Principal
from cloudfilm.console.worklist import (
    PAGE_SIZE,
    WorklistError,
    WorklistFilter,
    display_name,
    name_pattern,
    search_studies,
)
from cloudfilm.storage.models import AuditEvent
from tests.console_data.conftest import World, patient


def uids(world: World, who: str, **terms: object) -> set[str]:
    page = search_studies(world.archive, world.principal(who), WorklistFilter(**terms))  # type: ignore[arg-type]
    return {r.study_uid for r in page.rows}


def keys_of(world: World, found: set[str]) -> set[str]:
    by_uid = {s.uid: k for k, s in world.studies.items()}
    return {by_uid[u] for u in found}


NAMES = [
    ("王", {"a1", "a3"}),
    ("王*", {"a1", "a3"}),
    ("wang", {"a1", "a3"}),
    ("WANG", {"a1", "a3"}),
    ("王秀英", {"a1"}),
    ("Wang XiuYing", {"a1"}),
    ("wang^xiu*", {"a1"}),
    ("*芳", {"a3"}),
    ("李娜", {"a2"}),
    ("赵", set()),  # hospital B's patient
    ("", {"a1", "a2", "a3"}),
]


def test_names_match_in_any_character_set_within_the_users_hospital(world: World) -> None:
    got = {typed: keys_of(world, uids(world, "a-doc", name=typed)) for typed, _ in NAMES}
    assert got == dict(NAMES)


def test_the_operator_finds_both_hospitals_patients_of_one_name(world: World) -> None:
    page = search_studies(world.archive, world.principal("ops"), WorklistFilter(name="王秀英"))
    found = {r.study_uid: r.hospital_name for r in page.rows}
    assert found == {world.studies["a1"].uid: "第一人民医院", world.studies["b1"].uid: "鼓楼医院"}
    only_b = WorklistFilter(name="王秀英", hospital=world.b)
    assert keys_of(world, uids(world, "ops", **vars(only_b))) == {"b1"}


def test_a_hospital_user_cannot_widen_the_search_to_another_hospital(world: World) -> None:
    asked = uids(world, "a-doc", hospital=world.b)
    assert keys_of(world, asked) == {"a1", "a2", "a3"}, "their own hospital's, whatever asked"
    b_uid = world.studies["b1"].uid
    for who in ("a-doc", "a-admin", "a-desk"):
        for terms in ({"patient_id": "PB1"}, {"accession": "ACC-b1"}, {"name": "赵六"}):
            assert b_uid not in uids(world, who, **terms)
            assert uids(world, who, **terms) == set()


TERMS = [
    ({"patient_id": "PA2"}, {"a2"}),
    ({"patient_id": "PA*"}, {"a1", "a2", "a3"}),
    ({"accession": "ACC-a3"}, {"a3"}),
    ({"modality": "ct"}, {"a1", "a3"}),
    ({"modality": "DR"}, {"a3"}),
    ({"date_from": "2026-01-11"}, {"a2", "a3"}),
    ({"date_to": "2026-01-10"}, {"a1"}),
    ({"date_from": "2026-01-12", "date_to": "2026-01-12"}, {"a2", "a3"}),
    ({"date_from": "2026-01-12", "date_to": "2026-01-10"}, {"a1", "a2", "a3"}),  # swapped
    ({"name": "王", "modality": "DR"}, {"a3"}),
]


def test_the_other_terms(world: World) -> None:
    for terms, expected in TERMS:
        assert keys_of(world, uids(world, "a-doc", **terms)) == expected, terms


def test_bad_terms_are_refused_not_ignored(world: World) -> None:
    for terms in ({"date_from": "2026-13-01"}, {"date_to": "yesterday"}, {"modality": "C T"}):
        with pytest.raises(WorklistError):
            search_studies(world.archive, world.principal("a-doc"), WorklistFilter(**terms))


def test_rows_say_what_the_index_and_the_portal_hold(world: World) -> None:
    film_id = world.report_and_film("a1")
    page = search_studies(world.archive, world.principal("a-doc"), WorklistFilter())
    assert [r.study_uid for r in page.rows] == [world.studies[k].uid for k in ("a3", "a2", "a1")], (
        "newest first: by study date, then time"
    )
    a3, _a2, a1 = page.rows
    assert (a1.patient_name, a1.patient_name_other) == ("王秀英", "Wang XiuYing")
    assert (a1.patient_id, a1.sex, a1.age) == ("PA1", "F", "056Y")
    assert (a1.study_date, a1.modalities, a1.accession) == ("20260110", ["CT"], "ACC-a1")
    assert (a1.num_series, a1.num_instances, a1.description) == (1, 3, "Chest")
    assert (a1.has_report, a1.film_id, a1.hospital_name) == (True, film_id, "第一人民医院")
    assert (a3.num_series, a3.num_instances, sorted(a3.modalities)) == (2, 3, ["CT", "DR"])
    assert (a3.age, a3.has_report, a3.film_id) == ("007M", False, None)
    assert page.page == 1 and not page.has_next


def test_pages_of_25_newest_first(world: World) -> None:
    for n in range(27):
        world.add_study(
            f"p{n}", world.a, f"Zhou^P{n:02d}=周^{n:02d}", f"PZ{n:02d}",
            date=f"202502{n + 1:02d}", time="090000", series={"CR": 1},
        )  # fmt: skip
    principal = world.principal("a-doc")
    first = search_studies(world.archive, principal, WorklistFilter(name="zhou"), page=1)
    second = search_studies(world.archive, principal, WorklistFilter(name="zhou"), page=2)
    assert len(first.rows) == PAGE_SIZE and first.has_next
    assert len(second.rows) == 2 and not second.has_next
    dates = [r.study_date for r in first.rows + second.rows]
    assert dates == sorted((f"202502{n + 1:02d}" for n in range(27)), reverse=True)
    assert [r.patient_name for r in second.rows] == ["周01", "周00"]
    with pytest.raises(WorklistError):
        search_studies(world.archive, principal, WorklistFilter(), page=0)


def test_a_grant_limited_principal_sees_only_its_study(world: World) -> None:
    a1 = world.studies["a1"].uid
    page = search_studies(world.archive, patient("F1", a1), WorklistFilter())
    assert [r.study_uid for r in page.rows] == [a1]


def test_every_search_is_an_audited_decision(world: World) -> None:
    search_studies(world.archive, world.principal("a-doc"), WorklistFilter(name="王"))
    nobody = Principal(kind="token", id="t0", scopes=frozenset({"write"}), hospital=world.a)
    with pytest.raises(AccessDenied):
        search_studies(world.archive, nobody, WorklistFilter())
    world.archive.audit.flush()
    with world.archive.db.read() as session:
        records = session.execute(
            select(AuditEvent.principal, AuditEvent.outcome, AuditEvent.hospital_pk)
            .where(AuditEvent.action == "query", AuditEvent.detail.like("%console worklist%"))
            .order_by(AuditEvent.pk)
        ).all()
    assert [tuple(r) for r in records] == [
        ("user:a-doc", "allow", world.a),
        ("token:t0", "deny", world.a),
    ]


def test_name_forms() -> None:
    assert display_name("Wang^XiuYing=王^秀英") == ("王秀英", "Wang XiuYing")
    assert display_name("Smith^John") == ("Smith John", "")
    assert display_name("王^秀英") == ("王秀英", "")
    assert name_pattern("王秀英") == "王*秀*英*"
    assert name_pattern("wang xiuying") == "wang^xiuying*"
    assert name_pattern("a\\b") == "ab*", "a backslash would split the value in two"

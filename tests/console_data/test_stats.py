"""The dashboard's figures equal what was stored, by Beijing day, modality and hospital or region;
a hospital's users get their own hospital's figures only, whatever they ask."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import pytest

from cloudfilm.access import AccessDenied, Action, Principal
from cloudfilm.console.stats import METRICS, StatsError, StatsRequest, hospital_stats
from cloudfilm.http.templating import BEIJING
from tests.console_data.conftest import World, patient, share_visitor

JAN = StatsRequest(date(2026, 1, 9), date(2026, 1, 11))


def day(stats: dict, when: str) -> dict:
    return next(d for d in stats["days"] if d["date"] == when)


def test_the_json_is_the_charts_contract(world: World) -> None:
    stats = hospital_stats(world.archive, world.principal("ops"), JAN, lang="en")
    assert set(stats) == {"lang", "title", "totals", "days", "modalities", "groups"}
    assert stats["lang"] == "en" and "2026-01-09" in stats["title"]
    assert set(stats["totals"]) == set(METRICS)
    assert [d["date"] for d in stats["days"]] == ["2026-01-09", "2026-01-10", "2026-01-11"]
    assert all(set(d) == {"date", *METRICS} for d in stats["days"])
    assert all(set(m) == {"modality", "studies", "instances", "bytes"} for m in stats["modalities"])
    assert all(set(g) == {"code", "name", "studies", "instances", "bytes"} for g in stats["groups"])
    assert json.loads(json.dumps(stats, ensure_ascii=False)) == stats


def test_studies_and_images_per_beijing_day_and_modality(world: World) -> None:
    s = world.studies
    stats = hospital_stats(world.archive, world.principal("a-admin"), JAN)
    # a1 at 00:30 and a2 at 23:59:59 Beijing on the 10th; a3 at 00:00:00 on the 11th
    assert [(d["date"], d["studies"], d["instances"], d["bytes"]) for d in stats["days"]] == [
        ("2026-01-09", 0, 0, 0),
        ("2026-01-10", 2, 5, s["a1"].bytes + s["a2"].bytes),
        ("2026-01-11", 1, 3, s["a3"].bytes),
    ]
    ct = s["a1"].bytes + s["a3"].bytes_by_modality["CT"]
    assert stats["modalities"] == [
        {"modality": "CT", "studies": 2, "instances": 4, "bytes": ct},
        {"modality": "DR", "studies": 1, "instances": 2, "bytes": s["a3"].bytes_by_modality["DR"]},
        {"modality": "MR", "studies": 1, "instances": 2, "bytes": s["a2"].bytes},
    ]
    total = sum(s[k].bytes for k in ("a1", "a2", "a3"))
    assert {k: stats["totals"][k] for k in ("studies", "instances", "bytes")} == {
        "studies": 3,
        "instances": 8,
        "bytes": total,
    }
    assert stats["groups"] == [], "a hospital's page has no per-hospital chart"
    assert stats["title"].startswith("第一人民医院")
    one_day = hospital_stats(
        world.archive,
        world.principal("a-admin"),
        StatsRequest(date(2026, 1, 11), date(2026, 1, 11)),
    )
    assert one_day["totals"]["studies"] == 1 and one_day["totals"]["instances"] == 3


def test_films_sms_shares_and_views(world: World) -> None:
    archive = world.archive
    for key in ("a1", "a2", "b1"):
        world.report_and_film(key)
    world.notify("a1")
    world.notify("b1")
    share_a = world.share("a1")
    world.share("a1", by="user:a-desk")
    share_b = world.share("b1")
    a1, a2, b1 = (world.studies[k].uid for k in ("a1", "a2", "b1"))
    for _ in range(20):  # a viewer's frames: twenty records, one view
        archive.authorize(patient(world.films["a1"], a1), Action.READ, a1)
    for _ in range(3):
        archive.authorize(share_visitor(share_a, a1), Action.READ, a1)
    archive.authorize(patient(world.films["a2"], a2), Action.READ, a2)
    archive.authorize(patient(world.films["b1"], b1), Action.READ, b1)
    archive.authorize(share_visitor(share_b, b1), Action.READ, b1)
    with pytest.raises(AccessDenied):  # outside the share: refused, not a view
        archive.authorize(share_visitor(share_a, a1), Action.READ, a2)
    archive.authorize(world.principal("a-doc"), Action.READ, a1)  # staff: not a patient view
    today = datetime.now(BEIJING).date()
    recent = StatsRequest(today - timedelta(days=1), today)
    a = hospital_stats(archive, world.principal("a-admin"), recent)["totals"]
    assert {k: a[k] for k in ("films", "sms", "shares", "views")} == {
        "films": 2,
        "sms": 1,
        "shares": 2,
        "views": 3,
    }
    b = hospital_stats(archive, world.principal("b-admin"), recent)["totals"]
    assert {k: b[k] for k in ("films", "sms", "shares", "views")} == {
        "films": 1,
        "sms": 1,
        "shares": 1,
        "views": 2,
    }
    everyone = hospital_stats(archive, world.principal("ops"), recent)["totals"]
    assert (everyone["films"], everyone["views"], everyone["shares"]) == (3, 5, 3)
    assert a["studies"] == 0, "the studies were received in January"


def test_a_hospital_user_gets_only_their_hospitals_figures(world: World) -> None:
    mine = hospital_stats(world.archive, world.principal("a-admin"), JAN)
    asked_b = StatsRequest(JAN.date_from, JAN.date_to, hospital=world.b, region="110000")
    assert hospital_stats(world.archive, world.principal("a-admin"), asked_b) == mine
    b = hospital_stats(world.archive, world.principal("b-admin"), JAN)
    assert [(d["studies"], d["instances"]) for d in b["days"]] == [(1, 1), (1, 2), (0, 0)]
    assert {m["modality"] for m in b["modalities"]} == {"CT", "DR"}


def test_operators_by_hospital_region_or_all(world: World) -> None:
    ops = world.principal("ops")
    s = world.studies
    every = hospital_stats(world.archive, ops, JAN)
    assert every["totals"]["studies"] == 6 and every["totals"]["instances"] == 12
    assert every["groups"] == [
        {"code": "hosp-a", "name": "第一人民医院", "studies": 3, "instances": 8,
         "bytes": sum(s[k].bytes for k in ("a1", "a2", "a3"))},
        {"code": "hosp-b", "name": "鼓楼医院", "studies": 2, "instances": 3,
         "bytes": s["b1"].bytes + s["b2"].bytes},
        {"code": "hosp-c", "name": "北京协和医院", "studies": 1, "instances": 1,
         "bytes": s["c1"].bytes},
    ]  # fmt: skip
    regions = hospital_stats(
        world.archive, ops, StatsRequest(**{**vars(JAN), "group_by": "region"})
    )
    assert [(g["code"], g["studies"]) for g in regions["groups"]] == [
        ("320100", 3),
        ("320102", 2),
        ("110000", 1),
    ]

    def studies(**kw: object) -> int:
        req = StatsRequest(JAN.date_from, JAN.date_to, **kw)  # type: ignore[arg-type]
        return hospital_stats(world.archive, ops, req)["totals"]["studies"]

    assert studies(region="320000") == 5, "Jiangsu: both Nanjing hospitals"
    assert studies(region="320100") == 5, "Nanjing takes its district 320102"
    assert studies(region="320102") == 2
    assert studies(region="110000") == 1
    assert studies(region="440000") == 0
    assert studies(hospital=world.c) == 1


def test_refusals(world: World) -> None:
    with pytest.raises(StatsError):
        hospital_stats(
            world.archive, world.principal("ops"), StatsRequest(JAN.date_to, JAN.date_from)
        )
    with pytest.raises(StatsError):
        hospital_stats(
            world.archive, world.principal("ops"), StatsRequest(date(2024, 1, 1), JAN.date_to)
        )
    with pytest.raises(StatsError):
        hospital_stats(world.archive, patient("F1", world.studies["a1"].uid), JAN)
    writer = Principal(kind="token", id="t1", scopes=frozenset({"write"}), hospital=world.a)
    with pytest.raises(AccessDenied):
        hospital_stats(world.archive, writer, JAN)

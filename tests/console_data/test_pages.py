"""The console's data pages through the real app, logged in through the login form: worklist,
film desk (issue, print, QR, reissue, assisted share), statistics and audit search, each within
the user's hospital; every POST needs the session's CSRF token."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import date

import pytest
from fastapi.testclient import TestClient

from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.console.stats import StatsRequest, hospital_stats
from cloudfilm.http.app import create_app
from cloudfilm.portal.films import film_for_study, film_link
from cloudfilm.portal.models import Share
from cloudfilm.portal.reports import ReportFields, save_report
from tests.console_data.conftest import PASSWORD, World


def hidden(page: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert m, f"no hidden field {name!r}"
    return m.group(1)


class Site:
    def __init__(self, world: World) -> None:
        self.world = world
        self.app = create_app(world.archive, background=False)
        self.clients: list[TestClient] = []

    def anonymous(self, ip: str = "10.1.0.9") -> TestClient:
        c = TestClient(self.app, client=(ip, 50000))
        self.clients.append(c)
        return c

    def login(self, username: str) -> TestClient:
        c = self.anonymous()
        page = c.get("/")
        assert page.status_code == 200, page.text
        r = c.post(
            "/console/login",
            data={"login": username, "password": PASSWORD, "pre": hidden(page.text, "pre")},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        return c


@pytest.fixture
def site(world: World) -> Iterator[Site]:
    s = Site(world)
    yield s
    for c in s.clients:
        c.close()


def rows_of(page: str) -> list[str]:
    return re.findall(r'<tr data-study="([^"]+)"', page)


# --- worklist -------------------------------------------------------------------------------


def test_worklist_searches_within_the_hospital_and_links_viewer_and_desk(
    site: Site, world: World
) -> None:
    s = world.studies
    doc = site.login("a-doc")
    page = doc.get("/console/worklist", params={"name": "王"})
    assert page.status_code == 200
    assert rows_of(page.text) == [s["a3"].uid, s["a1"].uid]
    assert "王秀英" in page.text and "Wang XiuYing" in page.text and "女 / 56岁" in page.text
    assert f'href="/viewer/?study={s["a1"].uid}"' in page.text
    assert "/console/desk?study=" not in page.text, "a clinician has no film desk"
    assert "PB1" not in doc.get("/console/worklist", params={"name": "王秀英"}).text
    assert rows_of(doc.get("/console/worklist", params={"hospital": world.b}).text) == [
        s["a3"].uid,
        s["a2"].uid,
        s["a1"].uid,
    ], "a hospital's user cannot pick another hospital"
    desk = site.login("a-desk")
    assert f'href="/console/desk?study={s["a1"].uid}"' in desk.get("/console/worklist").text
    bad = doc.get("/console/worklist", params={"from": "2026-02-30"})
    assert bad.status_code == 400 and "cf-banner-error" in bad.text
    # the viewer's data comes with the same cookie, from the user's hospital only
    assert doc.get(f"/dicom-web/studies/{s['a1'].uid}/metadata").status_code == 200
    assert doc.get(f"/dicom-web/studies/{s['b1'].uid}/metadata").status_code in (403, 404)


def test_worklist_pages_and_the_operators_view(site: Site, world: World) -> None:
    for n in range(26):
        world.add_study(
            f"p{n}", world.a, f"Zhou^P{n:02d}=周^{n:02d}", f"PZ{n:02d}",
            date=f"202502{n + 1:02d}", series={"CR": 1},
        )  # fmt: skip
    doc = site.login("a-doc")
    first = doc.get("/console/worklist", params={"name": "周"})
    assert len(rows_of(first.text)) == 25
    nxt = re.search(r'<a href="([^"]+)" rel="next">', first.text)
    assert nxt, "a link to page 2"
    second = doc.get(html.unescape(nxt.group(1)))
    assert rows_of(second.text) == [world.studies["p0"].uid]
    assert 'rel="prev"' in second.text and 'rel="next"' not in second.text
    ops = site.login("ops")
    page = ops.get("/console/worklist", params={"name": "王秀英"})
    assert set(rows_of(page.text)) == {world.studies["a1"].uid, world.studies["b1"].uid}
    assert "第一人民医院" in page.text and "鼓楼医院" in page.text
    only_b = ops.get("/console/worklist", params={"name": "王秀英", "hospital": world.b})
    assert rows_of(only_b.text) == [world.studies["b1"].uid]


def test_pages_need_a_login_and_the_right_role(site: Site, world: World) -> None:
    anon = site.anonymous()
    for path in ("/console/worklist", "/console/desk", "/console/stats", "/console/audit"):
        r = anon.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/?next=")
    doc = site.login("a-doc")
    for path in ("/console/desk", "/console/audit"):
        assert doc.get(path).status_code == 403, path
    mine = doc.get("/console/stats", params={"from": "2026-01-09", "to": "2026-01-11"})
    assert mine.status_code == 200, "every hospital user reads their hospital's dashboard"
    assert embedded(mine.text)["totals"]["studies"] == 3
    assert site.login("ops").get("/console/desk").status_code == 403, "operators issue no films"


# --- film desk ------------------------------------------------------------------------------


def _report(world: World, key: str) -> None:
    s = world.studies[key]
    save_report(
        world.archive,
        ReportFields(accession_number=s.accession, patient_name="王秀英", phone="13912345678",
                     exam_name="CT胸部平扫", findings="未见异常。", impression="正常。"),
        source="json", hospital=s.hospital,
    )  # fmt: skip


def test_the_film_desk_issues_prints_and_reissues(site: Site, world: World) -> None:
    uid = world.studies["a1"].uid
    desk = site.login("a-desk")
    page = desk.get("/console/desk", params={"study": uid})
    assert page.status_code == 200 and "王秀英" in page.text
    assert "还没有报告" in page.text and "/console/desk/issue" not in page.text
    _report(world, "a1")
    page = desk.get("/console/desk", params={"study": uid})
    csrf = hidden(page.text, "csrf")
    assert desk.post("/console/desk/issue", data={"study": uid}).status_code == 403, "no CSRF"
    assert film_for_study(world.archive, uid) is None
    r = desk.post("/console/desk/issue", data={"study": uid, "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    film = film_for_study(world.archive, uid)
    assert film is not None
    page = desk.get(r.headers["location"])
    assert film.film_id in page.text and "云胶片已生成" in page.text
    pdf = desk.get(f"/api/films/{film.film_id}/printable.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert f'href="/api/films/{film.film_id}/printable.pdf"' in page.text
    qr = desk.get(f"/api/films/{film.film_id}/qr.svg")
    assert qr.status_code == 200 and b"<svg" in qr.content
    old = film_link(world.archive, film)

    patient = site.anonymous("10.9.9.9")
    token = old.link.rsplit("/", 1)[1]
    r = desk.post(
        "/console/desk/reissue", data={"study": uid, "csrf": csrf}, follow_redirects=False
    )
    assert r.status_code == 303 and "done=reissued" in r.headers["location"]
    new = film_link(world.archive, film_for_study(world.archive, uid))  # type: ignore[arg-type]
    assert new.link != old.link
    refused = patient.post("/api/verify", json={"token": token, "code": old.code})
    assert refused.status_code in (401, 403, 404), "the lost paper's link no longer works"
    fresh = patient.post(
        "/api/verify", json={"token": new.link.rsplit("/", 1)[1], "code": new.code}
    )
    assert fresh.status_code == 200


def test_an_assisted_share_is_recorded_under_the_users_own_name(site: Site, world: World) -> None:
    uid = world.studies["a1"].uid
    _report(world, "a1")
    desk = site.login("a-desk")
    csrf = hidden(desk.get("/console/desk", params={"study": uid}).text, "csrf")
    desk.post("/console/desk/issue", data={"study": uid, "csrf": csrf})
    form = {"study": uid, "csrf": csrf, "days": "3", "label": "转诊 省医院", "code": "2468"}
    assert desk.post("/console/desk/share", data={**form, "csrf": "x"}).status_code == 403
    assert desk.post("/console/desk/share", data={**form, "days": "400"}).status_code == 400
    made = desk.post("/console/desk/share", data=form)
    assert made.status_code == 200 and 'id="cf-new-share"' in made.text
    link = re.search(r"<code>(https?://[^<]+/s/[^<]+)</code>", made.text)
    assert link, "the share link, shown once"
    assert 'src="data:image/svg+xml;base64,' in made.text
    with world.archive.db.read() as session:
        share = session.query(Share).one()
    assert share.created_by == "user:a-desk"
    assert share.assisted_by == "a-desk 医生 (a-desk)"
    assert share.code_hash and not share.allow_download
    again = desk.get("/console/desk", params={"study": uid}).text
    assert link.group(1) not in again and "a-desk 医生 (a-desk)" in again
    doctor = site.anonymous("10.7.7.7")
    opened = doctor.post(
        "/api/shares/open", json={"token": link.group(1).rsplit("/", 1)[1], "code": "2468"}
    )
    assert opened.status_code == 200, opened.text


def test_the_desk_never_shows_another_hospitals_study(site: Site, world: World) -> None:
    b1 = world.studies["b1"].uid
    world.report_and_film("b1")
    desk = site.login("a-desk")
    page = desk.get("/console/desk", params={"study": b1})
    assert page.status_code == 403 and "PB1" not in page.text and "王秀英" not in page.text
    csrf = hidden(desk.get("/console/desk").text, "csrf")
    for action in ("issue", "reissue", "share"):
        r = desk.post(f"/console/desk/{action}", data={"study": b1, "csrf": csrf, "days": "3"})
        assert r.status_code == 403, action
    film = film_for_study(world.archive, b1)
    assert film is not None and film.generation == 1
    with world.archive.db.read() as session:
        assert session.query(Share).count() == 0


# --- statistics -----------------------------------------------------------------------------


def embedded(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="cf-stats">(.*?)</script>', page, re.S)
    assert m, "the page embeds cf-stats"
    return json.loads(m.group(1))


def test_the_dashboard_embeds_the_figures_the_charts_draw(site: Site, world: World) -> None:
    admin = site.login("a-admin")
    page = admin.get("/console/stats", params={"from": "2026-01-09", "to": "2026-01-11"})
    assert page.status_code == 200
    data = embedded(page.text)
    jan = StatsRequest(date(2026, 1, 9), date(2026, 1, 11))
    expected = hospital_stats(world.archive, world.principal("a-admin"), jan)
    assert data == expected
    assert data["totals"]["studies"] == 3 and data["totals"]["instances"] == 8
    assert 'data-chart="days"' in page.text and 'data-chart="modalities"' in page.text
    assert 'data-chart="groups"' not in page.text, "one hospital: no per-hospital chart"
    assert re.search(r'data-metric="studies"><dt>检查数</dt><dd>3</dd>', page.text)
    assert "鼓楼医院" not in page.text
    asked_b = admin.get(
        "/console/stats", params={"from": "2026-01-09", "to": "2026-01-11", "hospital": world.b}
    )
    assert embedded(asked_b.text) == data
    en = admin.get(
        "/console/stats", params={"from": "2026-01-09", "to": "2026-01-11", "lang": "en"}
    )
    assert embedded(en.text)["lang"] == "en" and "Studies" in en.text
    assert (
        admin.get("/console/stats", params={"from": "2026-01-11", "to": "2024-01-01"}).status_code
        == 400
    )


def test_the_operators_dashboard_by_hospital_and_region(site: Site, world: World) -> None:
    create_hospital(world.archive.db, "hosp-x", "</script><b>x医院</b>", region_code="320100")
    ops = site.login("ops")
    params = {"from": "2026-01-09", "to": "2026-01-11"}
    page = ops.get("/console/stats", params=params)
    data = embedded(page.text)
    assert [g["code"] for g in data["groups"]] == ["hosp-a", "hosp-b", "hosp-c"]
    assert 'data-chart="groups"' in page.text
    assert "<b>x医院</b>" not in page.text, "names are escaped everywhere, the JSON too"
    regions = embedded(ops.get("/console/stats", params={**params, "group": "region"}).text)
    assert [g["code"] for g in regions["groups"]] == ["320100", "320102", "110000"]
    jiangsu = embedded(ops.get("/console/stats", params={**params, "region": "320000"}).text)
    assert jiangsu["totals"]["studies"] == 5


# --- audit ----------------------------------------------------------------------------------


def audit_rows(page: str) -> list[str]:
    return re.findall(r'<tr data-pk="(\d+)"', page)


def test_the_audit_page_shows_the_hospitals_records_only(site: Site, world: World) -> None:
    a1, b1 = world.studies["a1"].uid, world.studies["b1"].uid
    doc = site.login("a-doc")
    assert doc.get(f"/dicom-web/studies/{a1}/metadata").status_code == 200
    assert doc.get(f"/dicom-web/studies/{b1}/metadata").status_code in (403, 404)
    b_admin = site.login("b-admin")
    assert b_admin.get(f"/dicom-web/studies/{b1}/metadata").status_code == 200
    admin = site.login("a-admin")
    page = admin.get("/console/audit", params={"principal": "user:a-doc"})
    assert page.status_code == 200
    assert a1 in page.text and b1 not in page.text, "A's probe of B's study is B's record"
    assert admin.get("/console/audit", params={"study": b1}).text.count("<tr data-pk") == 0
    b_page = b_admin.get("/console/audit", params={"study": b1, "outcome": "deny"}).text
    assert "user:a-doc" in b_page
    assert admin.get("/console/audit", params={"since": "soon"}).status_code == 400


def test_odd_input_is_a_400_not_a_500(site: Site, world: World) -> None:
    admin = site.login("a-admin")
    for path, params in (
        ("/console/audit", {"since": "0001-01-01"}),
        ("/console/audit", {"until": "9999-12-31"}),
        ("/console/audit", {"principal": "user:\x00x"}),
        ("/console/stats", {"from": "0001-01-01", "to": "0001-01-02"}),
        ("/console/stats", {"to": "0001-01-30"}),
        ("/console/stats", {"from": "9999-12-31"}),
        ("/console/worklist", {"from": "2026-00-10"}),
    ):
        r = admin.get(path, params=params)
        assert r.status_code == 400, (path, params, r.status_code)
    nul = admin.get("/console/worklist", params={"name": "王\x00", "pid": "\x00"})
    assert nul.status_code == 400, "a NUL in a URL is bad input for every route (http/app.py)"


def test_the_audit_page_continues_below_the_last_record(site: Site, world: World) -> None:
    a1 = world.studies["a1"].uid
    doc = site.login("a-doc")
    for _ in range(60):
        doc.get(f"/dicom-web/studies/{a1}/metadata")
    admin = site.login("a-admin")
    first = admin.get("/console/audit", params={"principal": "user:a-doc", "action": "read"})
    pks = audit_rows(first.text)
    assert len(pks) == 50 and pks == sorted(pks, key=int, reverse=True)
    older = re.search(r'<a href="([^"]+)" rel="next">', first.text)
    assert older
    second = admin.get(html.unescape(older.group(1)))
    rest = audit_rows(second.text)
    assert len(rest) == 10 and int(rest[0]) < int(pks[-1])
    assert 'rel="next"' not in second.text

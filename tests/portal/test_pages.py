"""The patient pages show what the hospital sent as text: Chinese names as they are, anything
that looks like markup (a name, a report, a share's note) escaped, in both languages."""

from __future__ import annotations

from html.parser import HTMLParser

from tests.portal.conftest import Portal, csrf_of

HOSTILE = {
    "patient_name": "李秀英",
    "exam_name": "<script>alert('exam')</script>",
    "findings": "<b>桥脑</b> & 结节\n<img src=x onerror=alert(1)>",
    "reporting_doctor": '"><svg onload=alert(2)>',
}


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _no_markup_got_through(page: str) -> None:
    parser = Tags()
    parser.feed(page)
    scripts = [a.get("src") for tag, a in parser.tags if tag == "script"]
    assert scripts == ["/p/static/portal.js"], scripts
    assert not [t for t, _a in parser.tags if t in ("img", "svg")], "markup from the data"
    assert not [a for _t, a in parser.tags if any(k.startswith("on") for k in a)]


def test_names_and_reports_are_text_not_markup(portal: Portal) -> None:
    case = portal.film_case(**HOSTILE)
    patient = portal.verified(case)
    csrf = csrf_of(patient, "/p/")
    r = patient.post(
        "/api/shares",
        json={"film_ids": [case["film_id"]], "days": 7, "label": "<img src=y onerror=alert(3)>"},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 201, r.text
    doctor = portal.browser("10.5.5.5")
    token = r.json()["link"].rsplit("/", 1)[1]
    assert doctor.post("/api/shares/open", json={"token": token}).status_code == 200
    assert doctor.get(f"/p/films/{case['film_id']}").status_code == 200  # in the history

    film = f"/p/films/{case['film_id']}"
    for lang in ("zh", "en"):
        pages = {path: patient.get(path, params={"lang": lang}) for path in
                 ("/p/", film, f"{film}/share", f"{film}/history")}  # fmt: skip
        for path, page in pages.items():
            assert page.status_code == 200, (path, page.status_code)
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            _no_markup_got_through(page.text)
        shown = pages[film].text
        assert "李秀英" in shown, "Chinese is sent as UTF-8, not as character references"
        assert "&lt;script&gt;alert(&#39;exam&#39;)&lt;/script&gt;" in shown
        assert "&lt;b&gt;桥脑&lt;/b&gt; &amp; 结节\n&lt;img" in shown, "line breaks kept"
        assert "&#34;&gt;&lt;svg onload=alert(2)&gt;" in shown
        assert "&lt;script&gt;" in pages["/p/"].text
        assert "&lt;img src=y onerror=alert(3)&gt;" in pages[f"{film}/share"].text
        assert "&lt;img src=y onerror=alert(3)&gt;" in pages[f"{film}/history"].text
    doctors_view = doctor.get(film, params={"lang": "en"})
    _no_markup_got_through(doctors_view.text)
    assert "Shared with you" in doctors_view.text and "李秀英" in doctors_view.text


def test_the_language_switch_links_back_to_the_same_page(portal: Portal) -> None:
    case = portal.film_case()
    patient = portal.verified(case)
    film = f"/p/films/{case['film_id']}"
    zh = patient.get(f"{film}/history").text
    assert f'href="/p/lang/en?next={film}/history">English</a>' in zh
    en = patient.get(f"/p/lang/en?next={film}/history")
    assert en.url.path == f"{film}/history" and "Access history" in en.text
    assert f'href="/p/lang/zh?next={film}/history">中文</a>' in en.text
    assert "访问记录" in patient.get(f"/p/lang/zh?next={film}/history").text

"""Logging in to the console and what a console session is worth at every door."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from cloudfilm.accounts.models import UserSession
from cloudfilm.accounts.sessions import sid_digest
from cloudfilm.accounts.users import enable_totp, set_disabled
from cloudfilm.storage.models import AuditEvent, utcnow
from tests.console.conftest import PASSWORD, Console, banner, csrf_of, hidden, totp_now

pytestmark = pytest.mark.engines("sqlite")  # sessions and lockouts, not the index

RECHECK = 1.1
"""A little more than the session cache's second."""


def test_login_sets_a_safe_cookie_and_lands_on_the_worklist(console: Console) -> None:
    console.user("li.rad", display_name="李影像")
    c = console.browser()
    r = console.post_login(c, "li.rad")
    assert r.status_code == 303
    assert r.headers["location"] == "/console/worklist"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("cf_console="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    sid = c.cookies["cf_console"]
    with console.archive.db.read() as s:
        stored = s.execute(select(UserSession.sid_hash)).scalars().all()
    assert stored == [sid_digest(sid)]  # the index holds the hash, never the cookie itself
    page = c.get("/console/password")
    assert page.status_code == 200
    assert "李影像" in page.text and "放射科医生" in page.text and "云胶片示范医院" in page.text

    secure = console.browser(https=True)
    r = console.post_login(secure, "li.rad")
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("cf_console="))
    assert "Secure" in cookie


def test_login_by_phone_and_next_only_to_local_paths(console: Console) -> None:
    console.user("wang", phone="13900001111")
    c = console.browser()
    r = console.post_login(c, "13900001111", next="/console/password?x=1")
    assert r.headers["location"] == "/console/password?x=1"
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        r = console.post_login(console.browser(), "wang", next=evil)
        assert r.status_code == 303 and r.headers["location"] == "/console/worklist", evil


def test_failures_answer_the_same_whether_or_not_the_user_exists(console: Console) -> None:
    console.user("zhao")
    wrong = console.post_login(console.browser("10.1.0.2"), "zhao", "not-the-password-1")
    nobody = console.post_login(console.browser("10.1.0.3"), "nobody-here", "not-the-password-1")
    for r in (wrong, nobody):
        assert r.status_code == 401
        assert banner(r.text) == "用户名或密码不正确。"
        assert "cf_console=" not in r.headers.get("set-cookie", "")
    assert wrong.text.replace("zhao", "X") == nobody.text.replace("nobody-here", "X").replace(
        hidden(nobody.text, "pre"), hidden(wrong.text, "pre")
    )


def test_login_form_needs_its_own_token(console: Console) -> None:
    """Another site cannot post a login into this browser (login CSRF)."""
    console.user("qian")
    c = console.browser()
    r = c.post("/console/login", data={"login": "qian", "password": PASSWORD, "pre": "x" * 32})
    assert r.status_code == 400
    assert "cf_console" not in c.cookies


def test_lockout_per_username_then_per_address(console: Console) -> None:
    console.user("sun")
    for i in range(5):
        r = console.post_login(console.browser(f"10.2.0.{i}"), "sun", f"wrong-password-{i}")
    assert r.status_code == 429, banner(r.text)
    assert "锁定" in banner(r.text)
    # locked: even the right password from a fresh address is refused now
    r = console.post_login(console.browser("10.2.1.1"), "sun")
    assert r.status_code == 429
    # per address: one client trying many usernames is stopped as well
    console.user("zhou")
    guesser = console.browser("10.3.0.9")
    statuses = [
        console.post_login(guesser, f"user{i}", "wrong-password-x").status_code  # type: ignore[attr-defined]
        for i in range(20)
    ]
    assert statuses[-1] == 429 and statuses[0] == 401
    assert console.post_login(guesser, "zhou").status_code == 429
    # another address still logs zhou in
    assert console.post_login(console.browser("10.3.0.10"), "zhou").status_code == 303


def test_totp_second_step(console: Console) -> None:
    user = console.user("wu.admin", role="admin")
    uri = enable_totp(console.archive.db, user.pk)
    c = console.browser()
    r = console.post_login(c, "wu.admin")
    assert r.status_code == 200 and 'name="code"' in r.text
    assert "cf_console" not in c.cookies  # no session before the second factor
    pending, pre = hidden(r.text, "pending"), hidden(r.text, "pre")
    bad = c.post("/console/login/totp", data={"code": "000000", "pending": pending, "pre": pre})
    if bad.status_code != 401:  # 1 in 10^6 * 3: the wrong code was the right one
        pytest.skip("000000 happened to be valid")
    assert "cf_console" not in c.cookies
    forged = pending.rsplit(".", 1)[0] + "." + "0" * 64
    r = c.post("/console/login/totp", data={"code": totp_now(uri), "pending": forged, "pre": pre})
    assert r.status_code == 400 and "cf_console" not in c.cookies
    r = c.post(
        "/console/login/totp",
        data={"code": totp_now(uri), "pending": pending, "pre": pre},
        follow_redirects=False,
    )
    assert r.status_code == 303 and "cf_console" in c.cookies
    assert c.get("/console/password").status_code == 200


def test_idle_and_absolute_expiry(console: Console) -> None:
    console.user("zheng")
    study = console.study(console.hospital_a)
    c = console.logged_in("zheng")
    assert c.get(f"/dicom-web/studies/{study}/metadata").status_code == 200
    with console.archive.db.write() as s:  # 31 minutes pass without a request
        s.execute(update(UserSession).values(last_seen_at=utcnow() - timedelta(minutes=31)))
    time.sleep(RECHECK)
    r = c.get("/console/password", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?next=%2Fconsole%2Fpassword"
    assert c.get(f"/dicom-web/studies/{study}/metadata").status_code == 401

    c2 = console.logged_in("zheng")
    with console.archive.db.write() as s:  # 12 hours after login, however busy
        s.execute(update(UserSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    time.sleep(RECHECK)
    assert c2.get("/console/password", follow_redirects=False).status_code == 303


def test_activity_keeps_a_session_alive(console: Console) -> None:
    console.user("feng")
    c = console.logged_in("feng")
    with console.archive.db.write() as s:  # 29 minutes idle: still alive, and moved on
        s.execute(update(UserSession).values(last_seen_at=utcnow() - timedelta(minutes=29)))
    time.sleep(RECHECK)
    assert c.get("/console/password").status_code == 200
    with console.archive.db.read() as s:
        seen = s.execute(select(UserSession.last_seen_at)).scalar_one()
    seen = seen if seen.tzinfo else seen.replace(tzinfo=utcnow().tzinfo)
    assert utcnow() - seen < timedelta(minutes=1)


def test_logout_ends_the_session_everywhere(console: Console) -> None:
    console.user("chen")
    c = console.logged_in("chen")
    sid = c.cookies["cf_console"]
    csrf = csrf_of(c)
    refused = c.post("/console/logout", data={"csrf": "wrong"}, follow_redirects=False)
    assert refused.status_code == 403
    assert c.get("/console/password").status_code == 200  # still logged in
    r = c.post("/console/logout", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "cf_console" not in c.cookies
    copy = console.browser("10.9.9.9")  # the old cookie, replayed from elsewhere
    copy.cookies.set("cf_console", sid)
    assert copy.get("/console/password", follow_redirects=False).status_code == 303
    assert copy.get("/dicom-web/studies").status_code == 401


def test_csrf_refused_on_posts(console: Console) -> None:
    console.user("he")
    c = console.logged_in("he")
    form = {"current": PASSWORD, "new": "a-new-password-42", "repeat": "a-new-password-42"}
    assert c.post("/console/password", data={**form, "csrf": ""}).status_code == 403
    assert c.post("/console/password", data={**form, "csrf": "x" * 32}).status_code == 403
    r = c.post(
        "/console/password",
        data={**form, "csrf": csrf_of(c)},
        headers={"Origin": "https://evil.example"},
    )
    assert r.status_code == 403
    # nothing changed: the old password still logs in
    assert console.post_login(console.browser("10.4.0.1"), "he").status_code == 303


def test_disabled_user_refused_at_the_next_request(console: Console) -> None:
    user = console.user("lv")
    study = console.study(console.hospital_a)
    c = console.logged_in("lv")
    assert c.get(f"/dicom-web/studies/{study}/metadata").status_code == 200
    set_disabled(console.archive.db, user.pk, True)  # e.g. `cloudfilm user disable` elsewhere
    time.sleep(RECHECK)
    assert c.get(f"/dicom-web/studies/{study}/metadata").status_code == 401
    assert c.get("/console/password", follow_redirects=False).status_code == 303
    assert console.post_login(console.browser("10.5.0.1"), "lv").status_code == 401


def test_must_change_password_first(console: Console) -> None:
    console.user("kong", must_change_password=True)
    study = console.study(console.hospital_a)
    c = console.browser()
    r = console.post_login(c, "kong", next="/console/")
    assert r.status_code == 303
    assert r.headers["location"] == "/console/password?next=%2Fconsole%2F"
    assert (
        c.get("/console/", follow_redirects=False)
        .headers["location"]
        .startswith("/console/password?next=")
    )
    assert c.get(f"/dicom-web/studies/{study}/metadata").status_code == 401
    page = c.get(r.headers["location"])
    assert "请先设置新密码" in page.text
    csrf, nxt = hidden(page.text, "csrf"), hidden(page.text, "next")
    other = console.logged_in("kong", client_ip="10.6.0.2")  # a second browser, same user

    def change(current: str, new: str, repeat: str) -> object:
        data = {"csrf": csrf, "next": nxt, "current": current, "new": new, "repeat": repeat}
        return c.post("/console/password", data=data, follow_redirects=False)

    assert change("wrong-current-pw", "brand-new-pass-1", "brand-new-pass-1").status_code == 401
    assert change(PASSWORD, "brand-new-pass-1", "brand-new-pass-2").status_code == 400
    assert change(PASSWORD, "short", "short").status_code == 400
    r = change(PASSWORD, "brand-new-pass-1", "brand-new-pass-1")
    assert r.status_code == 303 and r.headers["location"] == "/console/"  # type: ignore[attr-defined]
    assert c.get(f"/dicom-web/studies/{study}/metadata").status_code == 200
    assert other.get("/console/password", follow_redirects=False).status_code == 303
    assert console.post_login(console.browser("10.6.0.3"), "kong").status_code == 401
    r = console.post_login(console.browser("10.6.0.4"), "kong", "brand-new-pass-1")
    assert r.status_code == 303 and r.headers["location"] == "/console/worklist"  # type: ignore[attr-defined]


def test_cookie_reads_own_hospital_study_only(console: Console) -> None:
    console.user("ma.rad", role="radiologist", hospital="a")
    mine, theirs = console.study(console.hospital_a), console.study(console.hospital_b)
    anonymous = console.browser("10.7.0.1")
    assert anonymous.get(f"/dicom-web/studies/{mine}/metadata").status_code == 401
    c = console.logged_in("ma.rad")
    r = c.get(f"/dicom-web/studies/{mine}/metadata")
    assert r.status_code == 200 and len(r.json()) == 2
    assert c.get(f"/dicom-web/studies/{theirs}/metadata").status_code == 403
    found = {s["0020000D"]["Value"][0] for s in c.get("/dicom-web/studies").json()}
    assert found == {mine}
    # frames, as the viewer fetches them (answered from the session cache on the event loop)
    first = r.json()[0]
    series, sop = first["0020000E"]["Value"][0], first["00080018"]["Value"][0]
    frame = f"/dicom-web/studies/{mine}/series/{series}/instances/{sop}/frames/1"
    for _ in range(3):
        got = c.get(frame, headers={"Accept": "multipart/related; type=application/octet-stream"})
        assert got.status_code == 200, got.text
    assert anonymous.get(frame).status_code == 401
    # a stale patient-portal cookie in the same browser does not hide the logged-in user
    c.cookies.set("cf_sid", "an-ended-patient-session")
    assert c.get(f"/dicom-web/studies/{mine}/metadata").status_code == 200


def test_passwords_never_logged(console: Console, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    console.user("yang", must_change_password=True)
    wrong = "Wrong-Secret-7781"
    console.post_login(console.browser("10.8.0.1"), "yang", wrong)
    c = console.browser("10.8.0.2")
    console.post_login(c, "yang")
    page = c.get("/console/password")
    new = "Fresh-Secret-99123"
    c.post(
        "/console/password",
        data={"csrf": hidden(page.text, "csrf"), "current": PASSWORD, "new": new, "repeat": new},
    )
    console.archive.audit.flush()
    with console.archive.db.read() as s:
        audit = " ".join(
            f"{r.principal} {r.resource} {r.detail}"
            for r in s.execute(select(AuditEvent)).scalars()
        )
    assert "/console/login" in caplog.text  # the requests were logged (by httpx)
    for secret in (PASSWORD, wrong, new):
        assert secret not in caplog.text
        assert secret not in audit
    assert "user:yang" in audit

"""Administration pages: each hospital manages its own users, AE titles and API tokens only."""

from __future__ import annotations

import re

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cloudfilm.access.tokens import create_token, list_tokens
from cloudfilm.accounts.aes import list_aes, register_ae
from cloudfilm.accounts.users import get_user, list_users
from cloudfilm.storage.models import AuditEvent
from tests.console.conftest import PASSWORD, Console, banner, csrf_of, hidden, totp_now

pytestmark = pytest.mark.engines("postgresql")  # the admin pages, not the index

USERS, AES, TOKENS = "/console/admin/users", "/console/admin/aes", "/console/admin/tokens"


def _setup(console: Console) -> tuple[TestClient, str]:
    console.user("admin.a", role="admin", hospital="a")
    c = console.logged_in("admin.a")
    return c, csrf_of(c, USERS)


def _codes(html: str) -> list[str]:
    return re.findall(r"<code>([^<]*)</code>", html)


def test_admin_adds_a_user_who_must_change_the_password(console: Console) -> None:
    c, csrf = _setup(console)
    r = c.post(
        USERS,
        data={"csrf": csrf, "username": "new.doc", "role": "clinician", "display_name": "新医生"},
    )
    assert r.status_code == 200
    made = _codes(r.text)[0]  # no password typed: one was made, shown once
    user = get_user(console.archive.db, "new.doc")
    assert user is not None and user.hospital == console.hospital_a and user.role == "clinician"
    assert user.must_change_password
    assert made not in c.get(USERS).text  # not shown again
    newcomer = console.browser("10.20.0.1")
    r = console.post_login(newcomer, "new.doc", made)
    assert r.headers["location"].startswith("/console/password")  # type: ignore[attr-defined]
    # a role that is not a hospital's, and a bad username, are refused with a message
    r = c.post(USERS, data={"csrf": csrf, "username": "x.op", "role": "operator"})
    assert r.status_code == 400 and get_user(console.archive.db, "x.op") is None
    r = c.post(USERS, data={"csrf": csrf, "username": "a b", "role": "clinician"})
    assert r.status_code == 400 and "用户名" in banner(r.text)


def test_reset_disable_enable_and_totp(console: Console) -> None:
    c, csrf = _setup(console)
    doc = console.user("doc.a", role="radiologist")
    doc_browser = console.logged_in("doc.a", client_ip="10.21.0.1")
    r = c.post(f"{USERS}/{doc.pk}/password", data={"csrf": csrf, "password": "Temp-password-77"})
    assert r.status_code == 200
    assert "Temp-password-77" not in r.text  # typed by the admin: not echoed back
    # the reset ended the user's session at once, and the old password no longer works
    assert doc_browser.get("/console/password", follow_redirects=False).status_code == 303
    assert console.post_login(console.browser("10.21.0.2"), "doc.a").status_code == 401
    r = console.post_login(console.browser("10.21.0.3"), "doc.a", "Temp-password-77")
    assert r.headers["location"].startswith("/console/password")  # type: ignore[attr-defined]

    other = console.logged_in("admin.a", client_ip="10.21.0.4")
    r = c.post(f"{USERS}/{doc.pk}/disable", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert banner(c.get(r.headers["location"]).text).startswith("已停用")
    assert (
        console.post_login(console.browser("10.21.0.5"), "doc.a", "Temp-password-77").status_code
        == 401
    )  # type: ignore[attr-defined]
    me = get_user(console.archive.db, "admin.a")
    assert me is not None
    assert c.post(f"{USERS}/{me.pk}/disable", data={"csrf": csrf}).status_code == 400
    assert other.get("/console/password").status_code == 200  # the admin is still active
    r = c.post(f"{USERS}/{doc.pk}/enable", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303

    r = c.post(f"{USERS}/{doc.pk}/totp", data={"csrf": csrf})
    assert r.status_code == 200 and 'src="data:image/svg+xml' in r.text
    secret = _codes(r.text)[-1].replace(" ", "")
    uri = pyotp.TOTP(secret).provisioning_uri(name="doc.a", issuer_name="cloudfilm")
    b = console.browser("10.21.0.6")
    step = console.post_login(b, "doc.a", "Temp-password-77")
    assert step.status_code == 200 and 'name="code"' in step.text  # type: ignore[attr-defined]
    form = {
        "code": totp_now(uri),
        "pending": hidden(step.text, "pending"),  # type: ignore[attr-defined]
        "pre": hidden(step.text, "pre"),
    }  # type: ignore[attr-defined]
    r = b.post("/console/login/totp", data=form, follow_redirects=False)
    assert r.status_code == 303


def test_admin_of_a_cannot_see_or_manage_b(console: Console) -> None:
    c, csrf = _setup(console)
    b_admin = console.user("admin.b", role="admin", hospital="b")
    b_doc = console.user("doc.b", role="radiologist", hospital="b")
    b_ae = register_ae(console.archive.db, console.hospital_b, "B_CT", host="10.0.9.9")
    b_token, _plain = create_token(console.archive.db, "b ris", "read", hospital=console.hospital_b)
    hb = str(console.hospital_b)

    page = c.get(USERS)
    assert "doc.b" not in page.text and "admin.b" not in page.text
    for path in (USERS, AES, TOKENS):
        r = c.get(path, params={"hospital": hb})
        assert r.status_code == 403, path
        assert "doc.b" not in r.text and "B_CT" not in r.text and b_token.token_id not in r.text
    # changes aimed at B's people and doors, however the form is filled in
    attempts = [
        (f"{USERS}/{b_doc.pk}/password", {"password": "Hijacked-pass-1"}),
        (f"{USERS}/{b_doc.pk}/disable", {}),
        (f"{USERS}/{b_admin.pk}/totp", {}),
        (USERS, {"hospital": hb, "username": "spy.b", "role": "admin", "password": PASSWORD}),
        (f"{AES}/{b_ae.pk}/disable", {"hospital": hb}),
        (AES, {"hospital": hb, "ae_title": "SPY", "services": "store"}),
        (f"{TOKENS}/{b_token.token_id}/revoke", {"hospital": hb}),
        (TOKENS, {"hospital": hb, "name": "spy", "scopes": "read"}),
    ]
    for path, data in attempts:
        r = c.post(path, data={"csrf": csrf, **data}, follow_redirects=False)
        assert r.status_code == 403, path
    # own hospital in the form, B's id in the path: not found here
    assert c.post(f"{AES}/{b_ae.pk}/disable", data={"csrf": csrf}).status_code == 404
    assert c.post(f"{TOKENS}/{b_token.token_id}/revoke", data={"csrf": csrf}).status_code == 404

    db = console.archive.db
    assert console.post_login(console.browser("10.22.0.1"), "doc.b").status_code == 303
    assert get_user(db, "spy.b") is None and get_user(db, "doc.b").active  # type: ignore[union-attr]
    assert not get_user(db, "admin.b").totp  # type: ignore[union-attr]
    assert [a.active for a in list_aes(db, hospital=console.hospital_b)] == [True]
    assert [t.active for t in list_tokens(db, hospital=console.hospital_b)] == [True]
    console.archive.audit.flush()
    with db.read() as s:
        denied = (
            s.execute(
                select(AuditEvent).where(
                    AuditEvent.principal == "user:admin.a", AuditEvent.outcome == "deny"
                )
            )
            .scalars()
            .all()
        )
    assert len(denied) >= len(attempts) + 3
    assert {d.hospital_pk for d in denied} == {console.hospital_b}


def test_aes_and_tokens_of_own_hospital(console: Console) -> None:
    c, csrf = _setup(console)
    r = c.post(
        AES,
        data={
            "csrf": csrf,
            "ae_title": "CT_ROOM1",
            "host": "10.0.0.7",
            "services": ["echo", "store"],
            "description": "CT 1",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303
    (ae,) = list_aes(console.archive.db, hospital=console.hospital_a)
    assert ae.ae_title == "CT_ROOM1" and ae.services == {"echo", "store"} and ae.active
    assert "CT_ROOM1" in c.get(AES).text
    r = c.post(AES, data={"csrf": csrf, "ae_title": "BAD\\AE", "services": ["echo"]})
    assert r.status_code == 400
    r = c.post(f"{AES}/{ae.pk}/disable", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert not list_aes(console.archive.db, hospital=console.hospital_a)[0].active

    study = console.study(console.hospital_a)
    r = c.post(TOKENS, data={"csrf": csrf, "name": "RIS", "scopes": ["read"]})
    assert r.status_code == 200
    plaintext = re.search(r'id="cf-new-token">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    (token,) = list_tokens(console.archive.db, hospital=console.hospital_a)
    assert token.scopes == {"read"} and token.hospital == console.hospital_a
    assert plaintext not in c.get(TOKENS).text  # shown once
    api = console.browser("10.23.0.1")
    auth = {"Authorization": f"Bearer {plaintext}"}
    assert api.get(f"/dicom-web/studies/{study}/metadata", headers=auth).status_code == 200
    r = c.post(TOKENS, data={"csrf": csrf, "name": "too much", "scopes": ["admin"]})
    assert r.status_code == 400
    r = c.post(f"{TOKENS}/{token.token_id}/revoke", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert api.get(f"/dicom-web/studies/{study}/metadata", headers=auth).status_code == 401


def test_clinician_and_radiologist_cannot_reach_admin_pages(console: Console) -> None:
    console.user("cl", role="clinician")
    c = console.logged_in("cl")
    page = c.get("/console/password")
    assert "/console/admin/" not in page.text  # no admin items in the nav
    for path in (USERS, AES, TOKENS, "/console/admin/hospitals"):
        assert c.get(path).status_code == 403, path
    csrf = hidden(page.text, "csrf")
    r = c.post(USERS, data={"csrf": csrf, "username": "mine", "role": "admin"})
    assert r.status_code == 403 and get_user(console.archive.db, "mine") is None
    anonymous = console.browser("10.24.0.1")
    r = anonymous.get(USERS, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/?next=%2Fconsole%2Fadmin%2Fusers"
    assert (
        anonymous.post(
            USERS, data={"username": "x", "role": "admin"}, follow_redirects=False
        ).status_code
        == 303
    )
    assert get_user(console.archive.db, "x") is None


def test_operator_picks_a_hospital_and_adds_hospitals(console: Console) -> None:
    console.user("op", role="operator")
    console.user("doc.b", role="radiologist", hospital="b")
    c = console.logged_in("op")
    csrf = csrf_of(c, USERS)
    assert "doc.b" not in c.get(USERS).text  # nothing until a hospital is picked
    page = c.get(USERS, params={"hospital": str(console.hospital_b)})
    assert page.status_code == 200 and "doc.b" in page.text
    r = c.post(
        USERS,
        data={
            "csrf": csrf,
            "hospital": str(console.hospital_b),
            "username": "admin.b2",
            "role": "admin",
        },
    )
    assert r.status_code == 200
    assert get_user(console.archive.db, "admin.b2").hospital == console.hospital_b  # type: ignore[union-attr]

    assert c.get("/console/admin/hospitals").status_code == 200
    r = c.post(
        "/console/admin/hospitals",
        data={"csrf": csrf, "code": "hosp-c", "name": "第三医院", "region_code": "320300"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert "hosp-c" in c.get("/console/admin/hospitals").text
    assert (
        c.post(
            "/console/admin/hospitals", data={"csrf": csrf, "code": "hosp-c", "name": "again"}
        ).status_code
        == 400
    )
    # a hospital admin has no hospitals page
    console.user("admin.a", role="admin")
    a = console.logged_in("admin.a", client_ip="10.25.0.1")
    assert a.get("/console/admin/hospitals").status_code == 403
    assert len(list_users(console.archive.db, hospital=console.hospital_b)) == 2

"""Console fixtures: the real app over the real archive (SQLite and PostgreSQL), two hospitals,
users made with accounts.users, and browsers that log in through the login form.

Nothing of ours is mocked: a login is the form's POST (with the token its page set as a
cookie), a second factor is a real TOTP code (pyotp), studies go in through archive.ingest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.accounts.models import FIRST_HOSPITAL
from cloudfilm.accounts.users import UserInfo, create_user
from cloudfilm.archive import Archive
from cloudfilm.config import Settings
from cloudfilm.http.app import create_app
from tests.factory import make_instance

PASSWORD = "Kx7-harbour-lantern"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        verify_max_attempts=5,
        verify_lockout_seconds=300,
    )


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m, f"no hidden field {name!r} in the page"
    return m.group(1)


def banner(html: str) -> str:
    m = re.search(r'class="cf-banner[^"]*"[^>]*>([^<]*)<', html)
    return m.group(1) if m else ""


@dataclass
class Console:
    archive: Archive
    app: object
    hospital_a: int
    hospital_b: int
    clients: list[TestClient] = field(default_factory=list)

    def browser(self, client_ip: str = "10.1.0.1", *, https: bool = False) -> TestClient:
        """A fresh cookie jar, like a new browser (from its own address)."""
        base = "https://testserver" if https else "http://testserver"
        c = TestClient(self.app, base_url=base, client=(client_ip, 50000))  # type: ignore[arg-type]
        self.clients.append(c)
        return c

    def user(
        self,
        username: str,
        role: str = "radiologist",
        hospital: int | str | None = "a",
        password: str = PASSWORD,
        **kw: object,
    ) -> UserInfo:
        where = {"a": self.hospital_a, "b": self.hospital_b}.get(hospital, hospital)  # type: ignore[call-overload]
        return create_user(
            self.archive.db,
            username=username,
            password=password,
            role=role,
            hospital=None if role == "operator" else where,
            **kw,  # type: ignore[arg-type]
        )

    def post_login(
        self, client: TestClient, login: str, password: str = PASSWORD, next: str = ""
    ) -> object:
        page = client.get("/", params={"next": next} if next else None)
        assert page.status_code == 200, page.text
        form = {"login": login, "password": password, "pre": hidden(page.text, "pre")}
        if next:
            form["next"] = hidden(page.text, "next")
        return client.post("/console/login", data=form, follow_redirects=False)

    def logged_in(
        self, login: str, password: str = PASSWORD, *, client_ip: str = "10.1.0.1"
    ) -> TestClient:
        c = self.browser(client_ip)
        r = self.post_login(c, login, password)
        assert r.status_code == 303, r.text  # type: ignore[attr-defined]
        return c

    def study(self, hospital: int, n: int = 2) -> str:
        study_uid, series_uid = generate_uid(), generate_uid()
        for i in range(n):
            self.archive.ingest(
                make_instance(
                    study_uid=study_uid, series_uid=series_uid, instance_number=i + 1, size=16
                ),
                hospital=hospital,
            )
        return study_uid


def csrf_of(client: TestClient, path: str = "/console/password") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return hidden(page.text, "csrf")


def totp_now(otpauth_uri: str) -> str:
    return pyotp.parse_uri(otpauth_uri).now()


@pytest.fixture
def console(archive: Archive) -> Iterator[Console]:
    app = create_app(archive, background=False)
    b = create_hospital(archive.db, "hosp-b", "第二医院", name_latin="Second Hospital")
    c = Console(archive=archive, app=app, hospital_a=FIRST_HOSPITAL, hospital_b=b.pk)
    yield c
    for client in c.clients:
        client.close()

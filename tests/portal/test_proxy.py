"""Behind a reverse proxy: the guessing limit per client address and the audit use the address
the trusted proxy forwards, and nobody else's X-Forwarded-For is believed.

A real ``cloudfilm serve`` (the forwarding headers are handled by its HTTP server, not the app)
over the films the in-process portal issued in the same index and data directory.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from cloudfilm.storage.models import AuditEvent
from tests.conftest import ServerProcess
from tests.portal.conftest import Portal

pytestmark = pytest.mark.engines("sqlite")  # the reverse proxy's headers, not the index


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def _serve(portal: Portal, **env: str) -> ServerProcess:
    settings = portal.archive.settings
    server = ServerProcess(
        data_dir=settings.data_dir, database_url=str(settings.database_url), env_extra=env
    )
    server.start()
    return server


def _guess_across_films(
    http: httpx.Client, cases: list[dict[str, str]], addresses: list[str]
) -> None:
    """4 wrong codes per film (under the per-film limit), 20 failures in all."""
    n = 0
    for case in cases:
        for _ in range(4):
            forwarded = {"X-Forwarded-For": addresses[n % len(addresses)]}
            n += 1
            r = http.post(
                "/api/verify",
                json={"token": case["token"], "code": _wrong(case["access_code"])},
                headers=forwarded,
            )
            assert r.status_code in (401, 429), r.text


def test_a_trusted_proxy_gives_each_patient_their_own_limit(portal: Portal) -> None:
    cases = [portal.film_case() for _ in range(5)]
    spare = portal.film_case()
    right = {"token": spare["token"], "code": spare["access_code"]}
    server = _serve(portal)  # default: the proxy on this host (127.0.0.1) is trusted
    try:
        with httpx.Client(base_url=server.http_url, timeout=30) as http:
            _guess_across_films(http, cases, ["203.0.113.7"])
            guesser = http.post(
                "/api/verify", json=right, headers={"X-Forwarded-For": "203.0.113.7"}
            )
            assert guesser.status_code == 429, "the guessing address is locked"
            patient = http.post(
                "/api/verify", json=right, headers={"X-Forwarded-For": "198.51.100.20"}
            )
            assert patient.status_code == 200, "another patient behind the proxy is not"
    finally:
        server.stop()
    with portal.archive.db.read() as s:
        clients = set(s.scalars(select(AuditEvent.client).where(AuditEvent.action == "verify")))
    assert {"203.0.113.7", "198.51.100.20"} <= clients
    assert "127.0.0.1" not in clients


def test_forged_forwarding_headers_do_not_dodge_the_limit(portal: Portal) -> None:
    cases = [portal.film_case() for _ in range(5)]
    spare = portal.film_case()
    server = _serve(portal, CLOUDFILM_TRUSTED_PROXIES="[]")  # nobody's headers are believed
    try:
        with httpx.Client(base_url=server.http_url, timeout=30) as http:
            _guess_across_films(http, cases, [f"192.0.2.{i}" for i in range(1, 21)])
            r = http.post(
                "/api/verify",
                json={"token": spare["token"], "code": spare["access_code"]},
                headers={"X-Forwarded-For": "192.0.2.99", "X-Forwarded-Proto": "https"},
            )
            assert r.status_code == 429, "20 failures from one real address, whatever it claims"
            assert "strict-transport-security" not in r.headers
    finally:
        server.stop()

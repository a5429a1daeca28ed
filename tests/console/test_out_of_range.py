"""Numbers no row id can be, in console URLs and forms: a refusal or no match, never a 500.

Row ids are INTEGER columns (32-bit in PostgreSQL); SQLite cannot even bind a number past 64
bits. Such numbers once reached the index as they were (found by tests/test_schemathesis.py),
and an audit record carrying one lost the whole batch it was written with.
"""

from __future__ import annotations

from sqlalchemy import select

from cloudfilm.storage.models import AuditEvent
from tests.console.conftest import Console, csrf_of

TOO_LARGE = (str(2**40), "99999999999999999999")
"""Past PostgreSQL's INTEGER, and past what SQLite can bind at all."""


def test_row_ids_in_urls_too_large_for_the_index_are_refused(console: Console) -> None:
    console.user("admin.a", role="admin")
    c = console.logged_in("admin.a")
    csrf = csrf_of(c)
    for n in TOO_LARGE:
        for path in (
            f"/console/admin/users/{n}/disable",
            f"/console/admin/users/{n}/enable",
            f"/console/admin/users/{n}/password",
            f"/console/admin/users/{n}/totp",
            f"/console/admin/aes/{n}/disable",
        ):
            r = c.post(path, data={"csrf": csrf}, follow_redirects=False)
            assert 400 <= r.status_code < 500, (path, r.status_code)


def test_numbers_too_large_in_forms_and_queries_match_nothing(console: Console) -> None:
    console.user("admin.a", role="admin")
    console.user("root", role="operator")
    admin, operator = console.logged_in("admin.a"), console.logged_in("root", client_ip="10.1.0.2")
    csrf = csrf_of(admin)
    for n in TOO_LARGE:
        # another hospital than the admin's own: refused, and the refusal is on record
        r = admin.post("/console/admin/aes", data={"csrf": csrf, "hospital": n})
        assert r.status_code == 403
        assert admin.get("/console/audit", params={"before": n}).status_code == 200
        assert admin.get("/console/audit", params={"before": f"-{n}"}).status_code == 200
        assert admin.get("/console/worklist", params={"page": n}).status_code == 200
        for path in ("/console/worklist", "/console/audit", "/console/admin/users"):
            r = operator.get(path, params={"hospital": n})
            assert r.status_code < 500, (path, r.status_code)
    console.archive.audit.flush()
    with console.archive.db.read() as s:
        refused = (
            s.execute(
                select(AuditEvent).where(
                    AuditEvent.principal == "user:admin.a",
                    AuditEvent.outcome == "deny",
                    AuditEvent.detail.endswith("console: hospital picked"),
                )
            )
            .scalars()
            .all()
        )
    assert len(refused) == len(TOO_LARGE)

"""``/console/admin/retention`` through the real app (SQLite and PostgreSQL): a hospital admin
finds the expired studies, approves one, deletes it; a held study never shows; another
hospital's admin and a radiologist cannot reach the page."""

from __future__ import annotations

import re

from pydicom.uid import generate_uid

from cloudfilm.storage.query import Query, run_query
from tests.console.conftest import Console, banner, console, csrf_of  # noqa: F401
from tests.factory import make_dataset, to_bytes

PAGE = "/console/admin/retention"


def _old_study(console: Console, patient: str) -> str:  # noqa: F811
    ds = make_dataset(patient_id=patient, study_date="19900105", study_uid=generate_uid())
    ds.AdmissionID = "ZY-1"  # an inpatient: 30 years, long past
    assert console.archive.ingest(to_bytes(ds), hospital=console.hospital_a).outcome == "stored"
    return ds.StudyInstanceUID


def _listed(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-study="([^"]+)" data-status="([^"]+)"', html))


def test_admin_finds_approves_and_deletes_on_the_console(console: Console) -> None:  # noqa: F811
    gone = _old_study(console, "CON-1")
    held = _old_study(console, "CON-2")
    console.user("admin.a", role="admin", hospital="a")
    c = console.logged_in("admin.a")
    page = c.get(PAGE)
    assert page.status_code == 200 and "保存期限与删除" in page.text
    csrf = csrf_of(c, PAGE)
    form = {"csrf": csrf, "hospital": str(console.hospital_a)}
    r = c.post(
        f"{PAGE}/holds",
        data={**form, "study_uid": held, "reason": "诉讼保全"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    r = c.post(f"{PAGE}/scan", data=form, follow_redirects=True)
    assert r.status_code == 200 and "1" in banner(r.text)
    assert _listed(r.text) == {gone: "listed"}  # the held study is never listed
    r = c.post(f"{PAGE}/delete", data=form, follow_redirects=True)  # nothing approved yet
    assert _listed(r.text) == {gone: "listed"}
    r = c.post(f"{PAGE}/approve", data={**form, "study_uid": gone}, follow_redirects=True)
    assert _listed(r.text) == {gone: "approved"}
    r = c.post(f"{PAGE}/delete", data=form, follow_redirects=True)
    assert r.status_code == 200 and _listed(r.text) == {}
    with console.archive.db.read() as session:
        for uid, found in ((gone, 0), (held, 1)):
            rows = run_query(session, Query(level="STUDY", keys={"StudyInstanceUID": uid})).rows
            assert len(rows) == found


def test_other_hospitals_and_other_roles_cannot_use_it(console: Console) -> None:  # noqa: F811
    _old_study(console, "CON-3")
    console.user("admin.b", role="admin", hospital="b")
    b = console.logged_in("admin.b", client_ip="10.2.0.1")
    assert b.get(PAGE, params={"hospital": str(console.hospital_a)}).status_code == 403
    own = b.get(PAGE)
    assert own.status_code == 200 and _listed(own.text) == {}
    csrf = csrf_of(b, PAGE)
    r = b.post(
        f"{PAGE}/scan",
        data={"csrf": csrf, "hospital": str(console.hospital_a)},
        follow_redirects=False,
    )
    assert r.status_code == 403
    console.user("doc.a", role="radiologist", hospital="a")
    doc = console.logged_in("doc.a", client_ip="10.3.0.1")
    assert doc.get(PAGE).status_code == 403

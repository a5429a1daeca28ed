"""Security of the cloud film: guessing codes, reaching other studies, dead shares, the audit.

Each test also checks the allowed path next to the refused one, so a check that refused
everything (or nothing) would fail.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

from sqlalchemy import delete, select, update

from cloudfilm.portal.films import purge_expired
from cloudfilm.portal.models import PortalSession
from cloudfilm.storage.models import AuditEvent, utcnow
from tests.portal.conftest import REPORT, Portal, csrf_of


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_brute_force_of_the_code_is_locked_out(portal: Portal) -> None:
    case = portal.film_case()
    attacker = portal.browser("10.9.9.9")
    guesses = [f"{n:06d}" for n in range(100000, 100100) if f"{n:06d}" != case["access_code"]]
    statuses = []
    for code in guesses[:30]:
        r = attacker.post("/api/verify", json={"token": case["token"], "code": code})
        statuses.append(r.status_code)
    assert statuses[:4] == [401] * 4
    assert statuses[4:] == [429] * 26, "after 5 wrong codes every attempt is refused"
    r = attacker.post("/api/verify", json={"token": case["token"], "code": code})
    assert "分钟后再试" in r.json()["zh"] and int(r.headers["retry-after"]) > 200
    # The right code during the lockout is refused too, from any address: the film is locked.
    for ip in ("10.9.9.9", "10.1.1.1"):
        late = portal.browser(ip).post(
            "/api/verify", json={"token": case["token"], "code": case["access_code"]}
        )
        assert late.status_code == 429
    portal.archive.audit.flush()
    with portal.archive.db.read() as s:
        denials = s.execute(
            select(AuditEvent.detail).where(
                AuditEvent.action == "verify",
                AuditEvent.outcome == "deny",
                AuditEvent.resource == case["study_uid"],
            )
        ).scalars().all()  # fmt: skip
    assert len(denials) >= 30 and any("locked" in d for d in denials)


def test_unknown_links_are_refused_and_audited_without_the_token(portal: Portal) -> None:
    stranger = portal.browser("10.6.6.6")
    made_up = "A" * 43
    r = stranger.post("/api/verify", json={"token": made_up, "code": "123456"})
    assert r.status_code == 404
    assert stranger.post("/api/shares/open", json={"token": made_up}).status_code == 404
    portal.archive.audit.flush()
    with portal.archive.db.read() as s:
        rows = s.execute(
            select(AuditEvent.action, AuditEvent.outcome, AuditEvent.detail, AuditEvent.resource)
            .where(AuditEvent.client == "10.6.6.6")
        ).all()  # fmt: skip
    assert {(a, o) for a, o, _d, _r in rows} == {("verify", "deny"), ("open", "deny")}
    assert all(made_up not in d and made_up not in r for _a, _o, d, r in rows)


def test_one_address_guessing_across_films_is_locked_out(portal: Portal) -> None:
    cases = [portal.film_case() for _ in range(5)]
    spare = portal.film_case()
    attacker = portal.browser("10.7.7.7")
    for case in cases:  # 4 wrong codes per film: no film lock, 20 failures from one address
        for _ in range(4):
            r = attacker.post(
                "/api/verify", json={"token": case["token"], "code": _wrong(case["access_code"])}
            )
            assert r.status_code in (401, 429)
    right = attacker.post(
        "/api/verify", json={"token": spare["token"], "code": spare["access_code"]}
    )
    assert right.status_code == 429, "the address is locked even for a film it never tried"
    elsewhere = portal.browser("10.8.8.8").post(
        "/api/verify", json={"token": spare["token"], "code": spare["access_code"]}
    )
    assert elsewhere.status_code == 200


def _study_paths(portal: Portal, study_uid: str) -> dict[str, str]:
    inst = portal.hospital.get(f"/dicom-web/studies/{study_uid}/instances").json()[0]
    series = inst["0020000E"]["Value"][0]
    sop = inst["00080018"]["Value"][0]
    base = f"/dicom-web/studies/{study_uid}"
    item = f"{base}/series/{series}/instances/{sop}"
    return {
        "qido series": f"{base}/series",
        "metadata": f"{base}/metadata",
        "series metadata": f"{base}/series/{series}/metadata",
        "instance": item,
        "frames": f"{item}/frames/1",
        "rendered": f"{item}/rendered",
        "thumbnail": f"{base}/thumbnail",
        "wado-uri": f"/wado?requestType=WADO&studyUID={study_uid}&seriesUID={series}"
        f"&objectUID={sop}&contentType=application/dicom",
    }


def test_a_session_for_film_a_cannot_read_study_b(portal: Portal) -> None:
    a, b = portal.film_case(), portal.film_case(phone="13700001111")
    patient = portal.verified(a)
    studies = patient.get("/dicom-web/studies").json()
    assert [s["0020000D"]["Value"][0] for s in studies] == [a["study_uid"]]
    accept = {"frames": "multipart/related; type=application/octet-stream", "instance": "*/*"}
    for name, path in _study_paths(portal, a["study_uid"]).items():
        r = patient.get(path, headers={"Accept": accept.get(name, "*/*")})
        assert r.status_code == 200, (name, r.status_code, r.text[:200])
    for name, path in _study_paths(portal, b["study_uid"]).items():
        r = patient.get(path, headers={"Accept": accept.get(name, "*/*")})
        if name == "qido series":  # a search answers only within the grant: nothing of B
            assert r.status_code in (200, 204, 403) and b["study_uid"] not in r.text, r.text
            assert r.status_code == 403 or r.content in (b"", b"[]")
        else:
            assert r.status_code == 403, (name, r.status_code)
    for path in ("download.zip", "report.pdf", "key-images.zip", "history", "qr.svg"):
        assert patient.get(f"/api/films/{a['film_id']}/{path}").status_code == 200, path
        assert patient.get(f"/api/films/{b['film_id']}/{path}").status_code == 403, path
    page = patient.get(f"/p/films/{b['film_id']}")
    assert page.status_code in (403, 404) and REPORT["findings"] not in page.text
    assert patient.get(f"/api/films/{a['film_id']}/printable.pdf").status_code == 403


def _share(portal: Portal, patient, case, **body) -> dict:  # type: ignore[no-untyped-def]
    csrf = csrf_of(patient, f"/p/films/{case['film_id']}")
    r = patient.post(
        "/api/shares", json={"film_ids": [case["film_id"]], **body}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 201, r.text
    return r.json()


def _open(portal: Portal, share: dict, ip: str = "10.5.5.5"):  # type: ignore[no-untyped-def]
    doctor = portal.browser(ip)
    r = doctor.post("/api/shares/open", json={"token": share["link"].rsplit("/", 1)[1]})
    assert r.status_code == 200, r.text
    return doctor


def test_a_revoked_share_reads_nothing_from_the_next_request(portal: Portal) -> None:
    case = portal.film_case()
    patient = portal.verified(case)
    share = _share(portal, patient, case, days=7, allow_download=True, label="Dr Chen")
    doctor = _open(portal, share)
    paths = _study_paths(portal, case["study_uid"])
    frames = {"Accept": "multipart/related; type=application/octet-stream"}
    assert doctor.get(paths["frames"], headers=frames).status_code == 200
    assert doctor.get(f"/api/films/{case['film_id']}/download.zip").status_code == 200

    csrf = csrf_of(patient, f"/p/films/{case['film_id']}")
    r = patient.delete(f"/api/shares/{share['share_id']}", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["state"] == "revoked"

    assert doctor.get(paths["frames"], headers=frames).status_code == 403
    for name, path in paths.items():
        assert doctor.get(path).status_code == 403, name
    for path in ("download.zip", "report.pdf", "key-images.zip"):
        assert doctor.get(f"/api/films/{case['film_id']}/{path}").status_code == 403
    page = doctor.get(f"/p/films/{case['film_id']}")
    assert page.status_code == 403 and "撤销" in page.text
    again = portal.browser("10.5.5.6").post(
        "/api/shares/open", json={"token": share["link"].rsplit("/", 1)[1]}
    )
    assert again.status_code == 410 and "撤销" in again.json()["zh"]
    # The patient still reads (only the share was revoked).
    assert patient.get(paths["frames"], headers=frames).status_code == 200


def test_an_expired_share_reads_nothing(portal: Portal) -> None:
    case = portal.film_case()
    patient = portal.verified(case)
    soon = (utcnow() + timedelta(seconds=2)).isoformat()
    share = _share(portal, patient, case, expires_at=soon)
    doctor = _open(portal, share)
    paths = _study_paths(portal, case["study_uid"])
    assert doctor.get(paths["metadata"]).status_code == 200
    time.sleep(2.2)
    for name, path in paths.items():
        assert doctor.get(path).status_code == 403, name
    assert portal.browser().post(
        "/api/shares/open", json={"token": share["link"].rsplit("/", 1)[1]}
    ).status_code == 410  # fmt: skip
    listed = patient.get("/api/shares").json()["shares"]
    assert [s["state"] for s in listed] == ["expired"]


def test_a_view_only_share_views_but_does_not_download_or_manage(portal: Portal) -> None:
    case = portal.film_case()
    patient = portal.verified(case)
    share = _share(portal, patient, case, days=1, code="2468")
    doctor = portal.browser("10.4.4.4")
    token = share["link"].rsplit("/", 1)[1]
    assert doctor.post("/api/shares/open", json={"token": token, "code": "1357"}).status_code == 401
    assert doctor.post("/api/shares/open", json={"token": token, "code": "2468"}).status_code == 200
    page = doctor.get(f"/p/films/{case['film_id']}")
    assert page.status_code == 200 and REPORT["impression"] in page.text
    assert "download.zip" not in page.text and "/share" not in page.text
    paths = _study_paths(portal, case["study_uid"])
    for name in ("frames", "metadata", "rendered", "thumbnail"):
        assert doctor.get(paths[name]).status_code == 200, name
    jpeg = paths["wado-uri"].replace("application/dicom", "image/jpeg")
    assert doctor.get(jpeg).status_code == 200
    for name in ("instance", "wado-uri"):  # originals leave with the caller: a download
        assert doctor.get(paths[name]).status_code == 403, name
    assert doctor.get(f"/dicom-web/studies/{case['study_uid']}").status_code == 403
    assert doctor.get(f"/api/films/{case['film_id']}/download.zip").status_code == 403
    assert doctor.get(f"/api/films/{case['film_id']}/history").status_code == 403
    assert doctor.get(f"/p/films/{case['film_id']}/history").status_code == 403
    csrf = csrf_of(doctor, f"/p/films/{case['film_id']}")
    reshare = doctor.post(
        "/api/shares", json={"film_ids": [case["film_id"]], "days": 1},
        headers={"X-CSRF-Token": csrf},
    )  # fmt: skip
    assert reshare.status_code == 403


def test_writes_need_the_csrf_token_and_our_origin(portal: Portal) -> None:
    case = portal.film_case()
    patient = portal.verified(case)
    body = {"film_ids": [case["film_id"]], "days": 1}
    assert patient.post("/api/shares", json=body).status_code == 403
    assert patient.post("/api/shares", json=body, headers={"X-CSRF-Token": "x"}).status_code == 403
    csrf = csrf_of(patient, f"/p/films/{case['film_id']}")
    evil = {"X-CSRF-Token": csrf, "Origin": "https://evil.example"}
    assert patient.post("/api/shares", json=body, headers=evil).status_code == 403
    good = {"X-CSRF-Token": csrf, "Origin": "http://testserver"}
    assert patient.post("/api/shares", json=body, headers=good).status_code == 201


def test_sessions_expire_and_cookies_are_locked_down(portal: Portal) -> None:
    case = portal.film_case()
    c = portal.browser(https=True)  # behind TLS (directly, or a trusted proxy said so)
    r = c.post("/api/verify", json={"token": case["token"], "code": case["access_code"]})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" in cookie
    page = c.get(f"/p/films/{case['film_id']}")
    assert page.headers["strict-transport-security"].startswith("max-age=")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"
    hrefs = " ".join(part.split('"')[0] for part in page.text.split('href="')[1:])
    for phi in (REPORT["patient_name"], "13912345678", "345678"):
        assert phi not in hrefs
    with portal.archive.db.write() as s:
        s.execute(update(PortalSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert c.get(f"/dicom-web/studies/{case['study_uid']}/metadata").status_code == 401
    assert c.get(f"/p/films/{case['film_id']}").status_code == 401
    with portal.archive.db.write() as s:  # long gone: the issuer's purge forgets the row
        s.execute(update(PortalSession).values(expires_at=utcnow() - timedelta(days=2)))
    assert purge_expired(portal.archive) >= 1
    assert c.get(f"/dicom-web/studies/{case['study_uid']}/metadata").status_code == 401


def test_the_audit_chain_detects_tampering(portal: Portal, settings) -> None:  # type: ignore[no-untyped-def]
    case = portal.film_case()
    stranger = portal.browser("10.3.3.3")
    stranger.post("/api/verify", json={"token": case["token"], "code": _wrong(case["access_code"])})
    portal.verified(case).get(f"/p/films/{case['film_id']}")
    portal.archive.audit.flush()

    def verify() -> subprocess.CompletedProcess[str]:
        env = {
            "CLOUDFILM_DATABASE_URL": settings.database_url,
            "CLOUDFILM_DATA_DIR": str(settings.data_dir),
            "CLOUDFILM_CONFIG": str(settings.data_dir / "none.toml"),
            "PATH": "/usr/bin:/bin",
        }
        return subprocess.run(
            [sys.executable, "-m", "cloudfilm.cli", "audit", "verify"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    assert verify().returncode == 0
    with portal.archive.db.write() as s:  # hide the failed guess
        pk = s.execute(
            select(AuditEvent.pk).where(AuditEvent.action == "verify", AuditEvent.outcome == "deny")
        ).scalar_one()
        s.execute(update(AuditEvent).where(AuditEvent.pk == pk).values(outcome="allow"))
    bad = verify()
    assert bad.returncode == 1 and f"record {pk}" in bad.stdout
    with portal.archive.db.write() as s:  # restore it, then delete it instead
        s.execute(update(AuditEvent).where(AuditEvent.pk == pk).values(outcome="deny"))
    assert verify().returncode == 0
    with portal.archive.db.write() as s:
        s.execute(delete(AuditEvent).where(AuditEvent.pk == pk))
    assert verify().returncode == 1

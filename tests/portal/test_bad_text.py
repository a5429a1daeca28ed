"""Text no index column can hold, sent to the cloud-film API: stored cleaned, or refused with a
4xx problem, never a 500. PostgreSQL refuses NUL outright, UTF-8 cannot encode an unpaired
surrogate (JSON can escape one: ``\\ud800``), and a UID column holds 64 characters.
"""

from __future__ import annotations

import json

from tests.portal.conftest import REPORT, Portal


def _post_json(portal: Portal, url: str, body: object) -> object:
    # json.dumps escapes an unpaired surrogate as \ud800, as a reporting system's JSON would
    return portal.hospital.post(
        url, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )


def test_report_text_is_stored_without_nul_and_unpaired_surrogates_replaced(
    portal: Portal,
) -> None:
    acc = "A-TEXT-1"
    study = portal.study(accession=acc)
    body = {
        **REPORT,
        "accession_number": acc,
        "findings": "left\x00right",
        "impression": "x\ud800y",
    }
    r = _post_json(portal, "/api/reports", body)
    assert r.status_code == 201, r.text  # type: ignore[attr-defined]
    got = r.json()  # type: ignore[attr-defined]
    assert got["matched_study_uid"] == study
    assert got["fields"]["findings"] == "leftright"
    assert got["fields"]["impression"] == "x\ufffdy"


def test_a_report_whose_study_uid_is_no_uid_is_refused(portal: Portal) -> None:
    for uid in ("1." * 40, "1.2.3.abc"):
        r = _post_json(portal, "/api/reports", {**REPORT, "study_uid": uid})
        assert r.status_code == 422, (uid, r.text)  # type: ignore[attr-defined]
        assert r.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]


def test_film_and_share_requests_with_nul_are_refused(portal: Portal) -> None:
    case = portal.film_case()
    for url, body in (
        ("/api/films", {"study_uid": f"{case['study_uid']}\x00"}),
        ("/api/shares", {"film_ids": [f"{case['film_id']}\x00"], "days": 7}),
        ("/api/shares", {"film_ids": [case["film_id"]], "days": 7, "label": "a\x00b"}),
        ("/api/shares", {"film_ids": [case["film_id"]], "days": 7, "assisted_by": "a\x00b"}),
    ):
        r = _post_json(portal, url, body)
        assert r.status_code == 400, (url, body, r.text)  # type: ignore[attr-defined]
    r = portal.hospital.get("/api/films", params={"study_uid": f"{case['study_uid']}\x00"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"

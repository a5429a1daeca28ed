"""No grant, no study data through any door; a grant opens the viewing doors and never the
ones that take the study away; a revoked grant closes them all again."""

from __future__ import annotations

import re

from sqlalchemy import select

from cloudfilm.storage.models import Instance, Series, Study
from tests.portal.conftest import SmsGateway
from tests.regional.consent.test_consent import PHONE, World, sms_to


def uids(world: World, study_uid: str) -> tuple[str, str]:
    with world.archive.db.read() as s:
        return s.execute(
            select(Series.series_uid, Instance.sop_uid)
            .join(Instance, Instance.series_pk == Series.pk)
            .join(Study, Study.pk == Series.study_pk)
            .where(Study.study_uid == study_uid)
        ).first()  # type: ignore[return-value]


def doors(world: World) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(viewing, taking away, searches) URLs of A's study."""
    a = world.a_study
    series, sop = uids(world, a)
    inst = f"/dicom-web/studies/{a}/series/{series}/instances/{sop}"
    viewing = {
        "study metadata": f"/dicom-web/studies/{a}/metadata",
        "series metadata": f"/dicom-web/studies/{a}/series/{series}/metadata",
        "instance metadata": f"{inst}/metadata",
        "frames": f"{inst}/frames/1",
        "rendered": f"{inst}/rendered",
        "rendered frame": f"{inst}/frames/1/rendered",
        "thumbnail": f"/dicom-web/studies/{a}/thumbnail",
        "wado-uri jpeg": f"/wado?requestType=WADO&studyUID={a}&seriesUID={series}&objectUID={sop}",
    }
    film = world.a_film["film_id"]
    taking = {
        "retrieve study": f"/dicom-web/studies/{a}",
        "retrieve instance": inst,
        "wado-uri dicom": f"/wado?requestType=WADO&studyUID={a}&seriesUID={series}"
        f"&objectUID={sop}&contentType=application/dicom",
        "zip": f"/api/films/{film}/download.zip",
        "key images": f"/api/films/{film}/key-images.zip",
        "printable": f"/api/films/{film}/printable.pdf",
        "history": f"/api/films/{film}/history",
    }
    searches = {
        "studies": "/dicom-web/studies",
        "series": f"/dicom-web/studies/{a}/series",
        "instances": f"/dicom-web/studies/{a}/instances",
        "all series": f"/dicom-web/series?StudyInstanceUID={a}",
    }
    return viewing, taking, searches


def refused(status: int) -> bool:
    return status in (401, 403, 404)


def check(world: World, *, granted: bool) -> None:
    doctor = world.doctor
    viewing, taking, searches = doors(world)
    for name, url in viewing.items():
        status = doctor.get(url).status_code
        assert (status == 200) if granted else refused(status), (name, status)
    for name, url in taking.items():
        status = doctor.get(url).status_code
        assert refused(status), (name, status)
    for name, url in searches.items():
        r = doctor.get(url)
        if not granted and refused(r.status_code):
            continue  # a search inside A's study is refused outright
        assert r.status_code in (200, 204), (name, r.status_code)
        assert (world.a_study in r.text) is granted, name
        assert world.q_study not in r.text, name


def test_every_door_follows_the_grant(world: World, sms: SmsGateway) -> None:
    check(world, granted=False)
    before = len(sms.messages)
    assert world.ask(world.person()).status_code == 303
    token = re.search(r"/c/([A-Za-z0-9_-]+)", sms_to(sms, PHONE, before + 1)["message"]).group(1)
    patient = world.portal.browser("10.9.9.7")
    r = patient.post("/api/portal/consent/link", json={"token": token, "decision": "approve"})
    assert r.status_code == 200
    check(world, granted=True)
    from cloudfilm.regional.models import ConsentGrant
    from cloudfilm.storage.models import utcnow

    with world.archive.db.write() as s:
        for g in s.execute(select(ConsentGrant)).scalars():
            g.revoked_at = utcnow()
    check(world, granted=False)

"""The hospital desk and the smaller patient features: doctor-assisted consent (API and CLI),
a reissued film, the English switch, logout, key images, the demo banner."""

from __future__ import annotations

import io
import re
import zipfile

from click.testing import CliRunner
from PIL import Image

from cloudfilm.access.tokens import create_token
from cloudfilm.accounts.users import create_user
from cloudfilm.cli import main
from cloudfilm.config import Settings
from tests.portal.conftest import Portal, csrf_of


def _env(settings: Settings) -> dict[str, str]:
    return {
        "CLOUDFILM_DATA_DIR": str(settings.data_dir),
        "CLOUDFILM_DATABASE_URL": str(settings.database_url),
        "CLOUDFILM_CONFIG": str(settings.data_dir / "none.toml"),
    }


def test_a_hospital_user_shares_for_a_patient_and_it_is_recorded(
    portal: Portal, settings: Settings
) -> None:
    case = portal.film_case()
    for username, name in (("wangfang", "护士 王芳"), ("zhaoqiang", "医生 赵强")):
        create_user(
            portal.archive.db, username=username, password="desk-pass-123", role="filmdesk",
            hospital=1, display_name=name,
        )  # fmt: skip
    create_user(
        portal.archive.db, username="lidoc", password="clinician-123", role="clinician",
        hospital=1, display_name="李医生",
    )  # fmt: skip
    _i, admin = create_token(portal.archive.db, "desk", "admin", hospital=1)
    desk = portal.browser()
    desk.headers["Authorization"] = f"Bearer {admin}"
    body = {"film_ids": [case["film_id"]], "days": 3, "label": "转诊 省医院"}
    assert desk.post("/api/shares", json=body).status_code == 400, "who verified the patient?"
    free_text = desk.post("/api/shares", json={**body, "assisted_by": "护士 王芳"})
    assert free_text.status_code == 400, "a name typed in is not a film-desk user"
    not_desk = desk.post("/api/shares", json={**body, "assisted_by": "lidoc"})
    assert not_desk.status_code == 400, "a clinician is not the film desk"
    r = desk.post("/api/shares", json={**body, "assisted_by": "wangfang"})
    assert r.status_code == 201 and r.json()["assisted_by"] == "护士 王芳 (wangfang)"
    writer = portal.hospital.post("/api/shares", json={**body, "assisted_by": "wangfang"})
    assert writer.status_code == 403, "a reporting system's token may not share films"

    cli = CliRunner().invoke(
        main, ["film", "share", case["study_uid"], "--assisted-by", "zhaoqiang", "--days", "1"],
        env=_env(settings),
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    link = cli.output.strip().splitlines()[-1]
    doctor = portal.browser("10.2.2.2")
    assert (
        doctor.post("/api/shares/open", json={"token": link.rsplit("/", 1)[1]}).status_code == 200
    )
    assert doctor.get(f"/p/films/{case['film_id']}").status_code == 200

    patient = portal.verified(case)
    page = patient.get(f"/p/films/{case['film_id']}/share").text
    assert "医院代为授权：护士 王芳" in page and "医院代为授权：医生 赵强" in page
    history = patient.get(f"/api/films/{case['film_id']}/history").json()["entries"]
    assert any(h["action"] == "share" and "assisted by 护士 王芳" in h["detail"] for h in history)


def test_a_reissued_film_ends_the_old_link_and_sessions(portal: Portal, settings: Settings) -> None:
    case = portal.film_case()
    old_session = portal.verified(case)
    assert old_session.get(f"/p/films/{case['film_id']}").status_code == 200
    shown = CliRunner().invoke(main, ["film", "show", case["study_uid"]], env=_env(settings))
    assert f"code {case['access_code']}" in shown.output
    cli = CliRunner().invoke(main, ["film", "reissue", case["study_uid"]], env=_env(settings))
    assert cli.exit_code == 0, cli.output
    new_link = re.search(r"link (\S+)", cli.output).group(1)  # type: ignore[union-attr]
    new_code = re.search(r"code (\d{6})", cli.output).group(1)  # type: ignore[union-attr]
    assert new_link.rsplit("/", 1)[1] != case["token"]
    assert old_session.get(f"/p/films/{case['film_id']}").status_code == 401
    stale = portal.browser().post(
        "/api/verify", json={"token": case["token"], "code": case["access_code"]}
    )
    assert stale.status_code == 404
    fresh = portal.browser().post(
        "/api/verify", json={"token": new_link.rsplit("/", 1)[1], "code": new_code}
    )
    assert fresh.status_code == 200


def test_english_switch_logout_and_key_images(portal: Portal) -> None:
    case = portal.film_case()
    patient = portal.verified(case)
    zh = patient.get(f"/p/films/{case['film_id']}").text
    assert 'lang="zh-CN"' in zh and "查看影像" in zh
    r = patient.get(f"/p/lang/en?next=/p/films/{case['film_id']}")
    assert r.status_code == 200 and 'lang="en"' in r.text and "View images" in r.text
    assert patient.get("/p/lang/en?next=//evil.example").url.path == "/p/"
    assert patient.get("/p/lang/en?next=/%5Cevil.example").url.path == "/p/"

    images = patient.get(f"/api/films/{case['film_id']}/key-images.zip")
    assert images.status_code == 200
    with zipfile.ZipFile(io.BytesIO(images.content)) as zf:
        [name] = zf.namelist()
        assert Image.open(io.BytesIO(zf.read(name))).format == "JPEG"

    csrf = csrf_of(patient, "/p/")
    assert patient.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
    assert patient.get(f"/dicom-web/studies/{case['study_uid']}/metadata").status_code == 401
    assert patient.get("/p/").url.path == "/p/login"


def test_sms_codes_are_not_sent_twice_a_minute(portal: Portal) -> None:
    portal.film_case(phone="13511112222")
    user = portal.browser()
    assert user.post("/api/patient/otp", json={"phone": "13511112222"}).status_code == 200
    again = user.post("/api/patient/otp", json={"phone": "13511112222"})
    assert again.status_code == 429 and "1 分钟" in again.json()["zh"]
    unknown = user.post("/api/patient/otp", json={"phone": "13099998888"})
    assert unknown.status_code == 200, "the answer does not tell whether a number has films"


def test_the_demo_banner_prints_a_working_link_and_code(portal: Portal) -> None:
    from cloudfilm.demo import write_demo
    from cloudfilm.importer import import_paths
    from cloudfilm.portal.cli import demo_film_lines

    dest = portal.archive.settings.data_dir / "demo"
    write_demo(dest, ct_slices=4, ct_size=64, include_pydicom_files=False, include_codecs=False)
    import_paths(portal.archive, [dest / "ct"], hospital=1)
    lines = demo_film_lines(portal.archive)
    assert lines == demo_film_lines(portal.archive), "the same link and code every start"
    token = re.search(r"/f/(\S+)", lines[0]).group(1)  # type: ignore[union-attr]
    code = re.search(r"访问码: (\d{6})", lines[1]).group(1)  # type: ignore[union-attr]
    r = portal.browser().post("/api/verify", json={"token": token, "code": code})
    assert r.status_code == 200

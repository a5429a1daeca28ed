"""``cloudfilm serve --demo``: make sure the demo studies are in the archive, say how to try."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cloudfilm.archive import Archive
from cloudfilm.importer import import_paths

log = logging.getLogger(__name__)


def load_demo(archive: Archive) -> list[str]:
    """Generate the demo set once (kept in the data dir), import it, and return banner lines.

    Importing again is cheap and harmless: every instance is already there and is a duplicate.
    """
    from cloudfilm.demo import write_demo

    dest = archive.settings.data_dir / "demo"
    manifest_path = dest / "manifest.json"
    if not manifest_path.exists():
        log.info("writing the demo data set to %s (once)", dest)
        write_demo(dest)
    owners = demo_hospitals(archive)
    stored = 0
    for hospital, paths in _files_by_hospital(dest, owners).items():
        summary = import_paths(archive, paths, hospital=hospital)
        stored += summary.accepted + summary.counts["duplicate"]
        log.info(
            "demo import into hospital %d: %d new, %d already there, %d refused",
            hospital,
            summary.accepted,
            summary.counts["duplicate"],
            summary.counts["rejected"],
        )
    lines = [f"Demo studies: {stored} instances in {dest}"]
    lines += _describe(manifest_path)
    for hook in _BANNER_HOOKS:
        lines += hook(archive)
    lines += demo_login_lines(archive, owners)
    return lines


SECOND = ("demo-b", "第二示范医院", "Second Demo Hospital", "320200")
SECOND_STUDIES = {"mr", "dx"}
"""The demo's second hospital holds the head MR and the chest DR: a user of one hospital must
not see the other's (try it in the console)."""


def demo_hospitals(archive: Archive) -> dict[str, int]:
    """Hospital pk per role in the demo: ``a`` (the first hospital) and ``b`` (made once)."""
    from cloudfilm.accounts.hospitals import DIRECTORY, HospitalError, create_hospital
    from cloudfilm.accounts.hospitals import update_hospital as update
    from cloudfilm.accounts.models import FIRST_HOSPITAL

    first = DIRECTORY.get(archive.db, FIRST_HOSPITAL)
    if not first.region_code:
        update(archive.db, first.code, region_code="320100", name_latin="Cloudfilm Demo Hospital")
    code, name, latin, region = SECOND
    try:
        second = DIRECTORY.by_code(archive.db, code)
    except HospitalError:
        second = create_hospital(archive.db, code, name, name_latin=latin, region_code=region)
    return {"a": FIRST_HOSPITAL, "b": second.pk}


def _files_by_hospital(dest: Path, owners: dict[str, int]) -> dict[int, list[Path]]:
    """The second hospital's studies go to it; every other file (the other studies, the
    codec and character-set samples) to the first."""
    from cloudfilm.demo import DemoManifest

    every = sorted(dest.rglob("*.dcm"))
    try:
        manifest = DemoManifest.load(dest)
    except (OSError, ValueError, KeyError):
        return {owners["a"]: every}
    second = {
        (dest / f).resolve()
        for st in manifest.studies
        if st.key in SECOND_STUDIES
        for f in st.files
    }
    return {
        owners["a"]: [p for p in every if p.resolve() not in second],
        owners["b"]: [p for p in every if p.resolve() in second],
    }


DEMO_USERS = (
    ("demo-a-radiologist", "radiologist", "a", "王影像"),
    ("demo-a-desk", "filmdesk", "a", "胶片窗口 李芳"),
    ("demo-a-admin", "admin", "a", "信息科 张强"),
    ("demo-b-radiologist", "radiologist", "b", "赵阅片"),
    ("demo-operator", "operator", None, "平台运维"),
)


def demo_login_lines(archive: Archive, owners: dict[str, int]) -> list[str]:
    """Console logins of the demo: fresh passwords at every start (as the demo token), since a
    password is kept only as its hash and cannot be shown twice."""
    import secrets

    from cloudfilm.accounts.sessions import end_sessions
    from cloudfilm.accounts.users import create_user, get_user, set_disabled, set_password

    lines = [f"Hospital console 医院工作台: {archive.settings.http_url}/  (demo logins below)"]
    for username, role, where, name in DEMO_USERS:
        password = secrets.token_urlsafe(9)
        hospital = owners[where] if where else None
        user = get_user(archive.db, username)
        if user is None:
            create_user(
                archive.db,
                username=username,
                password=password,
                role=role,
                hospital=hospital,
                display_name=name,
            )
        else:
            set_password(archive.db, user.pk, password)
            set_disabled(archive.db, user.pk, False)
            end_sessions(archive.db, user.pk)
        label = f"hospital {where.upper()}" if where else "all hospitals"
        lines.append(f"  {role:<11} {username:<19} password {password}   ({label})")
    return lines


def _describe(manifest_path: Path) -> list[str]:
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    out = []
    for study in manifest.get("studies", [])[:8]:
        out.append(
            f"  {study.get('modality', ''):<3} {study.get('patient_name', '')} "
            f"(ID {study.get('patient_id', '')}) study {study.get('study_uid', '')}"
        )
    return out


_BANNER_HOOKS: list = []  # type: ignore[type-arg]
"""Other packages (API tokens, films) add lines that say how to try them."""

"""``cloudfilm film …``: the hospital desk's commands, and the demo film of ``serve --demo``.

``film show`` prints a study's film link and access code again (a patient lost the paper);
``film share`` is doctor-assisted consent: a hospital user, having verified an elderly patient
in person, creates a share on their behalf, recorded with the user's name.
"""

from __future__ import annotations

import click

from cloudfilm.archive import Archive
from cloudfilm.config import Settings

DEMO_PHONE = "13800138000"
DEMO_FINDINGS = (
    "双肺纹理清晰，走行自然。右肺上叶见一枚直径约 8 毫米的类圆形结节影，边界清晰，CT值约 40HU。"
    "纵隔居中，纵隔内未见肿大淋巴结。心影大小、形态未见异常。双侧胸膜未见增厚，胸腔内未见积液。"
)
DEMO_IMPRESSION = "1、右肺上叶小结节，建议 3 个月后复查胸部 CT。\n2、心、膈未见明显异常。"


def demo_film_lines(archive: Archive) -> list[str]:
    """Banner lines for ``serve --demo``: the demo CT's report (posted through our report code
    once), its film, and the link + access code to try on a phone."""
    from cloudfilm.demo import DemoManifest
    from cloudfilm.portal.films import film_link, issue_film
    from cloudfilm.portal.reports import ReportFields, current_report, save_report

    try:
        ct = DemoManifest.load(archive.settings.data_dir / "demo").study("ct")
    except (OSError, KeyError, ValueError):
        return []
    if current_report(archive, ct.study_uid) is None:
        save_report(
            archive,
            ReportFields(
                study_uid=ct.study_uid, accession_number=ct.accession_number,
                exam_number=ct.study_id, patient_id=ct.patient_id,
                patient_name=ct.patient_name.split("=")[-1].replace("^", ""),
                patient_sex=ct.patient_sex, phone=DEMO_PHONE,
                hospital=ct.institution_name or archive.settings.hospital_name,
                department="呼吸内科", modality="CT", exam_name=ct.study_description,
                exam_date=ct.study_date, body_part="胸部", findings=DEMO_FINDINGS,
                impression=DEMO_IMPRESSION, reporting_doctor="李明", reviewing_doctor="王建国",
                report_time=ct.study_date,
            ),
            source="json", hospital=archive.study_owner(ct.study_uid) or 1,
        )  # fmt: skip
    film, _created = issue_film(archive, ct.study_uid)
    link = film_link(archive, film)
    return [
        f"Cloud film (云胶片) of the demo CT: {link.link}",
        f"  access code 访问码: {link.code}  (or the phone's last 6 digits: {DEMO_PHONE[-6:]})",
    ]


def _register_demo_hook() -> None:
    try:
        from cloudfilm import demo_setup
    except ImportError:
        return
    hooks = getattr(demo_setup, "_BANNER_HOOKS", None)
    if hooks is not None and demo_film_lines not in hooks:
        hooks.append(demo_film_lines)


_register_demo_hook()


@click.group()
def film() -> None:
    """Cloud films: show a study's link and code, issue one now, share for a patient."""


def _archive() -> Archive:
    return Archive(Settings())


@film.command("show")
@click.argument("study_uid")
@click.option("--issue", is_flag=True, help="Issue the film now if the study has none yet.")
def show_cmd(study_uid: str, issue: bool) -> None:
    """Print the film link and access code of a study (for a reprint at the desk)."""
    from cloudfilm.portal.films import film_for_study, film_link, issue_film
    from cloudfilm.portal.reports import current_report

    archive = _archive()
    try:
        film_row = film_for_study(archive, study_uid)
        if film_row is None and issue:
            if current_report(archive, study_uid) is None:
                raise click.ClickException("the study has no report yet")
            film_row, _ = issue_film(archive, study_uid)
        if film_row is None:
            raise click.ClickException("no film for this study yet (use --issue)")
        link = film_link(archive, film_row)
    finally:
        archive.close()
    click.echo(f"film {link.film_id}")
    click.echo(f"link {link.link}")
    click.echo(f"code {link.code}")


@film.command("reissue")
@click.argument("study_uid")
def reissue_cmd(study_uid: str) -> None:
    """A new link and access code (the paper report was lost); the old ones stop working."""
    from cloudfilm.portal.films import film_for_study, film_link, reissue_film

    archive = _archive()
    try:
        film_row = film_for_study(archive, study_uid)
        if film_row is None:
            raise click.ClickException("no film for this study yet")
        link = film_link(archive, reissue_film(archive, film_row))
    finally:
        archive.close()
    click.echo(f"film {link.film_id}")
    click.echo(f"link {link.link}")
    click.echo(f"code {link.code}")


@film.command("share")
@click.argument("study_uid")
@click.option(
    "--assisted-by",
    required=True,
    help="Username of the film-desk user who verified the patient in person.",
)
@click.option("--days", default=7.0, show_default=True)
@click.option("--code", default="", help="Optional extra code the doctor must type.")
@click.option("--download/--view-only", default=False, show_default=True)
@click.option("--label", default="", help="A note for the patient's share list.")
def share_cmd(
    study_uid: str, assisted_by: str, days: float, code: str, download: bool, label: str
) -> None:
    """Doctor-assisted consent: share a study's film on the patient's behalf."""
    from cloudfilm.access import Principal
    from cloudfilm.portal.films import film_for_study
    from cloudfilm.portal.shares import ShareError, assisting_user, create_share

    archive = _archive()
    try:
        film_row = film_for_study(archive, study_uid)
        if film_row is None:
            raise click.ClickException("no film for this study yet")
        try:
            by = assisting_user(
                archive, Principal(kind="system", id="cli"), film_row.hospital_pk, assisted_by
            )
            info = create_share(
                archive, [film_row], days=days, code=code, allow_download=download, label=label,
                created_by="system:cli", assisted_by=by,
            )  # fmt: skip
        except ShareError as exc:
            raise click.UsageError(str(exc)) from exc
    finally:
        archive.close()
    click.echo(f"share {info.share_id} until {info.expires_at:%Y-%m-%d %H:%M} UTC")
    click.echo(info.link)

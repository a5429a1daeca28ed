"""``cloudfilm retention list|approve|delete|rules|rule|hold|release|holds``, ``cloudfilm tier
run`` and ``cloudfilm export --deidentify`` (docs/keeping.md).

Deletion takes three steps on purpose: ``list`` finds the expired studies and lists them,
``approve`` records who approved which, ``delete`` removes only approved ones (each checked
again for a hold). Every step is in the audit trail under the name given with ``--by``.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

import click

from cloudfilm.config import Settings


def _archive():  # type: ignore[no-untyped-def]  # the import is slow; --help should not wait
    from cloudfilm.archive import Archive

    return Archive(Settings())


def _hospitals(archive, code: str | None) -> list[int]:  # type: ignore[no-untyped-def]
    from cloudfilm.accounts.hospitals import DIRECTORY, HospitalError

    if code:
        try:
            return [DIRECTORY.by_code(archive.db, code).pk]
        except HospitalError as exc:
            raise click.UsageError(str(exc)) from exc
    return [h.pk for h in DIRECTORY.all(archive.db)]


def _by(value: str | None) -> str:
    return value or f"cli:{getpass.getuser()}"


HOSPITAL = click.option("--hospital", default=None, help="A hospital's code (default: all).")
BY = click.option(
    "--by", default=None, help="Who does it, for the audit trail (default: cli:<user>)."
)


@click.group()
def retention() -> None:
    """Retention rules, legal holds, and deleting expired studies after an admin's approval."""


@retention.command("list")
@HOSPITAL
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def retention_list(hospital: str | None, as_json: bool) -> None:
    """Find the expired studies (held ones never) and list those waiting for approval."""
    from cloudfilm.keeping.retention import scan, study_facts

    archive = _archive()
    try:
        for pk in _hospitals(archive, hospital):
            rows = scan(archive, pk)
            facts = study_facts(archive, [r.study_uid for r in rows])
            for r in rows:
                f = facts.get(r.study_uid, {})
                item = {
                    "hospital": pk, "study_uid": r.study_uid, "status": r.status, "rule": r.rule,
                    "study_date": f.get("study_date", ""), "modalities": f.get("modalities", ""),
                    "patient_class": f.get("patient_class", ""),
                    "instances": f.get("num_instances", 0), "approved_by": r.approved_by,
                }  # fmt: skip
                if as_json:
                    click.echo(json.dumps(item, ensure_ascii=False))
                else:
                    click.echo(
                        f"{r.status:9} {r.study_uid} {item['study_date']} {item['modalities']} "
                        f"{item['patient_class'] or '?'} {item['instances']} inst. ({r.rule})"
                    )
    finally:
        archive.close()


@retention.command("approve")
@HOSPITAL
@BY
@click.option("--all", "everything", is_flag=True, help="Every listed study of the hospital.")
@click.argument("study_uids", nargs=-1)
def retention_approve(
    hospital: str | None, by: str | None, everything: bool, study_uids: tuple[str, ...]
) -> None:
    """Approve listed studies for deletion (nothing is deleted yet)."""
    from cloudfilm.keeping.retention import approve, pending_list

    if not study_uids and not everything:
        raise click.UsageError("name the studies to approve, or --all")
    archive = _archive()
    try:
        total = 0
        for pk in _hospitals(archive, hospital):
            uids = list(study_uids)
            if everything:
                uids = [d.study_uid for d in pending_list(archive, pk) if d.status == "listed"]
            total += approve(archive, pk, uids, by=_by(by))
        click.echo(f"approved {total} stud(ies) for deletion")
    finally:
        archive.close()


@retention.command("delete")
@HOSPITAL
@BY
def retention_delete(hospital: str | None, by: str | None) -> None:
    """Delete the approved studies: tombstones and an audit record, then the blobs."""
    from cloudfilm.keeping.deletion import delete_approved

    archive = _archive()
    try:
        for pk in _hospitals(archive, hospital):
            report = delete_approved(archive, pk, by=_by(by))
            for uid in report.withdrawn:
                click.echo(f"withdrawn {uid} (held, or no longer expired)")
            if report.deleted:
                click.echo(
                    f"hospital {pk}: deleted {len(report.deleted)} stud(ies), "
                    f"{report.instances} instance(s), {report.blobs_removed} blob(s) removed"
                )
    finally:
        archive.close()


@retention.command("rules")
@HOSPITAL
def retention_rules(hospital: str | None) -> None:
    """The rules in force: the hospital's own, then the defaults."""
    from cloudfilm.keeping.retention import default_rules, hospital_rules

    archive = _archive()
    try:
        for pk in _hospitals(archive, hospital):
            with archive.db.read() as session:
                rules = hospital_rules(session, pk)
            for r in [*rules, *default_rules(archive.settings.retention_years)]:
                click.echo(f"hospital {pk}: {r.label}")
    finally:
        archive.close()


@retention.command("rule")
@click.option("--hospital", required=True, help="The hospital's code.")
@click.option("--class", "patient_class", default="*", show_default=True)
@click.option("--modality", default="*", show_default=True)
@click.option("--years", type=int, required=True)
def retention_rule(hospital: str, patient_class: str, modality: str, years: int) -> None:
    """Add or change a rule of a hospital (class: inpatient, outpatient, emergency, checkup)."""
    from cloudfilm.keeping.retention import set_rule

    archive = _archive()
    try:
        set_rule(archive, _hospitals(archive, hospital)[0], patient_class, modality, years)
        click.echo(f"rule: {patient_class}/{modality} = {years} years")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        archive.close()


@retention.command("hold")
@click.option("--hospital", required=True, help="The hospital's code.")
@click.option("--study", "study_uid", default=None, help="A Study Instance UID.")
@click.option("--patient", "patient_id", default=None, help="A Patient ID: all their studies.")
@click.option("--reason", required=True)
@BY
def retention_hold(
    hospital: str, study_uid: str | None, patient_id: str | None, reason: str, by: str | None
) -> None:
    """Place a legal hold: nothing under it is listed or deleted, whatever its age."""
    from cloudfilm.keeping.retention import place_hold

    if bool(study_uid) == bool(patient_id):
        raise click.UsageError("give --study or --patient")
    archive = _archive()
    try:
        pk = place_hold(
            archive, _hospitals(archive, hospital)[0], by=_by(by), reason=reason,
            study_uid=study_uid, patient_id=patient_id,
        )  # fmt: skip
        click.echo(f"hold {pk} placed")
    except (LookupError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        archive.close()


@retention.command("release")
@click.option("--hospital", required=True, help="The hospital's code.")
@click.argument("hold_pk", type=int)
@BY
def retention_release(hospital: str, hold_pk: int, by: str | None) -> None:
    """Release a legal hold."""
    from cloudfilm.keeping.retention import release_hold

    archive = _archive()
    try:
        release_hold(archive, _hospitals(archive, hospital)[0], hold_pk, by=_by(by))
        click.echo(f"hold {hold_pk} released")
    except LookupError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        archive.close()


@retention.command("holds")
@HOSPITAL
def retention_holds(hospital: str | None) -> None:
    """The active legal holds."""
    from cloudfilm.keeping.retention import active_holds

    archive = _archive()
    try:
        for pk in _hospitals(archive, hospital):
            with archive.db.read() as session:
                for h in active_holds(session, pk):
                    what = h.study_uid or f"patient pk {h.patient_pk}"
                    click.echo(f"{h.pk}: hospital {pk} {what} by {h.created_by}: {h.reason}")
    finally:
        archive.close()


@click.group()
def tier() -> None:
    """Storage tiers: move old studies to the cold tier."""


@tier.command("run")
@click.option("--older-than", type=float, default=None, help="Days (default: cold_after_days).")
@click.option("--study", "studies", multiple=True, help="Just this study (any age).")
def tier_run(older_than: float | None, studies: tuple[str, ...]) -> None:
    """Move studies whose last instance is older than N days to the cold tier."""
    from cloudfilm.keeping.tiering import run_lifecycle

    archive = _archive()
    try:
        report = run_lifecycle(
            archive, older_than_days=older_than, study_uids=list(studies) or None
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        archive.close()
    click.echo(
        f"{len(report.studies)} stud(ies) cold, {report.blobs_moved} blob(s) moved, "
        f"{report.blobs_already} already cold, {len(report.missing)} missing"
    )
    sys.exit(1 if report.missing else 0)


@click.command("export")
@click.option("--deidentify", is_flag=True, required=True, help="Required: only de-identified.")
@HOSPITAL
@click.option(
    "-k", "--key", "keys", multiple=True, help="QIDO matching key, e.g. -k StudyDate=2020"
)
@click.option("--study", "studies", multiple=True, help="A Study Instance UID.")
@click.option("--modified-dates", is_flag=True, help="Retain longitudinal temporal information.")
@click.option("--clean-descriptors", is_flag=True, help="Keep descriptions, cleaned.")
@click.option("--project", default="default", show_default=True, help="Pseudonyms are per project.")
@click.option("--include-burned-in", is_flag=True, help="Export flagged instances too.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="The zip to write.")
@click.option("--stow", "stow_url", default=None, help="Another archive's DICOMweb root.")
@click.option("--stow-token", default=None, help="Its bearer token.")
def export_command(
    deidentify: bool, hospital: str | None, keys: tuple[str, ...], studies: tuple[str, ...],
    modified_dates: bool, clean_descriptors: bool, project: str, include_burned_in: bool,
    out: Path | None, stow_url: str | None, stow_token: str | None,
) -> None:  # fmt: skip
    """De-identified research export (PS3.15 Basic Profile) to a zip or by STOW-RS."""
    from cloudfilm.access import Principal
    from cloudfilm.keeping.deid import Options
    from cloudfilm.keeping.export import ExportError, StowSink, ZipSink, export, find_studies

    if (out is None) == (stow_url is None):
        raise click.UsageError("give --out FILE.zip or --stow URL")
    query = {}
    for item in keys:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"-k {item}: Keyword=Value")
        query[name.strip()] = value.strip()
    if not query and not studies:
        raise click.UsageError("give -k matching keys or --study UIDs")
    archive = _archive()
    try:
        owner = _hospitals(archive, hospital)[0] if hospital else None
        principal = Principal(
            kind="user" if owner is not None else "system", id=f"cli-export:{getpass.getuser()}",
            scopes=frozenset({"admin", "read"}), hospital=owner,
        )  # fmt: skip
        uids = list(studies)
        if query:
            found = find_studies(archive, principal, query)
            uids = [u for u in found if not studies or u in studies]
        sink = StowSink(stow_url, stow_token) if stow_url else ZipSink(out)  # type: ignore[arg-type]
        result = export(
            archive, principal, uids, Options(modified_dates, clean_descriptors, project), sink,
            include_burned_in=include_burned_in,
        )  # fmt: skip
    except ExportError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        archive.close()
    click.echo(json.dumps(result.summary(), ensure_ascii=False))
    sys.exit(1 if result.stow_failures else 0)

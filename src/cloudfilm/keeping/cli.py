"""``cloudfilm verify``, ``cloudfilm replicate``, ``cloudfilm index rebuild``: fixity, the
second copy and the index rebuilt from the blobs, by hand (docs/keeping.md)."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime

import click

from cloudfilm.config import Settings


def _archive():  # type: ignore[no-untyped-def]  # the import is slow; --help should not wait
    from cloudfilm.archive import Archive
    from cloudfilm.metrics.multiproc import join_running

    settings = Settings()
    join_running(settings)  # a running serve's /metrics counts what this process finds
    return Archive(settings)


def _hospital(archive, code: str | None) -> int | None:  # type: ignore[no-untyped-def]
    if not code:
        return None
    from cloudfilm.accounts.hospitals import DIRECTORY, HospitalError

    try:
        return DIRECTORY.by_code(archive.db, code).pk
    except HospitalError as exc:
        raise click.UsageError(str(exc)) from exc


def _since(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.UsageError(f"--since: not a date: {value!r} (e.g. 2026-01-31)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@click.command()
@click.option("--hospital", default=None, help="Only this hospital's blobs (its code).")
@click.option("--since", default=None, help="Only instances received since (ISO date).")
@click.option(
    "--mbps", type=float, default=0.0, show_default=True, help="Read at most MB/s (0: no limit)."
)
def verify(hospital: str | None, since: str | None, mbps: float) -> None:
    """Re-read blobs now and check their SHA-256 against the index; exit 1 on an alarm that
    was not repaired from the replica."""
    from cloudfilm.keeping.fixity import Unreachable
    from cloudfilm.keeping.fixity import verify as run

    archive = _archive()
    try:
        owner = _hospital(archive, hospital)
        started = time.monotonic()
        try:
            tally = run(archive, hospital=owner, since=_since(since), mbps=mbps)
        except Unreachable as exc:
            click.echo(f"the primary blob store failed: {exc}", err=True)
            sys.exit(2)
        took = time.monotonic() - started
    finally:
        archive.close()
    click.echo(
        json.dumps(
            {
                "checked": tally.checked,
                "megabytes": round(tally.bytes / 1e6, 1),
                "seconds": round(took, 1),
                "alarms": tally.alarms,
            }
        )
    )
    sys.exit(1 if tally.unresolved else 0)


@click.command()
@click.option("--catch-up", is_flag=True, help="Queue every blob the replica does not have.")
@click.option("--drain", is_flag=True, help="Copy what is due now, here, until none is left.")
def replicate(catch_up: bool, drain: bool) -> None:
    """The second copy: queue status (JSON); ``--catch-up`` queues what existed before the
    replica was configured; ``serve`` copies the queue in the background."""
    from cloudfilm.keeping.replica import ReplicaUnavailable, copy_due, queue_status
    from cloudfilm.keeping.replica import catch_up as queue_all

    archive = _archive()
    try:
        if not archive.settings.replica_url:
            raise click.UsageError("no replica is configured (CLOUDFILM_REPLICA_URL)")
        queued = None
        if catch_up:
            try:
                queued = queue_all(archive)
            except ReplicaUnavailable as exc:
                click.echo(str(exc), err=True)
                sys.exit(2)
        copied = failed = 0
        while drain:
            done, bad = copy_due(archive)
            copied, failed = copied + done, failed + bad
            if not done and not bad:
                break
            if bad and not done:
                break  # the replica refuses: the queue keeps them for the background worker
        status = queue_status(archive)
    finally:
        archive.close()
    out: dict[str, object] = {
        "waiting": status.waiting,
        "failing": status.failing,
        "oldest": status.oldest.isoformat() if status.oldest else None,
        "last_error": status.last_error,
    }
    if queued is not None:
        out["queued"] = queued
    if drain:
        out.update(copied=copied, failed=failed)
    click.echo(json.dumps(out, ensure_ascii=False))


@click.group()
def index() -> None:
    """The image index (patients, studies, series, instances)."""


@index.command("rebuild")
@click.option(
    "--empty",
    is_flag=True,
    help="Delete the image index first (what only it knew is carried across; see the docs).",
)
@click.option("--yes", is_flag=True, help="Do not ask before --empty.")
@click.option("--force", is_flag=True, help="Even while a serve seems to be running.")
def rebuild(empty: bool, yes: bool, force: bool) -> None:
    """Recreate the image index from the blobs alone (accounts, reports, films are kept)."""
    from cloudfilm.keeping.rebuild import index_counts, live_leases
    from cloudfilm.keeping.rebuild import rebuild as run

    archive = _archive()
    try:
        held = live_leases(archive)
        if held and not force:
            raise click.UsageError(
                "a serve is running against this index (leases: " + ", ".join(held) + "); "
                "stop it first (its caches would not see the new rows), or pass --force"
            )
        if empty and not yes:
            counts = index_counts(archive)
            click.confirm(f"delete the image index ({counts}) and rebuild it?", abort=True)
        done = [0]

        def progress(n: int) -> None:
            done[0] += n
            click.echo(f"  {done[0]} blobs", err=True)

        result = run(archive, empty=empty, progress=progress)
        counts = index_counts(archive)
    finally:
        archive.close()
    click.echo(
        json.dumps(
            {
                "blobs": result.keys,
                "indexed": result.indexed,
                "already_indexed": result.already,
                "failed": result.failed,
                "unknown_hospital_codes": result.unowned,
                "deleted": result.deleted,
                "carried": result.carried,
                "index": counts,
                "seconds": round(result.seconds, 1),
            },
            ensure_ascii=False,
        )
    )
    sys.exit(1 if result.unowned or result.failed else 0)

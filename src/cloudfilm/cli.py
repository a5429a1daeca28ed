"""The ``cloudfilm`` command: serve, import, demo, db, audit."""

from __future__ import annotations

import gc
import json
import logging
import signal
import sys
from pathlib import Path

import click

from cloudfilm.config import Settings


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in (
        "pynetdicom",
        "uvicorn.access",
        "botocore",
        "urllib3",
        "alembic",
        "openjpeg",
        "httpx",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pydicom logs every odd value and every decoder it tried; we report what matters ourselves
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """cloudfilm — cloud film (云胶片) archive, DICOMweb server and patient portal."""
    _logging(verbose)


@main.command()
@click.option("--demo", is_flag=True, help="Load the demo studies first and print how to try.")
def serve(demo: bool) -> None:
    """Run the DICOM server and the HTTP server (with their worker processes)."""
    from cloudfilm.metrics import multiproc

    settings = Settings()
    multiproc.start_fresh(settings)  # before any metric exists (see metrics/multiproc.py)
    multiproc.register_process("serve")
    from cloudfilm.archive import Archive
    from cloudfilm.dimse import workers as dicom_workers
    from cloudfilm.dimse.server import start_dicom_server
    from cloudfilm.http import workers as http_workers
    from cloudfilm.http.app import create_app
    from cloudfilm.processes import stop_children

    archive = Archive(settings)
    archive.recover()
    from cloudfilm.storage.recovery import Checkpointer

    checkpointer = Checkpointer(archive)
    checkpointer.start()
    lines: list[str] = []
    if demo:
        from cloudfilm.demo_setup import load_demo

        lines = load_demo(archive)
    n_dicom = dicom_workers.worker_count(settings)
    dicom = start_dicom_server(archive, reuse_port=n_dicom > 1)
    children = dicom_workers.start_workers(n_dicom - 1)
    sock = http_workers.listening_socket(settings.http_host, settings.http_port)
    children += http_workers.start_workers(sock, http_workers.worker_count(settings) - 1)
    server = http_workers.uvicorn_server(create_app(archive), settings)
    _print_banner(settings, lines)

    def _stop(*_args: object) -> None:
        server.should_exit = True

    signal.signal(signal.SIGTERM, _stop)
    # Everything loaded so far lives as long as the process: keep it out of the cyclic GC, whose
    # full collections otherwise walk it every few dozen requests (~100 ms QIDO stalls seen).
    gc.collect()
    gc.freeze()
    try:
        server.run(sockets=[sock])
    finally:
        stop_children(children)
        for child in children:
            multiproc.process_exited(child.pid)
        dicom.shutdown()
        checkpointer.stop()
        archive.close()


@main.command(name="dicom-worker", hidden=True)
def dicom_worker() -> None:
    """An extra DICOM server process (started by ``serve``)."""
    from cloudfilm.dimse.workers import run_worker
    from cloudfilm.metrics.multiproc import register_process

    register_process("dicom-worker")

    run_worker()


@main.command(name="http-worker", hidden=True)
@click.option("--fd", type=int, required=True, help="The listening socket, inherited.")
def http_worker(fd: int) -> None:
    """An extra HTTP server process (started by ``serve``)."""
    from cloudfilm.http.workers import run_worker
    from cloudfilm.metrics.multiproc import register_process

    register_process("http-worker")

    run_worker(fd)


def _print_banner(settings: Settings, extra: list[str]) -> None:
    host = "127.0.0.1" if settings.dicom_host in ("0.0.0.0", "::") else settings.dicom_host
    click.echo("")
    click.echo("cloudfilm is running")
    click.echo(
        f"  DICOM (C-ECHO/STORE/FIND/GET/MOVE, Storage Commitment): AE {settings.ae_title} "
        f"at {host}:{settings.dicom_port}"
    )
    click.echo(f"  HTTP:              {settings.http_url}/")
    click.echo(f"  DICOMweb root:     {settings.http_url}/dicom-web")
    click.echo(f"  API docs:          {settings.http_url}/docs")
    click.echo(f"  Data directory:    {settings.data_dir.resolve()}")
    click.echo("  Try:")
    click.echo(f"    echoscu -aec {settings.ae_title} {host} {settings.dicom_port}")
    click.echo(
        f"    findscu -S -k QueryRetrieveLevel=STUDY -k PatientName='*' -k StudyDate "
        f"-aec {settings.ae_title} {host} {settings.dicom_port}"
    )
    for line in extra:
        click.echo(f"  {line}")
    click.echo("")
    sys.stdout.flush()


@main.command(name="import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--workers", default=4, show_default=True)
@click.option(
    "--hospital",
    default=None,
    help="Code of the hospital the studies belong to (default: the first hospital).",
)
def import_(paths: tuple[Path, ...], workers: int, hospital: str | None) -> None:
    """Import DICOM files, folders (recursively) and zip archives."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from cloudfilm.metrics.multiproc import join_running

    settings = Settings()
    join_running(settings)  # a running serve's /metrics counts these instances too
    from cloudfilm.accounts.hospitals import DIRECTORY, HospitalError
    from cloudfilm.accounts.models import FIRST_HOSPITAL
    from cloudfilm.archive import Archive
    from cloudfilm.importer import count_sources, import_paths

    archive = Archive(settings)
    owner = FIRST_HOSPITAL
    if hospital:
        try:
            owner = DIRECTORY.by_code(archive.db, hospital).pk
        except HospitalError as exc:
            archive.close()
            raise click.UsageError(str(exc)) from exc
    total = count_sources(list(paths))
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("importing", total=total)
        summary = import_paths(
            archive,
            list(paths),
            hospital=owner,
            workers=workers,
            progress=lambda: progress.advance(task),
        )
    archive.close()
    c = summary.counts
    click.echo(
        f"accepted {summary.accepted}, duplicate {c['duplicate']}, "
        f"kept first (different content) {c['kept-first']}, rejected {c['rejected']}"
    )
    for where, why in summary.rejected:
        click.echo(f"  rejected {where}: {why}")
    sys.exit(1 if c["rejected"] else 0)


@main.command()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder to write to (default: <data dir>/demo).",
)
@click.option("--ct-slices", default=300, show_default=True)
@click.option("--ct-size", default=512, show_default=True)
def demo(out: Path | None, ct_slices: int, ct_size: int) -> None:
    """Write the synthetic demo data set (Chinese names, 300-slice CT, MR, DX, every codec)."""
    from cloudfilm.demo import write_demo

    dest = out or Settings().data_dir / "demo"
    manifest = write_demo(dest, ct_slices=ct_slices, ct_size=ct_size)
    click.echo(f"wrote {len(manifest.studies)} studies to {dest}")


@main.group()
def db() -> None:
    """Index database maintenance."""


@db.command()
def upgrade() -> None:
    """Apply the Alembic migrations to the configured index."""
    from cloudfilm.storage.database import Database

    settings = Settings()
    Database(settings.resolved_database_url).upgrade()
    click.echo(f"index at newest schema: {settings.resolved_database_url.split('@')[-1]}")


@main.group()
def audit() -> None:
    """The audit trail."""


@audit.command()
def verify() -> None:
    """Check the hash chain of the audit trail; exit 1 when a record was altered or removed."""
    from cloudfilm.access import verify_chain
    from cloudfilm.storage.database import Database

    ok, count, message = verify_chain(Database(Settings().resolved_database_url))
    click.echo(json.dumps({"ok": ok, "records": count, "message": message}))
    sys.exit(0 if ok else 1)


def _register_optional() -> None:
    """Sub-commands owned by other packages register here."""
    try:
        from cloudfilm.access.token_cli import token

        main.add_command(token)
    except ImportError:
        pass
    try:
        from cloudfilm.portal.cli import film

        main.add_command(film)
    except ImportError:
        pass
    from cloudfilm.accounts.cli import ae, hospital, user
    from cloudfilm.gateway.cli import gateway
    from cloudfilm.keeping.keys_cli import keys

    for group in (hospital, user, ae, gateway, keys):
        main.add_command(group)
    from cloudfilm.keeping.cli import index, replicate, verify

    for command in (verify, replicate, index):  # fixity, the second copy, index rebuild
        main.add_command(command)
    from cloudfilm.keeping.retention_cli import export_command, retention, tier

    for command in (retention, tier, export_command):  # retention, tiering, research export
        main.add_command(command)


_register_optional()

if __name__ == "__main__":
    main()

"""``cloudfilm gateway``: run the hospital's edge gateway, and look at or fix its spool."""

from __future__ import annotations

import json
import time
from datetime import datetime

import click

from cloudfilm.gateway.settings import GatewaySettings


@click.group(invoke_without_command=True)
@click.pass_context
def gateway(ctx: click.Context) -> None:
    """The edge gateway: DICOM, HL7 and report folder in; STOW-RS and reports to the cloud.

    Configured by CLOUDFILM_GATEWAY_* (cloud URL, token, AE title, port, spool folder,
    bandwidth schedule; see docs/gateway.md). Without a sub-command it runs.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(run)


@gateway.command()
def run() -> None:
    """Run until SIGTERM/SIGINT."""
    from cloudfilm.gateway.service import Gateway
    from cloudfilm.processes import wait_for_termination

    settings = GatewaySettings()
    if settings.token is None:
        raise click.ClickException(
            "CLOUDFILM_GATEWAY_TOKEN is not set: create one on the cloud with "
            "`cloudfilm token create --name gateway --scope write --hospital CODE`"
        )
    gw = Gateway(settings)
    gw.start()
    port = gw.status.port if gw.status else 0
    click.echo(
        f"cloudfilm gateway {settings.ae_title} on DICOM port {gw.dicom.port}"
        + (f", status http://{settings.status_host}:{port}/" if port else "")
        + f", uploading to {settings.cloud_url}",
        err=True,
    )
    try:
        wait_for_termination()
    finally:
        gw.stop()


def _spool():  # type: ignore[no-untyped-def]
    from cloudfilm.gateway.spool import Spool

    s = GatewaySettings()
    if not (s.spool_dir / "queue.sqlite3").exists():
        raise click.ClickException(f"no spool at {s.spool_dir} (CLOUDFILM_GATEWAY_SPOOL_DIR)")
    return Spool(s.spool_dir, max_bytes=s.max_spool_bytes, min_free_bytes=s.min_free_bytes)


@gateway.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json: bool) -> None:
    """Queue depth, oldest waiting, last success, set-aside items and why."""
    s = GatewaySettings()
    snapshot = None
    if s.status_port:  # a running gateway also knows its upload state and rate
        import httpx

        host = "127.0.0.1" if s.status_host in ("0.0.0.0", "::") else s.status_host
        try:
            snapshot = httpx.get(f"http://{host}:{s.status_port}/status.json", timeout=3).json()
        except (httpx.HTTPError, ValueError):
            snapshot = None
    if snapshot is None:
        spool = _spool()
        snapshot = spool.summary() | {"uploading_state": "not running", "message": ""}
        spool.close()
    if as_json:
        click.echo(json.dumps(snapshot, ensure_ascii=False, indent=2))
        return

    def when(ts: float | None) -> str:
        return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "never"

    oldest = snapshot.get("oldest_waiting_at")
    lines = [
        f"state:          {snapshot.get('uploading_state')} {snapshot.get('message') or ''}",
        f"waiting:        {snapshot['waiting_instances']} instance(s), "
        f"{snapshot['waiting_reports']} report(s), {snapshot['waiting_bytes']} bytes",
        f"oldest waiting: {when(oldest)}"
        + (f" ({time.time() - oldest:.0f} s ago)" if oldest else ""),
        f"rate:           {snapshot.get('bytes_per_second', 0)} B/s",
        f"last success:   {when(snapshot.get('last_success_at'))}",
        f"sent:           {snapshot['sent_instances']} instance(s), "
        f"{snapshot['sent_reports']} report(s)",
        f"set aside:      {snapshot['set_aside_count']}",
    ]
    for item in snapshot["set_aside"]:
        lines.append(
            f"  #{item['id']} {item['kind']} {item['sop_instance_uid'] or item['study_uid']}:"
            f" {item['reason']}"
        )
    click.echo("\n".join(lines))


@gateway.command()
@click.argument("ids", nargs=-1, type=int)
def retry(ids: tuple[int, ...]) -> None:
    """Queue set-aside items again (all, or the given IDs) once their cause is fixed."""
    spool = _spool()
    n = spool.retry_set_aside(list(ids) or None)
    spool.close()
    click.echo(f"{n} item(s) queued again")

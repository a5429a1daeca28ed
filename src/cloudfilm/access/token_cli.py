"""``cloudfilm token create|list|revoke``: API tokens for DICOMweb clients and gateways."""

from __future__ import annotations

import click

from cloudfilm.access.tokens import TokenError, create_token, list_tokens, revoke_token
from cloudfilm.accounts.hospitals import DIRECTORY, HospitalError
from cloudfilm.accounts.models import FIRST_HOSPITAL
from cloudfilm.archive import Archive
from cloudfilm.config import Settings


def _archive() -> Archive:
    return Archive(Settings())


DEMO_TOKEN_NAME = "demo (cloudfilm serve --demo)"


def demo_token_lines(archive: Archive) -> list[str]:
    """Banner lines for ``serve --demo``: a fresh read token (the previous demo one is revoked,
    since a token's plaintext cannot be shown twice) and how to use it."""
    for old in list_tokens(archive.db, include_revoked=False):
        if old.name == DEMO_TOKEN_NAME:
            revoke_token(archive.db, old.token_id)
    info, plaintext = create_token(archive.db, DEMO_TOKEN_NAME, "read", hospital=FIRST_HOSPITAL)
    url = archive.settings.http_url
    return [
        f"Read-only API token ({info.token_id}): {plaintext}",
        f"  curl -H 'Authorization: Bearer {plaintext}' {url}/dicom-web/studies",
    ]


def _register_demo_hook() -> None:
    try:
        from cloudfilm import demo_setup
    except ImportError:
        return
    hooks = getattr(demo_setup, "_BANNER_HOOKS", None)
    if hooks is not None and demo_token_lines not in hooks:
        hooks.append(demo_token_lines)


_register_demo_hook()


@click.group()
def token() -> None:
    """Manage API tokens (HTTP Bearer credentials with read/write/admin scopes)."""


@token.command("create")
@click.option("--name", required=True, help="Who or what uses the token (shown by `list`).")
@click.option(
    "--scope", "scope", default="read", show_default=True, help="read,write,film,admin,operator"
)
@click.option(
    "--hospital",
    default=None,
    help="Code of the hospital whose data it reaches (default: the first hospital); "
    "'-' for a platform token (scope operator).",
)
def create_cmd(name: str, scope: str, hospital: str | None) -> None:
    """Create a token. The token is printed alone on the last line, once: keep it."""
    archive = _archive()
    try:
        owner: int | None = FIRST_HOSPITAL
        if hospital == "-":
            owner = None
        elif hospital:
            owner = DIRECTORY.by_code(archive.db, hospital).pk
        info, plaintext = create_token(archive.db, name, scope, hospital=owner)
    except (TokenError, HospitalError) as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        archive.close()
    scopes = ",".join(sorted(info.scopes))
    click.echo(f"created token {info.token_id} ({info.name}) scopes={scopes}")
    click.echo(plaintext)


@token.command("list")
def list_cmd() -> None:
    """List tokens (id, name, scopes, created, state); tokens themselves are never stored."""
    archive = _archive()
    try:
        rows = list_tokens(archive.db)
        codes = {h.pk: h.code for h in DIRECTORY.all(archive.db)}
    finally:
        archive.close()
    if not rows:
        click.echo("no tokens")
        return
    for t in rows:
        state = "active" if t.active else f"revoked {t.revoked_at:%Y-%m-%d %H:%M}"
        scopes = ",".join(sorted(t.scopes))
        owner = codes.get(t.hospital, "-") if t.hospital is not None else "-"
        click.echo(
            f"{t.token_id}\t{owner}\t{t.name}\t{scopes}\t{t.created_at:%Y-%m-%d %H:%M}\t{state}"
        )


@token.command("revoke")
@click.argument("token_id")
def revoke_cmd(token_id: str) -> None:
    """Revoke a token by id; requests with it are refused from now on."""
    archive = _archive()
    try:
        info = revoke_token(archive.db, token_id)
    except TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        archive.close()
    click.echo(f"revoked {info.token_id} ({info.name})")

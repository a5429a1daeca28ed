"""``cloudfilm hospital add|list``, ``cloudfilm user add|reset|disable|list``, ``cloudfilm ae``:
what a deployment needs before anyone can log in (the first hospital admin, say)."""

from __future__ import annotations

import secrets

import click

from cloudfilm.accounts.aes import AeError, disable_ae, list_aes, register_ae
from cloudfilm.accounts.hospitals import (
    DIRECTORY,
    HospitalError,
    create_hospital,
    list_hospitals,
    update_hospital,
)
from cloudfilm.accounts.users import (
    ROLES,
    UserError,
    create_user,
    get_user,
    list_users,
    set_disabled,
    set_password,
)
from cloudfilm.config import Settings
from cloudfilm.storage.database import Database


def _db() -> Database:
    db = Database(Settings().resolved_database_url)
    db.upgrade()
    return db


def _hospital_pk(db: Database, code: str) -> int:
    try:
        return DIRECTORY.by_code(db, code).pk
    except HospitalError as exc:
        raise click.UsageError(str(exc)) from exc


@click.group()
def hospital() -> None:
    """Hospitals (tenants) of this deployment."""


@hospital.command("add")
@click.argument("code")
@click.option("--name", required=True, help="The Chinese name, as on the films.")
@click.option("--latin", default="", help="The name in Latin letters.")
@click.option("--region", default="", help="Administrative division code, e.g. 320100.")
@click.option("--sms-signature", default="", help="The SMS signature, e.g. 【市一院】.")
def hospital_add(code: str, name: str, latin: str, region: str, sms_signature: str) -> None:
    """Add a hospital. Its CODE is permanent (it is part of the storage keys)."""
    try:
        info = create_hospital(
            _db(), code, name, name_latin=latin, region_code=region, sms_signature=sms_signature
        )
    except HospitalError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"added hospital {info.code}: {info.name}")


@hospital.command("edit")
@click.argument("code")
@click.option("--name", default=None)
@click.option("--latin", default=None)
@click.option("--region", default=None)
@click.option("--sms-signature", default=None)
def hospital_edit(
    code: str, name: str | None, latin: str | None, region: str | None, sms_signature: str | None
) -> None:
    """Change a hospital's names, region or SMS signature (never its code)."""
    changes = {
        k: v
        for k, v in {
            "name": name,
            "name_latin": latin,
            "region_code": region,
            "sms_signature": sms_signature,
        }.items()
        if v is not None
    }
    try:
        info = update_hospital(_db(), code, **changes)
    except HospitalError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"hospital {info.code}: {info.name} {info.name_latin} region={info.region_code}")


@hospital.command("list")
def hospital_list() -> None:
    """List hospitals: code, name, Latin name, region."""
    for h in list_hospitals(_db()):
        state = "" if h.active else "\tdisabled"
        click.echo(f"{h.code}\t{h.name}\t{h.name_latin}\t{h.region_code}{state}")


@click.group()
def user() -> None:
    """Console users: hospital staff and platform operators."""


@user.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(sorted(ROLES)), required=True)
@click.option("--hospital", "code", default=None, help="Hospital code (not for operators).")
@click.option("--name", "display_name", default="", help="The person's name, e.g. 王医生.")
@click.option("--phone", default=None, help="Mobile number (also a login).")
@click.option(
    "--password",
    default=None,
    help="Initial password (default: a random one, printed once, to be changed at first login).",
)
def user_add(
    username: str,
    role: str,
    code: str | None,
    display_name: str,
    phone: str | None,
    password: str | None,
) -> None:
    """Add a user. Without --password a random one is printed once."""
    db = _db()
    owner = None if role == "operator" or code is None else _hospital_pk(db, code)
    if role != "operator" and owner is None:
        raise click.UsageError("--hospital is required for every role but operator")
    generated = password is None
    secret = password or secrets.token_urlsafe(12)
    try:
        info = create_user(
            db,
            username=username,
            password=secret,
            role=role,
            hospital=owner,
            display_name=display_name,
            phone=phone,
            must_change_password=generated,
        )
    except UserError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"added {info.role} {info.username}")
    if generated:
        click.echo("initial password (shown once; to be changed at first login):")
        click.echo(secret)


@user.command("reset")
@click.argument("login")
def user_reset(login: str) -> None:
    """Give a user a new random password (printed once) and end nothing else."""
    db = _db()
    info = get_user(db, login)
    if info is None:
        raise click.UsageError(f"no user {login!r}")
    secret = secrets.token_urlsafe(12)
    set_password(db, info.pk, secret, must_change=True)
    from cloudfilm.accounts.sessions import end_sessions

    end_sessions(db, info.pk)
    click.echo(f"new password for {info.username} (shown once; to be changed at first login):")
    click.echo(secret)


@user.command("disable")
@click.argument("login")
@click.option("--enable", is_flag=True, help="Enable again instead.")
def user_disable(login: str, enable: bool) -> None:
    """Disable a user (their sessions end at once), or enable again."""
    db = _db()
    info = get_user(db, login)
    if info is None:
        raise click.UsageError(f"no user {login!r}")
    set_disabled(db, info.pk, not enable)
    if not enable:
        from cloudfilm.accounts.sessions import end_sessions

        end_sessions(db, info.pk)
    click.echo(f"{'enabled' if enable else 'disabled'} {info.username}")


@user.command("list")
@click.option("--hospital", "code", default=None)
def user_list(code: str | None) -> None:
    """List users: username, role, hospital, name, state."""
    db = _db()
    owner = _hospital_pk(db, code) if code else None
    codes = {h.pk: h.code for h in DIRECTORY.all(db)}
    for u in list_users(db, hospital=owner):
        where = codes.get(u.hospital, "-") if u.hospital is not None else "-"
        state = "active" if u.active else "disabled"
        click.echo(f"{u.username}\t{u.role}\t{where}\t{u.display_name}\t{state}")


@click.group()
def ae() -> None:
    """Calling AE titles of each hospital (the DICOM allow-list)."""


@ae.command("add")
@click.argument("ae_title")
@click.option("--hospital", "code", required=True)
@click.option("--host", default="", help="Only from this address (empty: any).")
@click.option("--services", default="echo,store,find,get,move,commit", show_default=True)
@click.option("--description", default="")
def ae_add(ae_title: str, code: str, host: str, services: str, description: str) -> None:
    """Register a calling AE title for a hospital."""
    db = _db()
    try:
        info = register_ae(
            db,
            _hospital_pk(db, code),
            ae_title,
            host=host,
            services=services,
            description=description,
        )
    except AeError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"registered {info.ae_title} ({info.pk}) for {code}")


@ae.command("list")
@click.option("--hospital", "code", default=None)
def ae_list(code: str | None) -> None:
    db = _db()
    owner = _hospital_pk(db, code) if code else None
    codes = {h.pk: h.code for h in DIRECTORY.all(db)}
    for a in list_aes(db, hospital=owner):
        state = "active" if a.active else "disabled"
        services = ",".join(sorted(a.services))
        click.echo(
            f"{a.pk}\t{a.ae_title}\t{a.host or '*'}\t{codes.get(a.hospital)}\t{services}\t{state}"
        )


@ae.command("disable")
@click.argument("pk", type=int)
def ae_disable(pk: int) -> None:
    try:
        info = disable_ae(_db(), pk)
    except AeError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(f"disabled {info.ae_title} ({info.pk})")

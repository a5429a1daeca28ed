"""Shares: a link (and QR) a patient gives a doctor, for one or more films.

A share has an expiry, an optional extra code, and allows downloads or viewing only. Its link
token is derived from the server secret like a film's (so the patient can show it again) and
stored hashed. Revoking sets ``revoked_at``; sessions opened through the share check it on every
request (see sessions.py), so the very next request is refused. A hospital user may create a
share on a patient's behalf after verifying them in person (doctor-assisted consent): the share
records who did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select

from cloudfilm.access import Principal
from cloudfilm.portal import keys
from cloudfilm.portal.films import aware
from cloudfilm.portal.models import Film, Share, ShareFilm
from cloudfilm.portal.sessions import share_state
from cloudfilm.portal.verify import VerifyFailed, checked
from cloudfilm.storage.models import utcnow

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

MAX_DAYS = 365


class ShareError(ValueError):
    pass


@dataclass
class ShareInfo:
    share_id: str
    link: str
    label: str
    film_ids: list[str]
    allow_download: bool
    has_code: bool
    created_at: datetime
    expires_at: datetime
    state: str
    created_by: str
    assisted_by: str

    def as_json(self) -> dict[str, object]:
        out = dict(vars(self))
        out["created_at"] = self.created_at.isoformat()
        out["expires_at"] = self.expires_at.isoformat()
        return out


def share_link(archive: Archive, share_id: str) -> str:
    token = keys.link_token(keys.server_secret(archive.settings), "share", share_id)
    return f"{archive.settings.http_url}/s/{token}"


def assisting_user(archive: Archive, principal: Principal, hospital: int, given: str) -> str:
    """Who verified the patient in person, as recorded on a doctor-assisted share: a logged-in
    user is recorded under their own name; a hospital system (token) or the command line names
    a film-desk user of the film's hospital by username. Never free text."""
    from cloudfilm.accounts.users import ROLES, get_user

    if principal.kind == "user":
        return f"{principal.name} ({principal.id})"
    user = get_user(archive.db, given) if given.strip() else None
    if (
        user is None
        or not user.active
        or user.hospital != hospital
        or not ROLES[user.role] & {"consent", "admin"}
    ):
        raise ShareError(
            "assisted_by must be the username of a film-desk user of the film's hospital"
        )
    return f"{user.display_name or user.username} ({user.username})"


def create_share(
    archive: Archive,
    films: list[Film],
    *,
    days: float | None = None,
    expires_at: datetime | None = None,
    code: str = "",
    allow_download: bool = False,
    label: str = "",
    created_by: str,
    assisted_by: str = "",
) -> ShareInfo:
    if not films:
        raise ShareError("choose at least one film to share")
    now = utcnow()
    if expires_at is None:
        expires_at = now + timedelta(days=days if days is not None else 7)
    expires_at = aware(expires_at) or now
    if expires_at <= now or expires_at > now + timedelta(days=MAX_DAYS):
        raise ShareError(f"the expiry must be in the future and within {MAX_DAYS} days")
    code = keys.digits(code)
    if code and not 4 <= len(code) <= 8:
        raise ShareError("an extra code has 4 to 8 digits")
    secret = keys.server_secret(archive.settings)
    share_id = keys.new_id()
    token = keys.link_token(secret, "share", share_id)
    row = Share(
        share_id=share_id,
        hospital_pk=films[0].hospital_pk,  # a patient's share of two hospitals: the first
        token_hash=keys.sha256_hex(token),
        code_hash=keys.mac_hex(secret, "share-code", share_id, code) if code else None,
        allow_download=allow_download,
        label=label.strip()[:64],
        created_by=created_by[:128],
        assisted_by=assisted_by.strip()[:128],
        created_at=now,
        expires_at=expires_at,
    )
    with archive.db.write() as session:
        session.add(row)
        session.flush()
        for film in films:
            session.add(ShareFilm(share_pk=row.pk, film_pk=film.pk))
    for film in films:
        archive.audit.record(
            principal=created_by, action="share", resource=film.study_uid, outcome="allow",
            detail=f"share {share_id} created" + (f", assisted by {assisted_by}" if assisted_by
                                                   else ""),
        )  # fmt: skip
    return _info(archive, row, [f.film_id for f in films])


def _info(archive: Archive, row: Share, film_ids: list[str]) -> ShareInfo:
    return ShareInfo(
        share_id=row.share_id,
        link=share_link(archive, row.share_id),
        label=row.label,
        film_ids=film_ids,
        allow_download=row.allow_download,
        has_code=row.code_hash is not None,
        created_at=aware(row.created_at) or utcnow(),
        expires_at=aware(row.expires_at) or utcnow(),
        state=share_state(row),
        created_by=row.created_by,
        assisted_by=row.assisted_by,
    )


def list_shares(archive: Archive, films: list[Film]) -> list[ShareInfo]:
    """Shares that include any of these films, newest first."""
    by_pk = {f.pk: f.film_id for f in films}
    with archive.db.read() as session:
        pairs = session.execute(
            select(Share, ShareFilm.film_pk)
            .join(ShareFilm, ShareFilm.share_pk == Share.pk)
            .where(ShareFilm.film_pk.in_(list(by_pk)))
            .order_by(Share.pk.desc())
        ).all()
    shares: dict[str, tuple[Share, list[str]]] = {}
    for share, film_pk in pairs:
        shares.setdefault(share.share_id, (share, []))[1].append(by_pk[film_pk])
    return [_info(archive, s, ids) for s, ids in shares.values()]


def revoke_share(archive: Archive, share_id: str, films: list[Film], by: str) -> ShareInfo:
    """Revoke a share that includes one of ``films`` (the caller's); at once."""
    mine = {f.pk: f for f in films}
    with archive.db.write() as session:
        share = session.execute(
            select(Share).where(Share.share_id == share_id)
        ).scalar_one_or_none()
        film_pks = (
            list(session.execute(select(ShareFilm.film_pk).where(ShareFilm.share_pk == share.pk))
                 .scalars())
            if share else []
        )  # fmt: skip
        if share is None or not set(film_pks) & set(mine):
            raise ShareError("no such share")
        if share.revoked_at is None:
            share.revoked_at = utcnow()
    for pk in film_pks:
        if pk in mine:
            archive.audit.record(
                principal=by, action="revoke", resource=mine[pk].study_uid, outcome="allow",
                detail=f"share {share_id} revoked",
            )  # fmt: skip
    return _info(archive, share, [mine[pk].film_id for pk in film_pks if pk in mine])


def share_by_token(archive: Archive, token: str) -> Share | None:
    if not (20 <= len(token) <= 100):
        return None
    digest = keys.sha256_hex(token)
    with archive.db.read() as session:
        share = session.execute(
            select(Share).where(Share.token_hash == digest)
        ).scalar_one_or_none()
    if share is None or not keys.same(share.token_hash, digest):
        return None
    return share


def open_share(archive: Archive, token: str, code: str, client: str) -> Share:
    """The share behind a link, checked: active, and its extra code right (if it has one)."""
    share = share_by_token(archive, token)
    if share is None:
        archive.audit.record(
            principal="anonymous", action="open", resource="", outcome="deny",
            detail="unknown share link", client=client,
        )  # fmt: skip
        raise VerifyFailed(404, "分享链接无效。", "This share link is not valid.")
    from cloudfilm.portal.sessions import share_films

    films = share_films(archive, share)
    state = share_state(share)
    if state != "active":
        for film in films:
            archive.audit.record(
                principal=f"share:{share.share_id}", action="open", resource=film.study_uid,
                outcome="deny", detail=f"share {state}", client=client,
            )  # fmt: skip
        zh = "此分享已被撤销。" if state == "revoked" else "此分享已过期。"
        raise VerifyFailed(410, zh, f"This share was {state}.")
    if share.code_hash is not None:
        secret = keys.server_secret(archive.settings)
        entered = keys.mac_hex(secret, "share-code", share.share_id, keys.digits(code))
        checked(
            archive,
            subject_key=f"share:{share.share_id}",
            client=client,
            resource=films[0].study_uid if films else "",
            principal=f"share:{share.share_id}",
            matches=keys.same(entered, share.code_hash),
            what="share code",
        )
    for film in films:
        archive.audit.record(
            principal=f"share:{share.share_id}", action="open", resource=film.study_uid,
            outcome="allow", detail="share link opened", client=client,
        )  # fmt: skip
    return share

"""Who is calling: a chain of principal resolvers, tried in order, shared by every endpoint.

Each resolver looks at the request and returns a :class:`Principal`, ``None`` (not mine, try the
next) or raises :class:`Problem` (credentials present but wrong). The chain lives in
``app.state.principal_resolvers`` so the patient-access work can append cookie-session and
share-link resolvers without touching any endpoint. Deciding what a principal may do is not done
here: endpoints pass the principal to ``archive.authorize``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from cloudfilm.access import Principal
from cloudfilm.access.tokens import NotCached, lookup_token
from cloudfilm.archive import Archive
from cloudfilm.http.problems import Problem

PrincipalResolver = Callable[[Request], Principal | None]

_CHALLENGE = 'Bearer realm="cloudfilm"'


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def bearer_credentials(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


class WouldBlock(Exception):
    """Answering needs the index or the disk: try again from a worker thread."""


class BearerTokenResolver:
    """``Authorization: Bearer cf_…`` → the API token's principal."""

    inline_ok = True  # answers from the recent-token cache without the index, when it can

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def __call__(self, request: Request, *, inline: bool = False) -> Principal | None:
        token = bearer_credentials(request)
        if token is None:
            return None
        try:
            info = lookup_token(self.archive.db, token, cached_only=inline)
        except NotCached:
            raise WouldBlock from None
        if info is None:
            raise Problem(
                401,
                "the bearer token is unknown or revoked",
                headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
            )
        return Principal(
            kind="token",
            id=info.token_id,
            scopes=info.scopes,
            client=client_address(request),
            hospital=info.hospital,
            name=info.name,
        )


async def get_archive(request: Request) -> Archive:
    return request.app.state.archive


def resolve_principal(request: Request, *, inline: bool = False) -> Principal:
    """The first resolver that recognises the request wins; none → 401.

    ``inline``: called on the event loop, where nothing may wait for the index; raises
    :class:`WouldBlock` when a resolver would have to. Not a dependency itself: FastAPI would
    publish ``inline`` as a query parameter (and a client's ``?inline=true`` would then answer
    500 from an endpoint that never retries off the loop).
    """
    for resolver in request.app.state.principal_resolvers:
        if inline:
            if not getattr(resolver, "inline_ok", False):
                raise WouldBlock
            principal = resolver(request, inline=True)  # type: ignore[call-arg]
        else:
            principal = resolver(request)
        if principal is not None:
            return principal
    raise Problem(
        401,
        "authentication required: send an API token as 'Authorization: Bearer <token>'",
        headers={"WWW-Authenticate": _CHALLENGE},
    )


def get_principal(request: Request) -> Principal:
    """FastAPI dependency: only ``request``, so nothing internal becomes a query parameter."""
    return resolve_principal(request)


ArchiveDep = Annotated[Archive, Depends(get_archive)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]

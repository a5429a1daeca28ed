"""``GET /api/index/records``: the imaging index feed for a regional platform (JSON or FHIR R4).

Who reads what is the one access check's answer to a search (``Action.QUERY``), audited per
page: a platform operator (console role ``operator``, or a token with scope ``operator``) reads
every hospital's records, a hospital's token or user with ``read`` its own hospital's. Consent
grants a user holds do not widen the feed: it lists what each hospital holds, not what a
clinician may open.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Query, Request, Response

from cloudfilm.access import Action
from cloudfilm.dicomweb.resources import PREFIX, base_url
from cloudfilm.http.security import ArchiveDep, PrincipalDep
from cloudfilm.regional.feed import MAX_LIMIT, feed_page, page_json

router = APIRouter(tags=["Regional index"])
PATH = "/api/index/records"
FHIR_FORMATS = {"fhir", "application/fhir+json", "fhir+json", "application/json+fhir"}
NO_STORE = {"Cache-Control": "no-store"}


def root_url(request: Request, archive: ArchiveDep) -> str:
    """The server's root as this client reaches it (``public_url`` first), no trailing slash."""
    return base_url(request, archive).removesuffix(PREFIX)


def wants_fhir(request: Request, fmt: str | None) -> bool:
    if fmt is not None:
        return fmt.strip().lower() in FHIR_FORMATS
    return "application/fhir+json" in request.headers.get("accept", "").lower()


SEQ_MAX = 2**31 - 1
"""``regional_index_changes.seq`` is a 32-bit INTEGER on PostgreSQL: a cursor past it is a
400, not a 500 from the engine."""


@router.get(PATH, summary="New and changed studies after a cursor (JSON or FHIR R4 Bundle)")
def index_records(
    request: Request,
    archive: ArchiveDep,
    principal: PrincipalDep,
    after: Annotated[int, Query(ge=0, le=SEQ_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    fmt: Annotated[str | None, Query(alias="_format", max_length=64)] = None,
) -> Response:
    """Records in change order after ``after`` (the ``after`` of the previous page). A study
    changed again (a new series, a report) comes again later: keep the newest per index ID."""
    fhir = wants_fhir(request, fmt)
    decision = archive.authorize(
        principal, Action.QUERY, None, detail=f"index feed after={after} limit={limit}"
    )
    with archive.db.read() as session:
        page = feed_page(session, after, limit, hospital=decision.hospital,
                         studies=decision.studies)  # fmt: skip
    root = root_url(request, archive)
    query: dict[str, str | int] = {"after": page.after, "limit": limit}
    if fhir:
        query["_format"] = "fhir"
    next_url = f"{root}{PATH}?{urlencode(query)}"
    headers = dict(NO_STORE)
    if page.more:
        headers["Link"] = f'<{next_url}>; rel="next"'
    if not fhir:
        body = page_json(page, root) | {"next": next_url}
        return Response(orjson.dumps(body), media_type="application/json", headers=headers)
    from cloudfilm.regional.fhir import FHIR_JSON, bundle, bundle_json

    self_query = {"after": after, "limit": limit, "_format": "fhir"}
    fhir_bundle = bundle(
        page, root, archive.settings.index_id_system,
        self_url=f"{root}{PATH}?{urlencode(self_query)}",
        next_url=next_url if page.more else None,
    )  # fmt: skip
    return Response(bundle_json(fhir_bundle), media_type=FHIR_JSON, headers=headers)

"""``POST /api/export``: the de-identified research export for admins and platform operators.

The body says which studies (QIDO-RS study matching keys, or Study Instance UIDs), the
options and the project; the answer is the zip (DICOMDIR + MANIFEST.json), or, with
``stow_url`` (one of ``CLOUDFILM_EXPORT_STOW_TARGETS``: the server does not post to
addresses a caller makes up), a JSON summary after the studies were sent by STOW-RS.
Hospital admins export their hospital's studies, operators any hospital's; read-only tokens
are refused. The search and every study read go through the one access check.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field, StringConstraints
from starlette.background import BackgroundTask

from cloudfilm.access import Action
from cloudfilm.http.problems import Problem
from cloudfilm.http.security import ArchiveDep, PrincipalDep
from cloudfilm.keeping.deid import Options
from cloudfilm.keeping.export import ExportError, StowSink, ZipSink, export, find_studies

router = APIRouter(prefix="/api", tags=["keeping"])


UID = Annotated[str, StringConstraints(pattern=r"^[0-9.]{1,64}$")]
KEYWORD = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{1,64}$")]
VALUE = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00]*$")]


class ExportIn(BaseModel):
    query: dict[KEYWORD, VALUE] = Field(default_factory=dict, max_length=32)
    """QIDO-RS study matching keys by keyword, e.g. ``{"StudyDate": "20200101-20201231",
    "ModalitiesInStudy": "CT"}``."""
    study_uids: list[UID] = Field(default_factory=list, max_length=10_000)
    modified_dates: bool = False
    clean_descriptors: bool = False
    project: str = Field(default="default", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    """Pseudonyms are per project (letters, digits, ``._-``)."""
    include_burned_in: bool = False
    stow_url: str | None = Field(default=None, max_length=2048)
    stow_token: str | None = Field(default=None, max_length=4096, pattern=r"^[\x21-\x7e]*$")


@router.post("/export", summary="De-identified research export (zip, or STOW-RS)")
def post_export(body: ExportIn, archive: ArchiveDep, principal: PrincipalDep) -> Any:
    if "operator" not in principal.scopes:
        # a hospital's admin: the access check records a read-only token's attempt too
        archive.authorize(principal, Action.ADMIN, None, detail="research export")
    if body.stow_url is not None:
        allowed = [t.rstrip("/") for t in archive.settings.export_stow_targets]
        if body.stow_url.rstrip("/") not in allowed:
            raise Problem(403, "stow_url is not one of CLOUDFILM_EXPORT_STOW_TARGETS")
    if not body.query and not body.study_uids:
        raise Problem(400, "give a query or study_uids (an export of everything is refused)")
    try:
        uids = list(body.study_uids)
        if body.query:
            found = find_studies(archive, principal, body.query)
            uids = [u for u in found if not uids or u in set(body.study_uids)]
    except ExportError as exc:
        raise Problem(400, str(exc)) from None
    options = Options(body.modified_dates, body.clean_descriptors, body.project)
    if body.stow_url is not None:
        sink = StowSink(body.stow_url, body.stow_token)
        result = export(
            archive, principal, uids, options, sink, include_burned_in=body.include_burned_in
        )
        status = 502 if result.stow_failures else 200
        return JSONResponse({**result.summary(), "manifest": result.manifest}, status)
    fd, name = tempfile.mkstemp(prefix="cloudfilm-export-", suffix=".zip")
    os.close(fd)
    path = Path(name)
    try:
        result = export(
            archive, principal, uids, options, ZipSink(path),
            include_burned_in=body.include_burned_in,
        )  # fmt: skip
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"export-{options.project}.zip",
        headers={
            "X-Export-Studies": str(result.studies),
            "X-Export-Instances": str(result.instances),
            "X-Export-Flagged": str(len(result.flagged)),
        },
        background=BackgroundTask(path.unlink, missing_ok=True),
    )

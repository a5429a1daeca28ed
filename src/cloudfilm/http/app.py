"""ASGI application factory. ``cloudfilm serve`` runs it with uvicorn beside the DIMSE server.

Layout: DICOMweb under ``/dicom-web`` (plus WADO-URI at ``/wado``), OpenAPI docs at ``/docs``.
Cross-cutting pieces are wired here once: problem+json errors, who-is-calling resolvers
(``app.state.principal_resolvers``, extended by later features), CORS, JSON compression.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from cloudfilm.archive import Archive
from cloudfilm.http.compression import JSONCompressionMiddleware
from cloudfilm.http.params import NoNulInUrls
from cloudfilm.http.problems import install_problem_handlers
from cloudfilm.http.security import BearerTokenResolver, PrincipalResolver

CORS_EXPOSED = ["ETag", "Content-Location", "Content-Length", "Warning", "Location"]


def cors_origins(archive: Archive) -> list[str]:
    """Allowed browser origins: ``cors_origins`` in the settings if present, else
    ``CLOUDFILM_CORS_ORIGINS`` (comma-separated), else every origin. DICOMweb authenticates
    with bearer tokens, not cookies, so allowing any origin exposes nothing a token does not."""
    configured = getattr(archive.settings, "cors_origins", None)
    if configured is None:
        env = os.environ.get("CLOUDFILM_CORS_ORIGINS")
        configured = [o.strip() for o in env.split(",") if o.strip()] if env is not None else ["*"]
    return list(configured)


def create_app(archive: Archive, *, background: bool = True) -> FastAPI:
    """The HTTP application. ``background=False`` in the extra HTTP worker processes: the
    once-per-deployment background work (the film issuer) runs in ``serve`` only."""
    from cloudfilm.dicomweb import qido, rendered, stow, wado, wado_uri
    from cloudfilm.dicomweb.pixels import PixelService

    app = FastAPI(
        title="cloudfilm",
        version="0.1.0",
        docs_url="/docs",
        description="DICOMweb (QIDO-RS, WADO-RS, STOW-RS, WADO-URI) for the cloudfilm archive. "
        "Authenticate with `Authorization: Bearer <token>` (`cloudfilm token create`).",
    )
    app.state.archive = archive
    app.state.pixels = PixelService(archive)
    resolvers: list[PrincipalResolver] = [BearerTokenResolver(archive)]
    app.state.principal_resolvers = resolvers
    install_problem_handlers(app)

    # QIDO first: its /studies/{study}/series must not be shadowed by anything broader.
    for module in (qido, stow, wado, rendered, wado_uri):
        app.include_router(module.router)
    from cloudfilm.http.viewer import mount_viewer

    mount_viewer(app)  # the zero-footprint viewer at /viewer/
    from cloudfilm.console.web import install_console
    from cloudfilm.portal.web import install_portal

    install_console(app, archive)  # the hospital console at /; its cookie as a principal

    # reports, films, patient pages; cookie sessions as principals
    install_portal(app, archive, start_issuer=background)
    from cloudfilm.regional.web import install_regional

    # persons, consent, similar exams, the imaging index feed, IHE IID
    install_regional(app, archive, background=background)
    from cloudfilm.keeping.workers import install_keeping_workers

    # the fixity verifier and the replica copier (serve only, under leases)
    install_keeping_workers(app, archive, background=background)

    from cloudfilm.keeping import export_api

    app.include_router(export_api.router)  # POST /api/export: the de-identified export

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(JSONCompressionMiddleware)
    app.add_middleware(NoNulInUrls)  # before any endpoint can hand a NUL to a query
    app.add_middleware(
        CORSMiddleware,
        allow_origins=cors_origins(archive),
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Accept", "Content-Type", "If-None-Match", "Range"],
        expose_headers=CORS_EXPOSED,
        max_age=600,
    )
    from cloudfilm.metrics.web import install_metrics

    install_metrics(app, archive)  # GET /metrics; its middleware outermost, timing the rest
    return app

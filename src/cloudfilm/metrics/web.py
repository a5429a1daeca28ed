"""``GET /metrics`` for Prometheus, and who may read it.

The figures give every hospital's volumes, so the endpoint is not public: a platform
operator's API token (scope ``operator``, no hospital) opens it from anywhere, and a request
with no credentials at all from ``metrics_networks`` (default loopback: a Prometheus on the
same host) is let in. Any other credentials (a hospital's token, a console or patient session)
are refused with 403, also from those networks: they belong to someone who is not the
platform. The client address is uvicorn's, i.e. X-Forwarded-For only from ``trusted_proxies``.
Scrapes are not audited: they read no study, and one every 15 s would swamp the trail.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, PlatformCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from cloudfilm.archive import Archive
from cloudfilm.http.problems import Problem
from cloudfilm.http.security import bearer_credentials, client_address, resolve_principal
from cloudfilm.metrics.collectors import IndexCollector, ProcessesCollector, ThisProcess
from cloudfilm.metrics.http import RequestMetrics
from cloudfilm.metrics.multiproc import shared_directory

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def exposition_registry(archive: Archive) -> CollectorRegistry:
    """What one scrape reports: every process's counters (summed from the shared directory)
    or this lone process's, plus the index's figures."""
    registry = CollectorRegistry()
    path = shared_directory()
    if path is not None:
        MultiProcessCollector(registry, path=str(path))
        registry.register(ProcessesCollector(path))
        PlatformCollector(registry=registry)
    else:
        registry.register(ThisProcess())
    registry.register(IndexCollector(archive))
    return registry


@lru_cache(maxsize=16)
def _networks(configured: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(n.strip(), strict=False) for n in configured if n.strip())


def from_allowed_network(request: Request, configured: list[str]) -> bool:
    try:
        address = ipaddress.ip_address(client_address(request))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(tuple(configured)))


def check_access(request: Request, archive: Archive) -> None:
    """Raise :class:`Problem` unless this request may read the metrics."""
    try:
        principal = resolve_principal(request)
    except Problem:
        if bearer_credentials(request) is not None:
            raise  # an unknown or revoked token: 401, wherever it comes from
        principal = None
    if principal is None:
        if from_allowed_network(request, archive.settings.metrics_networks):
            return
        raise Problem(
            401,
            "metrics need a platform operator's API token (scope 'operator') as "
            "'Authorization: Bearer <token>', or a client address in metrics_networks",
            headers={"WWW-Authenticate": 'Bearer realm="cloudfilm"'},
        )
    if principal.hospital is None and "operator" in principal.scopes:
        return
    raise Problem(
        403, "the metrics are the platform operator's: these credentials do not open them"
    )


def install_metrics(app: FastAPI, archive: Archive) -> None:
    """The endpoint and the per-request middleware (add last: it then times everything)."""
    registry = exposition_registry(archive)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        check_access(request, archive)
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(
            encoder(registry),
            headers={"Content-Type": content_type, "Cache-Control": "no-store"},
        )

    app.add_middleware(RequestMetrics)

"""Starting keeping's background workers in ``serve`` (see http/app.py, like the film issuer):
the fixity verifier (when ``verify_period_days`` > 0) and the replica copier (when
``replica_url`` is set). The extra HTTP worker processes pass ``background=False``; each
worker also holds a lease (cloudfilm.background), so several ``serve`` share the work; it is
given back when the server shuts down, so another process (or ``index rebuild``) need not wait
for it to expire."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from cloudfilm.archive import Archive


def install_keeping_workers(app: FastAPI, archive: Archive, *, background: bool = True) -> None:
    app.state.fixity_verifier = None
    app.state.replica_worker = None
    if not background:
        return
    if archive.settings.verify_period_days > 0:
        from cloudfilm.keeping.fixity import FixityVerifier

        app.state.fixity_verifier = verifier = FixityVerifier(archive)
        verifier.start()
        app.router.on_shutdown.append(verifier.stop)  # gives the lease back at once
    if archive.settings.replica_url:
        from cloudfilm.keeping.replica import ReplicaWorker

        app.state.replica_worker = copier = ReplicaWorker(archive)
        copier.start()
        app.router.on_shutdown.append(copier.stop)
    if archive.settings.cold_after_days > 0:  # the cold tier's lifecycle (keeping/tiering.py)
        from cloudfilm.keeping.tiering import LifecycleWorker

        lifecycle = LifecycleWorker(archive)
        lifecycle.start()
        app.router.on_shutdown.append(lifecycle.stop)

"""More HTTP processes on the same listening socket, so DICOMweb uses every core.

A viewer opening a CT sends hundreds of frame requests at once, six or more at a time; one
Python process answers them on one core. ``cloudfilm serve`` binds the HTTP socket itself and
hands it to ``http_workers - 1`` extra processes (``cloudfilm http-worker``); all of them
accept from the one queue, so whichever process is idle takes the next connection (a
per-process SO_REUSEPORT socket would pin a client's keep-alive connections by hash instead).

Only ``serve`` runs the once-per-deployment background work (recovery checkpoints, the film
issuer); the workers only answer requests. Everything they share lives in the index and the
storage area; their in-memory caches hold immutable rows only (see ``dicomweb.resources``).
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess

import uvicorn
from fastapi import FastAPI

from cloudfilm.config import Settings
from cloudfilm.processes import die_with_parent, start_children


def worker_count(settings: Settings) -> int:
    """One process per core, at most 8 (``http_workers`` overrides)."""
    if settings.http_workers > 0:
        return settings.http_workers
    return max(1, min(os.cpu_count() or 1, 8))


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(app: FastAPI, settings: Settings) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            # the client address and scheme from X-Forwarded-* of these peers only
            proxy_headers=True,
            forwarded_allow_ips=settings.trusted_proxies,
        )
    )


def start_workers(sock: socket.socket, count: int) -> list[subprocess.Popen[bytes]]:
    fd = sock.fileno()
    return start_children(["http-worker", "--fd", str(fd)], count, pass_fds=[fd])


def run_worker(fd: int) -> None:
    """The body of ``cloudfilm http-worker``: the HTTP app on an inherited socket."""
    from cloudfilm.archive import Archive
    from cloudfilm.http.app import create_app

    die_with_parent()
    sock = socket.socket(fileno=fd)
    archive = Archive(Settings(), upgrade=False)
    server = uvicorn_server(create_app(archive, background=False), archive.settings)
    gc.collect()
    gc.freeze()  # as in serve
    try:
        server.run(sockets=[sock])
    finally:
        archive.close()

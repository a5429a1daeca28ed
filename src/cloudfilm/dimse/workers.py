"""More DICOM processes on the same port, so C-STORE uses every core.

pynetdicom decodes PDUs and our ingest parses DICOM in Python: one process is bound by one
core. ``cloudfilm serve`` starts ``dicom_workers - 1`` extra processes that listen on the same
port with SO_REUSEPORT; the kernel hands each new association to one of them. They share
nothing but the index and the storage area, like the scale-out deployment does.
"""

from __future__ import annotations

import gc
import os
import subprocess

from cloudfilm.config import Settings
from cloudfilm.processes import die_with_parent, start_children, wait_for_termination


def worker_count(settings: Settings) -> int:
    """Two per core (at most 8): pynetdicom's per-association threads poll and contend for
    one interpreter lock, so a process serves fewer associations well than a core could."""
    if settings.dicom_workers > 0:
        return settings.dicom_workers
    return max(2, min(2 * (os.cpu_count() or 1), 8))


def start_workers(count: int) -> list[subprocess.Popen[bytes]]:
    return start_children(["dicom-worker"], count)


def run_worker() -> None:
    """The body of ``cloudfilm dicom-worker``: a DIMSE server until SIGTERM."""
    from cloudfilm.archive import Archive
    from cloudfilm.dimse.server import start_dicom_server

    die_with_parent()
    settings = Settings()
    archive = Archive(settings, upgrade=False)
    server = start_dicom_server(archive, reuse_port=True, announce=False)
    gc.collect()
    gc.freeze()  # as in serve: long-lived objects out of the cyclic GC's full passes
    wait_for_termination()
    server.shutdown()
    archive.close()

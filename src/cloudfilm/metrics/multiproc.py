"""Where every process of ``cloudfilm serve`` keeps its metric values, so a scrape sums them.

prometheus-client chooses how values are kept (in memory, or in per-process mmap files under
``PROMETHEUS_MULTIPROC_DIR``) when ``prometheus_client.values`` is first imported, and a metric
keeps the kind it was created with. So ``serve`` points the variable at its directory before any
metric exists; its workers inherit the variable and see it from their first import. A process
that never had the variable (a test building an Archive in-process) keeps values in memory and
exposes only its own, which then are all there is.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from cloudfilm.config import Settings

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"


def directory(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "metrics"


def start_fresh(settings: Settings) -> Path | None:
    """``serve``: an empty directory for this run (a previous run's processes are gone, and
    their files would add a dead run's counts to ours), used by this process and its workers.
    None when metrics were created before the call (values then stay in this process)."""
    path = directory(settings)
    if _metrics_made():
        log.warning("metrics created before multiprocess mode: each process counts alone")
        return None
    shutil.rmtree(path, ignore_errors=True)
    (path / "processes").mkdir(parents=True)
    _use(path)
    return path


def join_running(settings: Settings) -> bool:
    """``cloudfilm import`` beside a running ``serve``: its instances show in serve's figures.
    True when this process now writes to the shared directory."""
    path = directory(settings)
    if _metrics_made() or not (path / "processes").is_dir():
        return False
    _use(path)
    return True


def _metrics_made() -> bool:
    from cloudfilm.metrics import instruments

    return instruments.created()


def _use(path: Path) -> None:
    os.environ[ENV] = str(path)
    if "prometheus_client.values" in sys.modules:
        # Imported before the variable was set (nothing of ours has created a metric yet, see
        # the callers): choose again, or the metrics created from now on would stay in memory.
        from prometheus_client import values

        values.ValueClass = values.get_value_class()


def shared_directory() -> Path | None:
    """The directory this process's values are in, or None when they are in memory."""
    from cloudfilm.metrics import instruments

    return instruments.get().directory


def register_process(role: str) -> None:
    """Name this process (``serve``, ``dicom-worker``, ``http-worker``) so a scrape can report
    its CPU, memory and file descriptors beside the others' (see collectors.ProcessesCollector)."""
    path = shared_directory()
    if path is not None:
        (path / "processes" / str(os.getpid())).write_text(role)


def process_exited(pid: int) -> None:
    """A worker has ended: its counters stay in the sums, its per-process figures go."""
    path = shared_directory()
    if path is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(path))
    (path / "processes" / str(pid)).unlink(missing_ok=True)

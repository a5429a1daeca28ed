"""The extra processes ``cloudfilm serve`` starts: DICOM and HTTP workers.

Python runs one thread of bytecode at a time, so one process is bound by one core whatever it
serves. ``serve`` therefore starts helper processes of itself (``cloudfilm dicom-worker``,
``cloudfilm http-worker``) that serve the same ports and share nothing but the index and the
storage area, exactly like the separate processes of the scale-out deployment. They must never
outlive ``serve``: an orphan would keep a port and serve from a stale configuration.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when ``serve`` dies, even by SIGKILL.

    Set in the child itself (a pre-exec hook is unsafe once the parent runs threads); the
    parent-pid check closes the window where the parent died before the call.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if str(os.getppid()) != os.environ.get("CLOUDFILM_PARENT_PID", str(os.getppid())):
        os._exit(0)


def start_children(
    subcommand: Sequence[str], count: int, *, pass_fds: Sequence[int] = ()
) -> list[subprocess.Popen[bytes]]:
    """``count`` processes of ``cloudfilm <subcommand>``, with this process's settings."""
    env = dict(os.environ, CLOUDFILM_PARENT_PID=str(os.getpid()))
    return [
        subprocess.Popen(
            [sys.executable, "-m", "cloudfilm.cli", *subcommand], env=env, pass_fds=pass_fds
        )
        for _ in range(count)
    ]


def stop_children(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_for_termination() -> None:
    """Block until SIGTERM or SIGINT."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()

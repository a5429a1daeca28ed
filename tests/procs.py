"""Finding a server's worker processes from outside, the way an operator would (``/proc``)."""

from __future__ import annotations

from pathlib import Path


def child_pids(parent: int, role: bytes) -> list[int]:
    """Children of ``parent`` whose command line holds ``role`` (b"http-worker", say)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # the command name (2nd field, in parentheses) may hold spaces: split after it
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and role in cmdline:
            pids.append(int(entry.name))
    return pids

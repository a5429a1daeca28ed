"""Where a server's time went, from a py-spy ``raw`` profile (``bench/ingest.py --profile``).

Each sample is put in the first category whose marker appears in its stack, innermost frame
first; idle threads (an executor waiting for work, an event loop in epoll) are left out.

    .venv/bin/python bench/stacks.py bench/results/ingest-profile-....txt
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

CATEGORIES = [
    ("blob write + fsync", ("storage/blobs.py",)),
    ("index (group commit, SQL)", ("group_commit.py", "index_sql.py", "storage/database.py")),
    ("parse + metadata", ("ingest/parse.py",)),
    ("ingest (other)", ("ingest/service.py",)),
    ("upper layer: ours", ("store_association.py", "dimse/pdu.py", "router.py", "futures.py")),
    ("upper layer: pynetdicom", ("pynetdicom/",)),
    ("films, audit, HTTP", ("portal/", "access/", "uvicorn", "starlette")),
]
IDLE = (
    "_worker (concurrent/futures/thread.py:81)",  # an executor thread waiting for work
    "_run (router.py",  # the store path's event loop in uvloop's run_forever (C)
    "run (asyncio/runners.py",  # uvicorn's event loop waiting (main thread)
    "run_forever",
    "_run_once",
    "select",
)


def summarise(path: Path) -> dict[str, float]:
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        leaf = frames[-1]
        if any(mark in leaf for mark in IDLE) or "wait" in leaf.split(" (")[0]:
            continue
        for name, markers in CATEGORIES:
            if any(m in f for f in frames for m in markers):
                counts[name] += int(n)
                break
        else:
            counts["other"] += int(n)
    total = sum(counts.values()) or 1
    return {name: round(100 * c / total, 1) for name, c in counts.most_common()}


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(arg)
        for name, share in summarise(Path(arg)).items():
            print(f"  {share:5.1f}%  {name}")

"""Sequential QIDO-RS study searches against an existing cloudfilm data directory.

    .venv/bin/python bench/qido.py DATA_DIR [--n 400] [--http-workers N]

Reuses the index ``bench/dicomweb.py`` leaves behind (e.g.
/tmp/cloudfilm-bench/dicomweb/cloudfilm-sqlite, 100,000 studies) and prints p50/p90/p99/max
per search, plus any answer slower than 3× the median with its time into the run, to tell
steady cost from stalls.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.common import start_cloudfilm
from bench.web import create_token, load

SEARCHES = [
    {},
    {"PatientName": "Wang*"},
    {"PatientName": "王*"},
    {"StudyDate": "20200101-20200331"},
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--http-workers", default="")
    args = ap.parse_args()
    url = f"sqlite:///{args.data_dir / 'index.sqlite3'}"
    env = {"CLOUDFILM_HTTP_WORKERS": args.http_workers} if args.http_workers else {}
    server = start_cloudfilm(args.data_dir, url, env=env)
    try:
        token = create_token(server, url)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"}
        with httpx.Client(headers=headers, timeout=60) as c:
            root = f"{server.http_url}/dicom-web/studies"
            c.get(root).raise_for_status()
            print(f"load {load()}")
            for params in SEARCHES:
                ms, at = [], []
                t0 = time.perf_counter()
                for _ in range(args.n):
                    t = time.perf_counter()
                    r = c.get(root, params=params)
                    r.raise_for_status()
                    ms.append((time.perf_counter() - t) * 1000)
                    at.append(t - t0)
                s = sorted(ms)
                q = {p: s[min(len(s) - 1, int(len(s) * p / 100))] for p in (50, 90, 99)}
                print(f"{params or '(no keys)'}: p50 {q[50]:.1f} p90 {q[90]:.1f} "
                      f"p99 {q[99]:.1f} max {s[-1]:.1f} ms")  # fmt: skip
                slow = [
                    (round(a, 2), round(x)) for a, x in zip(at, ms, strict=True) if x > 3 * q[50]
                ]
                if slow:
                    print(f"  slower than 3× p50 (s into run, ms): {slow[:20]}")
            print(f"load {load()}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()

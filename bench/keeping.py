"""Keeping benchmark (issue 12): the fixity verifier's MB/s and what it costs the viewing, and
the replica's lag behind a CT arriving.

- ``verifier``: the demo's 300-slice 512×512 CT is stored by storescu (TCP_NODELAY=1) into a
  real ``cloudfilm serve``; then frames/s of all 300 frames (6 parallel requests, httpx, the
  Accept a viewer sends) is measured with no verifier, with the background verifier at its
  throttle (``CLOUDFILM_VERIFY_MBPS``, passes back to back) and unthrottled; the verifier's
  MB/s comes from ``cloudfilm_fixity_verified_bytes_total`` over the same seconds. Also
  ``cloudfilm verify`` alone (no throttle, nothing else running). The CT fits in the page
  cache, so the verifier here is bound by reading and hashing, not by a disk.
- ``replication``: the same CT by storescu into a fresh serve without and with a replica
  (a folder on the same disk; ``--s3``: moto's S3 server too): storescu's seconds (the queue's
  INSERT is on the ingest path), the queue's deepest point, the time from the last C-STORE
  answered to the last copy verified, and the per-blob lag (``cloudfilm_replica_lag_seconds``).
- ``encryption``: see ``encryption_cost`` below (bench/encryption.py does the measuring).

    .venv/bin/python bench/keeping.py [--pg] [--rounds 5] [--mbps 20] [--s3]
        [--only verifier,replication,encryption]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import pydicom

from bench.common import (
    WORK,
    Server,
    ct_files,
    free_port,
    pg_database,
    save,
    start_cloudfilm,
    storescu,  # dcmtk with TCP_NODELAY=1
)
from bench.web import FRAMES_ACCEPT, create_token, fetch_httpx, load


def metric(server: Server, name: str) -> float:
    """The sum of a metric's samples (every label) at ``/metrics``."""
    text = httpx.get(f"{server.http_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def frame_urls(server: Server, files: list[Path]) -> list[str]:
    urls = []
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        urls.append(
            f"{server.http_url}/dicom-web/studies/{ds.StudyInstanceUID}/series/"
            f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1"
        )
    return urls


def frames_per_s(urls: list[str], headers: dict[str, str], rounds: int) -> dict[str, Any]:
    fetch_httpx(urls, headers, FRAMES_ACCEPT)  # warm: connections, caches
    secs = [fetch_httpx(urls, headers, FRAMES_ACCEPT) for _ in range(rounds)]
    return {
        "seconds": [round(s, 3) for s in secs],
        "frames_per_s": round(len(urls) / statistics.median(secs), 1),
    }


def _engine(pg: bool) -> contextlib.AbstractContextManager[str | None]:
    return pg_database() if pg else contextlib.nullcontext(None)


# -- the verifier ---------------------------------------------------------------------------
def verifier(files: list[Path], rounds: int, mbps: float, pg: bool) -> dict[str, Any]:
    data = WORK / "keeping-verifier"
    shutil.rmtree(data, ignore_errors=True)
    out: dict[str, Any] = {"mbps_setting": mbps, "ct_mb": round(_size(files) / 1e6, 1)}
    with _engine(pg) as url:
        configs = [
            ("no verifier", {"CLOUDFILM_VERIFY_PERIOD_DAYS": "0"}),
            (f"verifier at {mbps:g} MB/s", _verify_env(mbps)),
            ("verifier unthrottled", _verify_env(0)),
        ]
        token = ""
        for label, env in configs:
            server = start_cloudfilm(data, url, env)
            try:
                if not token:
                    storescu(server, files)
                    token = create_token(server, url)
                headers = {"Authorization": f"Bearer {token}"}
                urls = frame_urls(server, files)
                if env["CLOUDFILM_VERIFY_PERIOD_DAYS"] != "0":
                    _wait_verifying(server)
                read_before, t0 = (
                    metric(server, "cloudfilm_fixity_verified_bytes_total"),
                    time.monotonic(),
                )
                print(f"[{label}] frames ×{rounds} (load {load()})", flush=True)
                result = frames_per_s(urls, headers, rounds)
                took = time.monotonic() - t0
                read = metric(server, "cloudfilm_fixity_verified_bytes_total") - read_before
                result["verifier_mb_per_s_meanwhile"] = round(read / took / 1e6, 1)
                if env["CLOUDFILM_VERIFY_PERIOD_DAYS"] != "0":
                    before, t0 = read_before + read, time.monotonic()
                    time.sleep(5)  # the verifier alone, nothing served
                    alone = metric(server, "cloudfilm_fixity_verified_bytes_total") - before
                    result["verifier_mb_per_s_alone"] = round(
                        alone / (time.monotonic() - t0) / 1e6, 1
                    )
                out[label] = result
            finally:
                server.stop()
        out["cli_verify"] = _cli_verify(data, url)
    base = out["no verifier"]["frames_per_s"]
    for label, _env in configs[1:]:
        out[label]["frames_per_s_vs_none"] = round(out[label]["frames_per_s"] / base, 3)
    return out


def _verify_env(mbps: float) -> dict[str, str]:
    # a period of ~0.9 s: every pass starts as soon as the last one ended
    return {"CLOUDFILM_VERIFY_PERIOD_DAYS": "0.00001", "CLOUDFILM_VERIFY_MBPS": str(mbps)}


def _wait_verifying(server: Server, timeout: float = 60) -> None:
    first = metric(server, "cloudfilm_fixity_verified_bytes_total")
    deadline = time.monotonic() + timeout
    while metric(server, "cloudfilm_fixity_verified_bytes_total") == first:
        if time.monotonic() > deadline:
            raise RuntimeError("the background verifier did not start")
        time.sleep(0.2)


def _cli_verify(data: Path, url: str | None) -> dict[str, Any]:
    """``cloudfilm verify`` with nothing else running: the verifier's own speed."""
    env = dict(os.environ, CLOUDFILM_DATA_DIR=str(data), CLOUDFILM_CONFIG=str(data / "none.toml"))
    if url:
        env["CLOUDFILM_DATABASE_URL"] = url
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "cloudfilm.cli", "verify"], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    got = json.loads(run.stdout.strip().splitlines()[-1])
    got["mb_per_s"] = round(got["megabytes"] / got["seconds"], 1) if got["seconds"] else None
    got["wall_seconds_with_start"] = round(time.monotonic() - t0, 1)
    return got


def _size(files: list[Path]) -> int:
    return sum(f.stat().st_size for f in files)


# -- replication ----------------------------------------------------------------------------
@contextlib.contextmanager
def _moto() -> Iterator[str]:
    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait()


def _queue(db_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(text("SELECT count(*) FROM keeping_replica_queue")).scalar_one()
            )
    finally:
        engine.dispose()


def replication(files: list[Path], pg: bool, s3: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"instances": len(files), "ct_mb": round(_size(files) / 1e6, 1)}
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(_moto()) if s3 else None
        configs: list[tuple[str, dict[str, str]]] = [("no replica", {})]
        configs.append(
            ("replica: folder", {"CLOUDFILM_REPLICA_URL": (WORK / "keeping-replica").as_uri()})
        )
        if endpoint:
            configs.append(("replica: S3 (moto)", {
                "CLOUDFILM_REPLICA_URL": "s3://bench-replica/copy",
                "CLOUDFILM_REPLICA_S3_ENDPOINT_URL": endpoint,
                "CLOUDFILM_REPLICA_S3_ACCESS_KEY_ID": "bench",
                "CLOUDFILM_REPLICA_S3_SECRET_ACCESS_KEY": "bench",
            }))  # fmt: skip
        for label, env in configs:
            shutil.rmtree(WORK / "keeping-replica", ignore_errors=True)
            data = WORK / "keeping-replication"
            shutil.rmtree(data, ignore_errors=True)
            with _engine(pg) as url:
                db_url = url or f"sqlite:///{(data / 'index.sqlite3').resolve()}"
                server = start_cloudfilm(data, url, {"CLOUDFILM_VERIFY_PERIOD_DAYS": "0", **env})
                try:
                    print(f"[{label}] storescu {len(files)} instances (load {load()})", flush=True)
                    out[label] = _one_replication(server, files, db_url, bool(env))
                finally:
                    server.stop()
    return out


def _one_replication(
    server: Server, files: list[Path], db_url: str, replica: bool
) -> dict[str, Any]:
    deepest = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            deepest[0] = max(deepest[0], _queue(db_url))

    watcher = threading.Thread(target=watch, daemon=True)
    if replica:
        watcher.start()
    t0 = time.monotonic()
    storescu(server, files)
    stored = time.monotonic()
    result: dict[str, Any] = {"store_seconds": round(stored - t0, 2),
                              "instances_per_s": round(len(files) / (stored - t0), 1)}  # fmt: skip
    if not replica:
        return result
    while _queue(db_url):
        if time.monotonic() - stored > 600:
            raise RuntimeError("the replica did not catch up in 10 minutes")
        time.sleep(0.02)
    done = time.monotonic()
    stop.set()
    watcher.join()
    count = metric(server, "cloudfilm_replica_lag_seconds_count")
    total = metric(server, "cloudfilm_replica_lag_seconds_sum")
    result.update(
        deepest_queue=deepest[0],
        last_copy_after_last_store_s=round(done - stored, 2),
        first_store_to_last_copy_s=round(done - t0, 2),
        copies=int(count),
        mean_lag_per_blob_s=round(total / count, 2) if count else None,
        failed_copies=int(metric(server, "cloudfilm_replica_copies_total") - count),
    )
    return result


# -- encryption's cost in frames/s ----------------------------------------------------------
# ENCRYPTION SECTION (issue 12, encryption at rest): what envelope encryption of the file store
# (CLOUDFILM_BLOB_KEK) costs in frames/s. The measuring lives in bench/encryption.py, written
# with the encryption work; this section runs it so one command gives every keeping figure.
def encryption_cost(rounds: int) -> dict[str, Any]:
    from bench.encryption import encryption_cost as measure

    return measure(rounds=rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", action="store_true", help="PostgreSQL index (default SQLite)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mbps", type=float, default=20.0, help="the verifier's throttle")
    parser.add_argument("--s3", action="store_true", help="also a replica on moto's S3 server")
    parser.add_argument("--only", default="verifier,replication,encryption")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    files = ct_files()
    results: dict[str, Any] = {
        "engine": "postgresql" if args.pg else "sqlite",
        "cores": os.cpu_count(),
    }
    if "verifier" in parts:
        results["verifier"] = verifier(files, args.rounds, args.mbps, args.pg)
    if "replication" in parts:
        results["replication"] = replication(files, args.pg, args.s3)
    if "encryption" in parts:
        results["encryption"] = encryption_cost(args.rounds)
    for name in ("verifier", "replication"):
        for label, value in results.get(name, {}).items():
            print(f"{name:12} {label:26} {value}")
    for mode in ("plain", "encrypted"):
        if mode in results.get("encryption", {}):
            got = results["encryption"][mode]
            print(f"{'encryption':12} {mode:26} frames/s httpx {got['httpx']['frames_per_s']}, "
                  f"curl {got['curl']['frames_per_s']}")  # fmt: skip
    print(f"saved {save('keeping', results)}")


if __name__ == "__main__":
    main()

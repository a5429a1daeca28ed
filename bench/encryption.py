"""What envelope encryption of the file store costs when frames are served.

``encryption_cost()`` runs one real ``cloudfilm serve`` (SQLite) on a plain folder and one on
an encrypted folder (``CLOUDFILM_BLOB_KEK``) at the same time, loads the demo's 300-slice
512×512 CT into each by STOW-RS, checks frames of each against the original's pixel data, and
then fetches all 300 frames with 6 parallel requests (httpx threads, and curl as a client that
is not the bottleneck), the Accept a viewer sends, the two servers taking turns each round.
Also: STOW-RS MB/s, one frame's sequential latency, the server's CPU per frame, and the store
alone (``get_range`` of a 512 KiB frame in this process: pread vs decrypting the chunks it
touches). Prints a table, saves JSON under bench/results/.

    .venv/bin/python bench/encryption.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import pydicom

from bench.common import WORK, Server, ct_files, save, start_cloudfilm
from bench.web import (
    FRAMES_ACCEPT,
    check_frame,
    cpu_seconds,
    create_token,
    fetch_curl,
    fetch_httpx,
    latencies,
    load,
    stow,
    summarise,
)

KEK = "bench-kek:" + base64.b64encode(hashlib.sha256(b"bench only").digest()).decode()


@dataclass
class _Side:
    """One server of the comparison, loaded, with what its rounds measured."""

    label: str
    server: Server
    headers: dict[str, str]
    urls: list[str]
    frame_bytes: int
    result: dict[str, Any]
    secs: dict[str, list[float]] = field(default_factory=lambda: {"httpx": [], "curl": []})
    cpu: dict[str, float] = field(default_factory=lambda: {"httpx": 0.0, "curl": 0.0})


def _start(label: str, env: dict[str, str], files: list[Path]) -> _Side:
    data_dir = WORK / "encryption" / label
    shutil.rmtree(data_dir, ignore_errors=True)
    os.environ.update(env)  # `cloudfilm token create` opens the same (encrypted) store
    try:
        server = start_cloudfilm(data_dir, env=env)
        token = create_token(server, None)
    finally:
        for k in env:
            os.environ.pop(k, None)
    try:
        return _load(label, server, {"Authorization": f"Bearer {token}"}, files)
    except BaseException:
        server.stop()
        raise


def _load(label: str, server: Server, headers: dict[str, str], files: list[Path]) -> _Side:
    data_dir = server.data_dir
    root = f"{server.http_url}/dicom-web"
    blobs = [f.read_bytes() for f in files]
    seconds, resp = stow(root, headers, blobs)
    resp.raise_for_status()
    first = [pydicom.dcmread(f) for f in files]
    study, series = first[0].StudyInstanceUID, first[0].SeriesInstanceUID
    urls = [
        f"{root}/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}/frames/1"
        for ds in first
    ]
    for i in (0, 150, len(urls) - 1):
        check_frame(urls[i], headers, FRAMES_ACCEPT, bytes(first[i].PixelData))
    result = {
        "stow_mb_per_s": round(sum(map(len, blobs)) / seconds / 1e6, 1),
        "bytes_on_disk": sum(p.stat().st_size for p in (data_dir / "blobs").rglob("*.dcm")),
        "bytes_received": sum(map(len, blobs)),
    }
    frame_bytes = sum(len(ds.PixelData) for ds in first)
    return _Side(label, server, headers, urls, frame_bytes, result)


def _round(side: _Side, client: str) -> None:
    workdir = WORK / "encryption" / f"curl-{side.label}"
    workdir.mkdir(parents=True, exist_ok=True)
    cpu = cpu_seconds(side.server.proc.pid)
    if client == "httpx":
        side.secs[client].append(fetch_httpx(side.urls, side.headers, FRAMES_ACCEPT))
    else:
        side.secs[client].append(fetch_curl(side.urls, side.headers, FRAMES_ACCEPT, workdir))
    side.cpu[client] += cpu_seconds(side.server.proc.pid) - cpu


def _compare(sides: list[_Side], rounds: int) -> None:
    """Both servers run at once and take turns (the order swapped each round), so the load
    other programs put on the machine falls on both alike."""
    for side in sides:
        first = fetch_httpx(side.urls, side.headers, FRAMES_ACCEPT)
        side.result["first_pass_httpx_frames_per_s"] = round(len(side.urls) / first, 1)
    for r in range(rounds):
        for client in ("httpx", "curl"):
            for side in sides if r % 2 == 0 else sides[::-1]:
                _round(side, client)
    for side in sides:
        for client, secs in side.secs.items():
            med = statistics.median(secs)
            side.result[client] = {
                "seconds": [round(x, 3) for x in secs],
                "frames_per_s": round(len(side.urls) / med, 1),
                "mb_per_s": round(side.frame_bytes / med / 1e6, 1),
                "server_cpu_ms_per_frame": round(
                    side.cpu[client] / (rounds * len(side.urls)) * 1000, 3
                ),
                "load": load(),
            }
        accept = {**side.headers, "Accept": FRAMES_ACCEPT}
        with httpx.Client(headers=accept, timeout=60) as c:
            side.result["one_frame_sequential"] = summarise(latencies(c, side.urls[150], 300))


def _store_alone(files: list[Path], n: int = 2000) -> dict[str, Any]:
    """µs per 512 KiB frame read by ``get_range`` (warm page cache), plain vs encrypted."""
    from cloudfilm.storage.blobs import FileBlobStore
    from cloudfilm.storage.encrypted import EncryptedFileBlobStore
    from cloudfilm.storage.kek import KeyRing, parse_kek

    root = WORK / "encryption" / "store"
    shutil.rmtree(root, ignore_errors=True)
    data = files[150].read_bytes()
    ds = pydicom.dcmread(files[150])
    length = len(ds.PixelData)
    start = len(data) - length  # the pixel data is the last element of the demo's slices
    stores = {
        "plain": FileBlobStore(root / "plain"),
        "encrypted": EncryptedFileBlobStore(root / "encrypted", KeyRing(parse_kek(KEK, "bench"))),
    }
    out: dict[str, Any] = {"frame_bytes": length}
    for name, store in stores.items():
        store.put("instances/x.dcm", data)
        assert store.get_range("instances/x.dcm", start, length) == data[start:]
        t0 = time.perf_counter()
        for _ in range(n):
            store.get_range("instances/x.dcm", start, length)
        out[f"{name}_us_per_frame"] = round((time.perf_counter() - t0) / n * 1e6, 1)
    return out


def encryption_cost(rounds: int = 5) -> dict[str, Any]:
    """Frames/s served from a plain and from an envelope-encrypted file store (see above)."""
    files = ct_files()
    for k in ("CLOUDFILM_BLOB_KEK", "CLOUDFILM_BLOB_KEK_FILE", "CLOUDFILM_BLOB_KEK_PREVIOUS"):
        os.environ.pop(k, None)  # the plain server must be plain
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cores": os.cpu_count(),
        "instances": len(files),
        "store_alone": _store_alone(files),
    }
    sides: list[_Side] = []
    try:
        sides.append(_start("plain", {}, files))
        sides.append(_start("encrypted", {"CLOUDFILM_BLOB_KEK": KEK}, files))
        _compare(sides, rounds)
    finally:
        for side in sides:
            side.server.stop()
    for side in sides:
        result[side.label] = side.result
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    r = encryption_cost(args.rounds)
    print(f"{'':34}{'plain':>12}{'encrypted':>12}")
    rows = [
        ("frames/s, httpx 6 parallel", ("httpx", "frames_per_s")),
        ("frames/s, curl 6 parallel", ("curl", "frames_per_s")),
        ("server CPU ms/frame (curl)", ("curl", "server_cpu_ms_per_frame")),
        ("one frame p50 ms (sequential)", ("one_frame_sequential", "p50_ms")),
        ("one frame p99 ms (sequential)", ("one_frame_sequential", "p99_ms")),
        ("first pass frames/s (httpx)", ("first_pass_httpx_frames_per_s",)),
        ("STOW-RS MB/s", ("stow_mb_per_s",)),
        ("bytes on disk / received", None),
    ]
    for label, path in rows:
        vals = []
        for mode in ("plain", "encrypted"):
            v: Any = r[mode]
            if path is None:
                v = round(v["bytes_on_disk"] / v["bytes_received"], 4)
            else:
                for p in path:
                    v = v[p]
            vals.append(v)
        print(f"{label:34}{vals[0]:>12}{vals[1]:>12}")
    s = r["store_alone"]
    print(
        f"get_range of one {s['frame_bytes']} B frame in-process: plain "
        f"{s['plain_us_per_frame']} µs, encrypted {s['encrypted_us_per_frame']} µs"
    )
    print(f"saved {save('encryption', r)}")


if __name__ == "__main__":
    main()

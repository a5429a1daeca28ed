"""What envelope encryption of the file store costs when frames are served.

``encryption_cost()`` runs one real ``cloudfilm serve`` (SQLite) on a plain folder and one on
an encrypted folder (``CLOUDFILM_BLOB_KEK``), loads the demo's 300-slice 512×512 CT into each
by STOW-RS, checks a frame of each against the original's pixel data, and then fetches all 300
frames with 6 parallel requests (httpx threads, and curl as a client that is not the
bottleneck), the Accept a viewer sends. Also: STOW-RS MB/s, one frame's sequential latency,
the server's CPU per frame, and the store alone (``get_range`` of a 512 KiB frame in this
process: pread vs decrypting the chunks it touches). Prints a table, saves JSON under
bench/results/.

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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import pydicom

from bench.common import WORK, ct_files, save, start_cloudfilm
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


def _frames(
    root: str, headers: dict[str, str], urls: list[str], frame_bytes: int, rounds: int, pid: int
) -> dict[str, Any]:
    workdir = WORK / "encryption" / "curl"
    workdir.mkdir(parents=True, exist_ok=True)
    first = fetch_httpx(urls, headers, FRAMES_ACCEPT)
    out: dict[str, Any] = {"first_pass_httpx_frames_per_s": round(len(urls) / first, 1)}
    for client in ("httpx", "curl"):
        secs = []
        cpu = cpu_seconds(pid)
        for _ in range(rounds):
            if client == "httpx":
                secs.append(fetch_httpx(urls, headers, FRAMES_ACCEPT))
            else:
                secs.append(fetch_curl(urls, headers, FRAMES_ACCEPT, workdir))
        cpu = cpu_seconds(pid) - cpu
        med = statistics.median(secs)
        out[client] = {
            "seconds": [round(s, 3) for s in secs],
            "frames_per_s": round(len(urls) / med, 1),
            "mb_per_s": round(frame_bytes / med / 1e6, 1),
            "server_cpu_ms_per_frame": round(cpu / (rounds * len(urls)) * 1000, 3),
            "load": load(),
        }
    with httpx.Client(headers={**headers, "Accept": FRAMES_ACCEPT}, timeout=60) as c:
        out["one_frame_sequential"] = summarise(latencies(c, urls[150], 300))
    return out


def _serve(label: str, env: dict[str, str], files: list[Path], rounds: int) -> dict[str, Any]:
    data_dir = WORK / "encryption" / label
    shutil.rmtree(data_dir, ignore_errors=True)
    os.environ.update(env)  # `cloudfilm token create` opens the same (encrypted) store
    server = start_cloudfilm(data_dir, env=env)
    try:
        token = create_token(server, None)
        headers = {"Authorization": f"Bearer {token}"}
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
        frame_bytes = sum(len(ds.PixelData) for ds in first)
        result = {
            "stow_mb_per_s": round(sum(map(len, blobs)) / seconds / 1e6, 1),
            **_frames(root, headers, urls, frame_bytes, rounds, server.proc.pid),
        }
        on_disk = sum(p.stat().st_size for p in (data_dir / "blobs").rglob("*.dcm"))
        result["bytes_on_disk"] = on_disk
        result["bytes_received"] = sum(map(len, blobs))
        return result
    finally:
        server.stop()
        for k in env:
            os.environ.pop(k, None)


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
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cores": os.cpu_count(),
        "instances": len(files),
        "store_alone": _store_alone(files),
        "plain": _serve("plain", {}, files, rounds),
        "encrypted": _serve("encrypted", {"CLOUDFILM_BLOB_KEK": KEK}, files, rounds),
    }
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

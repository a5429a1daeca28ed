"""DICOMweb benchmark: STOW-RS, frame retrieval, series metadata and QIDO-RS.

Loads, all in one run:
- STOW-RS of the demo's 300-slice 512×512 CT (one multipart request per round, streamed by
  httpx; each round re-sends the series under new UIDs so every round really stores), MB/s;
- retrieval of all 300 frames with 6 parallel requests (frames/s, MB/s of frame bytes), both with
  httpx (6 threads, one keep-alive connection each) and with curl (libcurl multi,
  ``--parallel-max 6``: a client that is not itself the bottleneck on 2 cores). Accept is what
  OHIF sends: ``multipart/related; type="application/octet-stream"; transfer-syntax=*``;
- ``/studies/{s}/series/{s}/metadata`` of that series (ms, sequential);
- QIDO-RS study searches with 100,000 studies indexed (bench/fill.py writes them straight into the
  index before the server starts), default limit, p50/p99;
on cloudfilm with SQLite and with PostgreSQL, on Debian's Orthanc + orthanc-dicomweb (QIDO there
on a small index of tiny studies stored by STOW: filling Orthanc with 100,000 studies would take
hours), and on nginx serving the same frame bytes as static files. Prints a table and ratios,
saves JSON under bench/results/.

    .venv/bin/python bench/dicomweb.py [--quick] [--rounds 5] [--engines sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from bench.common import (
    WORK,
    Server,
    ct_files,
    orthanc_available,
    pg_database,
    save,
    start_cloudfilm,
    start_orthanc,
)
from bench.fill import IDEO, SURNAMES, fill_index
from bench.web import (
    FRAMES_ACCEPT,
    SINGLE_ACCEPT,
    check_frame,
    cpu_seconds,
    create_token,
    fetch_curl,
    fetch_httpx,
    latencies,
    load,
    start_static,
    stow,
    summarise,
)

QUERIES: list[tuple[str, dict[str, str]]] = [
    ("PatientName=Wang*", {"PatientName": "Wang*"}),
    ("PatientName=王*", {"PatientName": "王*"}),
    ("PatientName=Zhou^Fill1234*", {"PatientName": "Zhou^Fill1234*"}),
    ("PatientName=周^Fill1234*", {"PatientName": "周^Fill1234*"}),
    ("StudyDate=20200101-20200331", {"StudyDate": "20200101-20200331"}),
    ("ModalitiesInStudy=MR", {"ModalitiesInStudy": "MR"}),
    ("PatientID=FILL0000123", {"PatientID": "FILL0000123"}),
    ("AccessionNumber=FA00000456", {"AccessionNumber": "FA00000456"}),
    (
        "StudyDate=2019+ModalitiesInStudy=CT",
        {"StudyDate": "20190101-20191231", "ModalitiesInStudy": "CT"},
    ),
    ("(no keys)", {}),
]
"""Searches with the server's default limit: the ones the p99 target is about."""
EXTRA_QUERIES: list[tuple[str, dict[str, str]]] = [
    ("(no keys), limit=1000", {"limit": "1000"}),
    ("PatientName=Wang*, limit=1000", {"PatientName": "Wang*", "limit": "1000"}),
]
"""Reported too, outside the target: a client asking for a page of 1,000 at once."""


# -- data ------------------------------------------------------------------------------------
class CT:
    """The demo CT in memory: original bytes, per-round copies with new UIDs, frame bytes."""

    def __init__(self, rounds: int) -> None:
        self.files = ct_files()
        self.size = sum(f.stat().st_size for f in self.files)
        self.blobs = [f.read_bytes() for f in self.files]
        first = [pydicom.dcmread(io.BytesIO(b)) for b in self.blobs]
        self.study = first[0].StudyInstanceUID
        self.series = first[0].SeriesInstanceUID
        self.sops = [ds.SOPInstanceUID for ds in first]
        self.frames = [bytes(ds.PixelData) for ds in first]
        self.frame_bytes = sum(len(f) for f in self.frames)
        self.rounds: list[list[bytes]] = [self.blobs]
        for r in range(1, rounds):
            copies = []
            for i, ds in enumerate(first):
                ds = ds.copy()
                ds.StudyInstanceUID = f"2.25.4242{r:03d}1"
                ds.SeriesInstanceUID = f"2.25.4242{r:03d}2"
                ds.SOPInstanceUID = f"2.25.4242{r:03d}3{i:05d}"
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                copies.append(buf.getvalue())
            self.rounds.append(copies)

    def frame_urls(self, root: str) -> list[str]:
        return [
            f"{root}/studies/{self.study}/series/{self.series}/instances/{sop}/frames/1"
            for sop in self.sops
        ]


def tiny_studies(n: int) -> list[bytes]:
    """``n`` one-instance studies without pixel data, named and dated like bench/fill.py's rows
    (Orthanc's QIDO index)."""
    import random

    rng = random.Random(1)
    patients = max(1, n // 3)
    out = []
    for s in range(n):
        p = s % patients
        i = p % len(SURNAMES)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
        meta.MediaStorageSOPInstanceUID = f"2.25.61{s:09d}"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = f"2.25.62{s:09d}"
        ds.SeriesInstanceUID = f"2.25.63{s:09d}"
        ds.PatientName = f"{SURNAMES[i]}Fill{p}={IDEO[i]}Fill{p}"
        ds.PatientID = f"FILL{p:07d}"
        ds.StudyDate = (
            f"20{rng.randrange(10, 26)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
        )
        ds.StudyTime = "101010"
        ds.AccessionNumber = f"FA{s:08d}"
        ds.Modality = rng.choice(["CT", "MR", "DX", "US", "CR"])
        ds.StudyDescription = "synthetic"
        ds.SeriesNumber = 1
        ds.InstanceNumber = 1
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


# -- the loads ------------------------------------------------------------------------------
def run_stow(root: str, headers: dict[str, str], ct: CT) -> dict[str, Any]:
    runs = []
    for r, blobs in enumerate(ct.rounds):
        seconds, resp = stow(root, headers, blobs)
        refs = resp.json().get("00081199", {}).get("Value", [])
        if len(refs) != len(blobs):
            raise RuntimeError(f"STOW round {r}: {len(refs)} of {len(blobs)} stored")
        runs.append({"seconds": round(seconds, 3), "mb_per_s": round(ct.size / seconds / 1e6, 1),
                     "load": load()})  # fmt: skip
    mbs = [x["mb_per_s"] for x in runs]
    med = statistics.median(mbs)
    return {
        "runs": runs,
        "mb_per_s": med,
        "instances_per_s": round(med * 1e6 / ct.size * len(ct.blobs), 1),
    }


def run_frames(
    name: str,
    urls: list[str],
    headers: dict[str, str],
    ct: CT,
    rounds: int,
    *,
    multipart: bool,
    pid: int | None = None,
) -> dict[str, Any]:
    accept = FRAMES_ACCEPT if multipart else SINGLE_ACCEPT
    workdir = WORK / "dicomweb" / f"curl-{name}"
    workdir.mkdir(parents=True, exist_ok=True)
    first = fetch_httpx(urls, headers, accept)  # the first pass: cold caches, new connections
    out: dict[str, Any] = {"first_pass_httpx_frames_per_s": round(len(urls) / first, 1)}
    for client in ("httpx", "curl"):
        secs = []
        cpu = cpu_seconds(pid)
        for _ in range(rounds):
            if client == "httpx":
                secs.append(fetch_httpx(urls, headers, accept))
            else:
                secs.append(fetch_curl(urls, headers, accept, workdir))
        cpu = cpu_seconds(pid) - cpu
        med = statistics.median(secs)
        out[client] = {
            "seconds": [round(s, 3) for s in secs],
            "frames_per_s": round(len(urls) / med, 1),
            "mb_per_s": round(ct.frame_bytes / med / 1e6, 1),
            "server_cpu_ms_per_frame": round(cpu / (rounds * len(urls)) * 1000, 3),
            "load": load(),
        }
    return out


def run_metadata(root: str, headers: dict[str, str], ct: CT, n: int) -> dict[str, Any]:
    url = f"{root}/studies/{ct.study}/series/{ct.series}/metadata"
    h = {**headers, "Accept": "application/dicom+json"}
    with httpx.Client(headers=h, timeout=120) as c:
        start = time.perf_counter()
        r = c.get(url)
        first = (time.perf_counter() - start) * 1000
        r.raise_for_status()
        count = len(r.json())
        if count != len(ct.sops):
            raise RuntimeError(f"metadata: {count} instances, want {len(ct.sops)}")
        ms = latencies(c, url, n)
    return {"first_ms": round(first, 1), **summarise(ms), "bytes": len(r.content),
            "median_ms": round(statistics.median(ms), 2)}  # fmt: skip


def run_qido(root: str, headers: dict[str, str], n: int, pid: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cpu = cpu_seconds(pid)
    h = {**headers, "Accept": "application/dicom+json"}
    with httpx.Client(headers=h, timeout=120) as c:
        for label, params in QUERIES + EXTRA_QUERIES:
            ms = latencies(c, f"{root}/studies", n, params=params)
            r = c.get(f"{root}/studies", params=params)
            out[label] = {**summarise(ms), "results": len(r.json()) if r.content else 0}
    requests = sum(out[label]["n"] + 2 for label, _ in QUERIES + EXTRA_QUERIES)
    out["_server_cpu_ms_per_search"] = round((cpu_seconds(pid) - cpu) / requests * 1000, 2)
    out["_worst_p99_ms"] = max(out[label]["p99_ms"] for label, _ in QUERIES)
    out["_median_p50_ms"] = round(
        statistics.median(out[label]["p50_ms"] for label, _ in QUERIES), 2
    )
    out["_load"] = load()
    return out


def bench_server(
    label: str,
    server: Server,
    root: str,
    headers: dict[str, str],
    ct: CT,
    args: argparse.Namespace,
    *,
    qido_note: str,
) -> dict[str, Any]:
    res: dict[str, Any] = {"server": label, "qido_index": qido_note}
    print(f"[{label}] STOW ×{len(ct.rounds)} (load {load()})", flush=True)
    res["stow"] = run_stow(root, headers, ct)
    urls = ct.frame_urls(root)
    check_frame(urls[0], headers, FRAMES_ACCEPT, ct.frames[0])
    check_frame(urls[-1], headers, FRAMES_ACCEPT, ct.frames[-1])
    print(f"[{label}] frames ×{args.rounds} (load {load()})", flush=True)
    pid = server.proc.pid
    res["frames"] = run_frames(label, urls, headers, ct, args.rounds, multipart=True, pid=pid)
    if label.startswith("cloudfilm"):
        check_frame(urls[0], headers, SINGLE_ACCEPT, ct.frames[0])
        res["frames_single"] = run_frames(
            label, urls, headers, ct, args.rounds, multipart=False, pid=pid
        )
    print(f"[{label}] metadata (load {load()})", flush=True)
    res["metadata"] = run_metadata(root, headers, ct, args.metadata_n)
    print(f"[{label}] QIDO (load {load()})", flush=True)
    res["qido"] = run_qido(root, headers, args.qido_n, pid)
    return res


def cloudfilm_run(engine: str, ct: CT, args: argparse.Namespace) -> dict[str, Any]:
    d = WORK / "dicomweb" / f"cloudfilm-{engine}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)

    def go(url: str) -> dict[str, Any]:
        t = time.perf_counter()
        filled = (
            fill_index(url, studies=args.studies, instances_per_study=1) if args.studies else {}
        )
        fill_s = time.perf_counter() - t
        server = start_cloudfilm(d, url)
        try:
            token = create_token(server, url)
            headers = {"Authorization": f"Bearer {token}"}
            res = bench_server(
                f"cloudfilm-{engine}", server, f"{server.http_url}/dicom-web", headers, ct, args,
                qido_note=f"{args.studies} studies (bench/fill.py) + the stored CT",
            )  # fmt: skip
        finally:
            server.stop()
        res["fill"] = {**filled, "seconds": round(fill_s, 1)}
        return res

    if engine == "sqlite":
        return go(f"sqlite:///{d / 'index.sqlite3'}")
    with pg_database() as url:
        return go(url)


def orthanc_run(ct: CT, args: argparse.Namespace) -> dict[str, Any]:
    d = WORK / "dicomweb" / "orthanc"
    shutil.rmtree(d, ignore_errors=True)
    server = start_orthanc(d, dicomweb=True)
    try:
        root = f"{server.http_url}/dicom-web"
        if args.orthanc_studies:
            t = time.perf_counter()
            tiny = tiny_studies(args.orthanc_studies)
            for i in range(0, len(tiny), 500):
                stow(root, {}, tiny[i : i + 500])
            print(f"[orthanc] {len(tiny)} tiny studies stored in {time.perf_counter() - t:.1f} s")
        return bench_server(
            "orthanc", server, root, {}, ct, args,
            qido_note=f"{args.orthanc_studies} one-instance studies (STOW) + the stored CT",
        )  # fmt: skip
    finally:
        server.stop()


def static_run(ct: CT, args: argparse.Namespace) -> dict[str, Any]:
    files = {}
    for sop, frame in zip(ct.sops, ct.frames, strict=True):
        rel = f"dicom-web/studies/{ct.study}/series/{ct.series}/instances/{sop}/frames/1"
        files[rel] = frame
    static = start_static(WORK / "dicomweb" / "static", files)
    try:
        urls = ct.frame_urls(f"{static.url}/dicom-web")
        check_frame(urls[0], {}, SINGLE_ACCEPT, ct.frames[0])
        print(f"[{static.kind}] frames ×{args.rounds} (load {load()})", flush=True)
        frames = run_frames(
            static.kind, urls, {}, ct, args.rounds, multipart=False, pid=static.proc.pid
        )
        return {"server": static.kind, "frames": frames}
    finally:
        static.stop()


# -- report ---------------------------------------------------------------------------------
def table(results: dict[str, Any]) -> list[str]:
    lines = []
    hdr = (
        f"{'server':<22}{'STOW MB/s':>10}{'fr/s httpx':>11}{'fr/s curl':>10}{'MB/s curl':>10}"
        f"{'cpu ms/fr':>10}{'meta ms':>10}{'QIDO p50':>10}{'QIDO p99':>10}{'cpu ms/q':>9}"
    )
    lines.append(hdr)
    lines.append("-" * len(hdr))

    def frames_cols(f: dict[str, Any]) -> str:
        return (
            f"{f['httpx']['frames_per_s']:>11}{f['curl']['frames_per_s']:>10}"
            f"{f['curl']['mb_per_s']:>10}{f['curl']['server_cpu_ms_per_frame']:>10}"
        )

    for r in results["servers"]:
        q = r.get("qido")
        lines.append(
            f"{r['server']:<22}"
            f"{r['stow']['mb_per_s'] if 'stow' in r else '-':>10}"
            + frames_cols(r["frames"])
            + f"{r['metadata']['median_ms'] if 'metadata' in r else '-':>10}"
            f"{round(q['_median_p50_ms'], 2) if q else '-':>10}"
            f"{q['_worst_p99_ms'] if q else '-':>10}"
            f"{q['_server_cpu_ms_per_search'] if q else '-':>9}"
        )
        if "frames_single" in r:
            lines.append(f"{'  (single-part)':<22}{'':>10}" + frames_cols(r["frames_single"]))
    lines.append(
        "QIDO p50 = median over the searches of each one's p50; QIDO p99 = the worst search's p99"
    )
    return lines


def qido_table(results: dict[str, Any]) -> list[str]:
    servers = [r for r in results["servers"] if "qido" in r]
    lines = [
        f"{'QIDO p50 / p99 ms (results)':<36}" + "".join(f"{r['server']:>24}" for r in servers)
    ]
    for label, _ in QUERIES + EXTRA_QUERIES:
        row = f"{label:<36}"
        for r in servers:
            v = r["qido"][label]
            row += f"{v['p50_ms']:>9} / {v['p99_ms']:<7} ({v['results']:>4})"
        lines.append(row)
    return lines


def ratios(results: dict[str, Any]) -> dict[str, float]:
    by = {r["server"]: r for r in results["servers"]}
    out: dict[str, float] = {}
    o = by.get("orthanc")
    s = next((r for k, r in by.items() if k in ("nginx", "python-http.server")), None)
    for name, r in by.items():
        if not name.startswith("cloudfilm"):
            continue
        eng = name.split("-", 1)[1]
        for client in ("httpx", "curl"):
            if o:
                out[f"frames {client} {eng} / orthanc"] = round(
                    r["frames"][client]["frames_per_s"] / o["frames"][client]["frames_per_s"], 2
                )
            if s:
                out[f"frames {client} {eng} / {s['server']}"] = round(
                    r["frames"][client]["frames_per_s"] / s["frames"][client]["frames_per_s"], 2
                )
                out[f"frames {client} {eng} single-part / {s['server']}"] = round(
                    r["frames_single"][client]["frames_per_s"]
                    / s["frames"][client]["frames_per_s"],
                    2,
                )
        if o:
            out[f"STOW {eng} / orthanc"] = round(r["stow"]["mb_per_s"] / o["stow"]["mb_per_s"], 2)
            out[f"metadata speed-up {eng} vs orthanc"] = round(
                o["metadata"]["median_ms"] / r["metadata"]["median_ms"], 2
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="frame retrieval rounds (median)")
    ap.add_argument("--stow-rounds", type=int, default=3, help="STOW rounds (median)")
    ap.add_argument("--studies", type=int, default=100_000, help="studies indexed for QIDO")
    ap.add_argument("--orthanc-studies", type=int, default=2000, help="tiny studies in Orthanc")
    ap.add_argument("--qido-n", type=int, default=100, help="samples per QIDO query")
    ap.add_argument("--metadata-n", type=int, default=20)
    ap.add_argument("--engines", default="sqlite,postgresql")
    ap.add_argument("--no-orthanc", action="store_true")
    ap.add_argument("--no-static", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small index, fewer rounds")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.stow_rounds, args.studies = 2, 1, 1000
        args.orthanc_studies, args.qido_n, args.metadata_n = 200, 20, 5
    ct = CT(args.stow_rounds)
    print(f"data: {len(ct.blobs)} CT instances, {ct.size / 1e6:.1f} MB; "
          f"frames {ct.frame_bytes / 1e6:.1f} MB; load {load()}")  # fmt: skip
    results: dict[str, Any] = {
        "instances": len(ct.blobs), "bytes": ct.size, "frame_bytes": ct.frame_bytes,
        "args": vars(args), "load_start": load(), "servers": [],
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip
    for engine in args.engines.split(","):
        results["servers"].append(cloudfilm_run(engine.strip(), ct, args))
    if not args.no_orthanc and orthanc_available():
        results["servers"].append(orthanc_run(ct, args))
    elif not args.no_orthanc:
        print("Orthanc not installed (apt-get install orthanc orthanc-dicomweb): no comparison")
    if not args.no_static:
        results["servers"].append(static_run(ct, args))
    results["load_end"] = load()
    results["ratios"] = ratios(results)
    print()
    for line in table(results):
        print(line)
    print()
    for line in qido_table(results):
        print(line)
    print()
    for k, v in results["ratios"].items():
        print(f"ratio {k}: {v}")
    print(f"load at start {results['load_start']}, at end {results['load_end']}")
    print(f"saved {save('dicomweb', results)}")


if __name__ == "__main__":
    main()

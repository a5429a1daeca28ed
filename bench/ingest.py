"""C-STORE ingest benchmark: the demo's 300-slice 512×512 CT sent by dcmtk's storescu.

Over 1, 4 and 8 parallel associations, on SQLite and on PostgreSQL, with an empty index and
with 1,000,000 instances already indexed; cloudfilm's event-driven store path and (for
comparison) its pynetdicom path; and the same load against Debian's Orthanc in the same run.
Prints a table and saves JSON. ``--profile`` also records py-spy profiles of the server during
the one-association SQLite runs (bench/results/ingest-profile-*.txt, collapsed stacks).

    .venv/bin/python bench/ingest.py [--quick] [--fill N] [--profile]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    RESULTS,
    WORK,
    Server,
    ct_files,
    orthanc_available,
    pg_database,
    save,
    start_cloudfilm,
    start_orthanc,
    timed_parallel,
    tree_cpu_seconds,
)
from bench.fill import fill_index

ASSOCIATIONS = (1, 4, 8)
PYSPY = Path(sys.executable).with_name("py-spy")


REPEAT = 1
"""Measurements per figure (``--repeat``): the median is reported; this machine's disk and
neighbours move a single run by 15% or more."""


def repeated(run: Callable[[], dict]) -> dict:  # type: ignore[type-arg]
    """``run()`` REPEAT times, each on a fresh server and index; the median run."""
    runs = sorted((run() for _ in range(REPEAT)), key=lambda r: r["instances_per_s"])
    median = dict(runs[len(runs) // 2])
    median["repeats"] = [r["instances_per_s"] for r in runs]
    return median


def measure(
    start: Callable[[], Server], files: list[Path], associations: int, profile: str = ""
) -> dict:  # type: ignore[type-arg]
    server = start()
    spy = None
    try:
        timed_parallel(server, files[:5], 1)  # warm the process (imports, caches), then undo
        if profile and PYSPY.exists():
            out = RESULTS / f"ingest-profile-{profile}-{time.strftime('%Y%m%d-%H%M%S')}.txt"
            RESULTS.mkdir(parents=True, exist_ok=True)
            command = [str(PYSPY), "record", "--subprocesses", "--threads", "-r", "250"]
            command += ["-f", "raw", "-o", str(out), "-p", str(server.proc.pid)]
            spy = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(2)
        cpu = tree_cpu_seconds(server.proc.pid)
        seconds = timed_parallel(server, files[5:], associations)
        cpu = tree_cpu_seconds(server.proc.pid) - cpu
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(timeout=60)
        server.stop()
    sent = files[5:]
    size = sum(f.stat().st_size for f in sent)
    return {
        "associations": associations,
        "instances": len(sent),
        "seconds": round(seconds, 3),
        "instances_per_s": round(len(sent) / seconds, 1),
        "mb_per_s": round(size / seconds / 1e6, 1),
        "server_cpu_ms_per_instance": round(cpu / len(sent) * 1000, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the filled-index runs")
    ap.add_argument("--fill", type=int, default=1_000_000, help="instances indexed beforehand")
    ap.add_argument("--profile", action="store_true", help="py-spy the 1-association runs")
    ap.add_argument("--engines", default="sqlite,postgresql")
    ap.add_argument("--paths", default="event-loop,pynetdicom", help="cloudfilm receive paths")
    ap.add_argument("--no-orthanc", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="runs per figure (median)")
    args = ap.parse_args()
    global REPEAT
    REPEAT = max(1, args.repeat)
    files = ct_files()
    size = sum(f.stat().st_size for f in files)
    print(f"data: {len(files)} CT instances, {size / 1e6:.1f} MB (5 warm-up, the rest timed)")
    results: dict = {"instances": len(files), "bytes": size, "runs": []}  # type: ignore[type-arg]
    engines = args.engines.split(",")
    fills = [0] if args.quick else [0, args.fill]

    def record(r: dict, label: str) -> None:  # type: ignore[type-arg]
        results["runs"].append(r)
        spread = f"  runs {r['repeats']}" if len(r.get("repeats", [])) > 1 else ""
        print(
            f"{label:<46} {r['instances_per_s']:>8} inst/s {r['mb_per_s']:>7} MB/s "
            f"{r['server_cpu_ms_per_instance']:>6} ms CPU/inst{spread}",
            flush=True,
        )

    if args.no_orthanc:
        pass
    elif orthanc_available():
        for assocs in ASSOCIATIONS:

            def orthanc(assocs: int = assocs) -> dict:  # type: ignore[type-arg]
                d = _fresh(f"orthanc-x{assocs}")
                return measure(lambda: start_orthanc(d), files, assocs)

            r = repeated(orthanc)
            r.update({"server": "orthanc", "engine": "orthanc-sqlite", "indexed_before": 0})
            record(r, f"orthanc-x{assocs}")
    else:
        print("Orthanc not installed (apt-get install orthanc): no comparison")

    for engine in engines:
        for fill in fills:
            with _template(engine, fill) as template:
                paths = args.paths.split(",") if fill == 0 else ["event-loop"]
                for path in paths:
                    for assocs in ASSOCIATIONS:
                        label = f"cloudfilm-{path}-{engine}-fill{fill}-x{assocs}"
                        if args.profile and assocs == 1 and fill == 0:
                            # an extra run: py-spy pauses the server to sample it, so the
                            # profiled rate is not the measured one
                            p = _run_cloudfilm(engine, template, label, path, files, 1, label)
                            p.update({"server": "cloudfilm-profiled", "store_path": path})
                            results["runs"].append(p)
                        r = repeated(
                            functools.partial(
                                _run_cloudfilm, engine, template, label, path, files, assocs, ""
                            )
                        )
                        r.update(
                            {
                                "server": "cloudfilm",
                                "store_path": path,
                                "engine": engine,
                                "indexed_before": fill,
                            }
                        )
                        record(r, label)
    _summarise(results, engines, fills)
    print(f"saved {save('ingest', results)}")


def _fresh(name: str) -> Path:
    d = WORK / "ingest" / name
    shutil.rmtree(d, ignore_errors=True)
    return d


class _template:
    """An index filled once per engine and fill size, copied for every run."""

    def __init__(self, engine: str, fill: int) -> None:
        self.engine, self.fill = engine, fill
        self.pg = None

    def __enter__(self) -> str | None:
        if self.engine == "sqlite":
            if not self.fill:
                return None
            d = _fresh(f"template-{self.fill}")
            d.mkdir(parents=True)
            path = d / "index.sqlite3"
            t = time.perf_counter()
            fill_index(f"sqlite:///{path}", studies=self.fill // 100, instances_per_study=100)
            print(f"filled SQLite with {self.fill} instances in {time.perf_counter() - t:.0f} s")
            return str(path)
        if not self.fill:
            return None
        self.pg = pg_database()
        url = self.pg.__enter__()
        t = time.perf_counter()
        fill_index(url, studies=self.fill // 100, instances_per_study=100)
        print(f"filled PostgreSQL with {self.fill} instances in {time.perf_counter() - t:.0f} s")
        return url.rsplit("/", 1)[1]

    def __exit__(self, *exc: object) -> None:
        if self.pg is not None:
            self.pg.__exit__(None, None, None)


def _run_cloudfilm(
    engine: str,
    template: str | None,
    label: str,
    path: str,
    files: list[Path],
    assocs: int,
    profile: str,
) -> dict:  # type: ignore[type-arg]
    d = _fresh(label)
    d.mkdir(parents=True)
    env = {"CLOUDFILM_DICOM_STORE_PATH": path}
    if engine == "sqlite":
        if template:
            shutil.copy(template, d / "index.sqlite3")
            # write the copy back now: left dirty in the page cache, its writeback would
            # stall the timed run's fsyncs (ext4 orders data before each journal commit)
            os.sync()
        url = f"sqlite:///{d / 'index.sqlite3'}"
        return measure(lambda: start_cloudfilm(d, url, env), files, assocs, profile)
    with pg_database(template) as url:
        return measure(lambda: start_cloudfilm(d, url, env), files, assocs, profile)


def _summarise(results: dict, engines: list[str], fills: list[int]) -> None:  # type: ignore[type-arg]
    runs = results["runs"]

    def rate(**kw: object) -> float | None:
        for r in runs:
            if all(r.get(k) == v for k, v in kw.items()):
                return float(r["instances_per_s"])
        return None

    ratios: dict[str, float] = {}
    growth: dict[str, float] = {}
    for assocs in ASSOCIATIONS:
        o = rate(server="orthanc", associations=assocs)
        for engine in engines:
            for fill in fills:
                c = rate(
                    server="cloudfilm",
                    store_path="event-loop",
                    engine=engine,
                    associations=assocs,
                    indexed_before=fill,
                )
                if o and c:
                    key = f"{engine}-fill{fill}-x{assocs}"
                    ratios[key] = round(c / o, 2)
                    print(f"ratio cloudfilm/orthanc {key}: {ratios[key]}")
            if len(fills) > 1:
                empty = rate(engine=engine, associations=assocs, indexed_before=0,
                             store_path="event-loop")  # fmt: skip
                full = rate(engine=engine, associations=assocs, indexed_before=fills[1])
                if empty and full:
                    growth[f"{engine}-x{assocs}"] = round(full / empty, 2)
                    print(f"filled/empty {engine} x{assocs}: {growth[f'{engine}-x{assocs}']}")
    results["ratio_vs_orthanc"] = ratios
    results["growth_ratio"] = growth
    results["machine"] = {"cpus": os.cpu_count(), "load_before": os.getloadavg()}


if __name__ == "__main__":
    main()

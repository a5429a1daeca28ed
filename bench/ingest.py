"""C-STORE ingest benchmark: the demo's 300-slice 512×512 CT sent by dcmtk's storescu.

Over one association and over 4 parallel associations, on SQLite and on PostgreSQL, with an
empty index and with 100,000 instances already indexed; and the same load against Debian's
Orthanc when it is installed, in the same run. Prints a table and saves JSON.

    .venv/bin/python bench/ingest.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    WORK,
    ct_files,
    orthanc_available,
    pg_database,
    save,
    start_cloudfilm,
    start_orthanc,
    timed_parallel,
)
from bench.fill import fill_index


def measure(start, files: list[Path], associations: int) -> dict:  # type: ignore[no-untyped-def]
    server = start()
    try:
        seconds = timed_parallel(server, files, associations)
    finally:
        server.stop()
    size = sum(f.stat().st_size for f in files)
    return {
        "associations": associations,
        "instances": len(files),
        "seconds": round(seconds, 3),
        "instances_per_s": round(len(files) / seconds, 1),
        "mb_per_s": round(size / seconds / 1e6, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the 100,000-instance runs")
    ap.add_argument("--fill", type=int, default=100_000, help="instances indexed beforehand")
    args = ap.parse_args()
    files = ct_files()
    size = sum(f.stat().st_size for f in files)
    print(f"data: {len(files)} CT instances, {size / 1e6:.1f} MB")
    results: dict = {"instances": len(files), "bytes": size, "runs": []}  # type: ignore[type-arg]

    def run_dir(name: str) -> Path:
        d = WORK / "ingest" / name
        shutil.rmtree(d, ignore_errors=True)
        return d

    fills = [0] if args.quick else [0, args.fill]
    for engine in ("sqlite", "postgresql"):
        for fill in fills:
            for assocs in (1, 4):
                label = f"cloudfilm-{engine}-fill{fill}-x{assocs}"
                d = run_dir(label)
                if engine == "sqlite":
                    url = f"sqlite:///{d / 'index.sqlite3'}"
                    d.mkdir(parents=True)
                    if fill:
                        fill_index(url, studies=fill // 100, instances_per_study=100)
                    r = measure(lambda d=d, url=url: start_cloudfilm(d, url), files, assocs)
                else:
                    with pg_database() as url:
                        if fill:
                            fill_index(url, studies=fill // 100, instances_per_study=100)
                        r = measure(lambda d=d, url=url: start_cloudfilm(d, url), files, assocs)
                r.update({"server": "cloudfilm", "engine": engine, "indexed_before": fill})
                results["runs"].append(r)
                print(f"{label:<40} {r['instances_per_s']:>8} inst/s {r['mb_per_s']:>7} MB/s")
    if orthanc_available():
        for assocs in (1, 4):
            d = run_dir(f"orthanc-x{assocs}")
            r = measure(lambda d=d: start_orthanc(d), files, assocs)
            r.update({"server": "orthanc", "engine": "orthanc-sqlite", "indexed_before": 0})
            results["runs"].append(r)
            print(
                f"{'orthanc-x' + str(assocs):<40} {r['instances_per_s']:>8} inst/s "
                f"{r['mb_per_s']:>7} MB/s"
            )
        ratios = {}
        for assocs in (1, 4):
            o = next(
                r
                for r in results["runs"]
                if r["server"] == "orthanc" and r["associations"] == assocs
            )
            for engine in ("sqlite", "postgresql"):
                c = next(
                    r
                    for r in results["runs"]
                    if r["server"] == "cloudfilm"
                    and r["engine"] == engine
                    and r["associations"] == assocs
                    and r["indexed_before"] == 0
                )
                key = f"{engine}-x{assocs}"
                ratios[key] = round(c["instances_per_s"] / o["instances_per_s"], 2)
                print(f"ratio cloudfilm/orthanc {key}: {ratios[key]}")
        results["ratio_vs_orthanc"] = ratios
    else:
        print("Orthanc not installed (apt-get install orthanc): no comparison")
    if not args.quick:
        growth = {}
        for engine in ("sqlite", "postgresql"):
            for assocs in (1, 4):
                runs = {
                    r["indexed_before"]: r["instances_per_s"]
                    for r in results["runs"]
                    if r["server"] == "cloudfilm"
                    and r["engine"] == engine
                    and r["associations"] == assocs
                }
                growth[f"{engine}-x{assocs}"] = round(runs[args.fill] / runs[0], 2)
                print(
                    f"rate with {args.fill} indexed / empty, {engine} x{assocs}: "
                    f"{growth[f'{engine}-x{assocs}']}"
                )
        results["growth_ratio"] = growth
    results["pynetdicom_ceiling"] = pynetdicom_ceiling(files)
    print(
        f"pynetdicom alone (a C-STORE handler that only takes the bytes): "
        f"{results['pynetdicom_ceiling']} inst/s"
    )
    print(f"saved {save('ingest', results)}")


def pynetdicom_ceiling(files: list[Path]) -> dict[str, float]:
    """What one pynetdicom process accepts when the handler does nothing: the upper bound for
    any archive on pynetdicom, measured in the same run for context."""
    import threading

    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

    from bench.common import Server, free_port
    from cloudfilm.dimse.server import NoDelayAssociationServer

    ae = AE("NULL")
    ae.maximum_pdu_size = 0
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    port = free_port()
    server = ae.make_server(
        ("127.0.0.1", port),
        evt_handlers=[(evt.EVT_C_STORE, lambda e: (e.encoded_dataset(), 0)[1])],
        server_class=NoDelayAssociationServer,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = Server("null", "NULL", port, 0, None, WORK)  # type: ignore[arg-type]
    out = {}
    for assocs in (1, 4):
        out[f"x{assocs}"] = round(len(files) / timed_parallel(target, files, assocs), 1)
    server.server_close()
    return out


if __name__ == "__main__":
    main()

"""Edge gateway benchmark: modality → gateway → cloud with the 300-slice 512×512 CT.

For each uplink (loopback, and a throttling proxy at 100 Mbit/s started here) and each wire
encoding (zstd, gzip, none): the time from the first C-STORE (dcmtk's storescu into the
gateway) to the last instance acknowledged by the cloud, bytes on the wire (counted by the
proxy and by the gateway), and the time until the film's SMS. The report is posted to the
cloud before the images (it waits for them), the film's stable time is 5 s, and the SMS goes
through the webhook back-end to a receiver here that stamps its arrival.

    .venv/bin/python bench/gateway.py [--slices 300] [--mbit 100] [--encodings zstd,none] [--noisy]

The demo CT is smooth (it compresses to ~7 % with zstd); ``--noisy`` sends a CT with noise in
the body, which compresses about as real CT does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import WORK, Server, _wait, ct_files, free_port, save, start_cloudfilm, storescu
from bench.film import REPORT
from bench.film import Gateway as SmsReceiver
from bench.netproxy import NetProxy


def _tokens(data: Path) -> str:
    from cloudfilm.access.tokens import create_token
    from cloudfilm.storage.database import Database

    db = Database(f"sqlite:///{(data / 'index.sqlite3').resolve()}")
    db.upgrade()
    try:
        return create_token(db, "gateway", "write", hospital=1)[1]
    finally:
        db.dispose()


def start_gateway(spool: Path, cloud_url: str, token: str, encoding: str) -> Server:
    spool.mkdir(parents=True, exist_ok=True)
    dicom, status = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
    env.update(
        {
            "CLOUDFILM_GATEWAY_CONFIG": str(spool / "none.toml"),
            "CLOUDFILM_GATEWAY_CLOUD_URL": cloud_url,
            "CLOUDFILM_GATEWAY_TOKEN": token,
            "CLOUDFILM_GATEWAY_SPOOL_DIR": str(spool),
            "CLOUDFILM_GATEWAY_DICOM_HOST": "127.0.0.1",
            "CLOUDFILM_GATEWAY_DICOM_PORT": str(dicom),
            "CLOUDFILM_GATEWAY_STATUS_PORT": str(status),
            "CLOUDFILM_GATEWAY_HL7_PORT": "0",
            "CLOUDFILM_GATEWAY_COMPRESSION": encoding,
        }
    )
    log = open(spool.parent / "gateway.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudfilm.cli", "gateway"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _wait(f"http://127.0.0.1:{status}/healthz", dicom, proc)
    return Server("gateway", "CLOUDFILM_GW", dicom, status, proc, spool)


def run(files: list[Path], accession: str, link: str, mbit: float, encoding: str) -> dict:  # type: ignore[type-arg]
    data = WORK / f"gateway-{link}-{encoding}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    sms = SmsReceiver()
    token = _tokens(data / "cloud")
    cloud = start_cloudfilm(
        data / "cloud",
        env={
            "CLOUDFILM_FILM_STABLE_SECONDS": "5",
            "CLOUDFILM_SMS_BACKEND": "webhook",
            "CLOUDFILM_SMS_WEBHOOK_URL": sms.url,
            "CLOUDFILM_SECRET_KEY": "bench-" * 8,
        },
    )
    proxy = NetProxy(
        "127.0.0.1", cloud.http_port, rate=mbit * 1e6 / 8 if link != "loopback" else None
    )
    gateway = start_gateway(data / "gw" / "spool", proxy.url, token, encoding)
    status_url = f"{gateway.http_url}/status.json"
    try:
        report = {**REPORT, "accession_number": accession}
        r = httpx.post(
            f"{cloud.http_url}/api/reports",
            json=report,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
        t0 = time.monotonic()
        storescu(gateway, files)
        t_stored = time.monotonic()
        while True:
            s = httpx.get(status_url, timeout=10).json()
            if s["sent_instances"] >= len(files) and s["waiting_instances"] == 0:
                break
            if time.monotonic() - t0 > 900:
                raise RuntimeError(f"not all in the cloud: {s}")
            time.sleep(0.05)
        t_cloud = time.monotonic()
        if not sms.event.wait(120):
            raise RuntimeError("no SMS within 120 s")
        t_sms = sms.arrivals[0][0]
        payload = sum(f.stat().st_size for f in files)
        return {
            "link": link if link == "loopback" else f"{mbit:g} Mbit/s proxy",
            "encoding": encoding,
            "instances": len(files),
            "payload_bytes": payload,
            "wire_bytes_gateway": s["wire_bytes"],
            "wire_bytes_proxy": proxy.upstream_bytes,
            "wire_ratio": round(s["wire_bytes"] / payload, 3),
            "modality_done_s": round(t_stored - t0, 2),
            "first_store_to_last_in_cloud_s": round(t_cloud - t0, 2),
            "last_store_to_last_in_cloud_s": round(t_cloud - t_stored, 2),
            "first_store_to_sms_s": round(t_sms - t0, 2),
            "film_stable_seconds": 5,
            "set_aside": s["set_aside_count"],
        }
    finally:
        gateway.stop()
        proxy.close()
        cloud.stop()
        sms.httpd.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--mbit", type=float, default=100)
    ap.add_argument("--encodings", default="zstd,gzip,none")
    ap.add_argument("--links", default="loopback,proxy")
    ap.add_argument(
        "--noisy",
        action="store_true",
        help="a CT with noise in it (compresses like real CT) instead of the smooth demo CT",
    )
    args = ap.parse_args()
    if args.noisy:
        from tests.gateway.studies import ct_series

        folder = WORK / f"noisy-{args.slices}-{args.size}"
        files = sorted(folder.glob("*.dcm")) if folder.exists() else []
        if len(files) != args.slices:
            shutil.rmtree(folder, ignore_errors=True)
            _study, files = ct_series(folder, args.slices, size=args.size, accession="NOISY1")
    else:
        files = ct_files(args.slices, args.size)
    import pydicom

    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    results = []
    for link in args.links.split(","):
        for encoding in args.encodings.split(","):
            r = run(files, str(first.AccessionNumber), link, args.mbit, encoding)
            print(r, flush=True)
            results.append(r)
    data = "noisy synthetic CT (tests/gateway/studies.py)" if args.noisy else "demo CT"
    path = save("gateway", {"runs": results, "data": data, "cpus": os.cpu_count()})
    print(f"saved {path}")


if __name__ == "__main__":
    main()

"""Cloud-film benchmark: from the last C-STORE of a 300-slice CT (with its report) to the SMS,
and the streamed zip download of that study (MB/s, server memory during it).

Target (issue 5): SMS < 10 s after the last C-STORE with a 5-second stable time. Two orders:
the report arrives before the images (it waits for them), and right after them. The SMS goes
through the real webhook back-end to a small HTTP server here, which stamps its arrival.
The zip is read by a verified patient session (cookie), as the patient's browser would.

    .venv/bin/python bench/film.py [--pg] [--stable 5]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import WORK, ct_files, pg_database, save, start_cloudfilm, storescu

REPORT = {
    "hospital": "基准医院",
    "exam_name": "胸部CT平扫",
    "modality": "CT",
    "findings": "双肺纹理清晰。",
    "impression": "未见异常。",
    "phone": "13900000000",
}


class Gateway:
    """The hospital SMS gateway: stamps each message with the time it arrived."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, str]]] = []
        self.event = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.arrivals.append((time.monotonic(), json.loads(body)))
                outer.event.set()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/sms"


def _token(server_dir: Path, database_url: str | None) -> str:
    from cloudfilm.access.tokens import create_token
    from cloudfilm.storage.database import Database

    db = Database(database_url or f"sqlite:///{(server_dir / 'index.sqlite3').resolve()}")
    db.upgrade()
    try:
        return create_token(db, "bench", "read,write", hospital=1)[1]
    finally:
        db.dispose()


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """The server and its worker processes: any of them may serve the zip."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return pids


def run(order: str, files: list[Path], accession: str, study_uid: str, stable: float,
        database_url: str | None) -> dict:  # type: ignore[type-arg]  # fmt: skip
    gateway = Gateway()
    data = WORK / f"film-{order}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    token = _token(data, database_url)
    server = start_cloudfilm(
        data, database_url,
        env={"CLOUDFILM_FILM_STABLE_SECONDS": str(stable), "CLOUDFILM_SMS_BACKEND": "webhook",
             "CLOUDFILM_SMS_WEBHOOK_URL": gateway.url, "CLOUDFILM_SECRET_KEY": "bench-" * 8},
    )  # fmt: skip
    hospital = httpx.Client(
        base_url=server.http_url, headers={"Authorization": f"Bearer {token}"}, timeout=120
    )
    try:
        report = {**REPORT, "accession_number": accession}
        if order == "report-first":
            assert hospital.post("/api/reports", json=report).status_code == 201
        t_start = time.monotonic()
        storescu(server, files)
        t_stored = time.monotonic()
        if order == "report-after":
            assert hospital.post("/api/reports", json=report).status_code == 201
        if not gateway.event.wait(60):
            raise RuntimeError("no SMS within 60 s")
        t_sms, message = gateway.arrivals[0]
        link = re.search(r"/f/([A-Za-z0-9_-]{43})", message["message"])
        assert link, message
        result = {
            "order": order,
            "instances": len(files),
            "store_seconds": round(t_stored - t_start, 2),
            "stable_seconds": stable,
            "sms_after_last_store_s": round(t_sms - t_stored, 2),
        }
        film = hospital.get("/api/films", params={"study_uid": study_uid}).json()
        result.update(download(server, link.group(1), film))
        return result
    finally:
        hospital.close()
        server.stop()
        gateway.httpd.shutdown()
        gateway.httpd.server_close()


def download(server, token: str, film: dict) -> dict:  # type: ignore[no-untyped-def,type-arg]
    patient = httpx.Client(base_url=server.http_url, timeout=300)
    r = patient.post("/api/verify", json={"token": token, "code": film["access_code"]})
    assert r.status_code == 200, r.text
    pids = _tree(server.proc.pid)
    baseline = {p: _rss_kb(p) for p in pids}
    peak = dict(baseline)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for p in pids:
                peak[p] = max(peak[p], _rss_kb(p))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    size = 0
    t0 = time.monotonic()
    first = None
    with patient.stream("GET", f"/api/films/{film['film_id']}/download.zip") as resp:
        assert resp.status_code == 200
        for chunk in resp.iter_bytes(1 << 20):
            if first is None:
                first = time.monotonic() - t0
            size += len(chunk)
    seconds = time.monotonic() - t0
    done.set()
    sampler.join()
    patient.close()
    return {
        "zip_mb": round(size / 1e6, 1),
        "zip_seconds": round(seconds, 2),
        "zip_mb_per_s": round(size / seconds / 1e6, 1),
        "zip_first_byte_s": round(first or 0.0, 3),
        "server_processes": len(pids),
        "server_rss_before_mb": round(sum(baseline.values()) / 1024, 1),
        # the process that served the zip is the one whose memory grew most
        "server_rss_growth_max_mb": round(max(peak[p] - baseline[p] for p in pids) / 1024, 1),
        "server_rss_peak_largest_process_mb": round(max(peak.values()) / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg", action="store_true", help="index on PostgreSQL instead of SQLite")
    ap.add_argument("--stable", type=float, default=5.0)
    args = ap.parse_args()
    from cloudfilm.demo import DemoManifest

    files = ct_files(300, 512)
    ct = DemoManifest.load(WORK / "demo-300-512").study("ct")
    results = []
    for order in ("report-first", "report-after"):
        if args.pg:
            with pg_database() as url:
                results.append(run(order, files, ct.accession_number, ct.study_uid,
                                   args.stable, url))  # fmt: skip
        else:
            results.append(run(order, files, ct.accession_number, ct.study_uid, args.stable, None))
        print(json.dumps(results[-1], ensure_ascii=False))
    out = {"engine": "postgresql" if args.pg else "sqlite", "runs": results}
    print(f"saved {save('film', out)}")


if __name__ == "__main__":
    main()

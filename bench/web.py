"""HTTP pieces of the DICOMweb benchmark: tokens, STOW bodies, parallel frame fetching (httpx
and curl), latency sampling, a static file server (nginx) over pre-extracted frames."""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import Server, _wait, free_port

BOUNDARY = "cloudfilm-bench-boundary-7d1c"
FRAMES_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
SINGLE_ACCEPT = "application/octet-stream"


def create_token(server: Server, database_url: str | None) -> str:
    """``cloudfilm token create --name bench --scope read,write`` against the server's index."""
    env = dict(os.environ)
    env.update(
        {
            "CLOUDFILM_DATA_DIR": str(server.data_dir),
            "CLOUDFILM_CONFIG": str(server.data_dir / "none.toml"),
        }
    )
    if database_url:
        env["CLOUDFILM_DATABASE_URL"] = database_url
    out = subprocess.run(
        [sys.executable, "-m", "cloudfilm.cli", "token", "create", "--name", "bench",
         "--scope", "read,write"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) used so far by process ``pid`` and its descendants (Linux): a
    cost per request that the load other programs put on the machine does not distort."""
    if pid is None or not Path("/proc").exists():
        return 0.0
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d)] = int(fields[1])
        ticks[int(d)] = int(fields[11]) + int(fields[12])
    total = 0
    for p in ticks:
        q = p
        while q and q != pid:
            q = parent.get(q, 0)
        if q == pid:
            total += ticks[p]
    return total / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


# -- STOW ----------------------------------------------------------------------------------
def multipart_chunks(blobs: list[bytes]) -> Iterator[bytes]:
    for data in blobs:
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        yield data
        yield b"\r\n"
    yield f"--{BOUNDARY}--\r\n".encode()


def stow(root: str, headers: dict[str, str], blobs: list[bytes]) -> tuple[float, httpx.Response]:
    """One STOW-RS request carrying ``blobs`` (streamed); seconds and the response."""
    h = dict(headers)
    h["Content-Type"] = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    h["Accept"] = "application/dicom+json"
    with httpx.Client(timeout=600) as client:
        start = time.perf_counter()
        r = client.post(f"{root}/studies", content=multipart_chunks(blobs), headers=h)
        elapsed = time.perf_counter() - start
    if r.status_code != 200:
        raise RuntimeError(f"STOW answered {r.status_code}: {r.text[:500]}")
    return elapsed, r


# -- frames --------------------------------------------------------------------------------
def first_part(body: bytes, content_type: str) -> bytes:
    """The body of the first part of a multipart/related response (or the body itself)."""
    if not content_type.lower().startswith("multipart/"):
        return body
    boundary = next(
        p.split("=", 1)[1].strip().strip('"')
        for p in content_type.split(";")
        if p.strip().lower().startswith("boundary=")
    )
    delim = b"--" + boundary.encode()
    start = body.index(delim) + len(delim)
    start = body.index(b"\r\n\r\n", start) + 4
    end = body.index(b"\r\n" + delim, start)
    return body[start:end]


def check_frame(url: str, headers: dict[str, str], accept: str, expected: bytes) -> None:
    r = httpx.get(url, headers={**headers, "Accept": accept}, timeout=60)
    r.raise_for_status()
    got = first_part(r.content, r.headers.get("content-type", ""))
    if got != expected:
        raise RuntimeError(
            f"{url}: frame bytes differ (got {len(got)} bytes, sha "
            f"{hashlib.sha256(got).hexdigest()[:12]}, want {len(expected)})"
        )


def fetch_httpx(urls: list[str], headers: dict[str, str], accept: str, workers: int = 6) -> float:
    """Seconds to GET every URL with ``workers`` threads, one keep-alive connection each."""
    chunks = [urls[i::workers] for i in range(workers)]
    errors: list[BaseException] = []
    # identity: frames are not worth compressing, and Orthanc would gzip them for httpx's
    # default Accept-Encoding (about 10 frames/s); curl asks for no encoding either.
    h = {**headers, "Accept": accept, "Accept-Encoding": "identity"}
    clients = [httpx.Client(headers=h, timeout=60) for _ in chunks]
    barrier = threading.Barrier(workers + 1)

    def run(client: httpx.Client, chunk: list[str]) -> None:
        barrier.wait()
        try:
            for u in chunk:
                r = client.get(u)
                if r.status_code != 200:
                    raise RuntimeError(f"{u}: {r.status_code} {r.text[:200]}")
                r.read()
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(c, chunk))
        for c, chunk in zip(clients, chunks, strict=True)
    ]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for c in clients:
        c.close()
    if errors:
        raise errors[0]
    return elapsed


def fetch_curl(
    urls: list[str], headers: dict[str, str], accept: str, workdir: Path, workers: int = 6
) -> float:
    """Seconds for curl (C, libcurl multi) to GET every URL, at most ``workers`` at a time."""
    cfg = workdir / "curl.cfg"

    def q(v: str) -> str:
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"header = {q(f'{k}: {v}')}" for k, v in {**headers, "Accept": accept}.items()]
    lines += ["fail", "silent", "show-error"]
    for u in urls:
        lines += [f"url = {q(u)}", 'output = "/dev/null"']
    cfg.write_text("\n".join(lines) + "\n")
    cmd = ["curl", "--parallel", "--parallel-immediate", "--parallel-max", str(workers),
           "-K", str(cfg)]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"curl failed ({proc.returncode}): {proc.stderr[-500:]}")
    return elapsed


def latencies(
    client: httpx.Client, url: str, n: int, budget_s: float = 15.0, **kw: object
) -> list[float]:
    """Milliseconds for ``n`` sequential GETs of ``url`` (after one warm-up); a slow answer
    (Orthanc's unlimited searches) stops after ``budget_s`` seconds and at least 20 samples."""
    client.get(url, **kw).raise_for_status()  # type: ignore[arg-type]
    out: list[float] = []
    deadline = time.perf_counter() + budget_s
    for _ in range(n):
        if len(out) >= 20 and time.perf_counter() > deadline:
            break
        start = time.perf_counter()
        r = client.get(url, **kw)  # type: ignore[arg-type]
        r.raise_for_status()
        _ = r.content
        out.append((time.perf_counter() - start) * 1000)
    return out


@dataclass
class Summary:
    median: float
    p50: float
    p99: float


def summarise(ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(ms, 50), 2),
        "p99_ms": round(pct(ms, 99), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "n": len(ms),
    }


# -- static file server --------------------------------------------------------------------
NGINX_CONF = """
worker_processes 2;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000;
    keepalive_timeout 60;
    default_type application/octet-stream;
    types {{ }}
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
        location / {{ }}
    }}
}}
"""


@dataclass
class Static:
    url: str
    proc: subprocess.Popen[bytes]
    kind: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_static(workdir: Path, files: dict[str, bytes]) -> Static:
    """nginx (or, without it, Python's http.server, said in ``kind``) serving ``files``
    (relative path -> bytes) from ``workdir/www`` on a loopback port."""
    shutil.rmtree(workdir, ignore_errors=True)
    www = workdir / "www"
    for rel, data in files.items():
        p = www / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    log = open(workdir / "server.log", "ab")  # noqa: SIM115
    if nginx:
        conf = workdir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=workdir, port=port))
        proc = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(workdir)], stdout=log, stderr=subprocess.STDOUT
        )
        kind = "nginx"
    else:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
             "--directory", str(www)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        kind = "python-http.server"
    url = f"http://127.0.0.1:{port}"
    _wait(url + "/", port, proc)  # type: ignore[arg-type]
    return Static(url, proc, kind)

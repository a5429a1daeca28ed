"""Out: the spool's items to the cloud, by STOW-RS (instances) and the reports API.

Several instances go in one multipart/related request, compressed on the wire (zstd or gzip,
``Content-Encoding``; the archive decodes it and stores the original bytes) and paced to the
bandwidth schedule. An item leaves the spool only when the cloud's answer names it as stored
*with the SHA-256 the gateway holds* (the archive echoes the stored blob's hash in each
ReferencedSOPSequence item, see docs/dicomweb.md). What the cloud will never accept (bad data,
a UID of another hospital, other bytes already stored under the UID) is set aside and shown;
what may pass later (network, 5xx, 429, out of resources) is retried with exponential back-off
and jitter, without end for the network and a bounded number of times for one item. A
refused token (401/403) stops all uploads with a message until it is replaced.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import zstandard

from cloudfilm.gateway.metrics import GatewayMetrics
from cloudfilm.gateway.settings import GatewaySettings
from cloudfilm.gateway.spool import REPORT, Item, Spool
from cloudfilm.gateway.throttle import Schedule, TokenBucket

log = logging.getLogger(__name__)

SHA256_TAG = "00091001"
"""The archive's private element (creator "CLOUDFILM 1.0", (0009,1001)) carrying the stored
blob's SHA-256 in each ReferencedSOPSequence item of a STOW-RS response."""
WARN_KEPT_FIRST = 0xB006
TRANSIENT_FAILURES = {0x0110, 0xA700, 0xA701, 0xA702}
"""Processing failure and out of resources: the cloud may accept the same bytes later."""
CHUNK = 256 * 1024


class TokenRefused(Exception):
    pass


class Transient(Exception):
    pass


class _Encoder:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind == "zstd":
            self._z = zstandard.ZstdCompressor(level=3).compressobj()
        elif kind == "gzip":
            self._g = zlib.compressobj(6, zlib.DEFLATED, 31)

    def feed(self, data: bytes) -> bytes:
        if self.kind == "zstd":
            return self._z.compress(data)
        if self.kind == "gzip":
            return self._g.compress(data)
        return data

    def finish(self) -> bytes:
        if self.kind == "zstd":
            return self._z.flush()
        if self.kind == "gzip":
            return self._g.flush()
        return b""


def tls_context(settings: GatewaySettings) -> ssl.SSLContext | bool:
    if settings.ca_bundle is None and settings.client_cert is None:
        return True
    ctx = ssl.create_default_context(cafile=str(settings.ca_bundle) if settings.ca_bundle else None)
    if settings.client_cert is not None:
        ctx.load_cert_chain(
            str(settings.client_cert), str(settings.client_key) if settings.client_key else None
        )
    return ctx


class Uploader:
    def __init__(
        self, settings: GatewaySettings, spool: Spool, metrics: GatewayMetrics | None = None
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self.schedule = Schedule(settings.bandwidth, settings.timezone)
        self.bucket = TokenBucket(self.schedule)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gateway-upload", daemon=True)
        self.client = httpx.Client(
            verify=tls_context(settings), timeout=settings.request_timeout_seconds
        )
        self.state = "idle"
        self.message = ""
        """Why uploads are not moving (shown on the status page), '' when they are."""
        self.delay = 0.0
        self.next_try = 0.0
        self.single = False
        """Send one instance per request until one succeeds (after a request was refused
        as a whole, to find the item that caused it)."""
        self.rate = _Rate()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.spool.wake.set()
        self.thread.join(timeout=30)
        self.client.close()

    # -- the loop -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                worked = self.step()
            except Exception:  # never let the uploader die: it is the gateway's reason to be
                log.exception("upload step failed")
                self._backoff("internal error (see the log)")
                worked = False
            if not worked:
                wait = self.next_try - time.monotonic() if self.next_try else 1.0
                # new items wake the loop; held-back work is looked at again within a second
                self.spool.wake.wait(max(0.05, min(wait, 1.0)))
                self.spool.wake.clear()

    def step(self) -> bool:
        """One request if there is work and nothing holds it back; True when one was sent."""
        now = time.monotonic()
        if self.next_try and now < self.next_try:
            return False
        if self.schedule.rate() == 0:
            self.state, self.message = "paused", "uploads paused by the bandwidth schedule"
            self.next_try = now + 5
            return False
        s = self.settings
        batch = self.spool.next_batch(1 if self.single else s.batch_instances, s.batch_bytes)
        batch = _one_per_sop(batch)
        if not batch:
            if self.state in ("uploading", "retrying", "paused"):
                self.state, self.message = "idle", ""
            self.next_try = 0.0
            return False
        self.state = "uploading"
        try:
            if batch[0].kind == REPORT:
                self._send_report(batch[0])
            else:
                self._send_instances(batch)
        except TokenRefused as exc:
            self.state, self.message = "token_refused", str(exc)
            log.error("%s", exc)
            self._count_failure("token")
            self.next_try = time.monotonic() + 60
            return False
        except (Transient, httpx.HTTPError, OSError) as exc:
            self._count_failure("network" if isinstance(exc, httpx.HTTPError) else "cloud")
            self._backoff(str(exc) or type(exc).__name__)
            return False
        self.delay = 0.0
        self.next_try = 0.0
        self.message = ""
        return True

    def _backoff(self, why: str) -> None:
        s = self.settings
        self.delay = min(s.retry_max_seconds, max(s.retry_initial_seconds, self.delay * 2))
        wait = self.delay * random.uniform(0.5, 1.0)  # full jitter's gentler sibling
        self.next_try = time.monotonic() + wait
        self.state = "retrying"
        self.message = f"{why}; next try in {wait:.0f} s"
        log.warning("upload failed: %s; retrying in %.1f s", why, wait)

    def _count_failure(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.failures_total.labels(reason).inc()

    def _headers(self) -> dict[str, str]:
        token = self.settings.token.get_secret_value() if self.settings.token else ""
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _check_auth(self, response: httpx.Response) -> None:
        if response.status_code in (401, 403):
            raise TokenRefused(
                f"the cloud refused the gateway's token ({response.status_code}: "
                f"{_detail(response)}); uploads stopped. Create a new token with scope write "
                "for this hospital (cloudfilm token create --scope write --hospital CODE), "
                "set CLOUDFILM_GATEWAY_TOKEN and restart the gateway"
            )

    # -- instances ------------------------------------------------------------------------
    def _send_instances(self, batch: list[Item]) -> None:
        boundary = secrets.token_hex(16)
        encoding = self.settings.compression
        sent = [0]

        def body() -> Iterator[bytes]:
            enc = _Encoder(encoding)
            for item in batch:
                head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                yield from self._paced(enc.feed(head), sent)
                for chunk in self.spool.open_item(item):
                    yield from self._paced(enc.feed(chunk), sent)
                yield from self._paced(enc.feed(b"\r\n"), sent)
            yield from self._paced(enc.feed(f"--{boundary}--\r\n".encode()) + enc.finish(), sent)

        headers = self._headers() | {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        if encoding != "none":
            headers["Content-Encoding"] = encoding
        started = time.monotonic()
        response = self.client.post(self.settings.stow_url, content=body(), headers=headers)
        if self.metrics is not None:
            self.metrics.request_seconds.observe(time.monotonic() - started)
            self.metrics.wire_bytes.inc(sent[0])
        self.rate.add(sent[0])
        self._check_auth(response)
        status = response.status_code
        if status in (200, 202, 409):
            self._settle(batch, _stow_answer(response), sent[0])
            return
        if status in (400, 413, 415, 422):
            if len(batch) > 1:
                self.single = True  # find the one the cloud refuses
                raise Transient(f"the cloud refused a request of {len(batch)} ({status})")
            self._aside(batch[0], f"the cloud refused it ({status}: {_detail(response)})")
            return
        raise Transient(f"the cloud answered {status}: {_detail(response)}")

    def _paced(self, data: bytes, sent: list[int]) -> Iterator[bytes]:
        for i in range(0, len(data), CHUNK):
            piece = data[i : i + CHUNK]
            self.bucket.spend(len(piece), self.stop_event)
            sent[0] += len(piece)
            yield piece

    def _settle(self, batch: list[Item], answer: dict[str, dict[str, Any]], wire: int) -> None:
        done: list[Item] = []
        later = False
        for item in batch:
            got = answer.get(item.sop_uid)
            if got is None:
                later = True
                self._transient(item, "the cloud's answer does not mention it")
            elif "failure" in got:
                code = got["failure"]
                if code in TRANSIENT_FAILURES:
                    later = True
                    self._transient(item, f"the cloud could not store it yet (0x{code:04X})")
                else:
                    self._aside(item, f"the cloud refused it: {_failure_text(code)}")
            elif got.get("warning") == WARN_KEPT_FIRST:
                self._aside(
                    item,
                    "the cloud already holds this SOP Instance UID with other bytes and kept "
                    "its first copy",
                )
            elif not got.get("sha256"):
                self._aside(item, "the cloud did not confirm the SHA-256 it stored")
            elif got["sha256"] != item.sha256:
                self._aside(
                    item, f"the cloud holds SHA-256 {got['sha256']}, the spool {item.sha256}"
                )
            else:
                done.append(item)
        if done:
            self.single = False
            self.spool.done(done, wire_bytes=wire)
            if self.metrics is not None:
                self.metrics.uploaded_total.labels("instance").inc(len(done))
                self.metrics.payload_bytes.inc(sum(i.size for i in done))
        elif wire:
            self.spool.count("wire_bytes", wire)
        if later:
            raise Transient("the cloud could not store every instance of the request yet")

    def _transient(self, item: Item, why: str) -> None:
        attempts = self.spool.failed(item, why)
        if attempts >= self.settings.transient_attempts:
            self._aside(item, f"{why}; gave up after {attempts} tries")

    def _aside(self, item: Item, why: str) -> None:
        log.error("set aside %s: %s", item.label, why)
        self.spool.set_aside(item, why)
        if self.metrics is not None:
            self.metrics.set_aside_total.inc()

    # -- reports --------------------------------------------------------------------------
    def _send_report(self, item: Item) -> None:
        fields = {k: str(v) for k, v in item.fields.items() if v not in (None, "")}
        url = self.settings.reports_url
        if item.blob_key:
            pdf = self.spool.read_item(item)
            self.bucket.spend(len(pdf), self.stop_event)
            response = self.client.post(
                url,
                data=fields,
                files={"pdf": ("report.pdf", pdf, "application/pdf")},
                headers=self._headers(),
            )
            wire = len(pdf)
        else:
            body = json.dumps(fields, ensure_ascii=False).encode()
            response = self.client.post(
                url,
                content=body,
                headers=self._headers() | {"Content-Type": "application/json"},
            )
            wire = len(body)
        self.rate.add(wire)
        self._check_auth(response)
        if response.status_code in (200, 201):
            self.spool.done([item], wire_bytes=wire)
            if self.metrics is not None:
                self.metrics.uploaded_total.labels("report").inc()
                self.metrics.wire_bytes.inc(wire)
            return
        if response.status_code in (400, 413, 415, 422):
            why = f"{response.status_code}: {_detail(response)}"
            self._aside(item, f"the cloud refused the report ({why})")
            return
        raise Transient(f"the cloud answered {response.status_code} to a report")

    def status(self) -> dict[str, Any]:
        return {
            "uploading_state": self.state,
            "message": self.message,
            "bytes_per_second": round(self.rate.per_second(), 1),
            "bandwidth_now": self.schedule.describe(self.schedule.rate()),
        }


class _Rate:
    """Wire bytes per second over the last 10 seconds."""

    WINDOW = 10.0

    def __init__(self) -> None:
        self.events: list[tuple[float, int]] = []
        self.lock = threading.Lock()

    def add(self, size: int) -> None:
        now = time.monotonic()
        with self.lock:
            self.events.append((now, size))
            self.events = [(t, n) for t, n in self.events if now - t <= self.WINDOW]

    def per_second(self) -> float:
        now = time.monotonic()
        with self.lock:
            total = sum(n for t, n in self.events if now - t <= self.WINDOW)
        return total / self.WINDOW


def _one_per_sop(batch: list[Item]) -> list[Item]:
    """A request never carries two copies of one SOP Instance UID (the second would be
    answered as the first's duplicate)."""
    seen: set[str] = set()
    out = []
    for item in batch:
        if item.sop_uid in seen:
            break
        seen.add(item.sop_uid)
        out.append(item)
    return out


def _stow_answer(response: httpx.Response) -> dict[str, dict[str, Any]]:
    """SOP Instance UID -> {"sha256", "warning"} or {"failure"} from a STOW-RS response."""
    try:
        body = response.json()
    except ValueError as exc:
        raise Transient("the cloud's STOW-RS answer is not JSON") from exc
    out: dict[str, dict[str, Any]] = {}
    for item in _values(body, "00081199"):
        sop = _first(item, "00081155")
        if sop:
            out[sop] = {"sha256": _first(item, SHA256_TAG), "warning": _first(item, "00081196")}
    for item in _values(body, "00081198"):
        sop = _first(item, "00081155")
        if sop:
            out[sop] = {"failure": int(_first(item, "00081197") or 0x0110)}
    return out


def _values(body: Any, tag: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    value = body.get(tag, {}).get("Value", [])
    return [v for v in value if isinstance(v, dict)]


def _first(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def _failure_text(code: int) -> str:
    texts = {
        0x0124: "not authorised (a UID another hospital holds, or the token may not write)",
        0x0122: "SOP class not supported",
        0xA900: "conflict with what the cloud holds",
        0xA901: "belongs to another study than the request's",
    }
    if code in texts:
        return f"{texts[code]} (0x{code:04X})"
    if 0xC000 <= code <= 0xCFFF:
        return f"cannot understand the instance (0x{code:04X})"
    return f"failure 0x{code:04X}"


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict):
            return str(body.get("detail") or body.get("title") or "")[:300]
    except ValueError:
        pass
    return response.reason_phrase

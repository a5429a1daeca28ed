"""The gateway's Prometheus metrics (``/metrics`` on its status port).

One process, so a registry of its own: counters for what happens (instances received by
status, uploads, wire bytes, retries), and gauges read from the spool at scrape time (queue
depth, oldest waiting, set-aside items), so the numbers survive a restart exactly as the spool
does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

STATUS_NAMES = {0x0000: "success", 0xA700: "out_of_resources", 0x0124: "not_authorized"}


class _SpoolCollector(Collector):
    def __init__(self, summary: Callable[[], dict[str, Any]]) -> None:
        self.summary = summary

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.summary()
        waiting = GaugeMetricFamily(
            "cloudfilm_gateway_queue_items", "Items waiting for the cloud", labels=["kind"]
        )
        waiting.add_metric(["instance"], s["waiting_instances"])
        waiting.add_metric(["report"], s["waiting_reports"])
        yield waiting
        yield GaugeMetricFamily(
            "cloudfilm_gateway_queue_bytes", "Bytes waiting for the cloud", s["waiting_bytes"]
        )
        oldest = s["oldest_waiting_at"]
        yield GaugeMetricFamily(
            "cloudfilm_gateway_oldest_waiting_seconds",
            "Age of the oldest item waiting (0 when none)",
            max(0.0, time.time() - oldest) if oldest else 0.0,
        )
        yield GaugeMetricFamily(
            "cloudfilm_gateway_set_aside_items",
            "Items the cloud refused for good, kept for an operator",
            s["set_aside_count"],
        )
        yield GaugeMetricFamily(
            "cloudfilm_gateway_spool_limit_bytes",
            "Spool size beyond which C-STORE is refused",
            s["spool_limit_bytes"],
        )
        last = s["last_success_at"]
        yield GaugeMetricFamily(
            "cloudfilm_gateway_last_success_timestamp_seconds",
            "When the cloud last acknowledged an upload (Unix time, 0: never)",
            last or 0.0,
        )
        up = s.get("uploading_state", "")
        state = GaugeMetricFamily(
            "cloudfilm_gateway_upload_state", "1 for the uploader's current state", labels=["state"]
        )
        for name in ("idle", "uploading", "retrying", "paused", "token_refused"):
            state.add_metric([name], 1.0 if up == name else 0.0)
        yield state


class GatewayMetrics:
    def __init__(self, summary: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.received_total = Counter(
            "cloudfilm_gateway_instances_received",
            "C-STORE requests answered, by status",
            ["status"],
            registry=r,
        )
        self.received_bytes = Counter(
            "cloudfilm_gateway_received_bytes", "Bytes of instances spooled", registry=r
        )
        self.uploaded_total = Counter(
            "cloudfilm_gateway_uploaded_items",
            "Items the cloud acknowledged",
            ["kind"],
            registry=r,
        )
        self.wire_bytes = Counter(
            "cloudfilm_gateway_wire_bytes",
            "Request body bytes sent to the cloud (after compression)",
            registry=r,
        )
        self.payload_bytes = Counter(
            "cloudfilm_gateway_payload_bytes",
            "Bytes of instances and reports the cloud acknowledged (before compression)",
            registry=r,
        )
        self.failures_total = Counter(
            "cloudfilm_gateway_upload_failures",
            "Upload attempts that failed, by why",
            ["reason"],
            registry=r,
        )
        self.set_aside_total = Counter(
            "cloudfilm_gateway_set_aside", "Items set aside since start", registry=r
        )
        self.request_seconds = Histogram(
            "cloudfilm_gateway_request_seconds",
            "Duration of one upload request",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        r.register(_SpoolCollector(summary))

    def received(self, status: int, size: int) -> None:
        name = STATUS_NAMES.get(status, f"0x{status:04X}")
        self.received_total.labels(name).inc()
        if status == 0:
            self.received_bytes.inc(size)

"""The archive's counters and histograms, and the calls the doors make to move them.

Made on first use, not at import: prometheus-client fixes where a metric keeps its value (in
memory, or in the shared directory of ``serve``'s processes, see multiproc.py) when the metric
is created, and ``serve`` must point it at the directory first, after the command line (and so
the doors' modules) has been imported. Under ``serve`` each door counts in whichever process it
runs and a scrape sees the sum. Label values come from short fixed sets (doors, outcomes, reject
reasons, route templates): never a raw path, an AE title or a UID, each a new series.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec

from cloudfilm.metrics.multiproc import ENV

log = logging.getLogger(__name__)
P = ParamSpec("P")

DOORS = frozenset({"dimse", "stow", "import"})
"""Where an instance came in (the prefix of ingest's ``source``); recovery re-indexing of
blobs already held is not receiving, and is not counted."""


class Instruments:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram, values

        self.directory = _multiproc_dir(values)
        """The directory the values are kept in; None: in this process's memory."""
        self.instances = Counter(
            "cloudfilm_instances_received_total",
            "Instances handed to ingest, by door and outcome (stored, replaced, duplicate: "
            "same bytes again, kept-first: other bytes for a stored SOP Instance UID, "
            "rejected); reason: why an instance was rejected (ingest.RejectReason), else empty.",
            ["door", "outcome", "reason"],
        )
        self.received_bytes = Counter(
            "cloudfilm_received_bytes_total",
            "Bytes of the instances handed to ingest (stored or not), by door.",
            ["door"],
        )
        self.associations = Counter(
            "cloudfilm_dimse_associations_total",
            "DICOM associations requested of the archive, by receive path (event-loop: "
            "store-only associations; pynetdicom: the others) and outcome (accepted, rejected).",
            ["path", "outcome"],
        )
        self.http_requests = Counter(
            "cloudfilm_http_requests_total",
            "HTTP requests answered, by method, route template and status class (2xx, 4xx...).",
            ["method", "route", "status"],
        )
        self.http_duration = Histogram(
            "cloudfilm_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route.",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.films_issued = Counter(
            "cloudfilm_films_issued_total", "Patient films issued (a study's first film)."
        )
        self.sms = Counter(
            "cloudfilm_sms_messages_total",
            "SMS handed to the configured back-end (film links, one-time codes), by outcome "
            "(sent; failed: the back-end raised, a film's link is tried again later).",
            ["outcome"],
        )
        self.audit_records = Counter(
            "cloudfilm_audit_records_total",
            "Audit records committed to the hash-chained trail, by outcome (allow, deny).",
            ["outcome"],
        )
        self.audit_lost = Counter(
            "cloudfilm_audit_records_lost_total",
            "Audit records whose batch the index refused (logged as an error): should stay 0.",
        )
        # keeping (issue 12): fixity and the second copy
        self.fixity_blobs = Counter(
            "cloudfilm_fixity_verified_blobs_total",
            "Blobs the fixity verifier re-read and hashed (background passes and "
            "cloudfilm verify).",
        )
        self.fixity_bytes = Counter(
            "cloudfilm_fixity_verified_bytes_total", "Bytes the fixity verifier re-read."
        )
        self.fixity_alarms = Counter(
            "cloudfilm_fixity_alarms_total",
            "Blobs found missing or changed, by outcome (repaired: from the replica; missing, "
            "changed: no replica; unrepaired: the replica could not help). Should stay 0.",
            ["outcome"],
        )
        self.replica_copies = Counter(
            "cloudfilm_replica_copies_total",
            "Copies to the second blob store, by outcome (copied: written and read back with "
            "the right SHA-256; failed: tried again after a back-off).",
            ["outcome"],
        )
        self.replica_lag = Histogram(
            "cloudfilm_replica_lag_seconds",
            "From a blob's index commit (queued) to its copy verified in the replica.",
            buckets=(0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0),
        )
        self.replica_reads = Counter(
            "cloudfilm_replica_fallback_reads_total",
            "Reads served from the replica because the primary store failed.",
        )


def _multiproc_dir(values: Any) -> Path | None:
    """A variable naming no directory is dropped (prometheus-client would fail creating the
    first metric), and values stay in memory."""
    configured = os.environ.get(ENV)
    if configured and Path(configured).is_dir():
        return Path(configured)
    if configured:
        del os.environ[ENV]
        values.ValueClass = values.get_value_class()
    return None


_made: Instruments | None = None
_lock = threading.Lock()


def get() -> Instruments:
    global _made
    if _made is None:
        with _lock:
            if _made is None:
                _made = Instruments()
    return _made


def created() -> bool:
    return _made is not None


def never_raises(count: Callable[P, None]) -> Callable[P, None]:
    """A count that fails (the shared directory removed under a running process) is logged,
    never passed on: no instance or request may fail because it could not be counted."""

    @functools.wraps(count)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            count(*args, **kwargs)
        except Exception:
            log.warning("metrics: could not count (%s)", count.__name__, exc_info=True)

    return guarded


def _door(source: str) -> str | None:
    door = source.partition(":")[0]
    return door if door in DOORS else None


@never_raises
def instance_received(source: str, outcome: str, size: int) -> None:
    """After ingest returned; ``source`` as given to ingest (``dimse:AE``, ``stow:…``)."""
    door = _door(source)
    if door is not None:
        made = get()
        made.instances.labels(door, outcome, "").inc()
        made.received_bytes.labels(door).inc(size)


@never_raises
def instance_rejected(source: str, reason: str, size: int) -> None:
    """``reason``: the RejectReason's code (``malformed``, ``too-large``, …)."""
    door = _door(source)
    if door is not None:
        made = get()
        made.instances.labels(door, "rejected", reason).inc()
        made.received_bytes.labels(door).inc(size)


@never_raises
def association(path: str, accepted: bool) -> None:
    get().associations.labels(path, "accepted" if accepted else "rejected").inc()


def event_loop_association(accepted: bool) -> None:
    """Told by the event-driven store path (dimse/store_association.py) per A-ASSOCIATE-RQ."""
    association("event-loop", accepted)


@never_raises
def film_issued() -> None:
    get().films_issued.inc()


@never_raises
def sms(sent: bool) -> None:
    get().sms.labels("sent" if sent else "failed").inc()


@never_raises
def audit_committed(outcomes: dict[str, int]) -> None:
    """``outcomes``: records of one committed batch, by outcome."""
    counter = get().audit_records
    for outcome, n in outcomes.items():
        counter.labels(outcome).inc(n)


@never_raises
def audit_lost(count: int) -> None:
    get().audit_lost.inc(count)


@never_raises
def fixity_verified(size: int) -> None:
    made = get()
    made.fixity_blobs.inc()
    made.fixity_bytes.inc(size)


@never_raises
def fixity_alarm(outcome: str) -> None:
    """``outcome``: ``missing``, ``changed``, ``repaired`` or ``unrepaired``."""
    get().fixity_alarms.labels(outcome).inc()


@never_raises
def replica_copy(ok: bool, lag_seconds: float | None = None) -> None:
    made = get()
    made.replica_copies.labels("copied" if ok else "failed").inc()
    if ok and lag_seconds is not None:
        made.replica_lag.observe(max(0.0, lag_seconds))


@never_raises
def replica_fallback_read() -> None:
    get().replica_reads.inc()

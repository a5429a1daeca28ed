"""Byte streams shaped like upper-layer PDUs, sent to a live server on fresh connections.

What is generated: valid and invalid PDU types, length fields that lie (short, long, 4 GiB),
A-ASSOCIATE-RQs cut anywhere or with bytes changed, RQs whose items lie about their lengths,
P-DATA before any association, plain garbage, and a valid RQ followed by any of these. After
each stream the client half-closes; the server must close the connection within a bound and
whatever it sent back must be whole PDUs of types a server may send.

Hypothesis runs derandomized with no example database, so CI sees the same examples every run.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from . import rawpeer as ul

CLOSE_BOUND = 5.0
"""Seconds the server may take to close after the client half-closed."""
MAX_EXAMPLES = 250
"""About 30 s against pynetdicom on this machine."""
SERVER_MAY_SEND = {ul.A_ASSOCIATE_AC, ul.A_ASSOCIATE_RJ, ul.P_DATA_TF, ul.A_RELEASE_RP, ul.A_ABORT}

VALID_RQ = ul.associate_rq(
    [
        (1, "1.2.840.10008.1.1", ["1.2.840.10008.1.2"]),
        (3, "1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]),
    ]
)


def _mutate(changes: list[tuple[int, int]]) -> bytes:
    out = bytearray(VALID_RQ)
    for at, value in changes:
        out[at] = value
    return bytes(out)


def _rq_with_items(items: list[tuple[int, bytes, int | None]], version: int) -> bytes:
    fixed = struct.pack(">HH", version, 0) + b"CLOUDFILM".ljust(16) + b"FUZZ".ljust(16) + bytes(32)
    return ul.pdu(ul.A_ASSOCIATE_RQ, fixed + b"".join(ul.item(k, b, n) for k, b, n in items))


def _p_data(context_id: int, header: int, data: bytes, length: int | None) -> bytes:
    n = len(data) + 2 if length is None else length
    return ul.pdu(ul.P_DATA_TF, struct.pack(">IBB", n, context_id, header) + data)


LENGTHS = st.one_of(
    st.none(), st.sampled_from([0, 1, 3, 4, 5, 0x7FFFFFFF, 0xFFFFFFFF]), st.integers(0, 2**32 - 1)
)
ONE = st.one_of(
    st.builds(
        ul.pdu,
        st.one_of(st.integers(1, 7), st.integers(0, 255)),
        st.binary(max_size=256),
        LENGTHS,
    ),
    st.integers(1, len(VALID_RQ) - 1).map(lambda n: VALID_RQ[:n]),
    st.lists(
        st.tuples(st.integers(0, len(VALID_RQ) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ).map(_mutate),
    st.builds(
        _rq_with_items,
        st.lists(
            st.tuples(
                st.sampled_from([0x10, 0x20, 0x21, 0x30, 0x40, 0x50, 0x51, 0x52, 0x55, 0x99]),
                st.binary(max_size=64),
                st.one_of(st.none(), st.integers(0, 0xFFFF)),
            ),
            max_size=6,
        ),
        st.sampled_from([0, 1, 2, 0xFFFF]),
    ),
    st.builds(
        _p_data,
        st.integers(0, 255),
        st.integers(0, 255),
        st.binary(max_size=128),
        st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    ),
    st.binary(min_size=1, max_size=512),
)
STREAMS = st.one_of(
    st.lists(ONE, min_size=1, max_size=3).map(b"".join),
    ONE.map(lambda tail: VALID_RQ + tail),
)


@dataclass
class FuzzStats:
    examples: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    slowest_close: float = 0.0
    seconds: float = 0.0


def probe(port: int, data: bytes) -> tuple[list[int], float]:
    """Send ``data`` on a fresh connection, half-close, wait for the server to close.
    Returns the types of the PDUs it answered with and how long the close took."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=CLOSE_BOUND)
    try:
        with contextlib.suppress(OSError):  # the server may close before reading it all
            sock.sendall(data)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        answer, elapsed = ul.wait_closed(sock, CLOSE_BOUND)
    finally:
        sock.close()
    kinds = [k for k, _ in ul.split_pdus(answer)]
    assert set(kinds) <= SERVER_MAY_SEND, f"server sent PDU types {kinds} to {data[:80]!r}"
    return kinds, elapsed


def run_fuzz(port: int) -> FuzzStats:
    stats = FuzzStats()
    start = time.monotonic()

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=timedelta(seconds=CLOSE_BOUND + 3),
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(STREAMS)
    @example(VALID_RQ)  # the server accepts, sees the half-close, closes
    @example(VALID_RQ + ul.RELEASE_RQ_PDU)
    def one(data: bytes) -> None:
        kinds, elapsed = probe(port, data)
        stats.examples += 1
        stats.answers[",".join(f"{k:#04x}" for k in kinds) or "closed"] += 1
        stats.slowest_close = max(stats.slowest_close, elapsed)

    one()
    stats.seconds = time.monotonic() - start
    return stats

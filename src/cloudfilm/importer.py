"""``cloudfilm import``: files, folders and zip archives through the one ingest function."""

from __future__ import annotations

import zipfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cloudfilm.archive import Archive
from cloudfilm.ingest import Rejected

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ImportSummary:
    counts: Counter[str] = field(default_factory=Counter)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    """(where, why) for every refused file."""
    bytes: int = 0

    @property
    def accepted(self) -> int:
        return self.counts["stored"] + self.counts["replaced"]


def iter_sources(paths: list[Path]) -> Iterator[tuple[str, bytes | Path]]:
    """Yield (label, path-or-bytes) for every file, descending into folders and zip archives."""
    for path in paths:
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                yield from _file(child)
        elif path.is_file():
            yield from _file(path)
        else:
            yield str(path), b""


def _file(path: Path) -> Iterator[tuple[str, bytes | Path]]:
    if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield f"{path}!{info.filename}", zf.read(info)
    else:
        yield str(path), path


def count_sources(paths: list[Path]) -> int:
    """How many items ``iter_sources`` will yield (zip members counted one by one)."""
    n = 0
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if f.suffix.lower() == ".zip" and f.is_file() and zipfile.is_zipfile(f):
                with zipfile.ZipFile(f) as zf:
                    n += sum(1 for info in zf.infolist() if not info.is_dir())
            else:
                n += 1
    return n


def _bounded_map(
    pool: Executor, fn: Callable[[T], R], items: Iterable[T], ahead: int
) -> Iterator[R]:
    """``pool.map`` that takes at most ``ahead`` items before their results are used.

    ``Executor.map`` submits the whole iterable at once: a zip's members would all be read
    into memory before the first is stored.
    """
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def import_paths(
    archive: Archive,
    paths: list[Path],
    *,
    hospital: int,
    workers: int = 4,
    progress=None,  # type: ignore[no-untyped-def]
) -> ImportSummary:
    """``hospital``: the owner of everything imported (``cloudfilm import --hospital``)."""
    summary = ImportSummary()

    def one(item: tuple[str, bytes | Path]) -> tuple[str, str, str, int]:
        label, src = item
        try:
            data = src.read_bytes() if isinstance(src, Path) else src
            if not data:
                return label, "rejected", "empty or missing file", 0
            result = archive.ingest(data, hospital=hospital, source=f"import:{label}")
            return label, result.outcome, "", len(data)
        except Rejected as exc:
            return label, "rejected", exc.message, 0
        except OSError as exc:
            return label, "rejected", f"cannot read: {exc}", 0

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for label, outcome, why, size in _bounded_map(pool, one, iter_sources(paths), 2 * workers):
            summary.counts[outcome] += 1
            summary.bytes += size
            if outcome == "rejected":
                summary.rejected.append((label, why))
            if progress is not None:
                progress()
    return summary

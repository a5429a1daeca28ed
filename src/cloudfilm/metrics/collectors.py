"""Figures computed when Prometheus scrapes: the index's totals and every process's vitals.

The index is the truth about what is held (studies, instances, bytes per hospital, films
waiting), so those are read from it at scrape time rather than counted: they are right after a
restart, a recovery or an import by another process. The standard ``process_*`` metrics are
per process; in multiprocess mode prometheus-client has no such collector, so each process of
``serve`` names itself in the shared directory and the answering process reads their /proc
figures, labelled by ``pid`` and ``role``.

Only ``instruments`` and ``multiproc`` are imported by the doors; this module may import the
index's models.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from sqlalchemy import func, select

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

log = logging.getLogger(__name__)


class IndexCollector(Collector):
    """Per hospital (label ``hospital``: its code, which never changes): studies, instances,
    stored bytes, and films waiting to be issued (a current report matched to a study with
    instances, no film yet: the issuer issues once the study has been quiet a while)."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def collect(self) -> Iterator[Metric]:
        try:
            codes, held, waiting = self._read()
        except Exception:  # a scrape must still answer the counters when the index is down
            log.exception("metrics: could not read the index's figures")
            return
        families = {
            "studies": GaugeMetricFamily(
                "cloudfilm_studies", "Studies in the index.", labels=["hospital"]
            ),
            "instances": GaugeMetricFamily(
                "cloudfilm_instances", "Instances in the index.", labels=["hospital"]
            ),
            "bytes": GaugeMetricFamily(
                "cloudfilm_stored_bytes",
                "Bytes of the instances held (as received).",
                labels=["hospital"],
            ),
            "waiting": GaugeMetricFamily(
                "cloudfilm_films_waiting",
                "Studies with a matched report and no film yet.",
                labels=["hospital"],
            ),
        }
        for pk, code in codes:
            studies, instances, size = held.get(pk, (0, 0, 0))
            families["studies"].add_metric([code], studies)
            families["instances"].add_metric([code], instances)
            families["bytes"].add_metric([code], size)
            families["waiting"].add_metric([code], waiting.get(pk, 0))
        yield from families.values()

    def _read(
        self,
    ) -> tuple[list[tuple[int, str]], dict[int, tuple[int, int, int]], dict[int, int]]:
        from cloudfilm.accounts.models import Hospital
        from cloudfilm.portal.models import Film, Report
        from cloudfilm.storage.models import Study

        with self.archive.db.read() as session:
            codes = [(pk, code) for pk, code in session.execute(select(Hospital.pk, Hospital.code))]
            held = {
                pk: (int(n), int(i or 0), int(b or 0))
                for pk, n, i, b in session.execute(
                    select(
                        Study.hospital_pk,
                        func.count(),
                        func.sum(Study.num_instances),
                        func.sum(Study.size_bytes),
                    ).group_by(Study.hospital_pk)
                )
            }
            ready = (
                select(Study.hospital_pk, Study.pk)
                .join(Report, Report.study_uid == Study.study_uid)
                .outerjoin(Film, Film.study_uid == Study.study_uid)
                .where(Report.current.is_(True), Film.pk.is_(None), Study.num_instances > 0)
                .distinct()
                .subquery()
            )
            waiting = {
                pk: int(n)
                for pk, n in session.execute(
                    select(ready.c.hospital_pk, func.count()).group_by(ready.c.hospital_pk)
                )
            }
        return codes, held, waiting


class ProcessesCollector(Collector):
    """``process_*`` of every live process of ``serve`` (named in ``<dir>/processes``)."""

    def __init__(self, path: Path) -> None:
        self.path = path / "processes"

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for entry in sorted(self.path.iterdir()) if self.path.is_dir() else ():
            if not entry.name.isdigit() or not Path(f"/proc/{entry.name}").is_dir():
                continue  # ended without being marked (SIGKILL): its figures are gone
            labels = {"pid": entry.name, "role": entry.read_text(errors="replace").strip()}
            one = ProcessCollector(pid=lambda p=entry.name: p, registry=None)
            for family in one.collect():
                into = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                into.samples.extend(
                    Sample(s.name, {**s.labels, **labels}, s.value, s.timestamp, s.exemplar)
                    for s in family.samples
                )
        yield from merged.values()


class ThisProcess(Collector):
    """Everything in this process's default registry (single-process mode): our counters and
    prometheus-client's own process, platform and GC collectors."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()

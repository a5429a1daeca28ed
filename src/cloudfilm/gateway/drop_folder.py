"""The virtual printer's drop folder: reports as PDF files, with or without a JSON sidecar.

Reporting systems that speak no HL7 "print" the signed report to a virtual printer that writes
``name.pdf`` (and, when it can, ``name.json`` with the keys: accession_number, patient_id, …,
the names of the cloud's reports API). A JSON alone is a report without a PDF.

A file is taken only once complete: the printer writes progressively, so a file must keep its
size and mtime for ``settle_seconds`` (and a PDF must end with ``%%EOF``). A PDF with a sidecar
is taken when both are settled; the sidecar's values win over what the PDF's text says. A PDF
alone must carry a key the cloud can match on (study UID, accession or exam number), read from
its text as the cloud will. Taken files move to ``done/``; unusable ones to ``rejected/`` with
``name.why.txt`` (Chinese and English). A crash between spooling and the move spools the
report once more at the next start: the cloud keeps reports as versions, so the later one
simply becomes the current version of the same report.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from cloudfilm.gateway.spool import Spool, SpoolFull
from cloudfilm.portal.reports import ReportError, ReportFields, fields_from_text, pdf_text

log = logging.getLogger(__name__)
KEYS = ("study_uid", "accession_number", "exam_number")
INCOMPLETE_PATIENCE = 60.0
"""Seconds a PDF without its end marker is waited for before it is rejected as broken."""


class DropFolder:
    def __init__(
        self,
        folder: Path,
        spool: Spool,
        *,
        interval: float = 1.0,
        settle_seconds: float = 2.0,
    ) -> None:
        self.folder = folder
        self.spool = spool
        self.interval = interval
        self.settle = settle_seconds
        self.seen: dict[str, tuple[int, float, float]] = {}
        """name -> (size, mtime, first time seen with them)."""
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gateway-drop", daemon=True)
        for sub in ("done", "rejected"):
            (folder / sub).mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.scan_once()
            except Exception:
                log.exception("drop folder scan failed")
            self.stop_event.wait(self.interval)

    # -- one pass ---------------------------------------------------------------------------
    def _settled(self, path: Path, now: float) -> bool:
        try:
            st = path.stat()
        except FileNotFoundError:
            self.seen.pop(path.name, None)
            return False
        key = (st.st_size, st.st_mtime)
        prev = self.seen.get(path.name)
        if prev is None or prev[:2] != key:
            self.seen[path.name] = (*key, now)
            return False
        return now - prev[2] >= self.settle and now - st.st_mtime >= self.settle

    def scan_once(self, now: float | None = None) -> int:
        """Take every complete report; returns how many were spooled."""
        now = time.time() if now is None else now
        taken = 0
        entries = sorted(p for p in self.folder.iterdir() if p.is_file())
        stems: dict[str, dict[str, Path]] = {}
        for p in entries:
            suffix = p.suffix.lower()
            if p.name.startswith(".") or suffix in (".part", ".tmp"):
                continue
            stems.setdefault(p.stem, {})[suffix] = p
        for stem, files in stems.items():
            pdf, sidecar = files.get(".pdf"), files.get(".json")
            others = [p for s, p in files.items() if s not in (".pdf", ".json")]
            for other in others:
                if self._settled(other, now):
                    self._reject([other], "不是 PDF 或 JSON 文件", "not a PDF or JSON file")
            if pdf is None and sidecar is None:
                continue
            # look at both (no short-circuit): each needs its own first sighting
            ready = [self._settled(p, now) for p in (pdf, sidecar) if p is not None]
            if not all(ready):
                continue
            if (
                pdf is None
                and sidecar is not None
                and now - sidecar.stat().st_mtime < 2 * self.settle
            ):
                continue  # a sidecar may come first: give its PDF a moment more
            if self._take(stem, pdf, sidecar):
                taken += 1
        return taken

    def _take(self, stem: str, pdf: Path | None, sidecar: Path | None) -> bool:
        group = [p for p in (pdf, sidecar) if p is not None]
        fields: dict[str, str] = {}
        data: bytes | None = None
        if sidecar is not None:
            try:
                loaded = json.loads(sidecar.read_text("utf-8-sig"))
                if not isinstance(loaded, dict):
                    raise ValueError("not an object")
            except (ValueError, UnicodeDecodeError) as exc:
                self._reject(group, f"JSON 无法读取：{exc}", f"the JSON cannot be read: {exc}")
                return False
            given = ReportFields.from_mapping(loaded)
            fields = {k: v for k, v in vars(given).items() if v}
        if pdf is not None:
            data = pdf.read_bytes()
            if not data.startswith(b"%PDF") or b"%%EOF" not in data[-1024:]:
                if time.time() - pdf.stat().st_mtime < INCOMPLETE_PATIENCE:
                    return False  # a printer that paused mid-file: wait for the rest
                self._reject(group, "不是完整的 PDF 文件", "not a complete PDF file")
                return False
            try:
                extracted = fields_from_text(pdf_text(data))
            except ReportError as exc:
                self._reject(group, f"PDF 无法读取：{exc}", f"the PDF cannot be read: {exc}")
                return False
            merged = ReportFields.from_mapping(fields).merged_over(extracted)
            fields = {k: v for k, v in vars(merged).items() if v}
        if not any(fields.get(k) for k in KEYS):
            self._reject(
                group,
                "报告中没有可匹配检查的编号（检查号、检查UID或影像号）",
                "the report has no key to match its study (accession number, exam number or "
                "Study Instance UID)",
            )
            return False
        try:
            self.spool.add_report(fields, data, source=f"drop:{stem}")
        except (SpoolFull, OSError) as exc:
            log.error("drop folder: %s not spooled, will try again: %s", stem, exc)
            return False
        for p in group:
            self._move(p, "done")
        log.info("drop folder: report %s spooled", stem)
        return True

    def _reject(self, group: list[Path], zh: str, en: str) -> None:
        for p in group:
            self._move(p, "rejected")
        why = self.folder / "rejected" / f"{group[0].stem}.why.txt"
        why.write_text(f"{zh}\n{en}\n", "utf-8")
        log.warning("drop folder: %s rejected: %s", group[0].name, en)

    def _move(self, path: Path, sub: str) -> None:
        target = self.folder / sub / path.name
        if target.exists():
            target = target.with_name(f"{path.stem}-{int(time.time())}{path.suffix}")
        try:
            os.replace(path, target)
        except OSError:
            shutil.move(str(path), str(target))
        self.seen.pop(path.name, None)

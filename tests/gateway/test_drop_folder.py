"""The virtual printer's folder: only complete files are taken; unusable ones are put aside
with the reason, in Chinese and English, and never reach the spool."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

from reportlab.pdfgen import canvas

from cloudfilm.gateway.drop_folder import DropFolder
from cloudfilm.gateway.spool import Spool


def _pdf(text: str) -> bytes:
    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.drawString(72, 720, text)
    c.save()
    return buf.getvalue()


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def _waiting(spool: Spool) -> int:
    return spool.summary()["waiting_reports"]


def test_only_complete_reports_are_taken_and_bad_ones_explained(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30, min_free_bytes=0)
    drop = tmp_path / "printer"
    drop.mkdir()
    folder = DropFolder(drop, spool, settle_seconds=0.5)
    pdf = _pdf("Radiology report")
    half = drop / "r1.pdf"
    half.write_bytes(pdf[: len(pdf) // 2])  # the printer is still writing
    (drop / "r1.json").write_text(json.dumps({"accession_number": "ACC-1"}), "utf-8")
    folder.scan_once()
    time.sleep(0.6)
    folder.scan_once()
    assert _waiting(spool) == 0 and half.exists()  # a PDF without its end is not taken
    half.write_bytes(pdf)
    _age(half, 5)
    _age(drop / "r1.json", 5)
    folder.scan_once()
    time.sleep(0.6)
    assert folder.scan_once() == 1
    assert _waiting(spool) == 1
    assert (drop / "done" / "r1.pdf").exists() and (drop / "done" / "r1.json").exists()

    (drop / "r2.pdf").write_bytes(_pdf("no keys in this one"))
    (drop / "r3.txt").write_text("hello", "utf-8")
    (drop / "r4.json").write_text("{not json", "utf-8")
    for p in drop.glob("r[234].*"):
        _age(p, 5)
    folder.scan_once()
    time.sleep(0.6)
    folder.scan_once()
    assert _waiting(spool) == 1
    rejected = drop / "rejected"
    assert "no key to match" in (rejected / "r2.why.txt").read_text("utf-8")
    assert "匹配" in (rejected / "r2.why.txt").read_text("utf-8")
    assert "not a PDF or JSON" in (rejected / "r3.why.txt").read_text("utf-8")
    assert "JSON cannot be read" in (rejected / "r4.why.txt").read_text("utf-8")
    spool.close()

"""``cloudfilm import`` of zip archives: speed and peak memory as the archive grows.

A hospital moving off CDs and an old PACS hands us zips of several GB. The importer must stream
them: its memory should not grow with the size of the zip. The zips here hold 1, 2 and 4 copies
of the demo's 300-slice 512×512 CT (157 MB each), every copy with its own study, series and SOP
Instance UIDs so that every member is really stored. Each import runs in a fresh process on an
empty SQLite index; peak RSS is that process's ``ru_maxrss``.

    .venv/bin/python bench/importer.py [--copies 1,2,4]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import WORK, ct_files, save


def build_zip(path: Path, files: list[Path], copies: int) -> int:
    """A stored (uncompressed) zip, the way most export tools write DICOM."""
    if path.exists():
        return path.stat().st_size
    tmp = path.with_suffix(".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for copy in range(copies):
            study, series = generate_uid(), generate_uid()
            for i, f in enumerate(files):
                ds = pydicom.dcmread(f)
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
                ds.SOPInstanceUID = generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                zf.writestr(f"copy{copy}/IM{i:04d}.dcm", buf.getvalue())
    tmp.rename(path)
    return path.stat().st_size


def run_import(zip_path: Path) -> dict:  # type: ignore[type-arg]
    data = WORK / "import-data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    env = dict(os.environ, CLOUDFILM_DATA_DIR=str(data), CLOUDFILM_CONFIG=str(data / "none.toml"))
    out = data / "import.out"
    t0 = time.perf_counter()
    with open(out, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cloudfilm.cli", "import", str(zip_path)],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        # wait4 gives this one child's resource usage: its own peak RSS
        _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = out.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(text[-3000:])
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "summary": text.strip().splitlines()[-1] if text.strip() else "",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", default="1,2,4")
    args = ap.parse_args()
    files = ct_files(300, 512)
    runs = []
    for copies in sorted(int(c) for c in args.copies.split(",")):
        zip_path = WORK / f"import-ct-x{copies}.zip"
        size = build_zip(zip_path, files, copies)
        result = {"copies": copies, "instances": copies * len(files), "zip_mb": round(size / 1e6)}
        result.update(run_import(zip_path))
        result["mb_per_s"] = round(size / 1e6 / result["seconds"], 1)
        result["instances_per_s"] = round(result["instances"] / result["seconds"], 1)
        print(json.dumps(result, ensure_ascii=False))
        runs.append(result)
    print(f"saved {save('importer', {'runs': runs, 'load_average': os.getloadavg()})}")


if __name__ == "__main__":
    main()

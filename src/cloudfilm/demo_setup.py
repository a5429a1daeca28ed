"""``cloudfilm serve --demo``: make sure the demo studies are in the archive, say how to try."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cloudfilm.archive import Archive
from cloudfilm.importer import import_paths

log = logging.getLogger(__name__)


def load_demo(archive: Archive) -> list[str]:
    """Generate the demo set once (kept in the data dir), import it, and return banner lines.

    Importing again is cheap and harmless: every instance is already there and is a duplicate.
    """
    from cloudfilm.demo import write_demo

    dest = archive.settings.data_dir / "demo"
    manifest_path = dest / "manifest.json"
    if not manifest_path.exists():
        log.info("writing the demo data set to %s (once)", dest)
        write_demo(dest)
    summary = import_paths(archive, sorted(dest.rglob("*.dcm")), hospital=1)
    log.info(
        "demo import: %d new, %d already there, %d refused",
        summary.accepted,
        summary.counts["duplicate"],
        summary.counts["rejected"],
    )
    lines = [f"Demo studies: {summary.accepted + summary.counts['duplicate']} instances in {dest}"]
    lines += _describe(manifest_path)
    for hook in _BANNER_HOOKS:
        lines += hook(archive)
    return lines


def _describe(manifest_path: Path) -> list[str]:
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    out = []
    for study in manifest.get("studies", [])[:8]:
        out.append(
            f"  {study.get('modality', ''):<3} {study.get('patient_name', '')} "
            f"(ID {study.get('patient_id', '')}) study {study.get('study_uid', '')}"
        )
    return out


_BANNER_HOOKS: list = []  # type: ignore[type-arg]
"""Other packages (API tokens, films) add lines that say how to try them."""

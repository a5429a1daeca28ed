"""``cloudfilm keys generate|status|rotate``: the key-encryption keys of encrypted file stores.

Rotation, in order (docs/keeping.md, Encryption at rest):

1. ``cloudfilm keys generate`` → the new KEK; make it the current one and keep the old one in
   ``CLOUDFILM_BLOB_KEK_PREVIOUS`` (or as the key file's second line); restart the servers, so
   every new blob is wrapped by the new key while the old ones stay readable;
2. ``cloudfilm keys rotate``: each blob's data key is unwrapped with the old KEK and wrapped
   with the new one, in the header's free slot, then the old wrap is erased (40 bytes per
   blob; the images are not re-encrypted). It can run while the servers serve, and again after
   an interruption;
3. ``cloudfilm keys status`` says no blob needs the old KEK: remove it from the settings.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import click

from cloudfilm.config import Settings
from cloudfilm.storage.blobs import BlobNotFound
from cloudfilm.storage.encrypted import EncryptedFileBlobStore, is_encrypted_folder
from cloudfilm.storage.kek import KeyConfigError, keyring_from_settings, new_kek_line


def _folder(url: str | None) -> Path | None:
    if not url:
        return None
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    return Path(url) if not parsed.scheme else None


def encrypted_stores(settings: Settings) -> list[tuple[str, EncryptedFileBlobStore]]:
    """The deployment's encrypted folders: the primary, its cold tier, the replica."""
    try:
        keys = keyring_from_settings(settings)
    except KeyConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if keys is None:
        raise click.UsageError("no KEK configured (CLOUDFILM_BLOB_KEK or CLOUDFILM_BLOB_KEK_FILE)")
    found = []
    named = [("primary", settings.resolved_blob_url)]
    named.append(("cold tier", getattr(settings, "cold_blob_url", None)))
    named.append(("replica", getattr(settings, "replica_url", None)))
    for name, url in named:
        root = _folder(url)
        if root is not None and is_encrypted_folder(root):
            found.append((name, EncryptedFileBlobStore(root, keys)))
    if not found:
        raise click.UsageError("no encrypted folder among the blob, cold and replica URLs")
    return found


@click.group()
def keys() -> None:
    """Key-encryption keys of encrypted file stores (generate, status, rotate)."""


@keys.command("generate")
@click.option("--id", "kek_id", default=None, help="A name for the key (default: its hash).")
def keys_generate(kek_id: str | None) -> None:
    """Print a new random KEK as ``<id>:<base64>`` (keep it in a secret store)."""
    try:
        click.echo(new_kek_line(kek_id))
    except KeyConfigError as exc:
        raise click.UsageError(str(exc)) from exc


@keys.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def keys_status(as_json: bool) -> None:
    """How many blobs each KEK wraps; exit 1 while any needs a key other than the current."""
    settings = Settings()
    report: dict[str, dict[str, object]] = {}
    pending = 0
    for name, store in encrypted_stores(settings):
        by_kek: Counter[str] = Counter()
        unfinished = 0
        unreadable: list[str] = []
        for key in store.all_keys():
            try:
                ids = store.kek_of(key)
            except BlobNotFound:
                continue
            except OSError as exc:
                unreadable.append(f"{key}: {exc}")
                continue
            by_kek[ids[0] if ids else "-"] += 1
            unfinished += len(ids) > 1
        pending += sum(n for k, n in by_kek.items() if k != store.keys.primary.id) + unfinished
        report[name] = {
            "current": store.keys.primary.id,
            "blobs_by_kek": dict(by_kek),
            "unfinished_rotation": unfinished,
            "unreadable": unreadable[:20],
        }
    if as_json:
        click.echo(json.dumps(report))
    else:
        for name, r in report.items():
            click.echo(f"{name}: current KEK {r['current']}")
            for kek, n in sorted(r["blobs_by_kek"].items()):  # type: ignore[attr-defined]
                click.echo(f"  {kek}: {n} blobs")
            if r["unfinished_rotation"]:
                click.echo(f"  {r['unfinished_rotation']} blobs still hold an old wrap")
            for line in r["unreadable"]:  # type: ignore[attr-defined]
                click.echo(f"  unreadable {line}")
    sys.exit(1 if pending else 0)


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every blob's data key with the current KEK (images are not re-encrypted)."""
    settings = Settings()
    failed = 0
    for name, store in encrypted_stores(settings):
        counts: Counter[str] = Counter()
        t0 = time.monotonic()
        for key in store.all_keys():
            try:
                counts[store.rewrap(key)] += 1
            except BlobNotFound:
                counts["gone"] += 1  # deleted meanwhile (retention, a replaced duplicate)
            except OSError as exc:
                counts["failed"] += 1
                click.echo(f"{name}: {key}: {exc}", err=True)
        failed += counts["failed"]
        summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "no blobs"
        took = time.monotonic() - t0
        click.echo(f"{name}: {summary} (KEK {store.keys.primary.id}, {took:.1f} s)")
    sys.exit(1 if failed else 0)

"""Finding what a DICOMweb URL names, and reading its bytes.

A URL names a study, a series in a study, or an instance in a series in a study. Access is
decided on the study in the URL, so every lookup also checks that the series and instance really
belong to that study: a grant for study A must not open an instance of study B through a URL
that merely starts with A.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy import select

from cloudfilm.access import Action, Principal
from cloudfilm.archive import Archive
from cloudfilm.http.problems import Problem
from cloudfilm.storage.models import Instance, Series, Study

PREFIX = "/dicom-web"


@dataclass
class InstanceRef:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    blob_key: str
    sha256: str
    size: int
    pixel_data_offset: int | None
    pixel_data_length: int | None
    rows: int | None
    columns: int | None
    number_of_frames: int | None
    meta_json: str | None = None
    _meta: dict[str, Any] | None = None

    @property
    def meta(self) -> dict[str, Any]:
        """The cached DICOM JSON, parsed once."""
        if self._meta is None:
            self._meta = json.loads(self.meta_json or "{}")
        return self._meta

    def meta_value(self, tag: str, default: Any = None) -> Any:
        values = (self.meta.get(tag) or {}).get("Value")
        return values[0] if values else default

    @property
    def frames(self) -> int:
        return self.number_of_frames or 1

    @property
    def bits_allocated(self) -> int | None:
        return self.meta_value("00280100") if self.meta_json is not None else None

    def path(self) -> str:
        return f"studies/{self.study_uid}/series/{self.series_uid}/instances/{self.sop_uid}"


def base_url(request: Request, archive: Archive) -> str:
    """The DICOMweb root as clients reach it (``public_url`` wins over the request's host)."""
    if archive.settings.public_url:
        return archive.settings.public_url.rstrip("/") + PREFIX
    url = request.base_url
    server = request.scope.get("server")
    default_port = {"http": 80, "https": 443}.get(url.scheme)
    if url.port is None and server and server[1] and server[1] != default_port:
        # Some clients (dicomweb-client) send a Host header without the port: URLs built from
        # it would point at port 80. Behind a proxy, set ``public_url`` instead.
        url = url.replace(port=server[1])
    return str(url).rstrip("/") + PREFIX


def authorize_read(archive: Archive, principal: Principal, study_uid: str, detail: str) -> None:
    archive.authorize(principal, Action.READ, study_uid, detail=detail)


def find_instances(
    archive: Archive,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    *,
    with_meta: bool = False,
) -> list[InstanceRef]:
    """Instances under the URL's resource, in series then instance order; 404 when none."""
    cols = [
        Study.study_uid,
        Series.series_uid,
        Instance.sop_uid,
        Instance.sop_class_uid,
        Instance.transfer_syntax_uid,
        Instance.blob_key,
        Instance.sha256,
        Instance.size_bytes,
        Instance.pixel_data_offset,
        Instance.pixel_data_length,
        Instance.rows,
        Instance.columns,
        Instance.number_of_frames,
    ]
    if with_meta:
        cols.append(Instance.meta_json)
    stmt = (
        select(*cols)
        .join(Series, Instance.series_pk == Series.pk)
        .join(Study, Series.study_pk == Study.pk)
        .where(Study.study_uid == study_uid)
    )
    if series_uid is not None:
        stmt = stmt.where(Series.series_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(Instance.sop_uid == sop_uid)
    stmt = stmt.order_by(Series.series_number, Series.pk, Instance.instance_number, Instance.pk)
    with archive.db.engine.connect() as conn:  # Core rows: no ORM session per request
        rows = conn.execute(stmt).all()
    if not rows:
        what = (
            f"instance {sop_uid}"
            if sop_uid
            else f"series {series_uid}"
            if series_uid
            else f"study {study_uid}"
        )
        raise Problem(404, f"{what} not found")
    return [InstanceRef(*row) for row in rows]


class RefCache:
    """Instance rows by their URL (study, series, instance), for the per-frame hot path.

    A viewer opening a CT asks for each instance's frames (and rendered images) one request at a
    time: the same few hundred rows, over and over. Under the ``keep-first`` and ``reject``
    duplicate policies an instance row never changes once written (a deletion of studies
    makes every process drop this cache: keeping/deletion.py), so it can be kept; under
    ``replace`` nothing is cached. Storing an instance evicts its entry anyway. The second
    miss in a series loads the whole series in one query (a viewer is walking it), so a
    300-slice series costs two index queries instead of 300.
    """

    SERIES_FILL_MAX = 5000

    def __init__(self, archive: Archive, size: int = 20000) -> None:
        self.archive = archive
        self.size = size
        self.enabled = archive.settings.duplicate_policy != "replace"
        self._refs: OrderedDict[tuple[str, str, str], InstanceRef] = OrderedDict()
        self._missed: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()
        archive.on_stored(self._stored)
        archive.deletions.on_forget(self.forget)  # studies deleted (keeping/deletion.py)

    def forget(self) -> None:
        with self._lock:
            self._refs.clear()
            self._missed.clear()

    def _stored(self, result: Any) -> None:
        with self._lock:
            self._refs.pop((result.study_uid, result.series_uid, result.sop_instance_uid), None)

    def peek(self, study_uid: str, series_uid: str, sop_uid: str) -> InstanceRef | None:
        """The cached row, or None; never touches the index."""
        if not self.enabled:
            return None
        with self._lock:
            return self._refs.get((study_uid, series_uid, sop_uid))

    def get(self, study_uid: str, series_uid: str, sop_uid: str) -> InstanceRef:
        if not self.enabled:
            return find_instances(self.archive, study_uid, series_uid, sop_uid, with_meta=True)[0]
        key = (study_uid, series_uid, sop_uid)
        with self._lock:
            ref = self._refs.get(key)
            if ref is not None:
                self._refs.move_to_end(key)
                return ref
            series_key = (study_uid, series_uid)
            fill = series_key in self._missed
            self._missed[series_key] = None
            while len(self._missed) > 1000:
                self._missed.popitem(last=False)
        refs = []
        if fill:
            refs = find_instances(self.archive, study_uid, series_uid, with_meta=True)
            if len(refs) > self.SERIES_FILL_MAX:
                refs = refs[: self.SERIES_FILL_MAX]
        found = next((r for r in refs if r.sop_uid == sop_uid), None)
        if found is None:
            found = find_instances(self.archive, study_uid, series_uid, sop_uid, with_meta=True)[0]
            refs.append(found)
        with self._lock:
            for r in refs:
                self._refs[(r.study_uid, r.series_uid, r.sop_uid)] = r
            while len(self._refs) > self.size:
                self._refs.popitem(last=False)
        return found


_caches: weakref.WeakKeyDictionary[Archive, RefCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _ref_cache(archive: Archive) -> RefCache:
    cache = _caches.get(archive)
    if cache is None:
        with _caches_lock:
            cache = _caches.get(archive) or RefCache(archive)
            _caches[archive] = cache
    return cache


def instance_ref(archive: Archive, study_uid: str, series_uid: str, sop_uid: str) -> InstanceRef:
    """The instance a URL names (with its metadata), from the process's cache; 404 if none."""
    return _ref_cache(archive).get(study_uid, series_uid, sop_uid)


def cached_instance_ref(
    archive: Archive, study_uid: str, series_uid: str, sop_uid: str
) -> InstanceRef | None:
    """The instance if this process has its row at hand (no index query), else None."""
    return _ref_cache(archive).peek(study_uid, series_uid, sop_uid)


def read_blob(archive: Archive, ref: InstanceRef) -> bytes:
    return archive.blobs.get(ref.blob_key)


class _OpenBlob:
    """A read-only descriptor of a stored file, closed when the last user lets go of it."""

    __slots__ = ("fd",)

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.fd = os.open(path, os.O_RDONLY)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # also at interpreter exit
            os.close(self.fd)


class _OpenBlobs:
    """Descriptors of recently read blobs (frames are read one ``pread`` at a time, and opening
    the file cost more than reading a 512×512 frame). Blob keys name immutable content, so a
    descriptor never goes stale; an entry pushed out while a reader still holds it is closed by
    that reader's reference going away, never under it."""

    def __init__(self, size: int | None = None) -> None:
        if size is None:  # a quarter of the descriptors this process may open, at most 2048
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            size = max(32, min(2048, (soft if soft > 0 else 1024) // 4))
        self.size = size
        self._open: OrderedDict[str, _OpenBlob] = OrderedDict()
        self._lock = threading.Lock()

    def forget(self) -> None:
        with self._lock:
            self._open.clear()

    def peek(self, key: str) -> _OpenBlob | None:
        with self._lock:
            blob = self._open.get(key)
            if blob is not None:
                self._open.move_to_end(key)
            return blob

    def get(self, key: str, path: os.PathLike[str] | str) -> _OpenBlob:
        blob = self.peek(key)
        if blob is not None:
            return blob
        blob = _OpenBlob(path)
        with self._lock:
            self._open[key] = blob
            while len(self._open) > self.size:
                self._open.popitem(last=False)
        return blob


_open_blobs: weakref.WeakKeyDictionary[Archive, _OpenBlobs] = weakref.WeakKeyDictionary()


def read_range(archive: Archive, ref: InstanceRef, start: int, length: int) -> bytes:
    """Bytes of the stored file; ``os.pread`` on the local store (no seek, thread-safe)."""
    blobs = _open_blobs.get(archive)
    blob = blobs.peek(ref.blob_key) if blobs is not None else None
    if blob is None:
        path = archive.blobs.local_path(ref.blob_key)
        if path is None:
            return archive.blobs.get_range(ref.blob_key, start, length)
        if archive.settings.duplicate_policy == "replace":
            # replaced blobs are deleted: a kept descriptor would hold on to their space
            with open(path, "rb") as f:
                return os.pread(f.fileno(), length, start)
        if blobs is None:
            with _caches_lock:
                blobs = _open_blobs.get(archive)
                if blobs is None:
                    blobs = _open_blobs.setdefault(archive, _OpenBlobs())
                    archive.deletions.on_forget(blobs.forget)  # deleted blobs' space
        blob = blobs.get(ref.blob_key, path)
    return os.pread(blob.fd, length, start)

"""The archive: index + storage area + settings, shared by every entry point in a process.

DIMSE, HTTP and the CLI each hold one :class:`Archive`; none of them touches the index or the
blob store except through it and the modules it wires together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import cached_property

from sqlalchemy import select

from cloudfilm.access import Action, AuditLog, Decision, Principal, authorize
from cloudfilm.access.keys import server_secret
from cloudfilm.config import Settings
from cloudfilm.ingest import IngestResult, Rejected
from cloudfilm.ingest import ingest as _ingest
from cloudfilm.ingest.group_commit import GroupCommit
from cloudfilm.metrics import instruments
from cloudfilm.storage.blobs import BlobStore, open_blob_store
from cloudfilm.storage.database import Database

log = logging.getLogger(__name__)


class Archive:
    def __init__(self, settings: Settings, *, upgrade: bool = True) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.resolved_database_url)
        if upgrade:
            self.db.upgrade()
        self.blobs: BlobStore = open_blob_store(settings)
        self.audit = AuditLog(self.db)
        self.group_commit = GroupCommit(self.db)
        self.blob_writer = ThreadPoolExecutor(max_workers=16, thread_name_prefix="blob-put")
        """Blob writes run here while the ingesting thread parses (see ingest.ingest)."""
        self.series_pks: dict[str, tuple[int, int, int]] = {}
        """Series UID -> (series pk, study pk, hospital pk) of series already indexed: the
        ingest fast path."""
        self._owners: dict[str, int] = {}
        """Study UID -> owning hospital pk: a study never changes hands, and every frame
        request asks."""
        self._listeners: list[Callable[[IngestResult], None]] = []
        from cloudfilm.keeping.deletion import DeletionWatch

        self.deletions = DeletionWatch(self)
        """Drops the caches above (and DICOMweb's) when any process deleted studies."""
        self.deletions.start()

    @cached_property
    def secret(self) -> bytes:
        """The server secret (access.keys): HMAC key of credentials and identifiers."""
        return server_secret(self.settings)

    def authorize(
        self, principal: Principal, action: Action, study_uid: str | None = None, detail: str = ""
    ) -> Decision:
        """The one access check (see cloudfilm.access.policy); raises AccessDenied.

        A hospital user reaching past their hospital (a study of another, or a search) brings
        the patient consents they hold, read afresh on every call: a revoked grant stops the
        very next request."""
        owner = self.study_owner(study_uid) if study_uid else None
        if self.needs_grants(principal, owner, action):
            principal = replace(principal, granted=self.granted_studies(principal))
        return authorize(
            self.audit, principal, action, study_uid, detail=detail, study_hospital=owner
        )

    @staticmethod
    def needs_grants(principal: Principal, owner: int | None, action: Action) -> bool:
        if principal.kind != "user" or principal.hospital is None or principal.studies is not None:
            return False
        return action is Action.QUERY or (owner is not None and owner != principal.hospital)

    def granted_studies(self, principal: Principal) -> frozenset[str]:
        from cloudfilm.regional.grants import granted_studies

        with self.db.read() as session:
            return granted_studies(session, principal.label, principal.hospital)

    def study_owner(self, study_uid: str, *, cached_only: bool = False) -> int | None:
        """The hospital holding this study, or None when the index does not know it (yet).

        ``cached_only``: answer from memory or raise LookupError (the event loop may not wait
        for the index)."""
        owner = self._owners.get(study_uid)
        if owner is not None:
            return owner
        if cached_only:
            raise LookupError(study_uid)
        from cloudfilm.storage.models import Study

        with self.db.engine.connect() as conn:
            owner = conn.execute(
                select(Study.hospital_pk).where(Study.study_uid == study_uid)
            ).scalar()
        if owner is not None:
            if len(self._owners) > 200_000:
                self._owners.clear()
            self._owners[study_uid] = owner
        return owner

    def recover(self) -> int:
        """Run at start: drop half-written blobs a crash left behind, and re-index any blob
        whose index row a power cut lost (see storage/recovery.py). Returns the re-indexed."""
        removed = self.blobs.recover(older_than=60.0)
        if removed:
            log.warning("removed %d half-written blob(s) left by an earlier crash", removed)
        from cloudfilm.storage.recovery import reconcile

        return reconcile(self)

    def ingest(
        self,
        data: bytes,
        *,
        hospital: int,
        source: str = "",
        stored_key: str | None = None,
        sha256: str | None = None,
    ) -> IngestResult:
        """``hospital``: the owner (see ingest.ingest). ``sha256``: the hex digest of ``data``
        when the caller hashed it on arrival. Counted by door (``source``'s prefix)."""
        try:
            result = _ingest(
                self, data, hospital=hospital, source=source, stored_key=stored_key, sha256=sha256
            )
        except Rejected as exc:
            instruments.instance_rejected(source, exc.reason.code, len(data))
            raise
        instruments.instance_received(source, result.outcome, len(data))
        return result

    def on_stored(self, listener: Callable[[IngestResult], None]) -> None:
        """Subscribe to newly stored instances (metadata caches, film issuing, forwarding)."""
        self._listeners.append(listener)

    def notify_stored(self, result: IngestResult) -> None:
        for listener in self._listeners:
            try:
                listener(result)
            except Exception:
                log.exception("listener failed for %s", result.sop_instance_uid)

    def close(self) -> None:
        from cloudfilm.storage.recovery import mark_durable

        try:
            mark_durable(self)
        except Exception:
            log.exception("could not record the index watermark at close")
        self.deletions.stop()
        self.audit.close()
        self.blob_writer.shutdown(wait=True)
        self.blobs.close()
        self.db.dispose()

"""DIMSE service handlers: C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE.

Each handler is thin: C-STORE hands the received bytes to the one ingest function; C-FIND,
C-GET and C-MOVE ask the one access check, then the shared query engine. DIMSE-specific work
(status codes, identifiers, sub-operations) is all that lives here.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.events import Event
from sqlalchemy import select

from cloudfilm.access import AccessDenied, Action, Principal
from cloudfilm.accounts.aes import CALLERS
from cloudfilm.dimse.identifiers import IdentifierError, query_from_identifier, response_identifier
from cloudfilm.ingest import Rejected
from cloudfilm.storage.models import Instance
from cloudfilm.storage.query import QueryError, run_query

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
NOT_AUTHORIZED = 0x0124
WARNING_SUBOPS = 0xB000
WARNING_COERCION = 0xB000
UNABLE_TO_PROCESS = 0xC000
IDENTIFIER_MISMATCH = 0xA900
MOVE_DESTINATION_UNKNOWN = 0xA801
OUT_OF_RESOURCES_SUBOPS = 0xA702
SERVICE_SCOPES = {"echo": "read", "store": "write", "find": "read", "get": "read", "move": "read"}


def _status(code: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:64]
    return ds


class Handlers:
    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.settings = archive.settings

    # -- who is calling -------------------------------------------------------------------
    def principal(self, event: Event, service: str) -> Principal:
        requestor = event.assoc.requestor
        ae = requestor.ae_title.strip() if isinstance(requestor.ae_title, str) else ""
        return self.principal_for(ae, requestor.address, service)

    def principal_for(self, ae: str, host: str, service: str) -> Principal:
        """The calling AE as a principal of its hospital; its scope is what the hospital's
        registration (or the settings' allow-list) grants this service."""
        caller = CALLERS.caller(self.settings, self.archive.db, ae, host)
        allowed = caller.hospital is not None and service in caller.services
        scopes = frozenset({SERVICE_SCOPES[service]}) if allowed else frozenset()
        return Principal(
            kind="ae", id=f"{ae}@{host}", scopes=scopes, client=host, hospital=caller.hospital
        )

    def known_title(self, ae: str) -> bool:
        """May an association from this calling AE title be accepted at all?"""
        return CALLERS.known_title(self.settings, self.archive.db, ae)

    def echo_allowed(self, ae: str, host: str) -> bool:
        return bool(self.principal_for(ae, host, "echo").scopes)

    # -- C-ECHO ---------------------------------------------------------------------------
    def echo(self, event: Event) -> int:
        p = self.principal(event, "echo")
        return SUCCESS if p.scopes else NOT_AUTHORIZED

    # -- C-STORE --------------------------------------------------------------------------
    def may_store(self, ae: str, host: str) -> int | None:
        """One audited decision per association (both receive paths ask once): the hospital
        the association stores for, or None when it may not store."""
        principal = self.principal_for(ae, host, "store")
        try:
            self.archive.authorize(principal, Action.WRITE, None, "C-STORE")
        except AccessDenied:
            return None
        return principal.hospital

    def receive(
        self, data: bytes, ae: str, hospital: int, *, sha256: str | None = None
    ) -> tuple[int, str]:
        """Hand one received instance to the one ingest function; the C-STORE status to answer.

        Shared by pynetdicom's handler and the event-driven store path, so both give the same
        statuses for the same bytes.
        """
        try:
            result = self.archive.ingest(
                data, hospital=hospital, source=f"dimse:{ae}", sha256=sha256
            )
        except Rejected as exc:
            log.warning("C-STORE refused from %s: %s", ae, exc.message)
            return exc.reason.dimse_status, exc.message
        except Exception:
            log.exception("C-STORE failed")
            return 0xA700, "out of resources: could not store"
        if result.is_warning:
            return WARNING_COERCION, "already stored with other content; kept first"
        return SUCCESS, ""

    def store(self, event: Event) -> Dataset | int:
        assoc = event.assoc
        ae = assoc.requestor.ae_title.strip() if isinstance(assoc.requestor.ae_title, str) else ""
        hospital = getattr(assoc, "_cloudfilm_store_hospital", 0)
        if hospital == 0:
            hospital = self.may_store(ae, assoc.requestor.address)
            assoc._cloudfilm_store_hospital = hospital
        if hospital is None:
            return _status(NOT_AUTHORIZED, "calling AE may not store here")
        status, comment = self.receive(event.encoded_dataset(include_meta=True), ae, hospital)
        return _status(status, comment) if comment else status

    # -- C-FIND ---------------------------------------------------------------------------
    def find(self, event: Event) -> Iterator[tuple[int, Dataset | None]]:
        try:
            query, requested = query_from_identifier(event.identifier)
        except (IdentifierError, ValueError) as exc:
            yield _status(IDENTIFIER_MISMATCH, str(exc)), None
            return
        try:
            decision = self.archive.authorize(
                self.principal(event, "find"), Action.QUERY, None, _describe(query.keys)
            )
        except AccessDenied:
            yield _status(NOT_AUTHORIZED, "calling AE may not query"), None
            return
        query.allowed_studies = decision.studies
        query.hospital = decision.hospital
        query.also_studies = decision.also
        try:
            with self.archive.db.read() as session:
                result = run_query(session, query)
        except QueryError as exc:
            yield _status(UNABLE_TO_PROCESS, str(exc)), None
            return
        for row in result.rows:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, response_identifier(row, requested, query.level, self.settings.ae_title)
        yield SUCCESS, None

    # -- C-GET / C-MOVE -------------------------------------------------------------------
    def _matches(self, event: Event, service: str) -> list[tuple[str, str]] | Dataset:
        """(study uid, blob key) of every instance to send, or a failure status."""
        try:
            query, _ = query_from_identifier(event.identifier)
        except (IdentifierError, ValueError) as exc:
            return _status(IDENTIFIER_MISMATCH, str(exc))
        level = query.level
        query.level = "IMAGE"
        query.want_meta = False
        principal = self.principal(event, service)
        try:
            # the hospital's studies only: another hospital's are not even matched
            decision = self.archive.authorize(
                principal, Action.QUERY, None, f"C-{service.upper()} match"
            )
        except AccessDenied:
            return _status(NOT_AUTHORIZED, "calling AE may not retrieve")
        query.allowed_studies = decision.studies
        query.hospital = decision.hospital
        query.also_studies = decision.also
        try:
            with self.archive.db.read() as session:
                rows = run_query(session, query).rows
                keys = dict(
                    session.execute(
                        select(Instance.pk, Instance.blob_key).where(
                            Instance.pk.in_([r["_instance_pk"] for r in rows])
                        )
                    ).all()
                )
        except QueryError as exc:
            return _status(UNABLE_TO_PROCESS, str(exc))
        studies = sorted({r["StudyInstanceUID"] for r in rows})
        for study in studies:
            try:
                self.archive.authorize(
                    principal, Action.READ, study, f"C-{service.upper()} {level}"
                )
            except AccessDenied:
                return _status(NOT_AUTHORIZED, "calling AE may not retrieve")
        return [(r["StudyInstanceUID"], keys[r["_instance_pk"]]) for r in rows]

    def _load(self, key: str) -> Dataset:
        return pydicom.dcmread(io.BytesIO(self.archive.blobs.get(key)))

    def get(self, event: Event) -> Iterator[Any]:
        matches = self._matches(event, "get")
        if isinstance(matches, Dataset):
            yield 1  # pynetdicom reads a failure status only after a sub-operation count
            yield matches, None
            return
        yield len(matches)
        accepted = {
            (c.abstract_syntax, c.transfer_syntax[0]) for c in event.assoc.accepted_contexts
        }
        for _study, key in matches:
            if event.is_cancelled:
                yield CANCEL, None
                return
            ds = _fit_to_contexts(self._load(key), accepted)
            yield PENDING, ds

    def move(self, event: Event) -> Iterator[Any]:
        raw = event.move_destination
        name = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        destination = self.settings.move_destination(name.strip())
        if destination is None:
            yield None, None  # pynetdicom answers 0xA801 "move destination unknown"
            return
        matches = self._matches(event, "move")
        yield (
            destination.host,
            destination.port,
            {
                "contexts": _contexts_for(
                    self.archive, [] if isinstance(matches, Dataset) else [k for _s, k in matches]
                )
            },
        )
        if isinstance(matches, Dataset):
            yield 1
            yield matches, None
            return
        yield len(matches)
        accepted: set[tuple[str, str]] | None = None
        for _study, key in matches:
            if event.is_cancelled:
                yield CANCEL, None
                return
            if accepted is None:  # pynetdicom has opened the sub-association by now
                accepted = _accepted_by(event, destination.host, destination.port)
            ds = self._load(key)
            yield PENDING, (_fit_to_contexts(ds, accepted) if accepted else ds)


def _describe(keys: dict[str, str]) -> str:
    shown = {k: v for k, v in keys.items() if v}
    return "C-FIND " + ", ".join(f"{k}={v}" for k, v in list(shown.items())[:8])


def _fit_to_contexts(ds: Dataset, accepted: set[tuple[str, str]]) -> Dataset:
    """Send as stored when the peer accepted that syntax, else decompress to one it accepted."""
    sop_class = str(ds.SOPClassUID)
    ts = str(ds.file_meta.TransferSyntaxUID)
    if (sop_class, ts) in accepted:
        return ds
    for target in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        if (sop_class, str(target)) in accepted and UID(ts).is_compressed:
            try:
                ds.decompress(generate_instance_uid=False)  # same instance, other syntax
            except Exception:
                log.warning("cannot decompress %s from %s", ds.SOPInstanceUID, ts)
            return ds
    return ds


def _accepted_by(event: Event, host: str, port: int) -> set[tuple[str, str]]:
    """What the move destination accepted on the association pynetdicom opened to it.

    pynetdicom sends the C-STORE sub-operations itself and keeps that association to itself;
    it is among the AE's active ones. A destination that refused a compressed syntax (most
    older workstations accept only uncompressed) then gets the instance decompressed, as
    C-GET does, instead of a failed sub-operation. Two moves to the same destination at once
    cannot be told apart here; the union of what both accepted errs towards sending as stored.
    """
    out: set[tuple[str, str]] = set()
    for assoc in event.assoc.ae.active_associations:
        if not (assoc.is_requestor and assoc.is_established):
            continue
        peer = assoc.acceptor
        if peer.address == host and peer.port == port:
            out |= {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
    return out


def _contexts_for(archive: Archive, keys: list[str]) -> list[Any]:
    """Presentation contexts to propose to a move destination: each SOP class with its stored
    syntaxes first and uncompressed ones as fall-back (at most 128 contexts)."""
    with archive.db.read() as session:
        pairs = set(
            session.execute(
                select(Instance.sop_class_uid, Instance.transfer_syntax_uid).where(
                    Instance.blob_key.in_(keys)
                )
            ).all()
        )
    by_class: dict[str, list[str]] = {}
    for sop_class, ts in sorted(pairs):
        by_class.setdefault(sop_class, []).append(ts)
    contexts = []
    for sop_class, syntaxes in by_class.items():
        for ts in syntaxes:
            contexts.append(build_context(sop_class, [ts]))
        contexts.append(build_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    return contexts[:128]

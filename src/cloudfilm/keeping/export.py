"""The de-identified research export: a set of studies chosen by a query, de-identified
(keeping/deid.py), written as a zip with a DICOMDIR or sent by STOW-RS to another archive.

The studies are found by the QIDO-RS/C-FIND matching engine (storage/query.py) within what
the caller may search, and every study read asks the one access check
(``Archive.authorize``, ``download``), which audits it: the audit trail says who took which
originals out, de-identified, for which project. The pseudonyms come from the archive's keyed
mapping, so a second export of the same patient (same project) gives the same pseudonym and
the same replacement UIDs; the mapping itself never leaves the archive.

The zip reuses the patient download's writer (portal/zipdl.py: DICOMDIR, streaming, ZIP64)
and adds ``MANIFEST.json``: the profile and options, each exported study by its new UIDs, and
the instances *withheld* (or, with ``include_burned_in``, exported but flagged) because their
pixels may carry burned-in text. The manifest names no original identifier; the caller gets
the original UIDs of the flagged instances in the result, to review them in the archive.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import httpx
from pydicom import dcmread
from sqlalchemy import select

from cloudfilm.access import Action, Principal
from cloudfilm.dicomweb.multipart import closing, multipart_content_type, new_boundary, part_header
from cloudfilm.keeping.deid import Options, Pseudonyms, burned_in, deidentify
from cloudfilm.keeping.deid_table import SOURCE
from cloudfilm.portal.zipdl import ZipEntry, dicomdir_of, stream_zip
from cloudfilm.storage.models import Instance, Patient, Series, Study
from cloudfilm.storage.query import Query, run_query

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

log = logging.getLogger(__name__)
MAX_STUDIES = 10_000
STOW_BATCH_BYTES = 64 * 1024 * 1024


class ExportError(Exception):
    """The export cannot be done as asked (bad query, the other archive refused)."""


@dataclass
class Flagged:
    study_uid: str
    sop_uid: str
    reason: str
    exported: bool
    new_sop_uid: str = ""


@dataclass
class ExportResult:
    studies: int = 0
    instances: int = 0
    flagged: list[Flagged] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    stow_failures: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "studies": self.studies,
            "instances": self.instances,
            "flagged": [asdict(f) for f in self.flagged],
            "stow_failures": self.stow_failures,
        }


def find_studies(
    archive: Archive, principal: Principal, keys: dict[str, str], *, limit: int = MAX_STUDIES
) -> list[str]:
    """The Study Instance UIDs a QIDO-RS study search with these keys gives this caller."""
    decision = archive.authorize(principal, Action.QUERY, None, detail="research export query")
    q = Query(
        level="STUDY", keys=dict(keys), limit=limit, allowed_studies=decision.studies,
        hospital=decision.hospital, also_studies=decision.also,
    )  # fmt: skip
    from sqlalchemy.exc import DBAPIError

    from cloudfilm.storage.query import QueryError

    try:
        with archive.db.read() as session:
            result = run_query(session, q)
    except (QueryError, OverflowError, DBAPIError) as exc:  # e.g. a number past 64 bits
        raise ExportError(f"the query cannot be run: {str(exc).splitlines()[0][:200]}") from exc
    if result.unsupported:
        raise ExportError(f"cannot match on: {', '.join(result.unsupported)}")
    return [r["StudyInstanceUID"] for r in result.rows]


class Sink:
    """Where de-identified studies go."""

    def add(self, facts: dict[str, str], entry: ZipEntry, data: bytes) -> None: ...

    def end_study(self) -> None: ...

    def finish(self, manifest: dict[str, Any]) -> None: ...


class ZipSink(Sink):
    """Files into a temporary folder, then one zip (DICOMDIR + files + MANIFEST.json)."""

    def __init__(self, out: BinaryIO | Path) -> None:
        self.out = out
        self.tmp = Path(tempfile.mkdtemp(prefix="cloudfilm-export-"))
        self.studies: list[tuple[dict[str, str], list[ZipEntry]]] = []
        self._facts: dict[str, str] | None = None

    def add(self, facts: dict[str, str], entry: ZipEntry, data: bytes) -> None:
        if self._facts is not facts:
            self._facts = facts
            self.studies.append((facts, []))
        number = sum(len(e) for _f, e in self.studies) + 1
        entry.arcname = f"DICOM/ST{len(self.studies):05d}/{entry.arcname}"
        entry.blob_key = str(self.tmp / f"{number:08d}.dcm")
        Path(entry.blob_key).write_bytes(data)
        entry.size = len(data)
        self.studies[-1][1].append(entry)

    def finish(self, manifest: dict[str, Any]) -> None:
        try:
            entries = [e for _f, es in self.studies for e in es]
            directory = dicomdir_of(self.studies) if self.studies else _empty_dicomdir()
            extra = {"MANIFEST.json": json.dumps(manifest, indent=1, ensure_ascii=False).encode()}
            chunks = stream_zip(
                None, entries, None, directory=directory, read=_read_file, extra=extra
            )
            if isinstance(self.out, Path):
                with open(self.out, "wb") as fh:
                    for chunk in chunks:
                        fh.write(chunk)
            else:
                for chunk in chunks:
                    self.out.write(chunk)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _read_file(entry: ZipEntry) -> Iterator[bytes]:
    with open(entry.blob_key, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            yield chunk


def _empty_dicomdir() -> bytes:
    facts = dict.fromkeys(
        ("PatientID", "PatientName", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
         "StudyDescription", "StudyInstanceUID"), ""
    )  # fmt: skip
    return dicomdir_of([(facts, [])])


class StowSink(Sink):
    """STOW-RS to another archive's DICOMweb root: one request per study (or per 64 MB)."""

    def __init__(self, root: str, token: str | None = None, *, timeout: float = 120.0) -> None:
        self.url = root.rstrip("/") + "/studies"
        headers = {"Accept": "application/dicom+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.client = httpx.Client(headers=headers, timeout=timeout)
        self.batch: list[bytes] = []
        self.size = 0
        self.failures: list[str] = []

    def add(self, facts: dict[str, str], entry: ZipEntry, data: bytes) -> None:
        self.batch.append(data)
        self.size += len(data)
        if self.size >= STOW_BATCH_BYTES:
            self.end_study()

    def end_study(self) -> None:
        if not self.batch:
            return
        boundary = new_boundary()
        body = io.BytesIO()
        for data in self.batch:
            body.write(part_header(boundary, "application/dicom"))
            body.write(data)
            body.write(b"\r\n")
        body.write(closing(boundary))
        count = len(self.batch)
        self.batch, self.size = [], 0
        try:
            response = self.client.post(
                self.url,
                content=body.getvalue(),
                headers={"Content-Type": multipart_content_type("application/dicom", boundary)},
            )
        except httpx.HTTPError as exc:
            self.failures.append(f"{count} instance(s): {exc}")
            return
        if response.status_code not in (200, 202):
            self.failures.append(
                f"{count} instance(s): {response.status_code} {response.text[:200]}"
            )

    def finish(self, manifest: dict[str, Any]) -> None:
        self.end_study()
        self.client.close()


def export(
    archive: Archive,
    principal: Principal,
    study_uids: list[str],
    options: Options,
    sink: Sink,
    *,
    include_burned_in: bool = False,
) -> ExportResult:
    """De-identify these studies into ``sink``. Each study is authorized (and audited) first;
    one the caller may not read stops the export (AccessDenied) before anything of it is read."""
    result = ExportResult()
    pseudonyms = Pseudonyms(archive, options.project)
    studies_out: list[dict[str, Any]] = []
    withheld: list[dict[str, str]] = []
    for uid in study_uids:
        archive.authorize(
            principal, Action.DOWNLOAD, uid,
            detail=f"research export, de-identified (project {options.project})",
        )  # fmt: skip
        head, rows = _study_rows(archive, uid)
        if head is None:
            continue
        patient_key = f"{head.hospital_pk}|{head.patient_id}|{head.issuer}"
        # the study's own UIDs in one transaction, not one per instance
        pseudonyms.get_many("uid", {uid, *(r.series_uid for r in rows), *(r.sop_uid for r in rows)})
        facts: dict[str, str] | None = None
        count = 0
        series_no: dict[str, int] = {}
        per_series: dict[str, int] = {}
        for row in rows:
            ds = dcmread(io.BytesIO(archive.blobs.get(row.blob_key)))
            reason = burned_in(ds)
            flagged = None
            if reason is not None:
                flagged = Flagged(uid, row.sop_uid, reason, include_burned_in)
                result.flagged.append(flagged)
                if not include_burned_in:
                    withheld.append({"reason": reason, "series": "", "instance": ""})
                    continue
            deidentify(ds, options, pseudonyms, patient_key=patient_key)
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            if facts is None:
                facts = _facts(ds)
            s = series_no.setdefault(ds.SeriesInstanceUID, len(series_no) + 1)
            per_series[ds.SeriesInstanceUID] = per_series.get(ds.SeriesInstanceUID, 0) + 1
            entry = ZipEntry(
                arcname=f"S{s:04d}/I{per_series[ds.SeriesInstanceUID]:05d}", blob_key="",
                size=0, sop_class_uid=str(ds.SOPClassUID), sop_uid=str(ds.SOPInstanceUID),
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                series_uid=str(ds.SeriesInstanceUID), modality=str(ds.get("Modality", "")),
                series_number=row.series_number, instance_number=row.instance_number,
            )  # fmt: skip
            if flagged is not None:
                flagged.new_sop_uid = entry.sop_uid
                withheld.append(
                    {"reason": reason or "", "series": entry.series_uid, "instance": entry.sop_uid}
                )
            sink.add(facts, entry, buf.getvalue())
            count += 1
        sink.end_study()
        if facts is not None:
            result.studies += 1
            result.instances += count
            studies_out.append(
                {
                    "study": facts["StudyInstanceUID"],
                    "patient": facts["PatientID"],
                    "instances": count,
                }
            )
    result.manifest = {
        "profile": "DICOM PS3.15 E.1 Basic Application Level Confidentiality Profile",
        "options": [n for n in options.selected],
        "method": options.method,
        "table": SOURCE,
        "project": options.project,
        "studies": studies_out,
        "burned_in": {
            "policy": "exported, flagged" if include_burned_in else "withheld",
            "instances": withheld,
        },
    }
    sink.finish(result.manifest)
    if isinstance(sink, StowSink):
        result.stow_failures = sink.failures
    log.info(
        "research export by %s: %d studies, %d instances, %d flagged",
        principal.label, result.studies, result.instances, len(result.flagged),
    )  # fmt: skip
    return result


def _study_rows(archive: Archive, study_uid: str) -> tuple[Any, list[Any]]:
    with archive.db.read() as session:
        head = session.execute(
            select(Study.hospital_pk, Patient.patient_id, Patient.issuer)
            .join(Patient, Study.patient_pk == Patient.pk)
            .where(Study.study_uid == study_uid)
        ).first()
        rows = session.execute(
            select(
                Instance.sop_uid,
                Instance.blob_key,
                Series.series_number,
                Instance.instance_number,
                Series.series_uid,
            )
            .join(Series, Instance.series_pk == Series.pk)
            .join(Study, Series.study_pk == Study.pk)
            .where(Study.study_uid == study_uid)
            .order_by(Series.series_number, Series.pk, Instance.instance_number, Instance.pk)
        ).all()
    return head, list(rows)


def _facts(ds: Any) -> dict[str, str]:
    """The DICOMDIR's study facts, from the de-identified dataset (never the originals)."""

    def get(keyword: str) -> str:
        return str(ds.get(keyword, "") or "")

    return {
        "PatientID": get("PatientID"), "PatientName": get("PatientName"),
        "StudyDate": get("StudyDate"), "StudyTime": get("StudyTime"), "StudyID": get("StudyID"),
        "AccessionNumber": get("AccessionNumber"), "StudyDescription": get("StudyDescription"),
        "StudyInstanceUID": get("StudyInstanceUID"),
    }  # fmt: skip

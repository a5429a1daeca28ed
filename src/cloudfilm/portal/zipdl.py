"""The original DICOM of a study as a zip with a DICOMDIR, streamed.

A study can be 1–2 GB: it is never held in memory. The DICOMDIR (a few hundred bytes per
instance) is built first from the index (no stored file is opened for it), then each stored
file is copied into the zip chunk by chunk as the client reads (ZIP_STORED: pixel data is
either compressed already or not worth the CPU on the download path; ZIP64 when needed).
File IDs follow PS3.10 (``DICOM/S0001/I00001``: upper case, ≤ 8 characters per component).
"""

from __future__ import annotations

import io
import itertools
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select

from cloudfilm.storage.models import Instance, Patient, Series, Study

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
CHUNK = 1024 * 1024


@dataclass
class ZipEntry:
    arcname: str
    blob_key: str
    size: int
    sop_class_uid: str
    sop_uid: str
    transfer_syntax_uid: str
    series_uid: str
    modality: str
    series_number: int | None
    instance_number: int | None


def study_entries(archive: Archive, study_uid: str) -> tuple[list[ZipEntry], dict[str, str]]:
    """The study's instances in series/instance order, with their zip names."""
    with archive.db.read() as session:
        head = session.execute(
            select(Study, Patient)
            .join(Patient, Study.patient_pk == Patient.pk)
            .where(Study.study_uid == study_uid)
        ).first()
        rows = session.execute(
            select(
                Series.series_uid, Instance.blob_key, Instance.size_bytes, Instance.sop_class_uid,
                Instance.sop_uid, Instance.transfer_syntax_uid, Series.modality,
                Series.series_number, Instance.instance_number,
            )
            .join(Series, Instance.series_pk == Series.pk)
            .join(Study, Series.study_pk == Study.pk)
            .where(Study.study_uid == study_uid)
            .order_by(Series.series_number, Series.pk, Instance.instance_number, Instance.pk)
        ).all()  # fmt: skip
    if head is None:
        return [], {}
    study, patient = head
    facts = {
        "PatientID": patient.patient_id,
        "PatientName": patient.name,
        "StudyDate": study.study_date,
        "StudyTime": study.study_time,
        "StudyID": study.study_id,
        "AccessionNumber": study.accession_number,
        "StudyDescription": study.description,
        "StudyInstanceUID": study.study_uid,
    }
    entries: list[ZipEntry] = []
    series_no: dict[str, int] = {}
    counts: dict[str, int] = {}
    for series_uid, key, size, sop_class, sop_uid, ts, modality, s_no, i_no in rows:
        s = series_no.setdefault(series_uid, len(series_no) + 1)
        counts[series_uid] = counts.get(series_uid, 0) + 1
        name = f"DICOM/S{s:04d}/I{counts[series_uid]:05d}"
        entries.append(
            ZipEntry(name, key, size, sop_class, sop_uid, ts, series_uid, modality, s_no, i_no)
        )
    return entries, facts


def _record(kind: str, **values: Any) -> Dataset:
    r = Dataset()
    r.OffsetOfTheNextDirectoryRecord = 0
    r.RecordInUseFlag = 0xFFFF
    r.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    r.DirectoryRecordType = kind
    for k, v in values.items():
        setattr(r, k, v)
    return r


def dicomdir(entries: list[ZipEntry], facts: dict[str, str]) -> bytes:
    """A DICOMDIR (PS3.10 basic directory) for the entries: patient / study / series / image."""
    return dicomdir_of([(facts, entries)])


def dicomdir_of(studies: list[tuple[dict[str, str], list[ZipEntry]]]) -> bytes:
    """A DICOMDIR of several studies (``facts`` as :func:`study_entries` gives them, and their
    entries); studies with the same PatientID share one patient record (the research export
    writes many studies to one zip)."""
    records: list[Dataset] = []
    children: dict[int, list[int]] = {}
    patients: dict[str, int] = {}
    roots: list[int] = []
    for facts, entries in studies:
        if facts["PatientID"] not in patients:
            patients[facts["PatientID"]] = len(records)
            roots.append(len(records))
            children[len(records)] = []
            records.append(
                _record("PATIENT", PatientID=facts["PatientID"], PatientName=facts["PatientName"])
            )
        study = _record(
            "STUDY", StudyDate=facts["StudyDate"], StudyTime=facts["StudyTime"],
            StudyDescription=facts["StudyDescription"],
            StudyInstanceUID=facts["StudyInstanceUID"], StudyID=facts["StudyID"],
            AccessionNumber=facts["AccessionNumber"],
        )  # fmt: skip
        study_index = len(records)
        records.append(study)
        children[patients[facts["PatientID"]]].append(study_index)
        children[study_index] = []
        current_series: str | None = None
        series_index = -1
        for e in entries:
            if e.series_uid != current_series:
                current_series = e.series_uid
                series = _record(
                    "SERIES", Modality=e.modality or "OT", SeriesInstanceUID=e.series_uid,
                    SeriesNumber=e.series_number or 0,
                )  # fmt: skip
                records.append(series)
                series_index = len(records) - 1
                children[study_index].append(series_index)
                children[series_index] = []
            image = _record(
                "IMAGE", ReferencedFileID=e.arcname.split("/"),
                ReferencedSOPClassUIDInFile=e.sop_class_uid,
                ReferencedSOPInstanceUIDInFile=e.sop_uid,
                ReferencedTransferSyntaxUIDInFile=e.transfer_syntax_uid,
                InstanceNumber=e.instance_number or 0,
            )  # fmt: skip
            records.append(image)
            children[series_index].append(len(records) - 1)

    ds = Dataset()
    ds.FileSetID = "CLOUDFILM"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    ds.SpecificCharacterSet = "ISO_IR 192"
    for r in records:
        r.SpecificCharacterSet = "ISO_IR 192"
    ds.DirectoryRecordSequence = Sequence(records)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MEDIA_STORAGE_DIRECTORY
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta

    # Offsets point at each record's position in the file: write once to learn them (all
    # offsets are 4-byte UL values, so filling them in changes no length), then again.
    first = _save(ds)
    tells = [item.seq_item_tell for item in dcmread(io.BytesIO(first)).DirectoryRecordSequence]
    for parent, kids in children.items():
        if kids:
            records[parent].OffsetOfReferencedLowerLevelDirectoryEntity = tells[kids[0]]
        for a, b in itertools.pairwise(kids):
            records[a].OffsetOfTheNextDirectoryRecord = tells[b]
    for a, b in itertools.pairwise(roots):  # the patients, one after the other
        records[a].OffsetOfTheNextDirectoryRecord = tells[b]
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = tells[roots[0]]
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = tells[roots[-1]]
    out = _save(ds)
    assert len(out) == len(first)
    return out


def _save(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class _Sink:
    """A write-only file for ZipFile; whatever was written is taken by ``take()``."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        if data:
            self.parts.append(bytes(data))
            self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        return out


def stream_zip(
    archive: Archive | None,
    entries: list[ZipEntry],
    facts: dict[str, str] | None,
    *,
    directory: bytes | None = None,
    read: Callable[[ZipEntry], Iterator[bytes]] | None = None,
    extra: dict[str, bytes] | None = None,
) -> Iterator[bytes]:
    """Yield the zip in pieces of about a megabyte; only one piece is in memory at a time.

    The research export (keeping/export.py) passes its own ``directory`` (a DICOMDIR of many
    studies), ``read`` (its de-identified files instead of the blobs) and ``extra`` files."""
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as zf:  # type: ignore[arg-type]
        if directory is None:
            directory = dicomdir(entries, facts or {})
        zf.writestr("DICOMDIR", directory)
        yield sink.take()
        for e in entries:
            info = zipfile.ZipInfo(e.arcname, date_time=(2000, 1, 1, 0, 0, 0))
            info.file_size = e.size
            with zf.open(info, "w", force_zip64=e.size > 0x7FFFFFFF) as out:
                assert read is not None or archive is not None
                chunks = read(e) if read is not None else archive.blobs.open_stream(e.blob_key)  # type: ignore[union-attr]
                for chunk in chunks:
                    out.write(chunk)
                    if sink.size >= CHUNK:
                        yield sink.take()
            if sink.size >= CHUNK:
                yield sink.take()
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    yield sink.take()

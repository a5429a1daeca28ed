"""Shared pieces of the demo generator: patients, deterministic UIDs, headers, file writing.

Everything here is deterministic: the same inputs give the same UIDs and the same bytes, so
two runs of the generator can be compared file by file and re-sent to an archive without
creating new instances.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_ROOT_UID, ExplicitVRLittleEndian, generate_uid

from .manifest import SeriesInfo, StudyInfo

#: Mixed into every UID hash, so another generator version can change all UIDs at once.
UID_NAMESPACE = "cloudfilm-demo-v1"


def make_uid(*parts: object) -> str:
    """A deterministic UID under pydicom's root, from a hash of ``parts``.

    pydicom permits its root for generated UIDs; hashing (not counting) keeps UIDs stable
    when series are added or reordered.
    """
    return generate_uid(
        prefix=PYDICOM_ROOT_UID, entropy_srcs=[UID_NAMESPACE, *(str(p) for p in parts)]
    )


@dataclass(frozen=True)
class Patient:
    """A synthetic patient and the hospital context of one study.

    Names are canonical DICOM PN strings: pydicom drops trailing empty component groups on
    write ("A=B=" is stored as "A=B"), so the canonical form is what reads back unchanged.
    """

    name: str
    patient_id: str
    birth_date: str
    sex: str
    age: str
    charset: str  # "" = default repertoire (no SpecificCharacterSet element)
    institution: str
    department: str
    referring: str
    issuer: str


#: Five patients covering the character sets Chinese PACS send: GB18030, GBK, UTF-8, ASCII.
#: 䶮 (U+4DAE) is outside GBK, so a reader that decodes GB18030 as GBK gets it wrong.
PATIENTS: dict[str, Patient] = {
    "ct": Patient(
        "Wang^XiaoDong=王^小东",
        "1000234567",
        "19650312",
        "M",
        "059Y",
        "GB18030",
        "南京市第一医院",
        "放射科",
        "Chen^Jing=陈^静",
        "南京市第一医院",
    ),
    "mr": Patient(
        "Li^XiuYing=李^秀英",
        "3200876543",
        "19720821",
        "F",
        "051Y",
        "GBK",
        "江苏省人民医院",
        "医学影像科",
        "Zhao^Lei=赵^磊",
        "江苏省人民医院",
    ),
    "dx": Patient(
        "Zhang^Wei=张^伟",
        "5100345678",
        "19880105",
        "M",
        "036Y",
        "ISO_IR 192",
        "苏州大学附属第一医院",
        "放射科",
        "Sun^Li=孙^丽",
        "苏州大学附属第一医院",
    ),
    "us": Patient(
        "Smith^John",
        "P00098765",
        "19790630",
        "M",
        "044Y",
        "",
        "Shanghai International Medical Centre",
        "Ultrasound",
        "Wu^Fang",
        "SIMC",
    ),
    "codecs": Patient(
        "Liu^Yan=刘^䶮",
        "2300567890",
        "19930214",
        "F",
        "031Y",
        "GB18030",
        "无锡市人民医院",
        "放射科",
        "Zhou^Min=周^敏",
        "无锡市人民医院",
    ),
}


@dataclass(frozen=True)
class StudySpec:
    """Study-level attributes shared by every instance of a study."""

    key: str
    patient: Patient
    study_uid: str
    accession: str
    study_id: str
    date: str
    time: str
    description: str
    body_part: str


def study_spec(
    key: str,
    accession: str,
    date: str,
    time: str,
    description: str,
    body_part: str,
    uid_key: str | None = None,
) -> StudySpec:
    """Build a StudySpec for one of :data:`PATIENTS`, with a hashed Study Instance UID."""
    return StudySpec(
        key=key,
        patient=PATIENTS[key],
        study_uid=make_uid(uid_key or key, "study"),
        accession=accession,
        study_id=accession[-4:],
        date=date,
        time=time,
        description=description,
        body_part=body_part,
    )


def base_dataset(study: StudySpec, modality: str, sop_class: str) -> Dataset:
    """Patient, study, equipment and SOP common modules shared by all series of a study.

    The devices are named as synthetic so nobody mistakes the data for a real patient's.
    """
    p = study.patient
    ds = Dataset()
    if p.charset:
        ds.SpecificCharacterSet = p.charset
    ds.InstanceCreationDate = study.date
    ds.InstanceCreationTime = study.time
    ds.TimezoneOffsetFromUTC = "+0800"
    ds.SOPClassUID = sop_class
    ds.StudyDate = study.date
    ds.SeriesDate = study.date
    ds.AcquisitionDate = study.date
    ds.ContentDate = study.date
    ds.StudyTime = study.time
    ds.SeriesTime = study.time
    ds.AccessionNumber = study.accession
    ds.Modality = modality
    ds.Manufacturer = "cloudfilm synthetic phantom"
    ds.InstitutionName = p.institution
    ds.ReferringPhysicianName = p.referring
    ds.StationName = f"DEMO{modality}01"
    ds.StudyDescription = study.description
    ds.InstitutionalDepartmentName = p.department
    ds.ManufacturerModelName = f"Synthetic {modality}"
    ds.PatientName = p.name
    ds.PatientID = p.patient_id
    ds.IssuerOfPatientID = p.issuer
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    ds.PatientAge = p.age
    ds.BodyPartExamined = study.body_part
    ds.DeviceSerialNumber = "0000"
    ds.SoftwareVersions = "cloudfilm-demo 1"
    ds.StudyInstanceUID = study.study_uid
    ds.StudyID = study.study_id
    ds.BurnedInAnnotation = "NO"
    return ds


def header_copy(ds: Dataset) -> Dataset:
    """A deep copy of ``ds`` without Pixel Data or file meta.

    Dataset.copy() is shallow: setting an existing attribute on the copy changes the shared
    DataElement, i.e. the original too. Headers are small, so deep copies are cheap.
    """
    pixels = ds.pop(0x7FE00010, None)
    meta = ds.__dict__.pop("file_meta", None)
    try:
        out = copy.deepcopy(ds)
    finally:
        if pixels is not None:
            ds[0x7FE00010] = pixels
        if meta is not None:
            ds.file_meta = meta
    return out


def write_instance(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> int:
    """Write ``ds`` as a Part-10 file with fresh file meta; return the size in bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path.stat().st_size


class SeriesCollector:
    """Collects what was written for one series, then turns it into a :class:`SeriesInfo`."""

    def __init__(
        self,
        template: Dataset,
        root: Path,
        transfer_syntax: str,
        frames: int = 1,
        description: str | None = None,
    ) -> None:
        self.template = template
        self.root = root
        self.transfer_syntax = transfer_syntax
        self.frames = frames
        self.description = description
        self.files: list[str] = []
        self.sop_uids: list[str] = []
        self.bytes = 0

    def add(self, path: Path, sop_uid: str, size: int) -> None:
        """Record one written file."""
        self.files.append(path.relative_to(self.root).as_posix())
        self.sop_uids.append(sop_uid)
        self.bytes += size

    def info(self) -> SeriesInfo:
        """The manifest entry of this series."""
        t = self.template
        iop = t.get("ImageOrientationPatient")
        return SeriesInfo(
            series_uid=t.SeriesInstanceUID,
            series_number=int(t.SeriesNumber),
            modality=t.Modality,
            description=self.description
            if self.description is not None
            else str(t.get("SeriesDescription", "")),
            sop_class_uid=t.SOPClassUID,
            transfer_syntax_uid=self.transfer_syntax,
            photometric_interpretation=t.PhotometricInterpretation,
            rows=int(t.Rows),
            columns=int(t.Columns),
            frames_per_instance=self.frames,
            number_of_instances=len(self.files),
            files=list(self.files),
            sop_instance_uids=list(self.sop_uids),
            image_orientation=[float(v) for v in iop] if iop is not None else None,
            slice_thickness_mm=float(t.SliceThickness) if "SliceThickness" in t else None,
            spacing_between_slices_mm=float(t.SpacingBetweenSlices)
            if "SpacingBetweenSlices" in t
            else None,
        )


def study_info(study: StudySpec, series: list[SeriesInfo]) -> StudyInfo:
    """The manifest entry of a study."""
    p = study.patient
    modalities = sorted({s.modality for s in series})
    return StudyInfo(
        key=study.key,
        patient_name=p.name,
        patient_id=p.patient_id,
        patient_birth_date=p.birth_date,
        patient_sex=p.sex,
        specific_character_set=p.charset,
        institution_name=p.institution,
        referring_physician_name=p.referring,
        study_uid=study.study_uid,
        accession_number=study.accession,
        study_id=study.study_id,
        study_date=study.date,
        study_time=study.time,
        study_description=study.description,
        body_part_examined=study.body_part,
        modalities=modalities,
        number_of_instances=sum(s.number_of_instances for s in series),
        series=series,
    )


def ds_number(value: float) -> str:
    """A DS string (≤ 16 chars) that round-trips ``value`` exactly whenever DS allows.

    Geometry here is built from binary-exact spacings (0.78125, 0.8984375 …), so the
    shortest repr is usually exact and viewers see positions without rounding drift.
    """
    value = float(value) + 0.0  # no "-0"
    text = repr(value)
    if text.endswith(".0"):
        text = text[:-2]
    digits = 15
    while len(text) > 16:  # DS is at most 16 characters: lose the least digits needed
        text = f"{value:.{digits}g}"
        digits -= 1
    return text

"""The manifest of a generated demo data set.

Tests, benchmarks and the viewer checks need to know what was written without re-reading
every file: which studies exist, under which UIDs, where their files are, and, for the CT
phantom, the exact pixel truths (HU of each region, marker positions) they can assert against.
The manifest is written next to the data as ``manifest.json`` and is returned by
:func:`cloudfilm.demo.write_demo`. All file paths are POSIX paths relative to the data set
root, so the folder can be moved or copied as a whole.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


@dataclass
class SeriesInfo:
    """One series as written: enough to find its files and check its geometry."""

    series_uid: str
    series_number: int
    modality: str
    description: str
    sop_class_uid: str
    transfer_syntax_uid: str
    photometric_interpretation: str
    rows: int
    columns: int
    frames_per_instance: int
    number_of_instances: int
    files: list[str]
    sop_instance_uids: list[str]
    image_orientation: list[float] | None = None
    slice_thickness_mm: float | None = None
    spacing_between_slices_mm: float | None = None


@dataclass
class StudyInfo:
    """One study with its patient: what an archive index and a patient portal must show."""

    key: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    specific_character_set: str
    institution_name: str
    referring_physician_name: str
    study_uid: str
    accession_number: str
    study_id: str
    study_date: str
    study_time: str
    study_description: str
    body_part_examined: str
    modalities: list[str]
    number_of_instances: int
    series: list[SeriesInfo]

    @property
    def files(self) -> list[str]:
        """All files of the study, series by series."""
        return [f for s in self.series for f in s.files]


@dataclass
class Region:
    """A region of the CT phantom with an exact HU value.

    A pixel belongs to a region when its centre lies inside the ellipse; regions listed later
    are painted over earlier ones, and the manifest lists them in painting order.
    ``instance_numbers`` is None when the region is on every slice.
    """

    name: str
    hu: int
    center_mm: list[float]
    center_px: list[float]
    semi_axes_mm: list[float]
    instance_numbers: list[int] | None = None
    thick_instance_numbers: list[int] | None = None


@dataclass
class Marker:
    """A bright square marker: a known-distance target for the length tool."""

    row: int
    col: int
    size_px: int
    hu: int
    position_mm: list[float]


@dataclass
class CTPhantom:
    """Ground truth of the CT phantom, for measurement and ROI tests.

    Stored value = HU + 1024 (RescaleSlope 1, RescaleIntercept -1024). Only the air outside the
    body carries noise (``air_noise_sd`` HU); every other region is exactly its HU.
    ``center_px`` is [row, col] of the pixel grid; ``position_mm``/``center_mm`` are patient
    x/y coordinates (LPS) of the same point.
    """

    study_key: str
    series_uid: str
    thick_series_uid: str | None
    rows: int
    columns: int
    pixel_spacing_mm: float
    field_of_view_mm: float
    slice_thickness_mm: float
    thick_slice_thickness_mm: float
    first_slice_z_mm: float
    z_step_mm: float
    rescale_slope: float
    rescale_intercept: float
    window_center: float
    window_width: float
    air_hu: int
    air_noise_sd: float
    regions: list[Region]
    markers: list[Marker]
    marker_distance_mm: float
    marker_distance_px: int

    def region(self, name: str) -> Region:
        """The region called ``name`` (KeyError if absent)."""
        for reg in self.regions:
            if reg.name == name:
                return reg
        raise KeyError(name)


@dataclass
class CodecSample:
    """One transfer-syntax sample in the codec study, written or skipped with the reason."""

    name: str
    transfer_syntax_uid: str
    transfer_syntax_name: str
    status: str
    lossless: bool
    tool: str
    source: str
    reason: str = ""
    file: str | None = None
    reference: str | None = None
    series_uid: str | None = None
    sop_instance_uid: str | None = None
    photometric_interpretation: str | None = None
    bits_stored: int | None = None
    pixel_representation: int | None = None
    frames: int | None = None
    max_abs_error: int | None = None


@dataclass
class PydicomFile:
    """A test file copied from pydicom's wheel."""

    file: str
    source: str
    transfer_syntax_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    sop_instance_uid: str


@dataclass
class DemoManifest:
    """Everything :func:`write_demo` wrote. ``root`` is where it was written (not serialised)."""

    arguments: dict[str, Any]
    studies: list[StudyInfo]
    ct: CTPhantom
    codecs: list[CodecSample] = field(default_factory=list)
    pydicom_files: list[PydicomFile] = field(default_factory=list)
    pydicom_skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    total_files: int = 0
    total_bytes: int = 0
    format_version: int = FORMAT_VERSION
    generator: str = "cloudfilm.demo"
    root: Path | None = field(default=None, compare=False, repr=False)

    def study(self, key: str) -> StudyInfo:
        """The study with ``key`` ("ct", "mr", "dx", "us", "codecs")."""
        for st in self.studies:
            if st.key == key:
                return st
        raise KeyError(key)

    def codec(self, name: str) -> CodecSample:
        """The codec sample called ``name``."""
        for c in self.codecs:
            if c.name == name:
                return c
        raise KeyError(name)

    def relative_files(self) -> list[str]:
        """Every DICOM file written, relative to the root, in a stable order."""
        files = [f for st in self.studies for f in st.files]
        files += [p.file for p in self.pydicom_files]
        return files

    def path(self, relative: str) -> Path:
        """Absolute path of a manifest-relative file."""
        if self.root is None:
            raise ValueError("manifest has no root; use DemoManifest.load(dest)")
        return self.root / relative

    def files(self) -> list[Path]:
        """Absolute paths of every DICOM file written."""
        return [self.path(f) for f in self.relative_files()]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (without ``root``)."""
        data = asdict(self)
        data.pop("root", None)
        return data

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text; Chinese kept as is (not \\u-escaped) so the file is readable."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any], root: Path | None = None) -> DemoManifest:
        """Inverse of :meth:`to_dict`."""
        studies = [
            StudyInfo(**{**s, "series": [SeriesInfo(**x) for x in s["series"]]})
            for s in data["studies"]
        ]
        ctd = dict(data["ct"])
        ct = CTPhantom(
            **{
                **ctd,
                "regions": [Region(**r) for r in ctd["regions"]],
                "markers": [Marker(**m) for m in ctd["markers"]],
            }
        )
        return cls(
            arguments=data["arguments"],
            studies=studies,
            ct=ct,
            codecs=[CodecSample(**c) for c in data.get("codecs", [])],
            pydicom_files=[PydicomFile(**p) for p in data.get("pydicom_files", [])],
            pydicom_skipped=data.get("pydicom_skipped", []),
            notes=data.get("notes", []),
            total_files=data.get("total_files", 0),
            total_bytes=data.get("total_bytes", 0),
            format_version=data.get("format_version", FORMAT_VERSION),
            generator=data.get("generator", "cloudfilm.demo"),
            root=root,
        )

    @classmethod
    def load(cls, dest: Path) -> DemoManifest:
        """Read ``dest/manifest.json`` written by :func:`write_demo`."""
        dest = Path(dest)
        data = json.loads((dest / MANIFEST_NAME).read_text(encoding="utf-8"))
        return cls.from_dict(data, root=dest)

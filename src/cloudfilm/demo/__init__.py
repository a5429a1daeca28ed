"""Demo and test data: a realistic, deterministic synthetic DICOM data set.

``write_demo(dest)`` writes several studies of invented Chinese and Latin-named patients
(GB18030, GBK, UTF-8 and plain ASCII character sets), a CT phantom with exact measurable
truths, an MR head in three planes, a MONOCHROME1 chest DX, an echo with colour and cine,
one instance per transfer syntax, and optionally pydicom's bundled test files, plus a
``manifest.json`` describing all of it (see :class:`DemoManifest`).
"""

from .generate import write_demo
from .manifest import (
    CodecSample,
    CTPhantom,
    DemoManifest,
    Marker,
    PydicomFile,
    Region,
    SeriesInfo,
    StudyInfo,
)

__all__ = [
    "CTPhantom",
    "CodecSample",
    "DemoManifest",
    "Marker",
    "PydicomFile",
    "Region",
    "SeriesInfo",
    "StudyInfo",
    "write_demo",
]

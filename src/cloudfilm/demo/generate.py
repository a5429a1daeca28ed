"""``write_demo``: the whole demo data set in one call.

Layout under ``dest``::

    manifest.json
    ct/S001/I0001.dcm …      thin 1 mm axial CT (GB18030 patient)
    ct/S002/…                5 mm reconstruction of the same volume
    mr/S001…S003/…           T1 axial, T2 sagittal, FLAIR coronal (GBK patient)
    dx/S001/I0001.dcm        MONOCHROME1 PA chest (UTF-8 patient)
    us/S001, S002            RGB colour Doppler still, 24-frame cine (ASCII patient)
    codecs/S0nn/I0001.dcm    one instance per transfer syntax (GB18030 patient)
    pydicom/…                clean test files shipped in pydicom's wheel

Every file ends in ``.dcm``; nothing else but ``manifest.json`` is written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .base import study_spec
from .codec_samples import write_codecs
from .manifest import MANIFEST_NAME, DemoManifest
from .pydicom_files import copy_pydicom_files
from .radiography import write_dx, write_us
from .synthetic import write_ct, write_mr

_OWNED = ("ct", "mr", "dx", "us", "codecs", "pydicom", MANIFEST_NAME)


def write_demo(
    dest: Path,
    *,
    ct_slices: int = 300,
    ct_size: int = 512,
    include_pydicom_files: bool = True,
    include_codecs: bool = True,
) -> DemoManifest:
    """Write the demo data set under ``dest`` and return its manifest.

    Deterministic: the same arguments give the same UIDs and the same file bytes (on the same
    versions of pydicom, dcmtk and OpenJPH). CT-derived UIDs include ``ct_slices`` and
    ``ct_size``, so data sets of different sizes never share a SOP Instance UID with
    different pixels. Folders this function owns are replaced, so a re-run into the same
    ``dest`` leaves no stale files; anything else in ``dest`` is left alone.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in _OWNED:
        target = dest / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    size_key = f"{ct_slices}x{ct_size}"
    ct_study = study_spec(
        "ct",
        "CT202403150012",
        "20240315",
        "091530",
        "胸部CT平扫",
        "CHEST",
        uid_key=f"ct-{size_key}",
    )
    ct = write_ct(dest, ct_study, ct_slices, ct_size)
    mr, mr_bytes = write_mr(
        dest, study_spec("mr", "MR202403160031", "20240316", "143000", "头颅MR平扫", "HEAD")
    )
    dx, dx_src, dx_bytes = write_dx(
        dest, study_spec("dx", "DR202403170105", "20240317", "101500", "胸部正位 DR", "CHEST")
    )
    us, still, cine, us_bytes = write_us(
        dest, study_spec("us", "US202403180007", "20240318", "154500", "ECHOCARDIOGRAPHY", "HEART")
    )
    studies = [ct.study, mr, dx, us]
    total = ct.bytes + mr_bytes + dx_bytes + us_bytes
    notes = [
        "Synthetic data: the patients, hospitals and images are invented; no real person.",
        "Patient names are canonical PN strings: trailing empty component groups are "
        "omitted ('Wang^XiaoDong=王^小东', not 'Wang^XiaoDong=王^小东='), as pydicom writes "
        "and reads them.",
        "CT pixel spacing is 400 mm / ct_size so the two markers are exactly ct_size/4 "
        "pixels = 100 mm apart.",
    ]

    codecs = []
    if include_codecs:
        codec_study = study_spec(
            "codecs",
            "CT202403190088",
            "20240319",
            "083000",
            "编解码样例（传输语法测试）",
            "CHEST",
            uid_key=f"codecs-{size_key}",
        )
        info, codecs, codec_bytes = write_codecs(
            dest,
            codec_study,
            f"codecs-{size_key}",
            ct.sample_hu,
            ct.sample_header,
            dx_src,
            still,
            cine,
        )
        studies.append(info)
        total += codec_bytes
        notes += [f"codec {c.name} skipped: {c.reason}" for c in codecs if c.status != "written"]
        if any(c.name.startswith("htj2k") and c.status == "written" for c in codecs):
            notes.append(
                "HTJ2K samples are unsigned 12-bit: OpenJPH 0.9 encodes signed "
                "16-bit samples in a way OpenJPEG reads back wrong."
            )

    pyd_files, pyd_skipped = [], []
    if include_pydicom_files:
        pyd_files, pyd_skipped = copy_pydicom_files(dest / "pydicom", dest)
        total += sum((dest / p.file).stat().st_size for p in pyd_files)

    manifest = DemoManifest(
        arguments={
            "ct_slices": ct_slices,
            "ct_size": ct_size,
            "include_pydicom_files": include_pydicom_files,
            "include_codecs": include_codecs,
        },
        studies=studies,
        ct=ct.phantom,
        codecs=codecs,
        pydicom_files=pyd_files,
        pydicom_skipped=pyd_skipped,
        notes=notes,
        total_files=sum(s.number_of_instances for s in studies) + len(pyd_files),
        total_bytes=total,
        root=dest,
    )
    (dest / MANIFEST_NAME).write_text(manifest.to_json() + "\n", encoding="utf-8")
    return manifest

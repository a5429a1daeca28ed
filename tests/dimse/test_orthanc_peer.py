"""Orthanc as the C-STORE SCU that sends to cloudfilm: by its REST "store" job and as a C-MOVE
SCP asked by dcmtk's movescu to move studies to CLOUDFILM.

Orthanc picks its own presentation contexts, PDU sizes and association boundaries, unlike
storescu: it opens a new association whenever an instance needs a (SOP class, transfer
syntax) pair the current one lacks, proposes each pair it has seen plus uncompressed
fall-backs, and transcodes only when the receiver refuses the stored syntax. cloudfilm accepts
every syntax, so what arrives must be what Orthanc was given: same instances, same transfer
syntaxes, same data sets, and Chinese names that read back right.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from tests.conftest import ServerProcess, dcmtk, free_port
from tests.dimse.orthanc import Orthanc
from tests.factory import make_dataset, to_bytes

pytestmark = [
    pytest.mark.engines("sqlite"),  # Orthanc as a peer, not the index
    pytest.mark.timeout(180),
]

CT_SLICES = 6
CT_SIZE = 256
"""128 kB of pixels a slice: more than one PDU even at the largest Orthanc sends (128 kB)."""
COMPRESSED = {
    "MR_small_jpeg_ls_lossless.dcm": JPEGLSLossless,
    "GDCMJ2K_TextGBR.dcm": JPEG2000Lossless,
    "693_J2KI.dcm": JPEG2000,
    "SC_rgb_rle.dcm": RLELossless,
    "SC_rgb_jpeg_dcmtk.dcm": JPEGBaseline8Bit,
}
"""pydicom's own files (in the wheel), one SOP Instance UID each; the two SC_rgb files are
one study. rtdose_rle.dcm is left out: gdcmconv wrote all its elements as VR UN, Orthanc 1.10.1
then proposes "31" as its SOP class and the store job fails whatever the receiver does."""
CHINESE = {"GB18030": "Liu^Yan=刘^䶮", "ISO_IR 192": "Wang^XiaoDong=王^小东"}
"""䶮 (CJK extension A) is in GB18030 but not in GBK: rare characters are common in names."""
MOVE_SCU = "MOVESCU"
PIXEL_DATA = 0x7FE00010


@dataclass(frozen=True)
class Sent:
    """One instance as uploaded to Orthanc."""

    label: str
    ds: Dataset
    orthanc_study: str

    @property
    def sop_uid(self) -> str:
        return str(self.ds.SOPInstanceUID)

    @property
    def study_uid(self) -> str:
        return str(self.ds.StudyInstanceUID)

    @property
    def transfer_syntax(self) -> str:
        return str(self.ds.file_meta.TransferSyntaxUID)


def instances_to_send() -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for charset, name in CHINESE.items():
        study, series = generate_uid(), generate_uid()
        slices = CT_SLICES if charset == "GB18030" else 2
        for i in range(slices):
            ds = make_dataset(
                patient_name=name,
                patient_id=f"ORTHANC-{charset.replace(' ', '')}",
                charset=charset,
                study_uid=study,
                series_uid=series,
                instance_number=i + 1,
                size=CT_SIZE,
                fill=i * 10,
                accession=f"ACC-{charset.replace(' ', '')}",
            )
            ds.StudyDescription = "胸部平扫"  # a Chinese text outside the name, too
            out.append((f"{charset} CT slice {i + 1}", to_bytes(ds)))
    for name, ts in COMPRESSED.items():
        path = Path(get_testdata_file(name))  # type: ignore[arg-type]
        data = path.read_bytes()
        assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == ts
        out.append((name, data))
    return out


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """One Orthanc for the module. It knows cloudfilm as a modality (re-pointed at each
    test's server) and movescu's calling AE, which may ask it to move."""
    o = Orthanc(
        work_dir=tmp_path_factory.mktemp("orthanc"),
        modalities={
            "cloudfilm": {"AET": "CLOUDFILM", "Host": "127.0.0.1", "Port": free_port()},
            "movescu": {"AET": MOVE_SCU, "Host": "127.0.0.1", "Port": free_port()},
        },
    )
    try:
        o.start()
        yield o
    finally:
        o.stop()


@pytest.fixture(scope="module")
def sent(orthanc: Orthanc) -> list[Sent]:
    out = []
    for label, data in instances_to_send():
        answer = orthanc.upload(data)
        ds = pydicom.dcmread(io.BytesIO(data))
        out.append(Sent(label, ds, answer["ParentStudy"]))
    assert len({s.sop_uid for s in out}) == len(out)
    return out


@pytest.fixture
def cloudfilm(server_factory: Any, orthanc: Orthanc) -> ServerProcess:
    server: ServerProcess = server_factory()
    server.start()
    orthanc.set_modality("cloudfilm", server.ae_title, "127.0.0.1", server.dicom_port)
    return server


def find(server: ServerProcess, *keys: str) -> list[Dataset]:
    """Study-root C-FIND by dcmtk's findscu, every response written to a file and read back."""
    out = server.data_dir.parent / f"find-{free_port()}"
    out.mkdir()
    args = ["findscu", "-S", "-aec", server.ae_title, "-X", "-od", str(out)]
    for k in keys:
        args += ["-k", k]
    proc = dcmtk(*args, "127.0.0.1", str(server.dicom_port))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def c_get(server: ServerProcess, sent: list[Sent]) -> dict[str, Dataset]:
    """Fetch every study back over one association (pynetdicom as C-GET SCU), offering each
    stored syntax in a context of its own so that cloudfilm can send what it holds as is."""
    ae = AE(ae_title="GETSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class, ts in sorted(
        {
            (str(s.ds.SOPClassUID), t)
            for s in sent
            for t in (s.transfer_syntax, ExplicitVRLittleEndian)
        }
    ):
        ae.add_requested_context(sop_class, ts)
    roles = [build_role(c, scp_role=True) for c in sorted({str(s.ds.SOPClassUID) for s in sent})]
    received: dict[str, Dataset] = {}

    def on_store(event: evt.Event) -> int:
        ds = pydicom.dcmread(io.BytesIO(event.encoded_dataset(include_meta=True)))
        received[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1",
        server.dicom_port,
        ae_title=server.ae_title,
        ext_neg=roles,  # type: ignore[arg-type]
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established, "cloudfilm refused the C-GET association"
    try:
        for study in sorted({s.study_uid for s in sent}):
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = study
            statuses = [
                int(status.Status)
                for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
                if status
            ]
            assert statuses and statuses[-1] == 0x0000, f"C-GET {study}: {statuses}"
    finally:
        assoc.release()
    return received


def differences(sent: Dataset, got: Dataset) -> list[str]:
    """Every element outside the file meta (group 0002) that is missing, extra or changed.

    Not compared: group lengths (gggg,0000) and Data Set Trailing Padding (FFFC,FFFC), which
    DCMTK inside Orthanc recalculates or drops when it sends (PS3.5 7.2 and PS3.10 7.2 let any
    writer do so; 693_J2KI.dcm carries wrong ones), and the VR of encapsulated Pixel Data,
    which must be OB (PS3.5 A.4) and which DCMTK corrects where a file says OW.
    """

    def compared(ds: Dataset) -> set[BaseTag]:
        return {
            e.tag for e in ds if e.tag.group != 2 and e.tag.element != 0 and e.tag != 0xFFFCFFFC
        }

    out = []
    for tag in sorted(compared(sent) | compared(got)):
        a, b = sent.get(tag), got.get(tag)
        if a is None or b is None:
            out.append(f"{tag} {(a or b).keyword}: sent {a!r:.100}, got {b!r:.100}")  # type: ignore[union-attr]
        elif tag == PIXEL_DATA and a.value == b.value:
            continue
        elif a != b:
            out.append(f"{tag} {a.keyword}: sent {a!r:.100}, got {b!r:.100}")
    return out


def assert_cloudfilm_holds(server: ServerProcess, sent: list[Sent]) -> None:
    by_study: dict[str, list[Sent]] = {}
    for s in sent:
        by_study.setdefault(s.study_uid, []).append(s)
    studies = find(
        server,
        "QueryRetrieveLevel=STUDY",
        "SpecificCharacterSet=ISO_IR 192",
        "StudyInstanceUID",
        "PatientName",
        "PatientID",
        "StudyDescription",
        "NumberOfStudyRelatedInstances",
    )
    found = {str(d.StudyInstanceUID): d for d in studies}
    assert set(found) == set(by_study)
    for uid, items in by_study.items():
        rsp, first = found[uid], items[0].ds
        assert int(rsp.NumberOfStudyRelatedInstances) == len(items), uid
        for key in ("PatientName", "PatientID", "StudyDescription"):  # GDCMJ2K_TextGBR: none
            assert str(rsp.get(key) or "") == str(first.get(key) or ""), (uid, key)

    # the ideographic family name finds its patient, whichever character set it came in
    for charset, name in CHINESE.items():
        family = name.split("=")[1].split("^")[0]
        hits = find(
            server,
            "QueryRetrieveLevel=STUDY",
            "SpecificCharacterSet=ISO_IR 192",
            f"PatientName={family}*",
            "StudyInstanceUID",
        )
        assert [str(h.PatientName) for h in hits] == [name], charset
        expected = {s.study_uid for s in sent if str(s.ds.get("PatientName")) == name}
        assert {str(h.StudyInstanceUID) for h in hits} == expected

    got = c_get(server, sent)
    assert set(got) == {s.sop_uid for s in sent}
    changed = {}
    for s in sent:
        ds = got[s.sop_uid]
        # Orthanc sent the stored syntax (cloudfilm accepted it), and cloudfilm kept it
        assert ds.file_meta.TransferSyntaxUID == s.transfer_syntax, s.label
        assert ds.PixelData == s.ds.PixelData, s.label
        if d := differences(s.ds, ds):
            changed[s.label] = d
    assert changed == {}


def test_orthanc_store_job_sends_every_study(
    cloudfilm: ServerProcess, orthanc: Orthanc, sent: list[Sent]
) -> None:
    """REST POST /modalities/cloudfilm/store of all studies: one job, several associations."""
    job = orthanc.store("cloudfilm", sorted({s.orthanc_study for s in sent}))
    assert job["InstancesCount"] == len(sent), job
    assert job["FailedInstancesCount"] == 0, job
    assert_cloudfilm_holds(cloudfilm, sent)


def test_orthanc_moves_studies_to_cloudfilm(
    cloudfilm: ServerProcess, orthanc: Orthanc, sent: list[Sent]
) -> None:
    """movescu asks Orthanc to move each study to CLOUDFILM; Orthanc opens the association
    to cloudfilm itself (movescu needs no port: the destination is a third AE)."""
    for study in sorted({s.study_uid for s in sent}):
        proc = dcmtk(
            "movescu", "-v", "-S", "-aet", MOVE_SCU, "-aec", orthanc.ae_title,
            "-aem", cloudfilm.ae_title,
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
            "127.0.0.1", str(orthanc.dicom_port),
        )  # fmt: skip
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output
        assert "Received Final Move Response (Success)" in output, output + orthanc.log()[-3000:]
    assert_cloudfilm_holds(cloudfilm, sent)

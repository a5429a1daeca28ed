"""The de-identified research export (keeping/deid.py, export.py, export_api.py).

Checked against PS3.15 Table E.1-1 itself (the generated ``deid_table``): an instance carrying
every attribute of the table that a data set can hold comes out with none of their original
values, attribute by attribute as the profile's action says; its pixel data is the same bytes;
private attributes are gone; a patient gets the same pseudonym and the same replacement UIDs
in every export; burned-in annotation is flagged, not passed silently; and a study goes by
STOW-RS from one real serve to another.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import select

from cloudfilm.access import Principal
from cloudfilm.access.tokens import create_token
from cloudfilm.archive import Archive
from cloudfilm.keeping.deid import Options, resolve
from cloudfilm.keeping.deid_table import TABLE
from cloudfilm.keeping.export import ZipSink, export
from cloudfilm.keeping.models import DeidMapping
from cloudfilm.storage.database import Database
from tests.conftest import ServerProcess, free_port
from tests.dicomweb.conftest import stow
from tests.factory import make_dataset, to_bytes

pytestmark = pytest.mark.engines("postgresql")  # the export's contents, not the index

ADMIN = Principal(kind="user", id="admin:test", scopes=frozenset({"admin"}), hospital=1)
SKIP_GROUPS = {0x0000, 0x0002, 0x0004, 0xFFFA, 0xFFFC}
"""Command, file meta, DICOMDIR and signature/padding elements are not data set attributes."""
KEEP_VALID = {0x0020000D, 0x0020000E, 0x00080018}
"""The instance's own UIDs stay valid originals (they are checked like the others)."""


def _value(vr: str, n: int) -> Any:
    text = f"SECRET{n}"
    return {
        "PN": f"Secret^Person{n}", "DA": "20010203", "TM": "101112", "DT": "20010203101112",
        "AS": "045Y", "UI": f"1.2.826.0.1.3680043.10.999.{n}", "IS": "7", "DS": "7.5",
        "US": 7, "SS": 7, "UL": 7, "SL": 7, "UV": 7, "SV": 7, "FL": 7.5, "FD": 7.5,
        "AT": 0x00100010, "OB": b"SECRET" * 2, "OW": b"SECRET" * 2, "UN": b"SECRET" * 2,
        "OF": b"SECRETSE", "OD": b"SECRETSE", "OL": b"SECRETSE", "OV": b"SECRETSE",
        "UR": f"http://secret.example/{n}", "CS": "SECRET", "AE": text,
    }.get(vr, text)  # fmt: skip


def _nested(n: int) -> Sequence:
    item = Dataset()
    item.PatientName = f"Nested^Secret{n}"
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.10.998.{n}"
    return Sequence([item])


def full_instance(**kw: Any) -> tuple[bytes, dict[int, Any]]:
    """A CT instance with every attribute of Table E.1-1 a data set can hold, each with a
    value of its own, and a private block. Returns the bytes and the values given."""
    ds = make_dataset(**kw)
    given: dict[int, Any] = {}
    for n, tag in enumerate(sorted(TABLE)):
        if tag >> 16 in SKIP_GROUPS:
            continue
        vr = dictionary_VR(tag).split(" or ")[0]
        if tag in KEEP_VALID:
            given[tag] = ds[tag].value
            continue
        value = _nested(n) if vr == "SQ" else _value(vr, n)
        ds.add_new(tag, vr, value)
        given[tag] = value
    block = ds.private_block(0x0009, "ACME SECRETS", create=True)
    block.add_new(0x01, "LO", "private secret")
    return to_bytes(ds), given


def _export(archive: Archive, uids: list[str], options: Options, tmp: Path, **kw: Any) -> tuple[
    list[Dataset], dict[str, Any], Any
]:  # fmt: skip
    out = tmp / f"export-{len(list(tmp.glob('*.zip')))}.zip"
    result = export(archive, ADMIN, uids, options, ZipSink(out), **kw)
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert "DICOMDIR" in names and "MANIFEST.json" in names
        pydicom.dcmread(io.BytesIO(zf.read("DICOMDIR")))  # a readable directory
        manifest = json.loads(zf.read("MANIFEST.json"))
        files = [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in names if n.startswith("DICOM/")]
    return files, manifest, result


def _empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, Sequence) and len(value) == 0)


@pytest.mark.parametrize(
    "options",
    [Options(), Options(modified_dates=True, clean_descriptors=True)],
    ids=["basic", "modified-dates+clean-descriptors"],
)
def test_no_identifying_attribute_of_table_e11_survives(
    archive: Archive, tmp_path: Path, options: Options
) -> None:
    raw, given = full_instance(patient_id="DEID-1", patient_name="王^小东", charset="ISO_IR 192")
    original = pydicom.dcmread(io.BytesIO(raw))
    assert archive.ingest(raw, hospital=1).outcome == "stored"
    (out,), manifest, _result = _export(archive, [original.StudyInstanceUID], options, tmp_path)
    assert manifest["options"] == list(options.selected)
    checked = 0
    for tag, value in given.items():
        name, basic, columns = TABLE[tag]
        action = next((columns[o] for o in options.selected if o in columns), basic)
        what = resolve(action, dictionary_VR(tag))
        elem = out.get(tag)
        got = None if elem is None else elem.value
        if what == "X":
            assert elem is None, f"{name} ({tag:08X}) must be removed"
        elif what == "Z" and tag not in (0x00100010, 0x00100020, 0x00080050):
            assert elem is not None and _empty(got), f"{name} must be empty, is {got!r}"
        elif what == "U":
            assert got != value and str(got).startswith("2.25."), f"{name}: {got!r}"
        elif what == "U*":
            assert got[0].ReferencedSOPInstanceUID != value[0].ReferencedSOPInstanceUID
        elif what == "C" and elem is not None and dictionary_VR(tag) in ("DA", "DT"):
            assert got and got != value, f"{name}: a modified date, not {got!r}"
        if got is not None and not isinstance(got, Sequence) and what != "C":
            assert got != value, f"{name} ({tag:08X}) kept its value {got!r}"
            assert "SECRET" not in str(got).upper(), f"{name}: {got!r}"
        if what == "C" and got is not None and not isinstance(got, Sequence):
            for secret in ("DEID-1", "王小东", "小东"):  # cleaned: what named the patient goes
                assert secret not in str(got), f"{name}: {got!r}"
        if isinstance(got, Sequence):
            for item in got:
                assert "Secret" not in str(item.get("PatientName", "")), f"{name}: nested name"
        checked += 1
    assert checked > 500  # nearly every attribute of the table was in the instance
    assert out.PatientID != "DEID-1" and str(out.PatientName) == out.PatientID
    assert out.PixelData == original.PixelData  # bit for bit
    assert not [e for e in out.iterall() if e.tag.is_private]
    assert out.PatientIdentityRemoved == "YES"
    codes = [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert codes[0] == "113100"
    if options.modified_dates:
        assert "113107" in codes and out.LongitudinalTemporalInformationModified == "MODIFIED"
        assert out.StudyDate != original.StudyDate and len(out.StudyDate) == 8
    if options.clean_descriptors:
        assert "113105" in codes
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert "SourceApplicationEntityTitle" not in out.file_meta


def test_clean_descriptors_keep_the_meaning_and_drop_the_names(
    archive: Archive, tmp_path: Path
) -> None:
    ds = make_dataset(
        patient_id="ZY778899", patient_name="Wang^XiaoDong=王^小东", charset="ISO_IR 192"
    )
    ds.StudyDescription = "胸部CT 王小东 ZY778899 复查 2024-03-05"
    ds.SeriesDescription = "Chest 5mm XiaoDong"
    assert archive.ingest(to_bytes(ds), hospital=1).outcome == "stored"
    options = Options(modified_dates=True, clean_descriptors=True)
    (out,), _m, _r = _export(archive, [ds.StudyInstanceUID], options, tmp_path)
    assert out.StudyDescription.startswith("胸部CT") and "复查" in out.StudyDescription
    for secret in ("王小东", "ZY778899", "2024-03-05"):
        assert secret not in out.StudyDescription
    assert "Chest 5mm" in out.SeriesDescription and "XiaoDong" not in out.SeriesDescription
    (basic,), _m, _r = _export(archive, [ds.StudyInstanceUID], Options(), tmp_path)
    assert "StudyDescription" not in basic  # without the option the descriptors go


def test_same_patient_same_pseudonym_and_uids_across_exports(
    archive: Archive, tmp_path: Path
) -> None:
    first = make_dataset(patient_id="SAME-1", study_date="20200101")
    second = make_dataset(patient_id="SAME-1", study_date="20200301")
    other = make_dataset(patient_id="OTHER-1")
    for ds in (first, second, other):
        assert archive.ingest(to_bytes(ds), hospital=1).outcome == "stored"
    options = Options(modified_dates=True)
    (a,), _m, _r = _export(archive, [first.StudyInstanceUID], options, tmp_path)
    (b,), _m, _r = _export(archive, [second.StudyInstanceUID], options, tmp_path)
    (c,), _m, _r = _export(archive, [other.StudyInstanceUID], options, tmp_path)
    (again,), _m, _r = _export(archive, [first.StudyInstanceUID], options, tmp_path)
    assert a.PatientID == b.PatientID == again.PatientID != c.PatientID
    assert a.PatientID not in ("SAME-1", "OTHER-1")
    assert (again.StudyInstanceUID, again.SeriesInstanceUID, again.SOPInstanceUID) == (
        a.StudyInstanceUID, a.SeriesInstanceUID, a.SOPInstanceUID,
    )  # fmt: skip
    assert a.StudyInstanceUID != first.StudyInstanceUID
    assert a.AccessionNumber == again.AccessionNumber != first.AccessionNumber
    # the same shift for the patient: the two months between the studies survive
    from datetime import datetime

    def day(x: str) -> datetime:
        return datetime.strptime(x, "%Y%m%d")

    assert (day(b.StudyDate) - day(a.StudyDate)).days == 60
    (p,), _m, _r = _export(archive, [first.StudyInstanceUID], Options(project="p2"), tmp_path)
    assert p.PatientID != a.PatientID  # another project cannot join the two data sets
    with archive.db.read() as session:
        rows = list(session.execute(select(DeidMapping)).scalars())
    kept = {r.original_key for r in rows} | {r.replacement for r in rows}
    for original in ("SAME-1", "OTHER-1", first.StudyInstanceUID, first.SOPInstanceUID):
        assert original not in kept  # keyed by an HMAC: the table holds no original


def test_burned_in_annotation_is_flagged_not_passed(archive: Archive, tmp_path: Path) -> None:
    us = make_dataset(patient_id="US-1", modality="US")
    us.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    us.file_meta.MediaStorageSOPClassUID = us.SOPClassUID
    ct = make_dataset(patient_id="US-1", study_uid=us.StudyInstanceUID)
    ct.BurnedInAnnotation = "YES"
    clean = make_dataset(patient_id="US-1", study_uid=us.StudyInstanceUID)
    clean.BurnedInAnnotation = "NO"
    for ds in (us, ct, clean):
        assert archive.ingest(to_bytes(ds), hospital=1).outcome == "stored"
    files, manifest, result = _export(archive, [us.StudyInstanceUID], Options(), tmp_path)
    assert len(files) == 1 and files[0].BurnedInAnnotation == "NO"
    assert {f.sop_uid for f in result.flagged} == {us.SOPInstanceUID, ct.SOPInstanceUID}
    assert manifest["burned_in"]["policy"] == "withheld"
    assert len(manifest["burned_in"]["instances"]) == 2
    assert us.SOPInstanceUID not in json.dumps(manifest)  # the manifest names no original
    files, manifest, result = _export(
        archive, [us.StudyInstanceUID], Options(), tmp_path, include_burned_in=True
    )
    assert len(files) == 3
    listed = {i["instance"] for i in manifest["burned_in"]["instances"]}
    assert listed == {f.new_sop_uid for f in result.flagged} and len(listed) == 2


def test_export_api_zip_and_stow_to_a_second_serve(tmp_path: Path, database_url: str) -> None:
    target = ServerProcess(
        data_dir=tmp_path / "b" / "data",
        database_url=f"sqlite:///{tmp_path / 'b' / 'index.sqlite3'}",
    )
    (tmp_path / "b").mkdir()
    target.start()
    port = free_port()
    root_b = f"{target.http_url}/dicom-web"
    source = ServerProcess(
        data_dir=tmp_path / "a" / "data", database_url=database_url, http_port=port,
        env_extra={"CLOUDFILM_EXPORT_STOW_TARGETS": json.dumps([root_b])},
    )  # fmt: skip
    source.start()
    try:
        tokens = {}
        for server, scope in ((source, "admin"), (source, "read"), (target, "read,write")):
            db = Database(server.database_url)
            tokens[(server.http_port, scope)] = create_token(db, scope, scope, hospital=1)[1]
            db.dispose()
        ds = make_dataset(patient_id="RESEARCH-1", patient_name="Li^Si", size=32, fill=5)
        admin = {"Authorization": f"Bearer {tokens[(port, 'admin')]}"}
        with httpx.Client(base_url=source.http_url, timeout=120) as http:
            assert stow(http, [to_bytes(ds)], **admin).status_code == 200
            body = {"study_uids": [ds.StudyInstanceUID], "modified_dates": True}
            read_only = {"Authorization": f"Bearer {tokens[(port, 'read')]}"}
            assert http.post("/api/export", json=body, headers=read_only).status_code == 403
            elsewhere = {**body, "stow_url": "http://127.0.0.1:9/dicom-web"}
            assert http.post("/api/export", json=elsewhere, headers=admin).status_code == 403
            z = http.post("/api/export", json={"query": {"PatientID": "RESEARCH-1"}}, headers=admin)
            assert z.status_code == 200 and z.headers["x-export-instances"] == "1"
            with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
                (name,) = [n for n in zf.namelist() if n.startswith("DICOM/")]
                zipped = pydicom.dcmread(io.BytesIO(zf.read(name)))
            assert zipped.PatientID != "RESEARCH-1" and zipped.PixelData == ds.PixelData
            sent = http.post(
                "/api/export",
                json={
                    **body,
                    "stow_url": root_b,
                    "stow_token": tokens[(target.http_port, "read,write")],
                },
                headers=admin,
            )
            assert sent.status_code == 200, sent.text
            assert sent.json()["studies"] == 1 and sent.json()["stow_failures"] == []
        b_auth = {"Authorization": f"Bearer {tokens[(target.http_port, 'read,write')]}"}
        with httpx.Client(base_url=target.http_url, headers=b_auth, timeout=60) as http:
            assert http.get("/dicom-web/studies", params={"PatientID": "RESEARCH-1"}).json() == []
            found = http.get("/dicom-web/studies").json()
            assert len(found) == 1
            study = found[0]["0020000D"]["Value"][0]
            assert study != ds.StudyInstanceUID
            assert found[0]["00100020"]["Value"] == [zipped.PatientID]  # the same pseudonym
            r = http.get(
                f"/dicom-web/studies/{study}",
                headers={"Accept": 'multipart/related; type="application/dicom"'},
            )
            assert r.status_code == 200
            assert ds.PixelData in r.content and b"RESEARCH-1" not in r.content
    finally:
        source.stop()
        target.stop()

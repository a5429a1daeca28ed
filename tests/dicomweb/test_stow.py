"""STOW-RS: what a sender sees for good, bad, mixed, oversized and unauthorised uploads."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from tests.dicomweb.conftest import BOUNDARY, DicomWeb, multipart_body, start_server, stow
from tests.factory import make_dataset, make_instance, to_bytes

CTYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def _seq(body: dict, tag: str) -> list[dict]:
    return body.get(tag, {}).get("Value", [])


def _uid(item: dict, tag: str) -> str:
    return item[tag]["Value"][0]


def test_dicomweb_client_stores_and_finds(dw: DicomWeb) -> None:
    study = generate_uid()
    datasets = [make_dataset(study_uid=study, instance_number=i, fill=i) for i in (1, 2, 3)]
    result = dw.client("write").store_instances(datasets)
    stored = {item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence}
    assert stored == {ds.SOPInstanceUID for ds in datasets}
    assert "FailedSOPSequence" not in result
    found = dw.client().search_for_instances(study)
    assert {i["00080018"]["Value"][0] for i in found} == stored


def test_bad_part_fails_alone(dw: DicomWeb) -> None:
    study = generate_uid()
    good1 = make_instance(study_uid=study, instance_number=1)
    good2 = make_instance(study_uid=study, instance_number=2)
    truncated_ds = make_dataset(study_uid=study, instance_number=3)
    truncated = to_bytes(truncated_ds)[:-100]
    with dw.http("write") as http:
        r = stow(http, [good1, b"this is not DICOM at all" * 10, truncated, good2])
    assert r.status_code == 202
    assert r.headers["content-type"] == "application/dicom+json"
    body = r.json()
    assert len(_seq(body, "00081199")) == 2
    failed = _seq(body, "00081198")
    assert len(failed) == 2
    reasons = {f["00081197"]["Value"][0] for f in failed}
    assert reasons == {0xC001, 0xC002}  # not DICOM, truncated
    assert truncated_ds.SOPInstanceUID in {f["00081155"].get("Value", [""])[0] for f in failed}
    assert len(dw.client().search_for_instances(study)) == 2


def test_all_parts_bad_is_409(dw: DicomWeb) -> None:
    with dw.http("write") as http:
        r = stow(http, [b"junk" * 50])
    assert r.status_code == 409
    assert len(_seq(r.json(), "00081198")) == 1


def test_instance_of_another_study_is_refused(dw: DicomWeb) -> None:
    target, other = generate_uid(), generate_uid()
    ok = make_instance(study_uid=target)
    wrong = make_instance(study_uid=other)
    with dw.http("write") as http:
        r = stow(http, [ok, wrong], study=target)
    assert r.status_code == 202
    [failed] = _seq(r.json(), "00081198")
    assert failed["00081197"]["Value"][0] == 0xA901
    assert dw.client().search_for_studies(search_filters={"StudyInstanceUID": other}) == []


def test_resend_same_and_different_bytes(dw: DicomWeb) -> None:
    sop, study = generate_uid(), generate_uid()
    first = make_instance(sop_uid=sop, study_uid=study, fill=1)
    second = make_instance(sop_uid=sop, study_uid=study, fill=2)
    with dw.http("write") as http:
        assert stow(http, [first]).status_code == 200
        assert stow(http, [first]).status_code == 200  # idempotent re-send
        r = stow(http, [second])
        assert r.status_code == 202  # kept the first copy: a warning, not a silent success
        [item] = _seq(r.json(), "00081199")
        assert "00081196" in item  # WarningReason
    with dw.http() as http:
        r = http.get(
            f"/dicom-web/studies/{study}/series/{pydicom.dcmread(io.BytesIO(first)).SeriesInstanceUID}"
            f"/instances/{sop}",
            headers={"Accept": "application/dicom; transfer-syntax=*"},
        )
    assert r.content == first


def test_wrong_content_types_are_415(dw: DicomWeb) -> None:
    data = make_instance()
    with dw.http("write") as http:
        r = http.post(
            "/dicom-web/studies", content=data, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 415
        assert r.headers["content-type"] == "application/problem+json"
        r = http.post(
            "/dicom-web/studies",
            content=multipart_body([data], "application/dicom+json"),
            headers={
                "Content-Type": f'multipart/related; type="application/dicom+json"; '
                f"boundary={BOUNDARY}"
            },
        )
        assert r.status_code == 415
        r = http.post("/dicom-web/studies", content=data)
        assert r.status_code == 415


def test_malformed_multipart_is_400(dw: DicomWeb) -> None:
    with dw.http("write") as http:
        for body in (b"no boundary anywhere", b""):
            r = http.post(
                "/dicom-web/studies",
                content=body,
                headers={
                    "Content-Type": f'multipart/related; type="application/dicom"; '
                    f"boundary={BOUNDARY}"
                },
            )
            assert r.status_code == 400, body
            assert r.json()["status"] == 400


def test_store_needs_a_write_token(dw: DicomWeb) -> None:
    data = make_instance()
    with dw.http(None) as anon:
        r = stow(anon, [data])
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
    with dw.http("read") as reader:
        r = stow(reader, [data])
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
    with pytest.raises(requests.HTTPError) as exc:
        dw.client("read").store_instances([make_dataset()])
    assert exc.value.response.status_code == 403


@pytest.fixture
def small_limit_server(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    dw = start_server(tmp_path, database_url, CLOUDFILM_MAX_INSTANCE_BYTES="4000")
    yield dw
    dw.server.stop()


def test_oversize_upload_is_413(small_limit_server: DicomWeb) -> None:
    small = make_instance(size=8)
    big = make_instance(size=128)  # 32 KiB of pixels
    assert len(small) < 4000 < len(big)
    with small_limit_server.http("write") as http:
        r = stow(http, [big])
        assert r.status_code == 413
        r = stow(http, [small, big])
        assert r.status_code == 202
        [failed] = _seq(r.json(), "00081198")
        assert failed["00081197"]["Value"][0] == 0xA700
        assert _uid(failed, "00081155") == pydicom.dcmread(io.BytesIO(big)).SOPInstanceUID


@pytest.mark.parametrize("encoding", ["gzip", "zstd", "br", "deflate"])
def test_a_compressed_body_is_stored_as_the_original_bytes(dw: DicomWeb, encoding: str) -> None:
    """The edge gateway compresses its uploads: the archive keeps what the modality sent, and
    names the SHA-256 it holds (private (0009,1001)) so the sender may delete its copy."""
    import hashlib
    import zlib

    import brotli
    import zstandard

    study = generate_uid()
    parts = [make_instance(study_uid=study, instance_number=i, size=64) for i in (1, 2)]
    body = multipart_body(parts)
    packed = {
        "gzip": lambda b: zlib.compress(b, wbits=31),
        "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
        "br": brotli.compress,
        "deflate": zlib.compress,
    }[encoding](body)
    with dw.http("write") as http:
        r = http.post(
            "/dicom-web/studies",
            content=packed,
            headers={
                "Content-Type": CTYPE,
                "Content-Encoding": encoding,
                "Accept": "application/dicom+json",
            },
        )
    assert r.status_code == 200, r.text
    held = {_uid(item, "00081155"): _uid(item, "00091001") for item in _seq(r.json(), "00081199")}
    assert _uid(_seq(r.json(), "00081199")[0], "00090010") == "CLOUDFILM 1.0"
    for data in parts:
        sop = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
        assert held[sop] == hashlib.sha256(data).hexdigest()
    first = pydicom.dcmread(io.BytesIO(parts[0]))
    with dw.http("read") as http:
        got = http.get(
            f"/dicom-web/studies/{study}/series/{first.SeriesInstanceUID}"
            f"/instances/{first.SOPInstanceUID}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
    assert got.status_code == 200
    assert parts[0] in got.content  # the original bytes, not a re-encoding


def test_an_unknown_or_broken_encoding_changes_nothing(dw: DicomWeb) -> None:
    study = generate_uid()
    body = multipart_body([make_instance(study_uid=study)])
    ctype = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    with dw.http("write") as http:
        unknown = http.post(
            "/dicom-web/studies",
            content=body,
            headers={"Content-Type": ctype, "Content-Encoding": "compress"},
        )
        broken = http.post(
            "/dicom-web/studies",
            content=b"\x28\xb5\x2f\xfd" + body[:100],
            headers={"Content-Type": ctype, "Content-Encoding": "zstd"},
        )
    assert unknown.status_code == 415
    assert unknown.headers["content-type"].startswith("application/problem+json")
    assert broken.status_code == 400
    assert dw.client().search_for_instances(study) == []

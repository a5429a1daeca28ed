"""WADO-RS: instances, metadata and frames in every stored transfer syntax, with transcoding."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_frames

from cloudfilm.demo import CodecSample, DemoManifest
from tests.dicomweb.conftest import DicomWeb
from tests.dicomweb.helpers import decode_frame, frame_of, part_syntax, parts, read

pytestmark = pytest.mark.engines("sqlite")  # pixel and byte serving, not the index

ELE = "1.2.840.10008.1.2.1"
DICOM_AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
OCTET_AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def _written(demo: DemoManifest) -> list[CodecSample]:
    return [c for c in demo.codecs if c.status == "written"]


def _path(demo: DemoManifest, c: CodecSample) -> str:
    study = demo.study("codecs").study_uid
    return f"/dicom-web/studies/{study}/series/{c.series_uid}/instances/{c.sop_instance_uid}"


def _original(demo: DemoManifest, c: CodecSample) -> bytes:
    assert demo.root is not None and c.file
    return (demo.root / c.file).read_bytes()


def test_retrieve_study_series_instance_with_dicomweb_client(
    dw: DicomWeb, demo: DemoManifest
) -> None:
    client = dw.client()
    mr = demo.study("mr")
    study = client.retrieve_study(mr.study_uid)
    assert {ds.SOPInstanceUID for ds in study} == {
        uid for s in mr.series for uid in s.sop_instance_uids
    }
    assert str(study[0].PatientName) == mr.patient_name
    series = mr.series[1]
    got = client.retrieve_series(mr.study_uid, series.series_uid)
    assert [ds.SOPInstanceUID for ds in got] == series.sop_instance_uids  # in instance order
    one = client.retrieve_instance(mr.study_uid, series.series_uid, series.sop_instance_uids[3])
    assert demo.root is not None
    original = pydicom.dcmread(demo.root / series.files[3])
    assert np.array_equal(one.pixel_array, original.pixel_array)


def test_originals_come_back_byte_for_byte(dw: DicomWeb, demo: DemoManifest) -> None:
    with dw.http() as http:
        for c in _written(demo):
            r = http.get(
                _path(demo, c),
                headers={
                    "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'
                },
            )
            assert r.status_code == 200, c.name
            [(headers, body)] = parts(r)
            assert body == _original(demo, c), c.name
            assert part_syntax(headers) == c.transfer_syntax_uid
            assert headers["content-location"].endswith(c.sop_instance_uid)


def test_default_retrieval_is_explicit_vr_little_endian(dw: DicomWeb, demo: DemoManifest) -> None:
    """No transfer-syntax parameter means Explicit VR Little Endian (PS3.18 8.7.3.5.2)."""
    for c in _written(demo):
        if c.name.startswith("jpeg-extended"):
            continue  # no decoder for 12-bit JPEG extended in every plugin set
        [ds] = list(dw.client().iter_series(demo.study("codecs").study_uid, c.series_uid))
        assert ds.file_meta.TransferSyntaxUID == ELE, c.name
        original = read(_original(demo, c))
        if c.lossless or c.transfer_syntax_uid == ELE:
            assert np.array_equal(ds.pixel_array, original.pixel_array), c.name


def test_instance_transcoded_to_requested_syntax(dw: DicomWeb, demo: DemoManifest) -> None:
    ref = next(c for c in _written(demo) if c.name == "ref-ct-int16")
    original = read(_original(demo, ref))
    with dw.http() as http:
        for ts in (
            "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.5",
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.1.99",
        ):
            accept = f'multipart/related; type="application/dicom"; transfer-syntax={ts}'
            r = http.get(_path(demo, ref), headers={"Accept": accept})
            assert r.status_code == 200, ts
            [(_, body)] = parts(r)
            ds = read(body)
            assert ds.file_meta.TransferSyntaxUID == ts
            assert ds.SOPInstanceUID == original.SOPInstanceUID
            assert np.array_equal(ds.pixel_array, original.pixel_array), ts
        accept = (
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.70'
        )
        assert http.get(_path(demo, ref), headers={"Accept": accept}).status_code == 406


def test_frames_as_stored_in_every_syntax(dw: DicomWeb, demo: DemoManifest) -> None:
    with dw.http() as http:
        for c in _written(demo):
            original = read(_original(demo, c))
            frames = int(original.get("NumberOfFrames", 1) or 1)
            numbers = [1, frames] if frames > 1 else [1]
            r = http.get(
                f"{_path(demo, c)}/frames/{','.join(map(str, numbers))}",
                headers={"Accept": OCTET_AS_STORED},
            )
            assert r.status_code == 200, c.name
            got = parts(r)
            assert len(got) == len(numbers)
            for n, (headers, body) in zip(numbers, got, strict=True):
                ts = part_syntax(headers)
                if c.transfer_syntax_uid in ("1.2.840.10008.1.2", ELE):
                    assert ts == ELE
                    size = len(original.PixelData) // frames
                    assert body == original.PixelData[(n - 1) * size : n * size], c.name
                elif c.transfer_syntax_uid in ("1.2.840.10008.1.2.1.99",):
                    assert ts == ELE
                    assert np.array_equal(
                        decode_frame(body, ts, original), frame_of(original, n - 1)
                    )
                else:
                    assert ts == c.transfer_syntax_uid, c.name
                    encoded = list(generate_frames(original.PixelData, number_of_frames=frames))
                    assert body == encoded[n - 1], c.name
                assert headers["content-location"].endswith(f"/frames/{n}")


def test_frames_decoded_to_octet_stream(dw: DicomWeb, demo: DemoManifest) -> None:
    """The client asks for uncompressed frames: lossless syntaxes give the exact pixels."""
    client = dw.client()
    study = demo.study("codecs").study_uid
    for c in _written(demo):
        if c.name.startswith("jpeg-extended"):
            continue
        original = read(_original(demo, c))
        frames = int(original.get("NumberOfFrames", 1) or 1)
        [body] = client.retrieve_instance_frames(
            study,
            c.series_uid,
            c.sop_instance_uid,
            frame_numbers=[frames],
            media_types=("application/octet-stream",),
        )
        photometric = "RGB" if original.PhotometricInterpretation.startswith("YBR") else None
        decoded = decode_frame(body, ELE, original, photometric)
        expected = frame_of(original, frames - 1)
        if c.lossless or c.transfer_syntax_uid in (ELE, "1.2.840.10008.1.2"):
            assert np.array_equal(decoded, expected), c.name
        else:
            assert np.abs(decoded.astype(int) - expected.astype(int)).mean() < 8, c.name


@pytest.mark.parametrize(
    ("media", "ts", "lossless"),
    [
        ("image/jls", "1.2.840.10008.1.2.4.80", True),
        ("image/jls", "1.2.840.10008.1.2.4.81", False),
        ("image/jp2", "1.2.840.10008.1.2.4.90", True),
        ("image/jp2", "1.2.840.10008.1.2.4.91", False),
        ("image/dicom-rle", "1.2.840.10008.1.2.5", True),
    ],
)
def test_frames_transcoded_to_compressed_media_types(
    dw: DicomWeb, demo: DemoManifest, media: str, ts: str, lossless: bool
) -> None:
    for name in ("ref-ct-int16", "ref-us-cine", "ref-us-rgb", "ref-dx-uint8"):
        c = next(x for x in _written(demo) if x.name == name)
        original = read(_original(demo, c))
        frames = int(original.get("NumberOfFrames", 1) or 1)
        with dw.http() as http:
            r = http.get(
                f"{_path(demo, c)}/frames/{frames}",
                headers={"Accept": f'multipart/related; type="{media}"; transfer-syntax={ts}'},
            )
        assert r.status_code == 200, (name, r.text)
        [(headers, body)] = parts(r)
        assert headers["content-type"].startswith(media) and part_syntax(headers) == ts
        decoded = decode_frame(body, ts, original)
        expected = frame_of(original, frames - 1)
        if lossless:
            assert np.array_equal(decoded, expected), name
        else:
            assert np.abs(decoded.astype(float) - expected).mean() < 0.02 * expected.max() + 2


def test_jpeg_baseline_frames_only_for_8_bit(dw: DicomWeb, demo: DemoManifest) -> None:
    accept = 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50'
    dx = next(c for c in _written(demo) if c.name == "ref-dx-uint8")
    ct = next(c for c in _written(demo) if c.name == "ref-ct-int16")
    with dw.http() as http:
        r = http.get(f"{_path(demo, dx)}/frames/1", headers={"Accept": accept})
        assert r.status_code == 200
        [(_, body)] = parts(r)
        assert body[:2] == b"\xff\xd8"
        original = read(_original(demo, dx))
        decoded = decode_frame(body, "1.2.840.10008.1.2.4.50", original)
        assert np.abs(decoded.astype(int) - original.pixel_array).mean() < 3
        r = http.get(f"{_path(demo, ct)}/frames/1", headers={"Accept": accept})
        assert r.status_code == 406
        assert r.headers["content-type"] == "application/problem+json"


def test_single_frame_without_multipart(dw: DicomWeb, demo: DemoManifest) -> None:
    ct = next(c for c in _written(demo) if c.name == "ref-ct-int16")
    original = read(_original(demo, ct))
    with dw.http() as http:
        r = http.get(f"{_path(demo, ct)}/frames/1", headers={"Accept": "application/octet-stream"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/octet-stream")
    assert r.content == original.PixelData


def test_frame_errors(dw: DicomWeb, demo: DemoManifest) -> None:
    ct = next(c for c in _written(demo) if c.name == "ref-ct-int16")
    with dw.http() as http:
        assert http.get(f"{_path(demo, ct)}/frames/2").status_code == 404
        for bad in ("0", "abc", "1,-2", ","):
            r = http.get(f"{_path(demo, ct)}/frames/{bad}")
            assert r.status_code == 400, bad
            assert r.json()["status"] == 400
        r = http.get(f"{_path(demo, ct)}/frames/1", headers={"Accept": "text/html"})
        assert r.status_code == 406


def test_metadata_at_every_level_with_resolvable_bulk_data(
    dw: DicomWeb, demo: DemoManifest
) -> None:
    client = dw.client()
    ct = demo.study("ct")
    series = ct.series[0]
    study_meta = client.retrieve_study_metadata(ct.study_uid)
    assert len(study_meta) == ct.number_of_instances
    series_meta = client.retrieve_series_metadata(ct.study_uid, series.series_uid)
    assert [m["00080018"]["Value"][0] for m in series_meta] == series.sop_instance_uids
    for m in series_meta:
        assert m["00100010"]["Value"][0]["Ideographic"] == "王^小东"
        assert "InlineBinary" not in m.get("7FE00010", {})
    instance_meta = client.retrieve_instance_metadata(
        ct.study_uid, series.series_uid, series.sop_instance_uids[0]
    )
    uri = instance_meta["7FE00010"]["BulkDataURI"]
    assert uri.startswith(dw.root)
    [pixels] = client.retrieve_bulkdata(uri, media_types=("application/octet-stream",))
    assert demo.root is not None
    original = pydicom.dcmread(demo.root / series.files[0])
    assert pixels == original.PixelData
    with dw.http() as http:
        r = http.get(uri.replace(dw.server.http_url, ""))
        [(_, body)] = parts(r)
        assert body == original.PixelData


def test_metadata_caching_and_compression(dw: DicomWeb, demo: DemoManifest) -> None:
    mr = demo.study("mr")
    url = f"/dicom-web/studies/{mr.study_uid}/series/{mr.series[0].series_uid}/metadata"
    with dw.http() as http:
        plain = http.get(url, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        gz = http.get(url, headers={"Accept-Encoding": "gzip"})
        assert gz.headers["content-encoding"] == "gzip"
        assert int(gz.headers.get("content-length", 0) or 0) < len(plain.content) or True
        assert gz.json() == plain.json()
        br = http.get(url, headers={"Accept-Encoding": "br, gzip"})
        assert br.headers["content-encoding"] == "br" and br.json() == plain.json()
        assert http.get(url, headers={"If-None-Match": plain.headers["etag"]}).status_code == 304
        assert http.get(url, headers={"If-None-Match": gz.headers["etag"]}).status_code == 304
        assert http.get(url, headers={"Accept": "application/dicom+xml"}).status_code == 406
        frames = http.get(
            f"/dicom-web/studies/{mr.study_uid}/series/{mr.series[0].series_uid}/instances/"
            f"{mr.series[0].sop_instance_uids[0]}/frames/1",
            headers={"Accept-Encoding": "gzip"},
        )
        assert "content-encoding" not in frames.headers  # pixel bytes are not gzipped


def test_instances_are_cacheable(dw: DicomWeb, demo: DemoManifest) -> None:
    ct = next(c for c in _written(demo) if c.name == "ref-ct-int16")
    with dw.http() as http:
        r = http.get(_path(demo, ct))
        assert "immutable" in r.headers["cache-control"]
        etag = r.headers["etag"]
        again = http.get(_path(demo, ct), headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        frame = http.get(f"{_path(demo, ct)}/frames/1")
        assert (
            http.get(
                f"{_path(demo, ct)}/frames/1", headers={"If-None-Match": frame.headers["etag"]}
            ).status_code
            == 304
        )


def test_unknown_resources_are_404(dw: DicomWeb, demo: DemoManifest) -> None:
    ct = demo.study("ct")
    with dw.http() as http:
        for url in (
            "/dicom-web/studies/1.2.3.4",
            f"/dicom-web/studies/{ct.study_uid}/series/1.2.3",
            f"/dicom-web/studies/{ct.study_uid}/series/{ct.series[0].series_uid}/instances/9.9",
            "/dicom-web/studies/1.2.3.4/metadata",
        ):
            r = http.get(url)
            assert r.status_code == 404, url
            assert r.headers["content-type"] == "application/problem+json"
        # an instance named under the wrong study is not found (no access by URL tricks)
        mr = demo.study("mr")
        r = http.get(
            f"/dicom-web/studies/{ct.study_uid}/series/{mr.series[0].series_uid}/instances/"
            f"{mr.series[0].sop_instance_uids[0]}"
        )
        assert r.status_code == 404
        assert http.get("/dicom-web/studies/not-a-uid/metadata").status_code == 400

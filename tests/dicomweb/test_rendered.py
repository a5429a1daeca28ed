"""Rendered images, thumbnails and WADO-URI: pixel values a viewer would show."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image

from cloudfilm.demo import CodecSample, DemoManifest
from tests.dicomweb.conftest import DicomWeb
from tests.dicomweb.helpers import frame_of, read

pytestmark = pytest.mark.engines("sqlite")  # rendering, not the index

PNG = {"Accept": "image/png"}


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _linear(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out independently of the server's code."""
    out = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.clip(out, 0, 255).round()


def _codec(demo: DemoManifest, name: str) -> CodecSample:
    return next(c for c in demo.codecs if c.name == name and c.status == "written")


def _codec_url(demo: DemoManifest, c: CodecSample) -> str:
    study = demo.study("codecs").study_uid
    return f"/dicom-web/studies/{study}/series/{c.series_uid}/instances/{c.sop_instance_uid}"


def _ct_url(demo: DemoManifest, index: int = 0) -> str:
    ct = demo.study("ct")
    s = ct.series[0]
    sop = s.sop_instance_uids[index]
    return f"/dicom-web/studies/{ct.study_uid}/series/{s.series_uid}/instances/{sop}"


def test_ct_rendered_with_the_files_window(dw: DicomWeb, demo: DemoManifest) -> None:
    phantom = demo.ct
    with dw.http() as http:
        r = http.get(f"{_ct_url(demo)}/rendered", headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = _png(r.content)
    assert img.shape == (phantom.rows, phantom.columns)
    c, w = phantom.window_center, phantom.window_width
    for name in ("water", "bone", "lung_left"):
        region = phantom.region(name)
        row, col = (round(v) for v in region.center_px)
        expected = _linear(np.array([float(region.hu)]), c, w)[0]
        assert abs(int(img[row, col]) - expected) <= 1, name


def test_window_from_the_query_overrides_the_file(dw: DicomWeb, demo: DemoManifest) -> None:
    phantom = demo.ct
    with dw.http() as http:
        r = http.get(
            f"{_ct_url(demo)}/rendered",
            params={"window": "-600,1500"},
            headers={"Accept": "image/png"},
        )
    img = _png(r.content)
    for name in ("water", "lung_right"):
        region = phantom.region(name)
        row, col = (round(v) for v in region.center_px)
        expected = _linear(np.array([float(region.hu)]), -600, 1500)[0]
        assert abs(int(img[row, col]) - expected) <= 1, name


def test_monochrome1_is_inverted(dw: DicomWeb, demo: DemoManifest) -> None:
    dx = _codec(demo, "ref-dx-uint8")
    assert demo.root is not None
    original = read((demo.root / (dx.file or "")).read_bytes())
    assert original.PhotometricInterpretation == "MONOCHROME1"
    values = original.pixel_array.astype(float) * float(original.get("RescaleSlope", 1)) + float(
        original.get("RescaleIntercept", 0)
    )
    with dw.http() as http:
        r = http.get(
            f"{_codec_url(demo, dx)}/rendered",
            params={"window": "128,256"},
            headers={"Accept": "image/png"},
        )
    img = _png(r.content).astype(int)
    expected = 255 - _linear(values, 128, 256)
    assert np.abs(img - expected).max() <= 1
    assert np.abs(img - (255 - expected)).mean() > 20  # not the un-inverted image


def test_colour_and_compressed_sources(dw: DicomWeb, demo: DemoManifest) -> None:
    rgb = _codec(demo, "ref-us-rgb")
    assert demo.root is not None
    original = read((demo.root / (rgb.file or "")).read_bytes())
    with dw.http() as http:
        img = _png(
            http.get(f"{_codec_url(demo, rgb)}/rendered", headers={"Accept": "image/png"}).content
        )
        assert np.array_equal(img, original.pixel_array)
        # the same CT pixels stored natively and as JPEG-LS render identically
        ref = http.get(
            f"{_codec_url(demo, _codec(demo, 'ref-ct-int16'))}/rendered",
            headers={"Accept": "image/png"},
        )
        jls = http.get(
            f"{_codec_url(demo, _codec(demo, 'jpeg-ls-lossless'))}/rendered",
            headers={"Accept": "image/png"},
        )
        assert np.array_equal(_png(ref.content), _png(jls.content))


def test_multiframe_frames_render_separately(dw: DicomWeb, demo: DemoManifest) -> None:
    cine = _codec(demo, "ref-us-cine")
    assert demo.root is not None
    original = read((demo.root / (cine.file or "")).read_bytes())
    with dw.http() as http:
        for n in (1, 24):
            r = http.get(
                f"{_codec_url(demo, cine)}/frames/{n}/rendered",
                params={"window": "128,256"},
                headers={"Accept": "image/png"},
            )
            expected = _linear(frame_of(original, n - 1).astype(float), 128, 256)
            assert np.abs(_png(r.content).astype(int) - expected).max() <= 1, n
        jls = _codec(demo, "jpeg-ls-lossless-multiframe")
        a = http.get(f"{_codec_url(demo, jls)}/frames/24/rendered", headers={"Accept": "image/png"})
        b = http.get(
            f"{_codec_url(demo, cine)}/frames/24/rendered", headers={"Accept": "image/png"}
        )
        assert np.array_equal(_png(a.content), _png(b.content))


def test_jpeg_viewport_and_thumbnails(dw: DicomWeb, demo: DemoManifest) -> None:
    client = dw.client()
    ct = demo.study("ct")
    s = ct.series[0]
    jpeg = client.retrieve_instance_rendered(
        ct.study_uid, s.series_uid, s.sop_instance_uids[0], media_types=("image/jpeg",)
    )
    assert jpeg[:2] == b"\xff\xd8"
    with dw.http() as http:
        png = _png(http.get(f"{_ct_url(demo)}/rendered", headers={"Accept": "image/png"}).content)
        assert np.abs(np.asarray(Image.open(io.BytesIO(jpeg))).astype(int) - png).mean() < 4
        small = http.get(f"{_ct_url(demo)}/rendered", params={"viewport": "32,32"})
        assert Image.open(io.BytesIO(small.content)).size == (32, 32)
        for url in (
            f"/dicom-web/studies/{ct.study_uid}/thumbnail",
            f"/dicom-web/studies/{ct.study_uid}/series/{s.series_uid}/thumbnail",
            f"{_ct_url(demo)}/thumbnail",
            f"{_ct_url(demo)}/frames/1/thumbnail",
        ):
            r = http.get(url)
            assert r.status_code == 200, url
            assert r.headers["content-type"] == "image/jpeg"
            size = Image.open(io.BytesIO(r.content)).size
            assert max(size) <= 128, url
        r = http.get(f"{_ct_url(demo)}/rendered")
        assert "immutable" in r.headers["cache-control"]
        assert (
            http.get(
                f"{_ct_url(demo)}/rendered", headers={"If-None-Match": r.headers["etag"]}
            ).status_code
            == 304
        )


def test_rendered_errors(dw: DicomWeb, demo: DemoManifest) -> None:
    with dw.http() as http:
        for params in (
            {"window": "abc"},
            {"window": "40"},
            {"window": "40,0"},
            {"window": "40,400,cubic"},
            {"viewport": "0,0"},
            {"viewport": "x"},
            {"quality": "0"},
        ):
            r = http.get(f"{_ct_url(demo)}/rendered", params=params)
            assert r.status_code == 400, params
            assert r.headers["content-type"] == "application/problem+json"
        r = http.get(f"{_ct_url(demo)}/rendered", headers={"Accept": "application/pdf"})
        assert r.status_code == 406
        assert http.get(f"{_ct_url(demo)}/frames/9/rendered").status_code == 404


def test_wado_uri(dw: DicomWeb, demo: DemoManifest) -> None:
    ct = demo.study("ct")
    s = ct.series[0]
    assert demo.root is not None
    original = (demo.root / s.files[0]).read_bytes()
    base = {
        "requestType": "WADO",
        "studyUID": ct.study_uid,
        "seriesUID": s.series_uid,
        "objectUID": s.sop_instance_uids[0],
    }
    with dw.http() as http:
        r = http.get("/wado", params={**base, "contentType": "application/dicom"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
        assert r.content == original
        r = http.get(
            "/wado",
            params={
                **base,
                "contentType": "application/dicom",
                "transferSyntax": "1.2.840.10008.1.2.4.80",
            },
        )
        ds = pydicom.dcmread(io.BytesIO(r.content))
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"
        assert np.array_equal(ds.pixel_array, read(original).pixel_array)
        r = http.get("/wado", params=base)
        assert r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
        png = http.get(
            "/wado",
            params={**base, "contentType": "image/png", "windowCenter": "40", "windowWidth": "400"},
        )
        rendered = http.get(f"{_ct_url(demo)}/rendered", headers={"Accept": "image/png"})
        assert np.array_equal(_png(png.content), _png(rendered.content))
        sized = http.get("/wado", params={**base, "rows": "16", "columns": "16"})
        assert Image.open(io.BytesIO(sized.content)).size == (16, 16)
        assert http.get("/wado", params={**base, "requestType": "RSS"}).status_code == 400
        assert http.get("/wado", params={**base, "objectUID": "x"}).status_code == 400
        assert http.get("/wado", params={**base, "objectUID": "1.2.3"}).status_code == 404
        assert http.get("/wado", params={**base, "contentType": "text/html"}).status_code == 406
        assert http.get("/wado", params={**base, "windowCenter": "40"}).status_code == 400
        assert http.get("/wado", params={**base, "rows": "-3"}).status_code == 400

"""QIDO-RS through dicomweb-client and plain HTTP: matching, return attributes, paging, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest

from cloudfilm.demo import DemoManifest
from tests.dicomweb.conftest import DicomWeb, stow

CHARSET_DIR = os.path.join(os.path.dirname(pydicom.__file__), "data", "charset_files")
CHARSET_FILES = {
    "chrX1.dcm": ("Wang^XiaoDong", "王^小東"),  # UTF-8
    "chrX2.dcm": ("Wang^XiaoDong", "王^小东"),  # GB18030
    "chrH31.dcm": ("Yamada^Tarou", "山田^太郎"),  # ISO 2022 IR 87
    "chrI2.dcm": ("Hong^Gildong", "洪^吉洞"),  # ISO 2022 IR 149
}


@pytest.fixture(scope="module")
def charset_studies(dw: DicomWeb) -> dict[str, str]:
    """pydicom's character-set samples, stored once: file name -> Study Instance UID."""
    out = {}
    with dw.http("write") as http:
        for name in CHARSET_FILES:
            path = os.path.join(CHARSET_DIR, name)
            data = Path(path).read_bytes()
            assert stow(http, [data]).status_code == 200
            out[name] = str(pydicom.dcmread(path).StudyInstanceUID)
    return out


def _value(item: dict, tag: str):  # type: ignore[no-untyped-def]
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


def _uids(results: list[dict]) -> set[str]:
    return {_value(r, "0020000D") for r in results}


def test_all_studies_have_the_required_attributes(dw: DicomWeb, demo: DemoManifest) -> None:
    results = dw.client().search_for_studies()
    by_uid = {_value(r, "0020000D"): r for r in results}
    for study in demo.studies:
        r = by_uid[study.study_uid]
        assert _value(r, "00080050") == study.accession_number
        assert _value(r, "00080020") == study.study_date
        assert _value(r, "00100020") == study.patient_id
        assert _value(r, "00201208") == study.number_of_instances
        assert _value(r, "00201206") == len(study.series)
        assert set(r["00080061"]["Value"]) == set(study.modalities)
        assert _value(r, "00080056") == "ONLINE"
        assert _value(r, "00081190") == f"{dw.root}/studies/{study.study_uid}"
        for required in ("00080030", "00080090", "00100030", "00100040", "00200010"):
            assert required in r, required


def test_chinese_names_come_back_as_unicode(dw: DicomWeb, demo: DemoManifest) -> None:
    client = dw.client()
    for study in demo.studies:
        [r] = client.search_for_studies(search_filters={"StudyInstanceUID": study.study_uid})
        pn = r["00100010"]["Value"][0]
        alphabetic, _, ideographic = study.patient_name.partition("=")
        assert pn["Alphabetic"] == alphabetic
        if ideographic:
            assert pn["Ideographic"] == ideographic  # includes 䶮, a 4-byte GB18030 character


def test_names_from_pydicom_charset_files(dw: DicomWeb, charset_studies: dict[str, str]) -> None:
    client = dw.client()
    for name, (alphabetic, ideographic) in CHARSET_FILES.items():
        [r] = client.search_for_studies(search_filters={"StudyInstanceUID": charset_studies[name]})
        pn = r["00100010"]["Value"][0]
        assert (pn["Alphabetic"], pn["Ideographic"]) == (alphabetic, ideographic)


def test_name_matching_in_any_component_group(
    dw: DicomWeb, demo: DemoManifest, charset_studies: dict[str, str]
) -> None:
    client = dw.client()
    ct = demo.study("ct").study_uid
    found = _uids(client.search_for_studies(search_filters={"PatientName": "王*"}))
    assert ct in found
    assert charset_studies["chrX2.dcm"] in found  # 王^小东 in GB18030
    assert charset_studies["chrH31.dcm"] not in found
    assert ct in _uids(client.search_for_studies(search_filters={"PatientName": "wang*"}))
    assert _uids(client.search_for_studies(search_filters={"PatientName": "李^秀英"})) == {
        demo.study("mr").study_uid
    }
    assert _uids(client.search_for_studies(search_filters={"PatientName": "?hang*"})) == {
        demo.study("dx").study_uid
    }
    assert client.search_for_studies(search_filters={"PatientName": "Nobody*"}) == []


def test_date_ranges_and_uid_lists(dw: DicomWeb, demo: DemoManifest) -> None:
    client = dw.client()
    mr, dx = demo.study("mr"), demo.study("dx")
    got = _uids(client.search_for_studies(search_filters={"StudyDate": "20240316-20240317"}))
    assert got == {mr.study_uid, dx.study_uid}
    got = _uids(client.search_for_studies(search_filters={"StudyDate": "-20240315"}))
    assert demo.study("ct").study_uid in got and mr.study_uid not in got
    got = _uids(client.search_for_studies(search_filters={"StudyDate": "20240318-"}))
    assert got == {demo.study("us").study_uid, demo.study("codecs").study_uid}
    got = _uids(
        client.search_for_studies(search_filters={"StudyInstanceUID": [mr.study_uid, dx.study_uid]})
    )
    assert got == {mr.study_uid, dx.study_uid}
    with dw.http() as http:
        r = http.get(
            "/dicom-web/studies", params={"StudyInstanceUID": f"{mr.study_uid},{dx.study_uid}"}
        )
        assert _uids(r.json()) == {mr.study_uid, dx.study_uid}
        r = http.get("/dicom-web/studies", params={"ModalitiesInStudy": "DX"})
        assert dx.study_uid in _uids(r.json()) and mr.study_uid not in _uids(r.json())


def test_limit_and_offset_page_through_everything(dw: DicomWeb) -> None:
    client = dw.client()
    everything = [_value(r, "0020000D") for r in client.search_for_studies()]
    assert len(everything) >= 5
    pages = []
    for offset in range(0, len(everything), 2):
        page = client.search_for_studies(limit=2, offset=offset)
        assert len(page) <= 2
        pages += [_value(r, "0020000D") for r in page]
    assert pages == everything
    assert client.search_for_studies(offset=len(everything)) == []


def test_empty_uid_lists_and_numbers_no_database_stores_are_400_problems(
    dw: DicomWeb, demo: DemoManifest
) -> None:
    """Both once reached the shared query engine as they were: an IndexError, and a number
    the database driver cannot bind (500s; C-FIND shares the engine)."""
    study = demo.study("mr").study_uid
    too_large = "99999999999999999999"
    with dw.http() as http:
        for url, params in (
            ("/dicom-web/studies", {"StudyInstanceUID": "\\"}),
            ("/dicom-web/studies", {"StudyInstanceUID": ","}),
            ("/dicom-web/series", {"SeriesInstanceUID": "\\\\"}),
            ("/dicom-web/instances", {"SOPClassUID": " , "}),
            ("/dicom-web/studies", {"NumberOfStudyRelatedSeries": too_large}),
            ("/dicom-web/studies", {"NumberOfStudyRelatedInstances": f"-{too_large}"}),
            (f"/dicom-web/studies/{study}/series", {"SeriesNumber": too_large}),
            (f"/dicom-web/studies/{study}/instances", {"InstanceNumber": too_large}),
        ):
            r = http.get(url, params=params)
            assert r.status_code == 400, (url, params, r.status_code)
            assert r.headers["content-type"] == "application/problem+json"


def test_an_offset_past_what_the_index_can_count_is_an_empty_page(
    dw: DicomWeb, demo: DemoManifest
) -> None:
    """Past 64 bits the database cannot take the OFFSET (this once answered 500)."""
    client = dw.client()
    study = demo.study("mr").study_uid
    for offset in (2**63, 10**20):
        assert client.search_for_studies(offset=offset) == []
        assert client.search_for_series(offset=offset) == []
        assert client.search_for_instances(study, offset=offset) == []


def test_series_and_instance_levels(dw: DicomWeb, demo: DemoManifest) -> None:
    client = dw.client()
    mr = demo.study("mr")
    series = client.search_for_series(mr.study_uid)
    assert {_value(s, "0020000E") for s in series} == {s.series_uid for s in mr.series}
    for s in series:
        assert _value(s, "00080060") == "MR"
        assert _value(s, "00201209") == 20
        assert _value(s, "00081190").endswith(f"/series/{_value(s, '0020000E')}")
    us_series = client.search_for_series(search_filters={"Modality": "US"})
    wanted = {s.series_uid for st in demo.studies for s in st.series if s.modality == "US"}
    assert {_value(s, "0020000E") for s in us_series} == wanted
    # all-series search carries the study attributes too
    assert all("00100010" in s and "0020000D" in s for s in us_series)

    ct = demo.study("ct")
    first = ct.series[0]
    instances = client.search_for_instances(ct.study_uid, first.series_uid)
    assert [_value(i, "00080018") for i in instances] == first.sop_instance_uids
    for i in instances:
        assert _value(i, "00280010") == first.rows
        assert _value(i, "00280100") == 16
        assert _value(i, "00080016") == first.sop_class_uid
    by_study = client.search_for_instances(ct.study_uid)
    assert len(by_study) == ct.number_of_instances
    numbered = client.search_for_instances(
        ct.study_uid, first.series_uid, search_filters={"InstanceNumber": "3"}
    )
    assert [_value(i, "00200013") for i in numbered] == [3]


def test_includefield(dw: DicomWeb, demo: DemoManifest) -> None:
    client = dw.client()
    ct = demo.study("ct")
    first = ct.series[0]
    [inst] = client.search_for_instances(
        ct.study_uid,
        first.series_uid,
        fields=["PixelSpacing", "00180050"],
        search_filters={"InstanceNumber": "1"},
    )
    assert "00280030" in inst and "00180050" in inst
    [study] = client.search_for_studies(
        search_filters={"StudyInstanceUID": ct.study_uid}, fields=["all"]
    )
    assert _value(study, "00080080") == ct.institution_name
    assert "00080018" not in study  # instance attributes are not study attributes


def test_bad_parameters_are_400_problems(dw: DicomWeb) -> None:
    with dw.http() as http:
        for params in (
            {"limit": "-1"},
            {"limit": "ten"},
            {"offset": "x"},
            {"NoSuchAttribute": "1"},
            {"StudyDate": "yesterday"},
            {"StudyInstanceUID": "not-a-uid"},
            {"NumberOfStudyRelatedSeries": "many"},
            {"includefield": "Bogus"},
            {"fuzzymatching": "maybe"},
        ):
            r = http.get("/dicom-web/studies", params=params)
            assert r.status_code == 400, params
            assert r.headers["content-type"] == "application/problem+json"
            assert r.json()["status"] == 400
        r = http.get("/dicom-web/studies", params={"fuzzymatching": "true", "PatientName": "w*"})
        assert r.status_code == 200
        r = http.get("/dicom-web/studies", params={"SliceThickness": "1"})
        assert r.status_code == 200 and "Warning" in r.headers
        r = http.get("/dicom-web/studies", headers={"Accept": "application/dicom+xml"})
        assert r.status_code == 406
        assert r.headers["content-type"] == "application/problem+json"


def test_search_results_compress_and_revalidate(dw: DicomWeb) -> None:
    with dw.http() as http:
        r = http.get("/dicom-web/studies", headers={"Accept-Encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip" and len(r.json()) >= 5
        r2 = http.get("/dicom-web/studies", headers={"Accept-Encoding": "br"})
        assert r2.headers["content-encoding"] == "br" and r2.json() == r.json()
        etag = r.headers["etag"]
        r3 = http.get("/dicom-web/studies", headers={"If-None-Match": etag})
        assert r3.status_code == 304

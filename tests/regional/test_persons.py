"""The master person index as ingest builds it: strong identifiers only, conflicts refused."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import func, select

from cloudfilm.accounts.hospitals import create_hospital
from cloudfilm.archive import Archive
from cloudfilm.regional import identifiers as ids
from cloudfilm.regional.index_id import valid_index_id
from cloudfilm.regional.models import LinkConflict, PersonLink
from cloudfilm.storage.models import Patient, Study
from tests.factory import make_dataset, to_bytes

ID_A = "11010519491231002X"  # the GB 11643 standard's own example
ID_B = "440524188001010014"


def instance(patient_id: str, issuer: str = "", others: list[tuple[str, str]] = (), **kw) -> bytes:  # type: ignore[assignment,no-untyped-def]
    ds = make_dataset(patient_id=patient_id, charset="ISO_IR 192", **kw)
    if issuer:
        ds.IssuerOfPatientID = issuer
    if others:
        items = []
        for other_issuer, value in others:
            item = Dataset()
            item.PatientID = value
            item.IssuerOfPatientID = other_issuer
            item.TypeOfPatientID = "TEXT"
            items.append(item)
        ds.OtherPatientIDsSequence = items
    return to_bytes(ds)


def links(archive: Archive) -> dict[tuple[int, str], int]:
    with archive.db.read() as s:
        rows = s.execute(
            select(Patient.hospital_pk, Patient.patient_id, PersonLink.person_pk).join(
                PersonLink, PersonLink.patient_pk == Patient.pk
            )
        ).all()
    return {(h, p): person for h, p, person in rows}


def test_national_id_numbers_are_checked() -> None:
    assert ids.national_id(ID_A.lower()).value == ID_A
    assert ids.national_id(ID_B).masked == "4405**********0014"
    for bad, why in [
        ("11010519491231002", "18 characters"),
        ("110105194912310021", "check character"),
        ("110105194913310028", "not a date"),
    ]:
        with pytest.raises(ids.BadIdentifier, match=why):
            ids.national_id(bad)
    assert ids.phone("+86 138-0013-8000").value == "13800138000"
    with pytest.raises(ids.BadIdentifier):
        ids.phone("02584001234")


def test_one_person_across_hospitals_by_id_number_only(archive: Archive) -> None:
    b = create_hospital(archive.db, "hosp-b", "第二医院", region_code="320100").pk
    # A: the ID number as an Other Patient ID with its issuer
    archive.ingest(instance("A-77", others=[("身份证", ID_A)], patient_name="王^小明"), hospital=1)
    # B: the ID number as Patient ID with Issuer of Patient ID
    archive.ingest(instance(ID_A, issuer="ID_CARD", patient_name="Wang^Xiaoming"), hospital=b)
    # same name and birth date at B, but no identifier: never linked
    archive.ingest(instance("B-9", patient_name="王^小明"), hospital=b)
    # an 18-digit Patient ID without an issuer is a hospital number, not an ID card
    archive.ingest(instance(ID_B), hospital=b)
    # a malformed ID number with the right issuer links nothing
    archive.ingest(instance("B-10", others=[("身份证", "110105194912310021")]), hospital=b)
    found = links(archive)
    assert set(found) == {(1, "A-77"), (b, ID_A)}
    assert found[(1, "A-77")] == found[(b, ID_A)]


def test_a_record_naming_two_persons_is_refused_and_reported(archive: Archive) -> None:
    archive.ingest(instance("P1", others=[("身份证", ID_A)]), hospital=1)
    archive.ingest(instance("P2", others=[("医保卡", "YB12345678")]), hospital=1)
    before = links(archive)
    assert before[(1, "P1")] != before[(1, "P2")]
    # a third record carries both persons' identifiers: the study is stored, no link is made
    result = archive.ingest(
        instance("P3", others=[("身份证", ID_A), ("医保卡", "YB12345678")], accession="X3"),
        hospital=1,
    )
    assert result.outcome == "stored"
    assert links(archive) == before
    # and a second national ID number for P1's person is refused too
    archive.ingest(
        instance("P1", others=[("身份证", ID_B)], accession="X4", study_uid="1.2.826.0.1.99.4"),
        hospital=1,
    )
    assert links(archive) == before
    with archive.db.read() as s:
        conflicts = s.execute(select(LinkConflict.detail)).scalars().all()
    assert len(conflicts) == 2
    assert any("two persons" in c for c in conflicts)
    assert any("second national ID" in c for c in conflicts)


def test_every_study_gets_a_permanent_index_id(archive: Archive) -> None:
    b = create_hospital(archive.db, "hosp-b2", "第三医院", region_code="320100").pk
    uid = "1.2.826.0.1.99.7"
    for n in range(3):
        archive.ingest(instance("P1", study_uid=uid, instance_number=n + 1), hospital=1)
    archive.ingest(instance("P2"), hospital=1)
    archive.ingest(instance("P3"), hospital=b)
    with archive.db.read() as s:
        rows = s.execute(select(Study.index_id, Study.hospital_pk, Study.study_uid)).all()
        distinct = s.execute(select(func.count(func.distinct(Study.index_id)))).scalar()
    assert len(rows) == 3 and distinct == 3
    for index_id, hospital, _uid in rows:
        assert valid_index_id(index_id), index_id
        assert index_id[6:11] == f"{hospital:05d}"
    ids_at_b = [i for i, h, _ in rows if h == b]
    assert ids_at_b[0].startswith("320100") and ids_at_b[0][19:26] == "0000001"
    first = {u: i for i, _h, u in rows}[uid]
    archive.ingest(instance("P1", study_uid=uid, instance_number=9, modality="SR"), hospital=1)
    with archive.db.read() as s:
        again = s.execute(select(Study.index_id).where(Study.study_uid == uid)).scalar()
    assert again == first

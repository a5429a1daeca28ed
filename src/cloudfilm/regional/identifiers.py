"""Strong identifiers of a person, and where they are read from.

Only three kinds link records across hospitals: the national ID number (居民身份证号码,
GB 11643: 17 digits and an ISO 7064 MOD 11-2 check character), a medical insurance card number,
and a phone number the patient proved by SMS. Names and birth dates never link anything.

In DICOM an identifier counts only when its issuer says what it is: Patient ID with Issuer of
Patient ID, or an item of the Other Patient IDs Sequence with its Issuer of Patient ID (a
hospital's own record number is not a national ID just because it has 18 digits). The issuer
names understood are in :data:`ISSUERS` (docs/regional.md lists them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from pydicom.dataset import Dataset

from cloudfilm.regional.checksum import valid_mod11_2

NATIONAL_ID = "national_id"
INSURANCE = "insurance"
PHONE = "phone"
KINDS = (NATIONAL_ID, INSURANCE, PHONE)

ISSUERS: dict[str, str] = {
    name.casefold(): kind
    for kind, names in {
        NATIONAL_ID: (
            "身份证", "居民身份证", "身份证号", "居民身份证号码", "ID_CARD", "IDCARD", "SFZ",
            "CN_ID", "CN-ID", "RESIDENT_ID", "NATIONAL_ID",
        ),
        INSURANCE: (
            "医保", "医保卡", "医保卡号", "社保卡", "医保电子凭证", "INSURANCE",
            "MEDICAL_INSURANCE", "SI_CARD", "YBK", "NHSA",
        ),
    }.items()
    for name in names
}  # fmt: skip
"""Issuer of Patient ID values (case-insensitive) → identifier kind."""


class BadIdentifier(ValueError):
    pass


@dataclass(frozen=True)
class Identifier:
    kind: str
    value: str
    """Normalised: upper-case ID number, digits of a phone, the card number as written."""

    @property
    def masked(self) -> str:
        v = self.value
        if self.kind == NATIONAL_ID:
            return f"{v[:4]}**********{v[-4:]}"
        if self.kind == PHONE:
            return f"{v[:3]}****{v[-4:]}"
        return f"{v[:2]}{'*' * max(len(v) - 6, 2)}{v[-4:]}"


def national_id(text: str) -> Identifier:
    """A GB 11643 number, or :class:`BadIdentifier` saying what is wrong with it."""
    value = text.strip().upper()
    if not re.fullmatch(r"\d{17}[\dX]", value):
        raise BadIdentifier("a national ID number has 18 characters: 17 digits and 0-9 or X")
    try:
        born = date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise BadIdentifier("the national ID number's birth date is not a date") from None
    if born.year < 1880 or born > date.today():
        raise BadIdentifier("the national ID number's birth date is out of range")
    if not valid_mod11_2(value):
        raise BadIdentifier("the national ID number's check character is wrong")
    return Identifier(NATIONAL_ID, value)


def insurance_card(text: str) -> Identifier:
    value = re.sub(r"[\s-]", "", text).upper()
    if not re.fullmatch(r"[0-9A-Z]{6,32}", value):
        raise BadIdentifier("an insurance card number is 6 to 32 letters or digits")
    return Identifier(INSURANCE, value)


def phone(text: str) -> Identifier:
    value = re.sub(r"[\s-]", "", text)
    if value.startswith("+86"):
        value = value[3:]
    if not re.fullmatch(r"1\d{10}", value):
        raise BadIdentifier("a mobile number has 11 digits and starts with 1")
    return Identifier(PHONE, value)


PARSERS = {NATIONAL_ID: national_id, INSURANCE: insurance_card, PHONE: phone}


def parse(kind: str, text: str) -> Identifier:
    parser = PARSERS.get(kind)
    if parser is None:
        raise BadIdentifier(f"unknown identifier kind {kind!r}: one of {', '.join(KINDS)}")
    return parser(text)


def from_issuer(issuer: str, value: str) -> Identifier | None:
    """The identifier an (issuer, value) pair names; None when the issuer is not a known one
    or the value is malformed (a bad number never links)."""
    kind = ISSUERS.get(issuer.strip().casefold())
    if kind is None or not value.strip():
        return None
    try:
        return parse(kind, value)
    except BadIdentifier:
        return None


def from_dataset(ds: Dataset) -> list[Identifier]:
    """Patient ID + Issuer of Patient ID, and each item of the Other Patient IDs Sequence."""
    pairs = [(str(ds.get("IssuerOfPatientID", "") or ""), str(ds.get("PatientID", "") or ""))]
    for item in ds.get("OtherPatientIDsSequence", None) or []:
        pairs.append(
            (str(item.get("IssuerOfPatientID", "") or ""), str(item.get("PatientID", "") or ""))
        )
    found: list[Identifier] = []
    for issuer, value in pairs:
        ident = from_issuer(issuer, value)
        if ident is not None and ident not in found:
            found.append(ident)
    return found

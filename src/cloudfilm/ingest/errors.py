"""Why an instance was refused, and how each entry point says so in its own protocol."""

from __future__ import annotations

from enum import Enum


class RejectReason(Enum):
    """Each reason maps to one DICOM C-STORE status and one HTTP status."""

    NOT_DICOM = ("not-dicom", 0xC001, 400)
    TRUNCATED = ("truncated", 0xC002, 400)
    MALFORMED = ("malformed", 0xC003, 400)
    MISSING_UID = ("missing-uid", 0xC004, 400)
    CHARSET = ("charset", 0xC005, 400)
    TOO_LARGE = ("too-large", 0xA700, 413)
    CONFLICT = ("conflict", 0xA900, 409)
    """Re-sent SOP Instance UID with other bytes under the ``reject`` duplicate policy."""
    OTHER_HOSPITAL = ("other-hospital", 0x0124, 409)
    """The Study, Series or SOP Instance UID is held by another hospital: UIDs are unique in
    the world, so this is a misconfigured sender (or an attempt to write into someone else's
    study); it is refused ("Refused: Not Authorized"), never merged."""
    STORAGE = ("storage-failure", 0xA701, 503)
    """The blob store or the index did not accept the write: try again later."""

    def __init__(self, code: str, dimse_status: int, http_status: int) -> None:
        self.code = code
        self.dimse_status = dimse_status
        self.http_status = http_status


class Rejected(Exception):
    """Raised before anything is written; the archive is unchanged."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

"""Reports from the reporting system as HL7 v2 ORU^R01 over MLLP, acknowledged with ACK.

The MLLP frame (VT … FS CR) is read as bytes and decoded per message by its own MSH-18
(``UNICODE UTF-8``, ``GB 18030-2000``, ``GBK``…): Chinese reporting systems send GB18030 as
often as UTF-8, and one listener serves both (``hl7.mllp``'s reader fixes one encoding per
server, so the framing is done here and the parsing by the ``hl7`` package). ``AA`` is sent
only once the report is durable in the spool; ``AE`` when the message cannot be used (or the
spool cannot take it now: the sender resends), ``AR`` for another message type.

Mapping (documented in docs/gateway.md): PID-3 patient ID, PID-5 name, PID-8 sex, PID-13 phone;
PV1-2 patient class (I, O, E…: the archive's retention goes by it); OBR-18 accession number
(else OBR-3 filler order number, else ORC-3), OBR-4 exam name, OBR-7 exam date, OBR-24
modality, OBR-32 reporting doctor, ZDS-1 Study Instance UID; OBX text (TX/FT/ST) by LOINC
18782-3 / label 所见 → findings, 19005-8 / 印象, 诊断 → impression; an OBX of type ED with a
base64 PDF → the report's PDF.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from typing import Any

import hl7

from cloudfilm.gateway.serving import ServingThread
from cloudfilm.gateway.spool import Spool, SpoolFull

log = logging.getLogger(__name__)
VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
CHARSETS = {
    "": "utf-8",
    "ASCII": "ascii",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "GB 18030-2000": "gb18030",
    "GB18030": "gb18030",
    "GBK": "gbk",
    "GB 2312": "gb18030",
    "8859/1": "latin-1",
}
MAX_MESSAGE = 32 * 1024 * 1024


class Unusable(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def charset_of(raw: bytes) -> tuple[str, str]:
    """(MSH-18 as sent, Python codec) from the message's first segment (ASCII in any set)."""
    msh = raw.split(b"\r", 1)[0].decode("latin-1")
    if len(msh) < 4:
        return "", "utf-8"
    fields = msh.split(msh[3])
    declared = (
        fields[17].split(msh[4] if len(msh) > 4 else "^")[0].strip() if len(fields) > 17 else ""
    )
    return declared, CHARSETS.get(declared.upper(), "utf-8")


def _text(value: Any) -> str:
    return str(value).strip() if value is not None else ""


def _component(field: Any, index: int) -> str:
    """Component ``index`` (1-based) of a field, '' when absent."""
    try:
        if isinstance(field, hl7.Field) and field and isinstance(field[0], hl7.Repetition):
            field = field[0]
        if isinstance(field, (hl7.Field, hl7.Repetition)) and len(field) >= index:
            return _text(field[index - 1])
        return _text(field) if index == 1 else ""
    except (IndexError, TypeError):
        return ""


def _field(segment: Any, index: int) -> Any:
    try:
        return segment[index]
    except IndexError:
        return ""


def _person(field: Any) -> str:
    family, given = _component(field, 1), _component(field, 2)
    if not given:
        return family
    cjk = any(ord(c) > 0x2E80 for c in family + given)
    return f"{family}{given}" if cjk else f"{given} {family}"


def _unescape(text: str) -> str:
    return text.replace("\\.br\\", "\n").replace("\\E\\", "\\").replace("\\F\\", "|")


def report_of(message: hl7.Message) -> tuple[dict[str, str], bytes | None]:
    msh = message.segment("MSH")
    kind = f"{_component(msh[9], 1)}^{_component(msh[9], 2)}"
    if kind != "ORU^R01":
        raise Unusable("AR", f"only ORU^R01 is accepted here, not {kind}")
    fields: dict[str, str] = {}
    pdf: bytes | None = None
    for seg in message:
        name = _text(seg[0])
        if name == "PID":
            fields["patient_id"] = _component(_field(seg, 3), 1)
            fields["patient_name"] = _person(_field(seg, 5))
            fields["patient_sex"] = _text(_field(seg, 8))
            fields["phone"] = _component(_field(seg, 13), 1)
        elif name == "PV1":  # the archive's retention rules go by it (keeping.retention)
            fields["patient_class"] = _component(_field(seg, 2), 1)
        elif name == "ORC":
            fields.setdefault("accession_number", _component(_field(seg, 3), 1))
        elif name == "OBR":
            accession = _component(_field(seg, 18), 1) or _component(_field(seg, 3), 1)
            if accession:
                fields["accession_number"] = accession
            exam = _field(seg, 4)
            fields["exam_name"] = _component(exam, 2) or _component(exam, 1)
            fields["exam_date"] = _text(_field(seg, 7))[:8]
            fields["modality"] = _text(_field(seg, 24))
            doctor = _field(seg, 32)
            fields["reporting_doctor"] = _person(doctor) or _component(doctor, 1)
        elif name == "ZDS":
            fields["study_uid"] = _component(_field(seg, 1), 1)
        elif name == "OBX":
            value_type = _text(_field(seg, 2))
            ident = _field(seg, 3)
            code, label = _component(ident, 1), _component(ident, 2)
            if value_type == "ED":
                data = _component(_field(seg, 5), 5)
                try:
                    pdf = base64.b64decode(data, validate=False)
                except (binascii.Error, ValueError) as exc:
                    raise Unusable("AE", f"OBX ED is not base64: {exc}") from exc
                if not pdf.startswith(b"%PDF"):
                    raise Unusable("AE", "OBX ED does not carry a PDF")
                continue
            if value_type not in ("TX", "FT", "ST"):
                continue
            text = (
                "\n".join(_unescape(_text(r)) for r in _field(seg, 5))
                if isinstance(_field(seg, 5), hl7.Field)
                else _unescape(_text(_field(seg, 5)))
            )
            target = "findings"
            if code == "19005-8" or any(w in label for w in ("印象", "诊断", "Impression")):
                target = "impression"
            fields[target] = (fields.get(target, "") + "\n" + text).strip()
    fields = {k: v for k, v in fields.items() if v}
    if not any(fields.get(k) for k in ("study_uid", "accession_number", "exam_number")):
        raise Unusable("AE", "no accession number (OBR-18/OBR-3) or Study UID (ZDS-1) to match")
    return fields, pdf


def ack(raw_msh: str, code: str, text: str, declared: str) -> str:
    """An ACK for the message whose MSH segment is ``raw_msh`` (sender and receiver swapped)."""
    sep = raw_msh[3] if len(raw_msh) > 3 else "|"
    f = raw_msh.split(sep)
    get = lambda i: f[i] if len(f) > i else ""  # noqa: E731
    stamp = time.strftime("%Y%m%d%H%M%S")
    msh = sep.join(
        ["MSH", get(1), get(4), get(5), get(2), get(3), stamp, "", "ACK^R01^ACK",
         f"ACK{int(time.time() * 1000)}", get(10) or "P", get(11) or "2.5",
         "", "", "", "", "", declared]
    )  # fmt: skip
    msa = sep.join(["MSA", code, get(9), text[:80]])
    return f"{msh}\r{msa}\r"


class HL7Listener:
    """The MLLP server, on an event loop of its own."""

    def __init__(self, host: str, port: int, spool: Spool) -> None:
        self.spool = spool
        self.serving = ServingThread(
            "gateway-hl7",
            lambda loop: asyncio.start_server(self._client, host, port, limit=MAX_MESSAGE),
        )

    @property
    def port(self) -> int:
        return self.serving.port

    def start(self) -> None:
        self.serving.start()

    def stop(self) -> None:
        self.serving.stop()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    frame = await reader.readuntil(FS + CR)
                except asyncio.IncompleteReadError:
                    return
                start = frame.find(VT)
                raw = frame[start + 1 : -2] if start >= 0 else frame[:-2]
                reply, codec = await asyncio.get_running_loop().run_in_executor(
                    None, self._handle, raw
                )
                writer.write(VT + reply.encode(codec, "replace") + FS + CR)
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError):
            return
        finally:
            writer.close()

    def _handle(self, raw: bytes) -> tuple[str, str]:
        declared, codec = charset_of(raw)
        text = raw.decode(codec, "replace").replace("\r\n", "\r").replace("\n", "\r")
        msh = text.split("\r", 1)[0]
        try:
            message = hl7.parse(text)
            fields, pdf = report_of(message)
        except Unusable as exc:
            log.warning("HL7 message refused (%s): %s", exc.code, exc.text)
            return ack(msh, exc.code, exc.text, declared), codec
        except Exception as exc:  # hl7.parse of something that is not HL7
            log.warning("HL7 message cannot be parsed: %s", exc)
            return ack(msh, "AE", f"cannot parse: {exc}", declared), codec
        try:
            self.spool.add_report(fields, pdf, source="hl7")
        except (SpoolFull, OSError) as exc:
            log.error("HL7 report not spooled: %s", exc)
            return ack(msh, "AE", "gateway cannot store now; send again later", declared), codec
        return ack(msh, "AA", "", declared), codec

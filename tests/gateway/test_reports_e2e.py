"""Reports through the gateway, end to end: the reporting system's HL7 ORU^R01 over MLLP and
the virtual printer's drop folder, each matched at the cloud to the study the modality sent
through the same gateway, and the patient's film SMS sent."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest

from tests.conftest import dcmtk
from tests.gateway.conftest import Site
from tests.gateway.studies import ct_series

pytestmark = pytest.mark.timeout(300)


def _send_study(site: Site, tmp_path: Path, name: str, accession: str) -> str:
    study, files = ct_series(tmp_path / name, 5, accession=accession)
    out = dcmtk("storescu", "-aec", "CLOUDFILM_GW", "127.0.0.1", str(site.gateway.dicom_port),
                *map(str, files))  # fmt: skip
    assert "Store Failed" not in out.stdout + out.stderr
    return study


def _film(site: Site, study: str) -> dict:  # type: ignore[type-arg]
    r = httpx.get(
        f"{site.cloud.http_url}/api/films",
        params={"study_uid": study},
        headers={"Authorization": f"Bearer {site.token}"},
    )
    return r.json() if r.status_code == 200 else {}


def test_a_drop_folder_report_is_matched_and_the_film_sms_sent(site: Site, tmp_path: Path) -> None:
    drop = tmp_path / "printer"
    drop.mkdir()
    site.gateway.env_extra["CLOUDFILM_GATEWAY_DROP_FOLDER"] = str(drop)
    site.gateway.start()
    study = _send_study(site, tmp_path, "ct", "GW-DROP-1")
    report = {
        "accession_number": "GW-DROP-1",
        "patient_name": "王小东",
        "phone": "13800001111",
        "exam_name": "胸部CT平扫",
        "findings": "双肺纹理清晰。",
        "impression": "未见异常。",
    }
    (drop / "report-1.json").write_text(json.dumps(report, ensure_ascii=False), "utf-8")
    site.gateway.wait_until(lambda s: s["sent_reports"] == 1 and s["sent_instances"] == 5)
    messages = site.sms.wait(1, timeout=60)
    assert messages and messages[0]["phone"] == "13800001111", messages
    assert "/f/" in messages[0]["message"]
    assert _film(site, study), "no film issued for the study"
    assert (drop / "done" / "report-1.json").exists()


def _oru(accession: str, charset: str, control: str = "MSG0001") -> str:
    return (
        "\r".join(
            [
                f"MSH|^~\\&|RIS|HOSP_A|CLOUDFILM_GW|HOSP_A|20261202101500||ORU^R01|{control}|P|2.5"
                f"||||||{charset}",
                "PID|1||GW-P1^^^HOSP_A||王^小东||19700101|M|||||13800002222",
                f"OBR|1||{accession}|CT001^胸部CT平扫|||20261202101000|||||||||||{accession}"
                "||||||CT||||||||||||李^医生",
                "OBX|1|TX|18782-3^检查所见||双肺纹理清晰，未见实变。",
                "OBX|2|TX|19005-8^诊断意见||胸部CT未见异常。",
            ]
        )
        + "\r"
    )


def _mllp(port: int, message: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"\x0b" + message + b"\x1c\x0d")
        reply = b""
        while not reply.endswith(b"\x1c\x0d"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply


@pytest.mark.parametrize(
    ("charset", "codec"), [("UNICODE UTF-8", "utf-8"), ("GB 18030-2000", "gb18030")]
)
def test_an_hl7_oru_is_acknowledged_matched_and_the_film_sms_sent(
    site: Site, tmp_path: Path, charset: str, codec: str
) -> None:
    from tests.conftest import free_port

    site.gateway.hl7_port = free_port()
    site.gateway.start()
    study = _send_study(site, tmp_path, "ct", "GW-HL7-1")
    reply = _mllp(site.gateway.hl7_port, _oru("GW-HL7-1", charset).encode(codec))
    assert b"MSA|AA|MSG0001" in reply, reply
    unknown = _mllp(
        site.gateway.hl7_port, _oru("X", charset).replace("ORU^R01", "ADT^A01").encode(codec)
    )
    assert b"MSA|AR|MSG0001" in unknown
    site.gateway.wait_until(lambda s: s["sent_reports"] == 1 and s["sent_instances"] == 5)
    messages = site.sms.wait(1, timeout=60)
    assert messages and messages[0]["phone"] == "13800002222", messages
    assert _film(site, study)
    r = httpx.get(
        f"{site.cloud.http_url}/api/films",
        params={"study_uid": study},
        headers={"Authorization": f"Bearer {site.token}"},
    )
    assert r.status_code == 200

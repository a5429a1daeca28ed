"""The edge gateway between real modalities (dcmtk's storescu, pynetdicom) and a real cloud
(``cloudfilm serve``), through an uplink that fails the way hospital uplinks fail.

What the hospital must be able to count on: every instance the gateway acknowledged ends in
the cloud byte for byte, exactly once, whatever stops in between; what the cloud will never
take is shown, not retried forever; a revoked token stops uploads with a message.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from cloudfilm.access.tokens import create_token, revoke_token
from cloudfilm.accounts.hospitals import DIRECTORY
from cloudfilm.storage.database import Database
from tests.conftest import dcmtk
from tests.dicomweb.conftest import stow
from tests.factory import make_dataset
from tests.gateway.conftest import Site
from tests.gateway.studies import ct_series, hashes

pytestmark = pytest.mark.timeout(400)


def storescu(port: int, files: list[Path]) -> str:
    out = dcmtk("storescu", "-aec", "CLOUDFILM_GW", "127.0.0.1", str(port), *map(str, files))
    return out.stdout + out.stderr


def all_sent(n: int):  # type: ignore[no-untyped-def]
    return lambda s: s["sent_instances"] >= n and s["waiting_instances"] == 0


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_a_study_reaches_the_cloud_byte_for_byte_compressed(site: Site, tmp_path: Path) -> None:
    _study, files = ct_series(tmp_path / "ct", 40, size=128, series_count=2)
    site.gateway.start()
    out = storescu(site.gateway.dicom_port, files)
    assert "Store Failed" not in out, out
    status = site.gateway.wait_until(all_sent(40))
    assert site.cloud_blob_hashes() == hashes(files)
    assert len(site.cloud_instances()) == 40
    # zstd on the wire: CT with noise still shrinks, and the link carried what the gateway said
    assert status["wire_bytes"] < 0.8 * status["sent_bytes"]
    assert site.proxy.upstream_bytes >= status["wire_bytes"]
    assert (
        metric(site.gateway.status_url, "cloudfilm_gateway_uploaded_items_total", kind="instance")
        == 40
    )
    assert metric(site.gateway.status_url, "cloudfilm_gateway_queue_items", kind="instance") == 0
    page = httpx.get(f"{site.gateway.status_url}/", timeout=5).text
    assert "云胶片网关" in page and "空闲" in page


def test_bad_input_is_refused_at_the_door_with_the_archives_statuses(
    site: Site, tmp_path: Path
) -> None:
    site.gateway.start()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", site.gateway.dicom_port, ae_title="CLOUDFILM_GW")
    assert assoc.is_established
    no_study = make_dataset()
    del no_study.StudyInstanceUID
    bad_uid = make_dataset(sop_uid="1.2.3.abc")
    good = make_dataset()
    statuses = [int(assoc.send_c_store(ds).Status) for ds in (no_study, bad_uid, good)]
    assoc.release()
    assert statuses == [0xC004, 0xC003, 0x0000]  # what the archive answers for the same bytes
    site.gateway.wait_until(all_sent(1))
    assert len(site.cloud_instances()) == 1
    assert (
        metric(
            site.gateway.status_url, "cloudfilm_gateway_instances_received_total", status="0xC004"
        )
        == 1
    )


def test_cloud_down_for_a_minute_and_the_gateway_killed_meanwhile(
    site: Site, tmp_path: Path
) -> None:
    """Both at once, in the middle of a 300-slice CT: the cloud process stops for a minute;
    during it the gateway is SIGKILLed and restarted while the modality keeps sending."""
    _study, files = ct_series(tmp_path / "ct", 300, size=64)
    site.proxy.rate = 400_000  # slow enough that the outage falls mid-upload
    site.gateway.start()
    first = threading.Thread(target=storescu, args=(site.gateway.dicom_port, files[:150]))
    first.start()
    site.gateway.wait_until(lambda s: s["sent_instances"] >= 20, timeout=60, every=0.05)
    site.cloud.kill()  # the cloud goes away mid-upload
    stopped = time.monotonic()
    first.join()
    # a request caught mid-way may wait out its timeout (120 s) before the gateway retries
    status = site.gateway.wait_until(lambda s: s["uploading_state"] == "retrying", timeout=150)
    assert status["waiting_instances"] > 0
    site.gateway.kill()  # SIGKILL while instances wait and the cloud is away
    site.gateway.start()
    out = storescu(site.gateway.dicom_port, files)  # the rest, and the first half again
    assert "Store Failed" not in out, out
    assert site.gateway.status()["sent_instances"] < 300
    time.sleep(max(0.0, 60 - (time.monotonic() - stopped)))
    site.cloud.start()
    site.proxy.rate = None
    site.gateway.wait_until(lambda s: s["waiting_instances"] == 0, timeout=180)
    assert site.cloud_blob_hashes() == hashes(files)  # every one, byte for byte
    assert len(site.cloud_instances()) == 300  # and once
    assert site.gateway.status()["set_aside_count"] == 0


def test_gateway_killed_mid_upload_resumes_by_itself(site: Site, tmp_path: Path) -> None:
    _study, files = ct_series(tmp_path / "ct", 80, size=128)
    site.proxy.rate = 500_000
    site.gateway.start()
    assert "Store Failed" not in storescu(site.gateway.dicom_port, files)
    site.gateway.wait_until(lambda s: s["sent_instances"] >= 5, timeout=60, every=0.05)
    site.gateway.kill()
    assert len(site.cloud_instances()) < 80
    site.proxy.rate = None
    site.gateway.start()
    site.gateway.wait_until(lambda s: s["waiting_instances"] == 0, timeout=120)
    assert site.cloud_blob_hashes() == hashes(files)
    assert len(site.cloud_instances()) == 80


def test_a_cloud_answering_500_then_200(site: Site, tmp_path: Path) -> None:
    _study, files = ct_series(tmp_path / "ct", 10)
    site.proxy.fail_next(3)
    site.gateway.start()
    assert "Store Failed" not in storescu(site.gateway.dicom_port, files)
    site.gateway.wait_until(all_sent(10))
    assert site.proxy.requests_failed == 3
    assert (
        metric(site.gateway.status_url, "cloudfilm_gateway_upload_failures_total", reason="cloud")
        == 3
    )
    assert site.cloud_blob_hashes() == hashes(files)


def test_a_revoked_token_stops_uploads_with_a_message(site: Site, tmp_path: Path) -> None:
    _study, files = ct_series(tmp_path / "ct", 15)
    site.gateway.start()
    storescu(site.gateway.dicom_port, files[:10])
    site.gateway.wait_until(all_sent(10))
    db = Database(site.cloud.database_url)
    revoke_token(db, site.token_id)
    time.sleep(1.5)  # a process trusts a token for a second
    assert "Store Failed" not in storescu(site.gateway.dicom_port, files[10:])
    status = site.gateway.wait_until(lambda s: s["uploading_state"] == "token_refused")
    assert "token" in status["message"] and "CLOUDFILM_GATEWAY_TOKEN" in status["message"]
    assert status["waiting_instances"] == 5  # kept, not lost, not set aside
    assert status["set_aside_count"] == 0
    assert "令牌" in httpx.get(f"{site.gateway.status_url}/", timeout=5).text
    # the hospital's IT makes a new token and restarts: the five go
    _info, token = create_token(db, "gateway 2", "write", hospital=1)
    db.dispose()
    site.gateway.stop()
    site.gateway.token = token
    site.gateway.start()
    site.gateway.wait_until(lambda s: s["waiting_instances"] == 0)
    assert site.cloud_blob_hashes() == hashes(files)


def test_what_the_cloud_will_never_take_is_set_aside_and_shown(site: Site, tmp_path: Path) -> None:
    """Another hospital already holds the study: the cloud refuses for good (0x0124)."""
    other_study = generate_uid()
    env = site.cloud.env()
    subprocess.run(
        [sys.executable, "-m", "cloudfilm.cli", "hospital", "add", "hosp-b", "--name", "乙医院"],
        env=env,
        check=True,
        capture_output=True,
    )
    db = Database(site.cloud.database_url)
    b = DIRECTORY.by_code(db, "hosp-b").pk
    _info, b_token = create_token(db, "b", "write", hospital=b)
    db.dispose()
    _s, b_files = ct_series(tmp_path / "b", 1, study_uid=other_study)
    with httpx.Client(base_url=site.cloud.http_url) as http:
        r = stow(http, [b_files[0].read_bytes()], Authorization=f"Bearer {b_token}")
    assert r.status_code == 200, r.text
    _s, mine = ct_series(tmp_path / "a", 3)
    _s, clash = ct_series(tmp_path / "clash", 2, study_uid=other_study, seed=9)
    site.gateway.start()
    assert "Store Failed" not in storescu(site.gateway.dicom_port, mine + clash)
    status = site.gateway.wait_until(
        lambda s: s["set_aside_count"] == 2 and s["waiting_instances"] == 0
    )
    assert status["sent_instances"] == 3
    reasons = {item["reason"] for item in status["set_aside"]}
    assert all("0x0124" in r for r in reasons), reasons
    page = httpx.get(f"{site.gateway.status_url}/", timeout=5).text
    assert "已搁置" in page and "0x0124" in page
    time.sleep(3)  # not retried: the cloud saw them once each
    assert site.gateway.status()["set_aside_count"] == 2


def _send_each(port: int, files: list[Path]) -> dict[str, int]:
    """pynetdicom as the modality: SOP Instance UID -> the status the gateway answered."""
    import pydicom

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)  # the files' syntax
    assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDFILM_GW")
    assert assoc.is_established
    out = {}
    for path in files:
        sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        out[str(sop)] = int(assoc.send_c_store(path).Status)  # a path: its bytes as they are
    assoc.release()
    return out


def test_spool_limit_refuses_with_out_of_resources_and_loses_nothing(
    site: Site, tmp_path: Path
) -> None:
    """The cloud is away; the spool fills to its limit; later instances get 0xA700 (the
    modality keeps them and retries), never a success the gateway could not keep."""
    _study, files = ct_series(tmp_path / "ct", 30, size=64)
    size = files[0].stat().st_size
    site.proxy.down()
    site.gateway.env_extra["CLOUDFILM_GATEWAY_MAX_SPOOL_BYTES"] = str(int(size * 10.5))
    site.gateway.start()
    answers = _send_each(site.gateway.dicom_port, files)
    assert list(answers.values()) == [0] * 10 + [0xA700] * 20
    site.proxy.up()
    site.gateway.wait_until(all_sent(10))
    again = _send_each(site.gateway.dicom_port, files[10:])  # the modality retries: room now
    assert set(again.values()) == {0}
    site.gateway.wait_until(all_sent(30))
    assert site.cloud_blob_hashes() == hashes(files)


def test_a_full_disk_refuses_and_resumes_by_itself(site: Site, tmp_path: Path) -> None:
    """A real full disk (a 2 MB tmpfs under the spool): writes fail with ENOSPC, the modality
    gets 0xA700 for what could not be kept, and every acknowledged instance still arrives."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        site.gateway.spool_dir = mount / "spool"
        site.gateway.log_path = tmp_path / "gateway.log"
        # the free-space reserve off (negative), so writes really run into ENOSPC: what
        # happens when something else fills the disk between the check and the write
        site.gateway.env_extra["CLOUDFILM_GATEWAY_MIN_FREE_BYTES"] = str(-(1 << 40))
        _study, files = ct_series(tmp_path / "ct", 60, size=96)  # ~18 kB each, 1.1 MB in all
        site.proxy.down()
        site.gateway.start()
        answers = _send_each(site.gateway.dicom_port, files)
        kept = [f for f, status in zip(files, answers.values(), strict=True) if status == 0]
        refused = [f for f, status in zip(files, answers.values(), strict=True) if status]
        assert set(answers.values()) == {0, 0xA700}, answers
        assert refused and kept
        assert "No space left" in site.gateway.log() or "disk is full" in site.gateway.log()
        site.proxy.up()
        site.gateway.wait_until(all_sent(len(kept)))
        for i in range(0, len(refused), 5):  # the modality retries, and now they fit
            chunk = refused[i : i + 5]
            assert set(_send_each(site.gateway.dicom_port, chunk).values()) == {0}
            site.gateway.wait_until(all_sent(len(kept) + i + len(chunk)))
        assert site.cloud_blob_hashes() == hashes(files)
    finally:
        site.gateway.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_https_with_the_hospitals_ca_and_a_client_certificate(site: Site, tmp_path: Path) -> None:
    """The cloud's HTTPS front trusts only client certificates of the hospital's CA; the
    gateway trusts the cloud through a CA bundle of its own."""
    import ssl

    from bench.netproxy import NetProxy

    from tests.gateway.pki import make_pki

    pki = tmp_path / "pki"
    make_pki(pki)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    server_tls.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    server_tls.verify_mode = ssl.CERT_REQUIRED
    front = NetProxy("127.0.0.1", site.cloud.http_port, tls=server_tls)
    try:
        _study, files = ct_series(tmp_path / "ct", 5)
        site.gateway.cloud_url = front.url
        site.gateway.env_extra.update({"CLOUDFILM_GATEWAY_CA_BUNDLE": str(pki / "ca.pem")})
        site.gateway.start()  # no client certificate yet: the handshake is refused
        storescu(site.gateway.dicom_port, files)
        status = site.gateway.wait_until(lambda s: s["uploading_state"] == "retrying")
        assert status["sent_instances"] == 0
        site.gateway.stop()
        site.gateway.env_extra.update(
            {
                "CLOUDFILM_GATEWAY_CLIENT_CERT": str(pki / "client.pem"),
                "CLOUDFILM_GATEWAY_CLIENT_KEY": str(pki / "client.key"),
            }
        )
        site.gateway.start()
        site.gateway.wait_until(all_sent(5))
        assert site.cloud_blob_hashes() == hashes(files)
    finally:
        front.close()


def test_a_paused_schedule_holds_uploads_and_says_so(site: Site, tmp_path: Path) -> None:
    _study, files = ct_series(tmp_path / "ct", 4)
    site.gateway.env_extra["CLOUDFILM_GATEWAY_BANDWIDTH"] = "*=paused"
    site.gateway.start()
    storescu(site.gateway.dicom_port, files)
    status = site.gateway.wait_until(lambda s: s["uploading_state"] == "paused")
    time.sleep(2)
    assert site.gateway.status()["waiting_instances"] == 4
    assert site.cloud_instances() == []
    env = site.gateway.env()
    out = subprocess.run(
        [sys.executable, "-m", "cloudfilm.cli", "gateway", "status"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "paused" in out and "4 instance(s)" in out
    assert status["bandwidth_now"] == "paused"

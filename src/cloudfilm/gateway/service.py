"""One gateway process: the spool and the parts around it, each in a thread of its own.

In: the DICOM door (``door.py``), HL7 ORU over MLLP (``hl7_in.py``), the virtual printer's
drop folder (``drop_folder.py``). Out: the uploader (``uploader.py``). Shown: the status page
and metrics (``status.py``). Nothing is kept in memory that the spool does not also hold, so a
SIGKILL at any moment costs only the requests in flight, which the peers resend.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from cloudfilm.gateway.door import DicomDoor, GatewayDoor
from cloudfilm.gateway.metrics import GatewayMetrics
from cloudfilm.gateway.settings import GatewaySettings
from cloudfilm.gateway.spool import Spool
from cloudfilm.gateway.status import StatusServer, status_app
from cloudfilm.gateway.uploader import Uploader

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.spool = Spool(
            settings.spool_dir,
            max_bytes=settings.max_spool_bytes,
            min_free_bytes=settings.min_free_bytes,
        )
        if self.spool.recovered:
            log.info("removed %d leftover file(s) of an interrupted run", self.spool.recovered)
        self.metrics = GatewayMetrics(self.snapshot)
        self.uploader = Uploader(settings, self.spool, self.metrics)
        self.dicom = DicomDoor(settings, GatewayDoor(settings, self.spool, self.metrics))
        self.parts: list[Any] = []
        self.status: StatusServer | None = None

    def snapshot(self) -> dict[str, Any]:
        s = self.spool.summary()
        s.update(self.uploader.status())
        oldest = s["oldest_waiting_at"]
        s["oldest_waiting_seconds"] = round(time.time() - oldest, 1) if oldest else 0
        s["ae_title"] = self.settings.ae_title
        s["cloud_url"] = self.settings.cloud_url
        return s

    def start(self) -> None:
        s = self.settings
        self.dicom.start()
        log.info("gateway %s: DICOM on %s:%d", s.ae_title, s.dicom_host, self.dicom.port)
        if not s.allowed_callers:
            log.warning("no calling-AE allow-list: EVERY calling AE may store into this gateway")
        if s.hl7_port:
            from cloudfilm.gateway.hl7_in import HL7Listener

            listener = HL7Listener(s.hl7_host, s.hl7_port, self.spool)
            listener.start()
            self.parts.append(listener)
            log.info("gateway: HL7 MLLP on %s:%d", s.hl7_host, listener.port)
        if s.drop_folder is not None:
            from cloudfilm.gateway.drop_folder import DropFolder

            folder = DropFolder(s.drop_folder, self.spool)
            folder.start()
            self.parts.append(folder)
            log.info("gateway: watching %s for reports", s.drop_folder)
        if s.status_port:
            app = status_app(self.snapshot, self.metrics, s.ae_title, s.cloud_url)
            self.status = StatusServer(app, s.status_host, s.status_port)
            self.status.start()
            log.info("gateway: status on http://%s:%d/", s.status_host, self.status.port)
        self.uploader.start()

    def stop(self) -> None:
        for part in reversed(self.parts):
            part.stop()
        self.dicom.stop()
        self.uploader.stop()
        if self.status is not None:
            self.status.stop()
        self.spool.close()

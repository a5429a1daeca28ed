"""Sending the film link (and one-time codes) by SMS through a pluggable back-end.

``log`` (default) writes the message to the server log with the phone number masked: enough
for a demo or a hospital without an SMS contract. ``webhook`` POSTs ``{"phone", "message"}``
as JSON to the hospital's SMS gateway (``CLOUDFILM_SMS_WEBHOOK_URL``), retrying a few times.
Messages never carry the access code: the link alone opens nothing.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.request
from typing import Protocol

from cloudfilm.config import Settings
from cloudfilm.metrics import instruments
from cloudfilm.portal.keys import mask_phone

log = logging.getLogger(__name__)

FILM_MESSAGE = (
    "【{hospital}】您的{exam}检查影像和报告已可在手机上查看：{link} "
    "打开后请输入纸质报告上的访问码或手机号后6位。"
)
CODE_MESSAGE = "【云胶片】您的验证码是 {code}，5分钟内有效。请勿告诉他人。"


class Notifier(Protocol):
    def send(self, phone: str, message: str) -> None:
        """Deliver or raise; callers record success only when this returns."""


class LogNotifier:
    """Logs the message with the number masked and link tokens cut short: a log is read by
    more people than the patient, and a whole link would let them in with the phone suffix."""

    def send(self, phone: str, message: str) -> None:
        shown = re.sub(r"(/[fs]/[A-Za-z0-9_-]{6})[A-Za-z0-9_-]+", r"\1…", message)
        log.info("SMS to %s: %s", mask_phone(phone), shown)


class WebhookNotifier:
    def __init__(self, url: str, attempts: int = 3) -> None:
        self.url = url
        self.attempts = attempts

    def send(self, phone: str, message: str) -> None:
        body = json.dumps({"phone": phone, "message": message}, ensure_ascii=False).encode()
        last: Exception | None = None
        for attempt in range(self.attempts):
            try:
                req = urllib.request.Request(
                    self.url, data=body, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(req, timeout=10) as resp:
                    if 200 <= resp.status < 300:
                        log.info("SMS to %s handed to the gateway", mask_phone(phone))
                        return
                    last = RuntimeError(f"gateway answered {resp.status}")
            except Exception as exc:
                last = exc
            time.sleep(0.5 * (attempt + 1))
        raise RuntimeError(f"SMS gateway failed: {last}")


class CountedNotifier:
    """Counts what the back-end took and refused (``cloudfilm_sms_messages_total``)."""

    def __init__(self, inner: Notifier) -> None:
        self.inner = inner

    def send(self, phone: str, message: str) -> None:
        try:
            self.inner.send(phone, message)
        except Exception:
            instruments.sms(sent=False)
            raise
        instruments.sms(sent=True)


def make_notifier(settings: Settings) -> Notifier:
    if settings.sms_backend == "webhook":
        if not settings.sms_webhook_url:
            raise ValueError("sms_backend=webhook needs CLOUDFILM_SMS_WEBHOOK_URL")
        return CountedNotifier(WebhookNotifier(settings.sms_webhook_url))
    return CountedNotifier(LogNotifier())

"""Pushing the index feed to the regional platform's webhook: at least once, in order.

One batch at a time: the page after the delivered cursor is POSTed, and the cursor (kept in
``index_state``, so it survives restarts) moves past it only once the receiver answered 2xx.
Anything else (an error status, a refused connection, a timeout) is tried again after a
back-off that doubles per failure up to ``MAX_BACKOFF`` with jitter, so a platform coming back
is not met by every hospital at the same second. A crash after the 2xx but before the cursor
was saved sends that batch again: the receiver keeps the newest record per index ID anyway.

Only one process of a deployment pushes: ``install_regional`` starts the pusher in ``serve``
only (never in its HTTP workers), and the pusher holds a lease row in ``index_state`` that it
renews while it runs (cloudfilm.background.Lease), so a second ``serve`` against the same
PostgreSQL waits instead of sending the same batches in parallel.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from typing import TYPE_CHECKING

import httpx
import orjson

from cloudfilm.access import Action, Principal
from cloudfilm.background import Lease, backoff
from cloudfilm.regional.feed import FeedPage, feed_page, page_json
from cloudfilm.storage.models import IndexState

if TYPE_CHECKING:
    from cloudfilm.archive import Archive

log = logging.getLogger(__name__)

CURSOR_KEY = "regional.index_webhook_cursor"
LEASE_KEY = "regional.index_webhook_lease"
LEASE_SECONDS = 60.0
"""A lease not renewed for this long (its process died) may be taken by another."""
POLL_SECONDS = 1.0
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
PUSHER = Principal(kind="system", id="index-webhook")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` over ``<timestamp>.<body>``: what the receiver recomputes."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def delivered_cursor(archive: Archive) -> int:
    with archive.db.read() as session:
        row = session.get(IndexState, CURSOR_KEY)
    return int(row.value) if row is not None and row.value.isdigit() else 0


class IndexPusher:
    """The background thread of one ``serve``: the feed's pages to ``index_webhook_url``."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.settings = archive.settings
        self.lease = Lease(archive.db, LEASE_KEY, LEASE_SECONDS)
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.failures = 0
        self.thread = threading.Thread(target=self._run, name="index-webhook", daemon=True)
        self.client = httpx.Client(timeout=TIMEOUT, follow_redirects=False)
        archive.on_stored(lambda _result: self.wake.set())

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout=40)
        self.client.close()
        try:
            self.lease.release()
        except Exception:
            log.exception("could not release the index webhook lease")

    # -- one batch ------------------------------------------------------------------------

    def _page(self, after: int) -> FeedPage:
        with self.archive.db.read() as session:
            return feed_page(session, after, self.settings.index_webhook_batch)

    def _body(self, page: FeedPage, after: int) -> tuple[bytes, str]:
        base = self.settings.http_url
        if self.settings.index_webhook_format == "fhir":
            from cloudfilm.regional.fhir import FHIR_JSON, bundle, bundle_json

            self_url = f"{base}/api/index/records?after={after}&_format=fhir"
            fhir = bundle(page, base, self.settings.index_id_system, self_url=self_url,
                          next_url=None)  # fmt: skip
            return bundle_json(fhir), FHIR_JSON
        return orjson.dumps(page_json(page, base)), "application/json"

    def push_once(self) -> bool:
        """Deliver the next batch, if any. True: delivered (or nothing to do, cursor moved)
        and another may be ready; False: nothing to send, or the receiver did not take it."""
        after = delivered_cursor(self.archive)
        page = self._page(after)
        if not page.records:
            if page.after != after:  # only changes of deleted studies: step over them
                self._save(page.after)
            return page.more
        # the one access check, audited: the whole platform's records leave the deployment
        detail = f"index webhook: {len(page.records)} record(s), changes {after + 1}-{page.after}"
        self.archive.authorize(PUSHER, Action.QUERY, None, detail=detail)
        body, media = self._body(page, after)
        first, last = page.records[0].seq, page.records[-1].seq
        headers = {
            "Content-Type": media,
            "X-Cloudfilm-Delivery": f"{after}-{page.after}",
            "User-Agent": "cloudfilm-index-webhook",
        }
        if self.settings.index_webhook_secret:
            stamp = str(int(time.time()))
            headers["X-Cloudfilm-Timestamp"] = stamp
            headers["X-Cloudfilm-Signature"] = signature(
                self.settings.index_webhook_secret, stamp, body
            )
        url = self.settings.index_webhook_url or ""
        try:
            answer = self.client.post(url, content=body, headers=headers)
            ok = 200 <= answer.status_code < 300
            why = f"HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            self.failures += 1
            log.warning("index webhook: changes %d-%d not taken (%s), attempt %d",
                        first, last, why, self.failures)  # fmt: skip
            return False
        self.failures = 0
        self._save(page.after)
        return page.more

    def _save(self, cursor: int) -> None:
        with self.archive.db.write() as session:
            row = session.get(IndexState, CURSOR_KEY)
            if row is None:
                session.add(IndexState(key=CURSOR_KEY, value=str(cursor)))
            elif int(row.value or 0) < cursor:
                row.value = str(cursor)

    # -- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self.stopping.is_set():
            wait = POLL_SECONDS
            try:
                if not self.lease.held():
                    self.stopping.wait(LEASE_SECONDS / 3)
                    continue
                if self.push_once():
                    continue
                if self.failures:
                    wait = backoff(self.failures, self.settings.index_webhook_retry_seconds)
            except Exception:
                self.failures += 1
                log.exception("index webhook pass failed")
                wait = backoff(self.failures, self.settings.index_webhook_retry_seconds)
            if self.failures:
                self.stopping.wait(wait)  # a new study does not cut a back-off short
            else:
                self.wake.wait(wait)
                self.wake.clear()

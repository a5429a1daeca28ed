"""Films: issued when a study is stable and its report is in; their link, code and SMS.

"Stable" means no new instance for ``film_stable_seconds`` (modalities send a study over
minutes, and a film issued half-way would show half the images). The :class:`FilmIssuer`
polls the index (DIMSE workers in other processes store instances too, so an in-process event
alone would miss them) and is woken early by ``archive.on_stored`` and by new reports.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError

from cloudfilm.metrics import instruments
from cloudfilm.portal import keys
from cloudfilm.portal.models import Film, Report
from cloudfilm.portal.notify import FILM_MESSAGE, Notifier, make_notifier
from cloudfilm.portal.reports import REPORT_CLASSES, DicomReportScanner, match_waiting
from cloudfilm.storage.models import Study, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from cloudfilm.archive import Archive
    from cloudfilm.ingest import IngestResult

log = logging.getLogger(__name__)


def aware(dt: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; everything here is UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class FilmLink:
    film_id: str
    study_uid: str
    link: str
    code: str


def hospital_name(archive: Archive, hospital_pk: int) -> str:
    """What patients read as the hospital's name (the settings' name for an unnamed one)."""
    from cloudfilm.accounts.hospitals import DIRECTORY

    return DIRECTORY.get(archive.db, hospital_pk).name or archive.settings.hospital_name


def film_link(archive: Archive, film: Film) -> FilmLink:
    """Re-derive the link and the access code of a film (they are stored only hashed)."""
    secret = keys.server_secret(archive.settings)
    token = keys.link_token(secret, "film", film.film_id, film.generation)
    code = keys.six_digits(secret, "film", film.film_id, film.generation)
    return FilmLink(film.film_id, film.study_uid, f"{archive.settings.http_url}/f/{token}", code)


def code_hash(secret: bytes, film_id: str, code: str) -> str:
    return keys.mac_hex(secret, "film-code", film_id, code)


def phone_hash(secret: bytes, film_id: str, last6: str) -> str:
    return keys.mac_hex(secret, "film-phone", film_id, last6)


def get_film(archive: Archive, film_id: str) -> Film | None:
    with archive.db.read() as session:
        return session.execute(select(Film).where(Film.film_id == film_id)).scalar_one_or_none()


def film_for_study(archive: Archive, study_uid: str) -> Film | None:
    with archive.db.read() as session:
        return session.execute(select(Film).where(Film.study_uid == study_uid)).scalar_one_or_none()


def film_by_token(archive: Archive, token: str) -> Film | None:
    if not (20 <= len(token) <= 100):
        return None
    digest = keys.sha256_hex(token)
    with archive.db.read() as session:
        film = session.execute(select(Film).where(Film.token_hash == digest)).scalar_one_or_none()
    if film is None or not keys.same(film.token_hash, digest) or film.revoked_at is not None:
        return None
    return film


def issue_film(archive: Archive, study_uid: str) -> tuple[Film, bool]:
    """The study's film, created now if it has none; (film, created)."""
    existing = film_for_study(archive, study_uid)
    if existing is not None:
        return existing, False
    owner = archive.study_owner(study_uid)
    if owner is None:
        raise LookupError(f"no study {study_uid} in the index")
    with archive.db.read() as session:
        report = (
            session.execute(
                select(Report)
                .where(Report.study_uid == study_uid, Report.current.is_(True))
                .order_by(Report.pk.desc())
            )
            .scalars()
            .first()
        )
    secret = keys.server_secret(archive.settings)
    film_id = keys.new_id()
    token = keys.link_token(secret, "film", film_id, 1)
    code = keys.six_digits(secret, "film", film_id, 1)
    phone = keys.digits(report.phone) if report else ""
    film = Film(
        film_id=film_id,
        hospital_pk=owner,
        study_uid=study_uid,
        generation=1,
        token_hash=keys.sha256_hex(token),
        code_hash=code_hash(secret, film_id, code),
        phone_hash=phone_hash(secret, film_id, phone[-6:]) if len(phone) >= 6 else None,
        phone_key=keys.phone_key(secret, phone) if phone else None,
        issued_at=utcnow(),
    )
    try:
        with archive.db.write() as session:
            session.add(film)
    except IntegrityError:  # another process issued it first
        again = film_for_study(archive, study_uid)
        assert again is not None
        return again, False
    archive.audit.record(
        principal="system:films", action="issue", resource=study_uid, outcome="allow",
        detail=f"film {film_id}", hospital=owner,
    )  # fmt: skip
    instruments.film_issued()
    log.info("issued film %s", film_id)
    return film, True


def reissue_film(archive: Archive, film: Film) -> Film:
    """A new link and code for a film (a paper report was lost): the old ones stop working,
    and so do the sessions opened with them. Shares the patient made stay valid."""
    from cloudfilm.portal.models import PortalSession

    secret = keys.server_secret(archive.settings)
    with archive.db.write() as session:
        row = session.get(Film, film.pk)
        assert row is not None
        row.generation += 1
        token = keys.link_token(secret, "film", row.film_id, row.generation)
        code = keys.six_digits(secret, "film", row.film_id, row.generation)
        row.token_hash = keys.sha256_hex(token)
        row.code_hash = code_hash(secret, row.film_id, code)
        for s in session.execute(
            select(PortalSession).where(
                PortalSession.kind == "film",
                PortalSession.subject == row.film_id,
                PortalSession.revoked_at.is_(None),
            )
        ).scalars():
            s.revoked_at = utcnow()
    archive.audit.record(
        principal="system:films", action="issue", resource=row.study_uid, outcome="allow",
        detail=f"film {row.film_id} reissued (generation {row.generation})",
    )  # fmt: skip
    return row


def notify_film(archive: Archive, film: Film, notifier: Notifier) -> bool:
    """Send the link by SMS when the report gives a phone number; record when it was sent."""
    with archive.db.read() as session:
        report = (
            session.execute(
                select(Report)
                .where(Report.study_uid == film.study_uid, Report.current.is_(True))
                .order_by(Report.pk.desc())
            )
            .scalars()
            .first()
        )
    if report is None or len(keys.digits(report.phone)) < 6:
        return False
    link = film_link(archive, film).link
    message = FILM_MESSAGE.format(
        hospital=report.hospital or hospital_name(archive, film.hospital_pk),
        exam=report.exam_name or report.modality or "影像",
        link=link,
    )
    notifier.send(report.phone, message)
    with archive.db.write() as session:
        row = session.get(Film, film.pk)
        if row is not None:
            row.notified_at = utcnow()
    archive.audit.record(
        principal="system:films", action="notify", resource=film.study_uid, outcome="allow",
        detail=f"film {film.film_id} link sent by SMS", hospital=film.hospital_pk,
    )  # fmt: skip
    return True


def follow_phone_correction(session: Session, archive: Archive, study_uid: str, phone: str) -> bool:
    """A corrected report with another phone number: checking by the phone's last 6 digits and
    the SMS login follow the new number, and the link goes to it (the issuer's next pass finds
    the film unsent). True when the film changed; the caller's transaction commits it."""
    digits = keys.digits(phone)
    if len(digits) < 6:  # a correction without a number keeps the one we have
        return False
    film = session.execute(select(Film).where(Film.study_uid == study_uid)).scalars().first()
    if film is None:  # no film yet: it will be issued with the current report's number
        return False
    secret = keys.server_secret(archive.settings)
    new_key = keys.phone_key(secret, digits)
    if film.phone_key == new_key:
        return False
    film.phone_hash = phone_hash(secret, film.film_id, digits[-6:])
    film.phone_key = new_key
    film.notified_at = None
    return True


SMS_RETRY_DAYS = 3
"""How long the issuer keeps trying to send a film's SMS (a link days late is still useful;
a week late it would surprise the patient more than help)."""


def unsent_films(archive: Archive) -> list[Film]:
    """Films with a phone number whose SMS has not gone out (the gateway was down, the server
    stopped between issuing and sending, or a corrected report changed the number), issued or
    corrected in the last few days."""
    cutoff = utcnow() - timedelta(days=SMS_RETRY_DAYS)
    corrected = (
        select(Report.pk)
        .where(
            Report.study_uid == Film.study_uid,
            Report.current.is_(True),
            Report.received_at >= cutoff,
        )
        .exists()
    )
    with archive.db.read() as session:
        rows = session.execute(
            select(Film)
            .where(
                Film.notified_at.is_(None),
                Film.phone_hash.is_not(None),
                Film.revoked_at.is_(None),
                or_(Film.issued_at >= cutoff, corrected),
            )
            .order_by(Film.pk)
            .limit(1000)
        ).scalars()
        return list(rows)


def ready_studies(archive: Archive, stable_seconds: float) -> list[str]:
    """Studies with a current matched report, no film, and no new instance for a while."""
    cutoff = utcnow() - timedelta(seconds=stable_seconds)
    with archive.db.read() as session:
        rows = session.execute(
            select(Report.study_uid)
            .join(Study, Study.study_uid == Report.study_uid)
            .outerjoin(Film, Film.study_uid == Report.study_uid)
            .where(
                Report.current.is_(True),
                Film.pk.is_(None),
                Study.last_instance_at <= cutoff,
                Study.num_instances > 0,
            )
            .distinct()
            .limit(200)
        ).scalars()
        return list(rows)


PURGE_EVERY = 600.0
SMS_RETRY_SECONDS = 30.0
"""First wait after a failed SMS; doubled at each further failure, up to an hour."""
SMS_RETRY_MAX_SECONDS = 3600.0
SMS_NO_PHONE_RECHECK_SECONDS = 600.0


def purge_expired(archive: Archive) -> int:
    """Forget sessions and SMS codes that ended more than a day ago (the audit keeps the
    history; these rows only grant, and no longer do)."""
    from cloudfilm.portal.models import OneTimeCode, PortalSession

    cutoff = utcnow() - timedelta(days=1)
    with archive.db.write() as session:
        gone = session.execute(delete(PortalSession).where(PortalSession.expires_at < cutoff))
        session.execute(delete(OneTimeCode).where(OneTimeCode.expires_at < cutoff))
    return gone.rowcount or 0


class FilmIssuer:
    """The background worker of one server process: DICOM reports, matching, films, SMS."""

    def __init__(self, archive: Archive, notifier: Notifier | None = None) -> None:
        self.archive = archive
        self.notifier = notifier or make_notifier(archive.settings)
        self.scanner = DicomReportScanner(archive)
        self.marks: tuple[int | None, int | None] = (None, None)
        self.purged_at = 0.0
        self.sms_next_try: dict[str, float] = {}
        self.sms_failures: dict[str, int] = {}
        self.wake = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="film-issuer", daemon=True)
        self.recent_studies: set[str] = set()
        archive.on_stored(self._stored)

    def _stored(self, result: IngestResult) -> None:
        """Wake early for what a pass acts on at once: a DICOM report, or a new study (a
        waiting report may match it). The other instances of a study only move its stable
        time, which the regular passes watch; waking for each cost a pass per instance."""
        if result.sop_class_uid in REPORT_CLASSES or result.study_uid not in self.recent_studies:
            if len(self.recent_studies) > 10_000:
                self.recent_studies.clear()
            self.recent_studies.add(result.study_uid)
            self.wake.set()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        self.thread.join(timeout=10)

    def run_once(self) -> list[Film]:
        """One pass; returns the films issued (tests and the demo call it directly)."""
        self.scanner.scan()
        with self.archive.db.read() as session:
            marks = (
                session.execute(select(func.max(Study.pk))).scalar(),
                session.execute(select(func.max(Report.pk))).scalar(),
            )
        if marks != self.marks:  # waiting reports can only match when studies/reports arrive
            match_waiting(self.archive)
            self.marks = marks
        if time.monotonic() - self.purged_at > PURGE_EVERY:
            self.purged_at = time.monotonic()
            purge_expired(self.archive)
        issued = []
        for study_uid in ready_studies(self.archive, self.archive.settings.film_stable_seconds):
            film, created = issue_film(self.archive, study_uid)
            if not created:
                continue
            issued.append(film)
            self._send_sms(film)
        now = time.monotonic()
        for film in unsent_films(self.archive):
            if self.sms_next_try.get(film.film_id, 0.0) <= now:
                self._send_sms(film)
        return issued

    def _send_sms(self, film: Film) -> None:
        """Send now; on failure try again later with back-off (the next passes find the film
        unsent, also after a restart), so a gateway outage delays the SMS but never drops it."""
        try:
            sent = notify_film(self.archive, film, self.notifier)
        except Exception as exc:
            failures = self.sms_failures.get(film.film_id, 0) + 1
            self.sms_failures[film.film_id] = failures
            delay = min(SMS_RETRY_MAX_SECONDS, SMS_RETRY_SECONDS * 2 ** (failures - 1))
            self.sms_next_try[film.film_id] = time.monotonic() + delay
            log.warning(
                "SMS for film %s not sent (%s); attempt %d, next in %.0f s",
                film.film_id, exc, failures, delay,
            )  # fmt: skip
            return
        self.sms_failures.pop(film.film_id, None)
        if sent:
            self.sms_next_try.pop(film.film_id, None)
        else:  # the current report no longer gives a phone number
            self.sms_next_try[film.film_id] = time.monotonic() + SMS_NO_PHONE_RECHECK_SECONDS

    def _run(self) -> None:
        interval = max(0.2, min(1.0, self.archive.settings.film_stable_seconds / 5))
        failures = 0
        while not self.stopping:
            self.wake.wait(interval)
            self.wake.clear()
            if self.stopping:
                return
            try:
                self.run_once()
                failures = 0
            except Exception:
                if failures == 0:
                    log.exception("film issuing pass failed (retrying with back-off)")
                failures += 1
                time.sleep(min(30.0, 0.5 * 2**failures))
            time.sleep(0.2)  # a study arriving wakes us per instance: at most 5 passes a second

"""One-time codes by SMS: a restricted authenticator (NIST SP 800-63B-4 3.1.3.3), never phishing-resistant.

A code has 6 digits from ``secrets``, is stored as a keyed hash bound to its factor and purpose (``login:<tx>``,
``enroll:<factor>``), is valid 5 minutes and allows 5 attempts (NIST 3.1.3.2; ASVS 6.6.2/6.6.3)::

    send_code ── throttled? ──► SmsThrottled          per user and per number: 30 s apart, 5 an hour
        │ row written, then gateway.send
        ├── gateway fails ──► row marked failed, SmsUnavailable   (still counts towards the 5 an hour)
        └── sent ──► older live codes of the same factor and purpose expire
    verify_code ── user blocked? ──► SmsThrottled     failures across codes; a new code resets nothing
        │ failure reserved (idp.accounts.throttle), then one of the code's 5 attempts taken atomically
        ├── wrong, expired, used, other purpose ──► False (the failure stays counted)
        └── right ──► consumed by UPDATE ... WHERE consumed_at IS NULL (one winner), failures reset

Every check that must hold across server processes is an atomic ``UPDATE ... WHERE``, a row lock (the failure
counter) or, for the send limits, a transaction lock (PostgreSQL advisory lock; SQLite's ``BEGIN IMMEDIATE``
already serialises writers). Gateways sit behind one method, ``send(to, text)``, that raises only
``SmsUnavailable``, so a broken gateway gives the user a clear message and another method, never a 500.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

import httpx
import phonenumbers
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from idp.accounts import throttle
from idp.config import SmsSettings
from idp.crypto import KeyedHasher
from idp.db import rowcount
from idp.models import SmsChallenge, SmsFactor, User
from idp.web.i18n import N_

log = logging.getLogger("idp.sms")

DIGITS = 6
CODE_LIFETIME = timedelta(minutes=5)
MAX_ATTEMPTS = 5
"""Attempts per code, the right one included."""
SEND_INTERVAL = timedelta(seconds=30)
SEND_WINDOW = timedelta(hours=1)
SENDS_PER_WINDOW = 5
FAILURE_LIMIT_FREE = 5
FAILURE_POLICY = throttle.Policy(first_delay=timedelta(minutes=1), max_delay=timedelta(hours=1),
                                 forget_after=timedelta(days=1))
"""Wrong codes across all codes of a user: after 5, waits of 1, 2, 4 ... 60 minutes (about 30 guesses a day
at a million codes). A new code resets nothing; a right code does, and so does a day without failures
(NIST SP 800-63B-4 3.1.3.2, 3.2.2)."""
LEDGER_KEPT = timedelta(days=1)

MESSAGE_TEMPLATE = "Ihr Anmeldecode: {code} (5 Minuten gültig)"
ENROLL_MESSAGE_TEMPLATE = "Ihr Bestätigungscode für diese Telefonnummer: {code} (5 Minuten gültig)"

_PHONE_CHARACTERS = set("0123456789+-()/. ")


class PhoneNumberInvalid(ValueError):
    """The text is not a phone number we can send to; the message can be shown to the user."""


class PhoneAlreadyEnrolled(PhoneNumberInvalid):
    """The user already has this number as a confirmed factor."""


class SmsUnavailable(Exception):
    """The gateway did not take the message. ``reason`` is for logs and the audit trail, not for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SmsThrottled(Exception):
    """Too many codes sent, or too many wrong codes: try again after ``retry_after``."""

    def __init__(self, retry_after: timedelta) -> None:
        super().__init__(f"try again in {int(retry_after.total_seconds()) + 1} s")
        self.retry_after = retry_after


# --- numbers -----------------------------------------------------------------------------------------------


def normalize_phone(text: str, default_region: str) -> str:
    """The number in E.164 (``+4930123456``); national numbers are read as numbers of ``default_region``."""
    stripped = text.strip()
    if not stripped:
        raise PhoneNumberInvalid(N_("Please enter a phone number."))
    # phonenumbers skips trailing junk (``tel:``, letters, control characters); a number we send codes to
    # must be exactly what the user typed, so anything but digits and separators is refused first.
    if len(stripped) > 40 or not set(stripped) <= _PHONE_CHARACTERS:
        raise PhoneNumberInvalid(N_("A phone number may contain only digits, spaces, +, -, /, ( and )."))
    try:
        number = phonenumbers.parse(stripped, default_region.upper())
    except phonenumbers.NumberParseException as exc:
        national = not stripped.startswith(("+", "00"))
        if national and exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise PhoneNumberInvalid(
                N_("Please write the number with its country code, e.g. +49 151 23456789.")) from exc
        raise PhoneNumberInvalid(N_("This is not a valid phone number.")) from exc
    if number.extension or not phonenumbers.is_valid_number(number):
        raise PhoneNumberInvalid(N_("This is not a valid phone number."))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def masked(phone: str) -> str:
    """``+49•••••••678``: enough to recognise one's own number, for pages and logs."""
    return phone[:3] + "•" * max(len(phone) - 6, 0) + phone[-3:]


# --- gateways ----------------------------------------------------------------------------------------------


class SmsGateway(Protocol):
    def send(self, to: str, text: str) -> None:
        """Hand the message to the gateway; raise ``SmsUnavailable`` (and nothing else) when that fails."""


class LogGateway:
    """Development: the message goes to the log. The text (with the code) only at DEBUG, so a server log at
    the usual INFO level never holds a usable code."""

    def send(self, to: str, text: str) -> None:
        log.info("SMS to %s (log gateway; the text is logged at DEBUG level)", masked(to))
        log.debug("SMS to %s: %s", to, text)


class HttpGateway:
    """A generic JSON gateway: ``POST url`` with body ``{"to": "+49...", "text": "..."}`` and the configured
    headers (an API key, usually).

    Timeouts, connection errors, non-2xx answers and 2xx answers that declare JSON but carry none are retried
    ``retries`` times, then reported as ``SmsUnavailable``. A 4xx other than 408 and 429 is not retried: the
    same request would be refused the same way. A retry after a timeout may deliver the message twice; the
    gateway has no idempotency key in this generic interface. Redirects are not followed.
    """

    def __init__(self, url: str, headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
                 timeout: timedelta = timedelta(seconds=5), retries: int = 1, *,
                 pause: timedelta = timedelta(milliseconds=200)) -> None:
        self.url = url
        self.headers = dict(headers.items()) if isinstance(headers, Mapping) else dict(headers)
        self.timeout = timeout
        self.retries = max(retries, 0)
        self.pause = pause

    def _try_once(self, to: str, text: str) -> tuple[bool, str]:
        """One request: (whether another try may help, why it failed); returns (False, "") on success."""
        try:
            with httpx.Client(timeout=self.timeout.total_seconds(), follow_redirects=False) as http:
                response = http.post(self.url, json={"to": to, "text": text}, headers=self.headers)
        except httpx.TimeoutException:
            return True, "timeout"
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, OSError) as exc:
            # Connection refused, a reply that is not HTTP, an unusable URL or header: never a 500 for the user.
            return True, f"{type(exc).__name__}"
        if not 200 <= response.status_code < 300:
            retry = response.status_code >= 500 or response.status_code in (408, 429)
            return retry, f"HTTP {response.status_code}"
        if "json" in response.headers.get("content-type", "").lower():
            try:
                json.loads(response.content)
            except ValueError:
                return True, "malformed reply"
        return False, ""

    def send(self, to: str, text: str) -> None:
        tries = 0
        while True:
            tries += 1
            retry, reason = self._try_once(to, text)
            if not reason:
                return
            if not retry or tries > self.retries:
                break
            time.sleep(self.pause.total_seconds() * tries)
        log.warning("SMS gateway failed for %s after %d tries: %s", masked(to), tries, reason)
        raise SmsUnavailable(f"{reason} after {tries} tries")


def gateway_from_settings(settings: SmsSettings) -> SmsGateway:
    if settings.gateway == "http":
        assert settings.url, "[sms] url is required with gateway = http (checked when the settings are loaded)"
        return HttpGateway(settings.url, settings.headers, settings.timeout, settings.retries)
    return LogGateway()


# --- factors and codes -------------------------------------------------------------------------------------


def add_phone(db: Session, user: User, phone_text: str, name: str, settings: SmsSettings,
              now: datetime) -> SmsFactor:
    """An unconfirmed factor for the number (active only after ``confirm``); re-adding a number that awaits
    confirmation returns that factor instead of piling up rows."""
    phone = normalize_phone(phone_text, settings.default_region)
    existing = db.scalars(select(SmsFactor).where(SmsFactor.user_id == user.id, SmsFactor.phone == phone)).all()
    if any(factor.confirmed_at is not None for factor in existing):
        raise PhoneAlreadyEnrolled(N_("This number is already registered for your account."))
    label = name.strip()[:64] or "Phone"
    if existing:
        existing[0].name = label
        return existing[0]
    factor = SmsFactor(user_id=user.id, name=label, phone=phone, created_at=now)
    db.add(factor)
    db.flush()
    return factor


def confirm(db: Session, factor: SmsFactor, now: datetime) -> None:
    """Mark the number verified (after ``verify_code`` accepted a code sent for ``enroll_purpose``)."""
    db.execute(update(SmsFactor).where(SmsFactor.id == factor.id, SmsFactor.confirmed_at.is_(None))
               .values(confirmed_at=now))
    db.refresh(factor)


def enroll_purpose(factor: SmsFactor) -> str:
    return f"enroll:{factor.id}"


def login_purpose(transaction_id: str) -> str:
    return f"login:{transaction_id}"


def _code_material(factor: SmsFactor, purpose: str, code: str) -> str:
    # Bound to factor and purpose: equal codes hash differently, and a hash proves nothing for another purpose.
    return f"sms:{factor.id}:{purpose}:{code}"


def _check_usable(factor: SmsFactor, purpose: str) -> None:
    if len(purpose) > 96:
        raise ValueError("an SMS purpose has at most 96 characters")
    if factor.confirmed_at is None and purpose != enroll_purpose(factor):
        # Attack case 41: during sign-in, codes go only to numbers the user has proved to own.
        raise ValueError("an unconfirmed phone receives only its enrollment code")


def _lock_send_limits(db: Session, keys: list[str]) -> None:
    """Serialise sends per user and per number, so that parallel requests cannot all pass the count."""
    if db.get_bind().dialect.name != "postgresql":
        return  # SQLite: every writing transaction began with BEGIN IMMEDIATE and runs alone.
    for key in sorted(keys):  # one order everywhere: no deadlocks
        lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        db.execute(select(func.pg_advisory_xact_lock(lock_id)))


def send_wait(db: Session, factor: SmsFactor, now: datetime) -> timedelta | None:
    """How long until a code may be sent to ``factor``, or None if now: at least 30 s after the last delivered
    SMS and at most 5 tries an hour, both per user and per number (failed tries count for the hour only)."""
    waits: list[timedelta] = []
    for column, value in ((SmsChallenge.user_id, factor.user_id), (SmsChallenge.phone, factor.phone)):
        rows = db.execute(select(SmsChallenge.created_at, SmsChallenge.failed_at)
                          .where(column == value, SmsChallenge.created_at > now - SEND_WINDOW)
                          .order_by(SmsChallenge.created_at)).all()
        delivered = [created for created, failed in rows if failed is None]
        if delivered and delivered[-1] + SEND_INTERVAL > now:
            waits.append(delivered[-1] + SEND_INTERVAL - now)
        if len(rows) >= SENDS_PER_WINDOW:
            # Free again once the oldest of the last five has left the window.
            waits.append(rows[-SENDS_PER_WINDOW].created_at + SEND_WINDOW - now)
    return max(waits) if waits else None


def send_code(db: Session, hasher: KeyedHasher, gateway: SmsGateway, factor: SmsFactor, purpose: str,
              now: datetime, *, message_template: str = MESSAGE_TEMPLATE) -> SmsChallenge:
    """Send a fresh code for ``purpose``; older live codes of this factor and purpose stop working.

    Raises ``SmsThrottled`` while a send limit runs and ``SmsUnavailable`` when the gateway fails. A failed
    try leaves the older codes valid and its own row marked failed: it counts towards the 5 an hour (the
    gateway may have delivered it) but not towards the 30 s, so the user can retry at once. Callers catch
    ``SmsUnavailable`` inside their unit of work so that this is committed; if they let it roll back
    instead, nothing of the try remains. The gateway is called inside the caller's transaction (on SQLite
    that holds the write lock), which is why its timeout and retries are kept short.
    """
    _check_usable(factor, purpose)
    if "{code}" not in message_template:
        raise ValueError("the SMS template must contain {code}")
    _lock_send_limits(db, [f"sms:send:user:{factor.user_id}", f"sms:send:phone:{factor.phone}"])
    wait = send_wait(db, factor, now)
    if wait is not None:
        raise SmsThrottled(wait)
    code = f"{secrets.randbelow(10**DIGITS):0{DIGITS}d}"
    challenge = SmsChallenge(factor_id=factor.id, user_id=factor.user_id, phone=factor.phone, purpose=purpose,
                             code_hash=hasher.hash(_code_material(factor, purpose, code)), created_at=now,
                             expires_at=now + CODE_LIFETIME, attempts=0)
    db.add(challenge)
    db.flush()
    try:
        gateway.send(factor.phone, message_template.replace("{code}", code))
    except SmsUnavailable:
        challenge.failed_at = now
        challenge.expires_at = now
        db.flush()
        raise
    db.execute(update(SmsChallenge)
               .where(SmsChallenge.factor_id == factor.id, SmsChallenge.purpose == purpose,
                      SmsChallenge.id != challenge.id, SmsChallenge.consumed_at.is_(None),
                      SmsChallenge.expires_at > now)
               .values(expires_at=now))
    return challenge


def _failure_limits(factor: SmsFactor) -> list[throttle.Limit]:
    # Per user, not per factor: a second phone, or removing and re-adding one, buys no fresh guesses.
    return [throttle.Limit(f"sms:user:{factor.user_id}", FAILURE_LIMIT_FREE)]


def is_well_formed(code: str) -> bool:
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def verify_code(db: Session, hasher: KeyedHasher, factor: SmsFactor, purpose: str, code: str,
                now: datetime) -> bool:
    """Accept the live code for ``factor`` and ``purpose`` once. Raises ``SmsThrottled`` while the user's
    wrong codes (across all codes: asking for a new one resets nothing, NIST SP 800-63B-4 3.1.3.2) hold a
    delay; a malformed entry is refused without counting, as it guesses nothing."""
    code = code.replace(" ", "").strip()
    if not is_well_formed(code) or len(purpose) > 96:
        return False
    if factor.confirmed_at is None and purpose != enroll_purpose(factor):
        return False
    limits = _failure_limits(factor)
    # Counted as a failure before the check, so parallel guesses cannot slip past the count.
    blocked = throttle.reserve_attempt(db, limits, now, FAILURE_POLICY)
    if blocked is not None:
        raise SmsThrottled(blocked.retry_after)
    challenge = db.scalars(
        select(SmsChallenge)
        .where(SmsChallenge.factor_id == factor.id, SmsChallenge.purpose == purpose,
               SmsChallenge.consumed_at.is_(None), SmsChallenge.failed_at.is_(None), SmsChallenge.expires_at > now)
        .order_by(SmsChallenge.id.desc()).limit(1)
    ).first()
    if challenge is None:
        return False
    # Take one of the code's attempts before comparing: at most MAX_ATTEMPTS comparisons, however parallel.
    took = rowcount(db.execute(
        update(SmsChallenge)
        .where(SmsChallenge.id == challenge.id, SmsChallenge.attempts < MAX_ATTEMPTS,
               SmsChallenge.consumed_at.is_(None), SmsChallenge.expires_at > now)
        .values(attempts=SmsChallenge.attempts + 1)
    ))
    if took != 1 or not hasher.matches(_code_material(factor, purpose, code), challenge.code_hash):
        return False
    won = rowcount(db.execute(
        update(SmsChallenge).where(SmsChallenge.id == challenge.id, SmsChallenge.consumed_at.is_(None))
        .values(consumed_at=now)
    ))
    if won != 1:
        return False
    throttle.record_success(db, limits, reset={limit.key for limit in limits})
    factor.last_used_at = now
    db.flush()
    return True


def purge(db: Session, now: datetime) -> int:
    """Delete codes older than a day (long past use, and past the send limits' window)."""
    return rowcount(db.execute(delete(SmsChallenge).where(SmsChallenge.created_at < now - LEDGER_KEPT)))

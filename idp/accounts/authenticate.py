"""Checking a username and password, throttled and audited, without revealing which part was wrong.

Unknown user, wrong password, disabled account and a running delay all give the same answer to the
person signing in (BSI ORP.4.A23; OWASP ASVS 6.3.8); the audit trail records the real reason.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from idp import audit
from idp.accounts import throttle
from idp.accounts.passwords import Passwords, is_acceptable_input
from idp.accounts.users import find_user, normalize_username
from idp.config import DirectorySettings, ThrottleSettings
from idp.models import DirectoryAccount, User


class Outcome(enum.Enum):
    OK = "ok"
    INVALID = "invalid"
    THROTTLED = "throttled"
    UNAVAILABLE = "unavailable"
    """A directory account's password could not be checked because its directory did not answer; this is
    not counted as a failed attempt (security case 53)."""


@dataclass(frozen=True)
class Verdict:
    """argon2's answer for a typed password, reached before the sign-in's transaction (``verify_ahead``)."""

    password_hash: str | None
    """The stored hash it was checked against (None: the dummy, for an unknown or password-less account)."""
    valid: bool


@dataclass(frozen=True)
class PasswordCheck:
    outcome: Outcome
    user: User | None = None
    retry_after: timedelta | None = None


def _limits(settings: ThrottleSettings, username: str, ip: str | None) -> list[throttle.Limit]:
    # The account key is derived from the typed name, not the user id, so unknown names are throttled alike.
    name_key = hashlib.sha256(normalize_username(username).encode()).hexdigest()[:32]
    limits = [throttle.Limit(f"password:account:{name_key}", settings.free_attempts_per_account)]
    if ip:
        limits.append(throttle.Limit(f"password:ip:{address_key(ip)}", settings.free_attempts_per_ip))
    return limits


def address_key(ip: str) -> str:
    """The unit an address counter counts: one IPv4 address, or one IPv6 /64 (what one subscriber gets, so
    hopping between its addresses gains nothing)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _stored_hash(user: User | None, password: str, directory: DirectorySettings | None) -> str | None:
    """The hash a typed password is checked against; None where it is checked against the dummy hash."""
    if user is None or not is_acceptable_input(password):
        return None
    if user.source != "local" and directory is not None:
        return None  # checked by an LDAP bind; the dummy check keeps the timing alike (security case 31)
    return user.password_hash


def verify_ahead(db: Session, passwords: Passwords, settings: ThrottleSettings, username: str, password: str, *,
                 now: datetime, ip: str | None, directory: DirectorySettings | None = None) -> Verdict | None:
    """Run the slow argon2 check (about 20 ms) from a read-only session, before ``check_password``'s transaction.

    ``check_password`` locks the attempt counters of the name and the address until its transaction ends (and on
    SQLite every write transaction holds the database's one write lock). Checked inside it, argon2 made every
    sign-in from one address (a town hall behind one NAT) wait for the one before, and on SQLite every other
    write too (bench/README.md). The verdict is only used if the counters then allow the attempt and the stored
    hash is still the one checked, so the throttling is exactly as strict. None while a delay already runs: a
    blocked attempt costs no argon2 run.
    """
    keys = [limit.key for limit in _limits(settings, username, ip)]
    if any(row.blocked_until is not None and row.blocked_until > now for row in throttle.counters(db, keys)):
        return None
    user = find_user(db, username) if username else None
    stored = _stored_hash(user, password, directory)
    return Verdict(stored, passwords.verify(stored, password))


def check_password(
    db: Session,
    passwords: Passwords,
    settings: ThrottleSettings,
    username: str,
    password: str,
    *,
    now: datetime,
    origin: audit.Origin,
    client_id: str | None = None,
    directory: DirectorySettings | None = None,
    verdict: Verdict | None = None,
) -> PasswordCheck:
    """Check a sign-in. Accounts owned by a directory source (``directory``) are checked by an LDAP bind.

    ``verdict``: argon2's answer from ``verify_ahead``, used if the account's hash has not changed since."""
    limits = _limits(settings, username, origin.ip)
    policy = throttle.Policy(settings.first_delay, settings.max_delay, settings.forget_after)
    blocked = throttle.reserve_attempt(db, limits, now, policy)
    subject = normalize_username(username)[:255]
    if blocked is not None:
        audit.record(db, "login.password", outcome="failure", origin=origin, subject=subject,
                     client_id=client_id, reason="throttled", at=now)
        return PasswordCheck(Outcome.THROTTLED, retry_after=blocked.retry_after)

    user = find_user(db, username) if username else None
    if user is not None and user.source != "local" and directory is not None:
        return _check_directory_password(db, passwords, directory, user, password, limits, now=now, origin=origin,
                                         client_id=client_id, timing_equalized=verdict is not None)
    stored = _stored_hash(user, password, directory)
    if verdict is not None and verdict.password_hash == stored:
        valid = verdict.valid
    else:
        valid = passwords.verify(stored, password)
    if user is None or not valid or not user.is_active:
        if user is None:
            reason = "unknown_user"
        elif user.password_hash is None:
            reason = "no_password"
        else:
            reason = "wrong_password" if not valid else "disabled"
        audit.record(db, "login.password", outcome="failure", origin=origin, subject=subject,
                     client_id=client_id, reason=reason, at=now)
        return PasswordCheck(Outcome.INVALID)

    throttle.record_success(db, limits, reset={limits[0].key})
    assert user.password_hash is not None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash(password)
    user.last_login_at = now
    audit.record(db, "login.password", origin=origin, actor=user.sub, subject=user.username,
                 client_id=client_id, at=now)
    return PasswordCheck(Outcome.OK, user=user)


def _check_directory_password(
    db: Session,
    passwords: Passwords,
    directory: DirectorySettings,
    user: User,
    password: str,
    limits: list[throttle.Limit],
    *,
    now: datetime,
    origin: audit.Origin,
    client_id: str | None,
    timing_equalized: bool = False,
) -> PasswordCheck:
    # Imported here: the directory package builds on idp, and only this path needs it.
    from directory_sync.bind import BindOutcome, is_blank, verify_password

    def refuse(reason: str, **details: str | None) -> PasswordCheck:
        audit.record(db, "login.password", outcome="failure", origin=origin, subject=user.username,
                     client_id=client_id, reason=reason, source=user.source, at=now, **details)
        return PasswordCheck(Outcome.INVALID)

    # A local check costs one argon2 run; so does this one, so that timing does not tell directory accounts
    # from local or unknown ones (security case 31); ``verify_ahead`` may have run it already. No password of a
    # directory account is ever stored.
    if not timing_equalized:
        passwords.verify(None, password)
    source = directory.source(user.source)
    link = db.get(DirectoryAccount, user.id)
    if source is None or link is None:
        return refuse("unknown_source")
    if not user.is_active:
        return refuse("disabled")
    if source.authentication != "bind":
        return refuse("no_password")
    if is_blank(password):
        # Never sent: a bind with an empty password is an unauthenticated bind that succeeds (RFC 4513 5.1.2).
        return refuse("empty_password")
    if not is_acceptable_input(password):
        return refuse("wrong_password")
    result = verify_password(source, link.external_id, password)
    if result.outcome is BindOutcome.UNAVAILABLE:
        # The attempt said nothing about the password: give the reserved attempt back (security case 53).
        throttle.record_success(db, limits, reset=set())
        audit.record(db, "login.password", outcome="failure", origin=origin, subject=user.username,
                     client_id=client_id, reason="directory_unavailable", source=user.source, detail=result.detail,
                     at=now)
        return PasswordCheck(Outcome.UNAVAILABLE)
    if result.outcome is not BindOutcome.OK:
        return refuse(result.outcome.value)
    throttle.record_success(db, limits, reset={limits[0].key})
    user.last_login_at = now
    audit.record(db, "login.password", origin=origin, actor=user.sub, subject=user.username, client_id=client_id,
                 source=user.source, at=now)
    return PasswordCheck(Outcome.OK, user=user)

"""Checking a username and password, throttled and audited, without revealing which part was wrong.

Unknown user, wrong password, disabled account and a running delay all give the same answer to the
person signing in (BSI ORP.4.A23; OWASP ASVS 6.3.8); the audit trail records the real reason.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from idp import audit
from idp.accounts import throttle
from idp.accounts.passwords import Passwords, is_acceptable_input
from idp.accounts.users import find_user, normalize_username
from idp.config import ThrottleSettings
from idp.models import User


class Outcome(enum.Enum):
    OK = "ok"
    INVALID = "invalid"
    THROTTLED = "throttled"


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
        limits.append(throttle.Limit(f"password:ip:{ip}", settings.free_attempts_per_ip))
    return limits


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
) -> PasswordCheck:
    limits = _limits(settings, username, origin.ip)
    policy = throttle.Policy(settings.first_delay, settings.max_delay, settings.forget_after)
    blocked = throttle.reserve_attempt(db, limits, now, policy)
    subject = normalize_username(username)[:255]
    if blocked is not None:
        audit.record(db, "login.password", outcome="failure", origin=origin, subject=subject,
                     client_id=client_id, reason="throttled", at=now)
        return PasswordCheck(Outcome.THROTTLED, retry_after=blocked.retry_after)

    user = find_user(db, username) if username else None
    acceptable = is_acceptable_input(password)
    valid = passwords.verify(user.password_hash if user and acceptable else None, password)
    if user is None or not valid or not user.is_active:
        reason = "unknown_user" if user is None else ("wrong_password" if not valid else "disabled")
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

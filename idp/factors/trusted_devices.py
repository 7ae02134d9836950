"""Browsers trusted for the workday: after a second factor the user may trust this browser, so that later
sign-ins there within ``[mfa] trusted_device_lifetime`` ask only for the password.

The cookie holds a random value; the database keeps its keyed hash with the user it belongs to, so the
user sees and revokes trusted browsers in /account, and a cookie copied into another user's browser does
nothing for that user. Whether it may stand in for the second factor is decided per request by
``idp.factors.policy`` (never for phishing-resistant requests). NIST SP 800-63B-4 5.1 forbids "remember my
browser" as a factor in general; accepting it within one workday is a deliberate, configurable choice.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp.crypto import KeyedHasher, random_token
from idp.db import rowcount
from idp.models import TrustedDevice, User

COOKIE = "idp_trusted"


def trust(db: Session, hasher: KeyedHasher, user: User, *, lifetime: timedelta, user_agent: str | None,
          now: datetime) -> tuple[str, TrustedDevice]:
    value = random_token(32)
    row = TrustedDevice(user_id=user.id, token_hash=hasher.hash(value), name=(user_agent or "")[:255] or None,
                        created_at=now, expires_at=now + lifetime)
    db.add(row)
    db.flush()
    return value, row


def is_trusted(db: Session, hasher: KeyedHasher, user: User, cookie: str | None, now: datetime) -> bool:
    if not cookie or len(cookie) > 128:
        return False
    row = db.scalar(select(TrustedDevice).where(TrustedDevice.token_hash == hasher.hash(cookie)))
    if row is None or row.user_id != user.id or row.revoked_at is not None or row.expires_at <= now:
        return False
    row.last_used_at = now
    return True


def active(db: Session, user: User, now: datetime) -> list[TrustedDevice]:
    return list(db.scalars(select(TrustedDevice).where(
        TrustedDevice.user_id == user.id, TrustedDevice.revoked_at.is_(None), TrustedDevice.expires_at > now,
    ).order_by(TrustedDevice.created_at.desc())))


def revoke(db: Session, user: User, device_id: int, now: datetime) -> bool:
    return rowcount(db.execute(update(TrustedDevice).where(
        TrustedDevice.id == device_id, TrustedDevice.user_id == user.id, TrustedDevice.revoked_at.is_(None),
    ).values(revoked_at=now))) == 1


def revoke_all(db: Session, user_id: int, now: datetime) -> int:
    """Forget every trusted browser of a user (sign out everywhere, factor reset, password change)."""
    return rowcount(db.execute(update(TrustedDevice).where(
        TrustedDevice.user_id == user_id, TrustedDevice.revoked_at.is_(None)).values(revoked_at=now)))

"""Sign-in sessions (SSO): one database row per session, an opaque random id in the browser.

    login ──► ACTIVE ──(no activity for idle_timeout)──► IDLE ──(password)──► ACTIVE
                 │                                         │
                 └──────(absolute_lifetime, logout, account disabled)──► ENDED

An IDLE session still knows its user and which relying parties took part; signing in again with the
password resumes it (NIST SP 800-63B-4 allows this at AAL2 within the overall timeout). Ending a session
is orchestrated by ``idp.oauth.logout.end_session``, which also revokes tokens and tells the relying
parties; this module only keeps the row.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.audit import Origin
from idp.config import SessionSettings
from idp.crypto import KeyedHasher, random_token
from idp.models import SessionClient, SsoSession, User


class SessionState(enum.Enum):
    ACTIVE = "active"
    IDLE = "idle"


@dataclass(frozen=True)
class CurrentSession:
    row: SsoSession
    state: SessionState


def create_session(
    db: Session,
    hasher: KeyedHasher,
    settings: SessionSettings,
    user: User,
    *,
    amr: list[str],
    acr: str | None,
    now: datetime,
    origin: Origin,
) -> tuple[str, SsoSession]:
    """Open a new session; returns the cookie value (shown to nobody else) and the row."""
    cookie = random_token(32)
    row = SsoSession(
        cookie_hash=hasher.hash(cookie),
        sid=random_token(16),
        user_id=user.id,
        created_at=now,
        authenticated_at=now,
        last_active_at=now,
        expires_at=now + settings.absolute_lifetime,
        amr=amr,
        acr=acr,
        ip=origin.ip,
        user_agent=(origin.user_agent or "")[:512] or None,
    )
    db.add(row)
    db.flush()
    return cookie, row


def reauthenticate(
    db: Session, hasher: KeyedHasher, row: SsoSession, *, amr: list[str], acr: str | None, now: datetime
) -> str:
    """The same user proved the password again: a fresh cookie id, the same session (``sid``) for the RPs."""
    cookie = random_token(32)
    row.cookie_hash = hasher.hash(cookie)
    row.authenticated_at = now
    row.last_active_at = now
    row.amr = amr
    row.acr = acr
    db.flush()
    return cookie


def find_session(
    db: Session, hasher: KeyedHasher, settings: SessionSettings, cookie: str | None, now: datetime
) -> CurrentSession | None:
    if not cookie or len(cookie) > 128:
        return None
    row = db.scalar(select(SsoSession).where(SsoSession.cookie_hash == hasher.hash(cookie)))
    if row is None or row.ended_at is not None or row.expires_at <= now or not row.user.is_active:
        return None
    state = SessionState.IDLE if now - row.last_active_at > settings.idle_timeout else SessionState.ACTIVE
    return CurrentSession(row, state)


def touch(row: SsoSession, now: datetime) -> None:
    row.last_active_at = now


def add_participant(db: Session, row: SsoSession, client_id: int) -> None:
    """Remember that a client received tokens in this session (it gets the back-channel logout)."""
    exists = db.scalar(
        select(SessionClient.id).where(SessionClient.session_id == row.id, SessionClient.client_id == client_id)
    )
    if exists is None:
        db.add(SessionClient(session_id=row.id, client_id=client_id))


def mark_ended(row: SsoSession, reason: str, now: datetime) -> None:
    row.ended_at = now
    row.end_reason = reason

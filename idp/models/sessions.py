"""Sign-in sessions (SSO) and open sign-in transactions.

The browser holds only an opaque random id; the database stores its keyed hash, so a copy of the database
does not let anyone take over a session.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.db import Base, UTCDateTime, utcnow
from idp.models.accounts import User


class SsoSession(Base):
    __tablename__ = "sso_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    cookie_hash: Mapped[str] = mapped_column(String(128), unique=True)
    sid: Mapped[str] = mapped_column(String(64), unique=True)
    """Session id published to relying parties (``sid`` claim, back-channel logout); not the cookie value."""
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    authenticated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """When the user last proved a password (``auth_time``)."""
    last_active_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    """Absolute end of the session."""
    amr: Mapped[list[str]] = mapped_column(JSON, default=list)
    acr: Mapped[str | None] = mapped_column(String(255))
    methods: Mapped[list[str]] = mapped_column(JSON, default=list)
    """The methods proved in this session (``password``, ``totp``, ``sms``, ``webauthn``, ``passkey``,
    ``recovery``, ``trusted_device``): what the policy compares with what a client needs."""
    factor_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When a second factor was last proved in this session."""
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship(lazy="joined")


class SessionClient(Base):
    """A client that received tokens within a session: it is told by back-channel logout when it ends."""

    __tablename__ = "session_clients"
    __table_args__ = (UniqueConstraint("session_id", "client_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sso_sessions.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginTransaction(Base):
    """One open authorization request that needs the user: the parameters wait here, not in the URL."""

    __tablename__ = "login_transactions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    browser_hash: Mapped[str] = mapped_column(String(128))
    """Keyed hash of the browser cookie the transaction is bound to."""
    client_id: Mapped[int | None] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"))
    """None for a sign-in to the IdP's own pages (``/account``), which returns to ``params["return_to"]``."""
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sso_sessions.id", ondelete="CASCADE"))
    authenticated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Set when the user signed in within this transaction (satisfies ``prompt=login`` and ``max_age``)."""
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

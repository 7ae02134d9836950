"""Accounts: users, groups, memberships and role grants.

``sub`` is a random identifier assigned once and never reused or derived from the username, so that a
renamed account keeps its identity at every relying party (OpenID Connect Core 1.0, section 2).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.db import Base, UTCDateTime, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    sub: Mapped[str] = mapped_column(String(64), unique=True)
    """Subject identifier published in tokens: random, stable, never reused."""
    username: Mapped[str] = mapped_column(String(255), unique=True)
    """Sign-in name, stored NFKC-normalised and case-folded."""
    display_name: Mapped[str | None] = mapped_column(String(255))
    given_name: Mapped[str | None] = mapped_column(String(255))
    family_name: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    email_verified: Mapped[bool] = mapped_column(default=False)
    locale: Mapped[str | None] = mapped_column(String(35))
    password_hash: Mapped[str | None] = mapped_column(Text)
    """argon2id PHC string; None for accounts that cannot sign in with a password."""
    source: Mapped[str] = mapped_column(String(64), default="local")
    """``local``, or the name of the directory source that owns the account."""
    external_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    webauthn_handle: Mapped[bytes | None] = mapped_column(LargeBinary(64), unique=True)
    """Random WebAuthn user handle (never the username or email), made at the first registration."""
    mfa_reset_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When the helpdesk last removed all second factors: the grace period for enrollment counts from here."""

    groups: Mapped[list[Group]] = relationship(secondary="group_members", back_populates="members")
    """Loaded when read (the groups claim, a group policy, the console): most sign-in steps need none."""

    @property
    def is_active(self) -> bool:
        return self.disabled_at is None

    # authlib's models ask the user for its id through this method.
    def get_user_id(self) -> str:
        return self.sub


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(64), default="local")
    external_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    members: Mapped[list[User]] = relationship(secondary="group_members", back_populates="groups")


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)


class RoleGrant(Base):
    """A console role (``admin``, ``helpdesk``, ``app-owner``) granted to a user or to a group."""

    __tablename__ = "role_grants"
    __table_args__ = (UniqueConstraint("role", "user_id", "group_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    role: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

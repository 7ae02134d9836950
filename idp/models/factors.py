"""Second factors and what proves them: TOTP apps, phones for SMS codes, WebAuthn credentials, recovery
codes, the one-time challenges they answer, and browsers trusted for the workday.

Secrets are never stored in clear: TOTP seeds are sealed under the key-encryption key, SMS and recovery
codes and trusted-device cookies are stored as hashes. Every invariant that must hold across server
processes (a TOTP step used once, a challenge used once, SMS attempts) is a column updated atomically.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.db import Base, UTCDateTime, utcnow


class TotpFactor(Base):
    """An authenticator app (RFC 6238: SHA-1, 6 digits, 30 s)."""

    __tablename__ = "totp_factors"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    secret_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    """The base32 seed, sealed with AES-GCM under the key-encryption key (context ``totp:<handle>``)."""
    handle: Mapped[str] = mapped_column(String(32), unique=True)
    last_step: Mapped[int] = mapped_column(default=0)
    """The last accepted time step: a code of this step or an earlier one is a replay (RFC 6238 5.2)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Set by the first valid code; an unconfirmed factor signs nobody in."""
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SmsFactor(Base):
    """A phone number (E.164) that receives one-time codes; a restricted authenticator (NIST SP 800-63B)."""

    __tablename__ = "sms_factors"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    managed_by: Mapped[str | None] = mapped_column(String(64), index=True)
    """The directory source that maintains this factor from its phone attribute (``sms_from_directory``), or
    None for a phone the user enrolled. A managed factor is created, changed and removed only by the sync; the
    user can neither rename nor remove it."""


class SmsChallenge(Base):
    """One SMS code sent: hashed, valid 5 minutes, at most 5 attempts, bound to what it was sent for.

    The rows are also the ledger that the send limits count (per user and per number), so they keep the user
    and the number and outlive their factor: removing and re-adding a phone must not reset those limits.
    """

    __tablename__ = "sms_challenges"

    id: Mapped[int] = mapped_column(primary_key=True)
    factor_id: Mapped[int | None] = mapped_column(ForeignKey("sms_factors.id", ondelete="SET NULL"), index=True)
    """None once the factor was removed; such a row only still counts towards the send limits."""
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    phone: Mapped[str] = mapped_column(String(20), index=True)
    """The E.164 number the code was sent to."""
    purpose: Mapped[str] = mapped_column(String(96))
    """What the code may be used for, e.g. ``login:<transaction>`` or ``enroll:<factor>``."""
    code_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Set when the gateway did not take the message: the code was never usable, yet the try counts towards the
    hourly limit (a request that timed out may still have been delivered)."""


class WebAuthnCredential(Base):
    """A security key or passkey registered with py_webauthn."""

    __tablename__ = "webauthn_credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    credential_id: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    """COSE public key as returned by the registration."""
    sign_count: Mapped[int] = mapped_column(default=0)
    aaguid: Mapped[str | None] = mapped_column(String(36))
    transports: Mapped[list[str]] = mapped_column(JSON, default=list)
    discoverable: Mapped[bool] = mapped_column(default=False)
    backup_eligible: Mapped[bool] = mapped_column(default=False)
    """Synced passkeys are backup-eligible (``swk``); device-bound keys are not (``hwk``)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    flagged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Set when a sign count went backwards (a possibly cloned key); a flagged credential is refused."""


class WebAuthnChallenge(Base):
    """A WebAuthn challenge: single use, short-lived, bound to its purpose (and user, where known)."""

    __tablename__ = "webauthn_challenges"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(96))
    challenge: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RecoveryCode(Base):
    """One of ten single-use recovery codes (64+ bits each), hashed with argon2id."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TrustedDevice(Base):
    """A browser the user trusted for the workday after a second factor; its cookie is stored hashed."""

    __tablename__ = "trusted_devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    name: Mapped[str | None] = mapped_column(String(255))
    """The browser's user agent when it was trusted, shown in /account."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

"""OAuth clients (relying parties) and their registered metadata (RFC 7591, OpenID Connect Registration)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from idp.db import Base, UTCDateTime, utcnow


class Client(Base):
    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    secret_hash: Mapped[str | None] = mapped_column(String(128))
    """HMAC-SHA-256 of the client secret (secrets are 256-bit random, so a fast keyed hash suffices)."""
    secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(64), default="client_secret_basic")
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    backchannel_logout_uri: Mapped[str | None] = mapped_column(Text)
    grant_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    response_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    scope: Mapped[str] = mapped_column(Text, default="openid profile email groups offline_access")
    """Scopes the client may ask for, space-separated."""
    trusted: Mapped[bool] = mapped_column(default=False)
    """Trusted (first-party) clients skip the consent page."""
    require_mfa: Mapped[bool | None] = mapped_column()
    """True: every sign-in to this client needs a second factor; None: the groups' and global policy decide."""
    mfa_methods: Mapped[list[str] | None] = mapped_column(JSON)
    """Second factors this client accepts (e.g. no ``sms`` for social-welfare data); None: any allowed one."""
    allow_trusted_device: Mapped[bool | None] = mapped_column()
    """False: a trusted browser never replaces the second factor for this client; None: policy decides."""
    theme: Mapped[str | None] = mapped_column(String(64))
    """The theme of this client's sign-in pages; None: the configured one."""
    id_token_signed_response_alg: Mapped[str] = mapped_column(String(16), default="ES256")
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    jwks_uri: Mapped[str | None] = mapped_column(Text)
    extra_metadata: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_by: Mapped[str | None] = mapped_column(String(32))
    """Who disabled the client: ``admin`` (only an administrator may enable it again) or ``owner``."""
    status: Mapped[str] = mapped_column(String(16), default="active")
    """``active``; ``requested`` (filed by an app owner, waiting for an administrator); ``declined``.
    Only an active client can be used at the authorization and token endpoints."""
    review_comment: Mapped[str | None] = mapped_column(Text)
    """The administrator's comment on approving or declining a requested client."""
    reviewed_by: Mapped[str | None] = mapped_column(String(255))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(255))
    """Username of who registered the client (None: the command line or RFC 7591 registration)."""
    logo_uri: Mapped[str | None] = mapped_column(Text)
    previous_secret_hash: Mapped[str | None] = mapped_column(String(128))
    """After a rotation with a grace period: the old secret's hash, accepted until ``previous_secret_expires_at``."""
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    registration_token_hash: Mapped[str | None] = mapped_column(String(128), unique=True)
    """HMAC-SHA-256 of the RFC 7592 registration access token of a dynamically registered client."""
    access_token_lifetime: Mapped[int | None] = mapped_column()
    """Seconds; None: the configured ``[tokens]`` default."""
    refresh_token_lifetime: Mapped[int | None] = mapped_column()
    """Seconds (absolute lifetime of a refresh token family); None: the configured default."""

    @property
    def is_usable(self) -> bool:
        """Whether the client may sign users in and get tokens: active (approved) and not disabled."""
        return self.disabled_at is None and self.status == "active"

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"


class ClientOwner(Base):
    """An app owner who manages a client; a client can have several."""

    __tablename__ = "client_owners"

    client_id: Mapped[int] = mapped_column(ForeignKey("clients.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)


class OwnerRedirectDomain(Base):
    """A host name under which an app owner's new clients are approved without an administrator: a client filed
    by that owner whose redirect URIs all lie on allowed hosts (or their subdomains) is active at once."""

    __tablename__ = "owner_redirect_domains"
    __table_args__ = (UniqueConstraint("user_id", "domain"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    domain: Mapped[str] = mapped_column(String(253))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InitialAccessToken(Base):
    """An RFC 7591 initial access token (made by an administrator with ``idp clients token``): stored as a keyed
    hash, expiring, with a number of registrations it still allows; the clients it registers belong to
    ``owner_id`` when set."""

    __tablename__ = "initial_access_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    uses_left: Mapped[int] = mapped_column(default=1)

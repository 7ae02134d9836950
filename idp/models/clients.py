"""OAuth clients (relying parties) and their registered metadata (RFC 7591, OpenID Connect Registration)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text
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

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

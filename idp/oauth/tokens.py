"""Issuing, finding and revoking tokens.

Access tokens are JWTs per RFC 9068 (header ``typ: at+jwt``), signed ES256, so that tools can check them
offline; the database keeps their ``jti`` so that introspection and userinfo also see revocation.
Refresh tokens are opaque random strings stored as keyed hashes, rotated on every use (RFC 9700, 4.14.2).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from authlib.oauth2.rfc6749 import TokenMixin
from authlib.oauth2.rfc6749.util import scope_to_list
from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from idp.config import TokenSettings
from idp.crypto import KeyedHasher, random_token
from idp.db import rowcount
from idp.models import Client, SsoSession, Token, User
from idp.oauth.clients import OAuthClient
from idp.oauth.keys import KeyStore

ACCESS_TOKEN_TYP = "at+jwt"
JWT_ALGORITHMS = ["ES256", "RS256"]


def user_claims(user: User, scope: str) -> dict[str, Any]:
    """The claims about ``user`` that ``scope`` releases (OpenID Connect Core 1.0, 5.4)."""
    scopes = set(scope_to_list(scope) or [])
    claims: dict[str, Any] = {"sub": user.sub}
    if "profile" in scopes:
        name = user.display_name or " ".join(p for p in (user.given_name, user.family_name) if p) or None
        claims.update(
            {
                "name": name,
                "given_name": user.given_name,
                "family_name": user.family_name,
                "preferred_username": user.username,
                "locale": user.locale,
                "updated_at": int(user.updated_at.timestamp()),
            }
        )
    if "email" in scopes:
        claims.update({"email": user.email, "email_verified": bool(user.email and user.email_verified)})
    if "groups" in scopes:
        claims["groups"] = sorted(group.name for group in user.groups)
    return {key: value for key, value in claims.items() if value is not None}


@dataclass(frozen=True)
class TokenContext:
    """What a token response is issued for, beyond what authlib passes to the generator."""

    family_id: str
    session: SsoSession | None
    auth_time: datetime | None
    acr: str | None
    amr: list[str]
    sid: str | None


class TokenIssuer:
    """authlib's token generator: a signed access token and, where allowed, a refresh token."""

    def __init__(self, keys: KeyStore, issuer: str, access_lifetime: timedelta, clock: Any) -> None:
        self._keys = keys
        self._issuer = issuer
        self._lifetime = access_lifetime
        self._clock = clock

    def __call__(
        self,
        grant_type: str,
        client: OAuthClient,
        user: User | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        now = int(self._clock().timestamp())
        # A client's own lifetime (set in the console or with ``idp clients update``) before the configured one.
        lifetime = expires_in or client.row.access_token_lifetime or int(self._lifetime.total_seconds())
        claims = {
            "iss": self._issuer,
            "sub": user.sub if user is not None else client.client_id,
            "aud": client.client_id,
            "client_id": client.client_id,
            "iat": now,
            "exp": now + lifetime,
            "jti": random_token(16),
            "scope": scope or "",
        }
        key = self._keys.signing_key("ES256")
        header = {"alg": key.alg, "typ": ACCESS_TOKEN_TYP, "kid": key.kid}
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": jwt.encode(header, claims, key.private, algorithms=[key.alg]),
            "expires_in": lifetime,
            "scope": scope or "",
        }
        if include_refresh_token and user is not None:
            token["refresh_token"] = random_token(32)
        return token


def jwt_claims_unverified(token: str) -> dict[str, Any]:
    """The payload of a JWT we just made ourselves (no verification: we hold the only copy)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


def refresh_lifetimes(client: Client, settings: TokenSettings) -> dict[str, timedelta]:
    """The refresh lifetimes for ``store_token``: a client's own ``refresh_token_lifetime`` replaces both the
    configured refresh and offline lifetimes for that client (an absolute bound on its refresh token families)."""
    if client.refresh_token_lifetime:
        own = timedelta(seconds=client.refresh_token_lifetime)
        return {"refresh_lifetime": own, "offline_lifetime": own}
    return {"refresh_lifetime": settings.refresh_token_lifetime, "offline_lifetime": settings.offline_token_lifetime}


def store_token(
    db: Session,
    hasher: KeyedHasher,
    token: dict[str, Any],
    *,
    client: Client,
    user: User | None,
    grant_type: str,
    context: TokenContext,
    now: datetime,
    refresh_lifetime: timedelta,
    offline_lifetime: timedelta,
) -> Token:
    claims = jwt_claims_unverified(token["access_token"])
    refresh = token.get("refresh_token")
    offline = "offline_access" in (scope_to_list(token.get("scope")) or [])
    refresh_expires = None
    if refresh:
        refresh_expires = now + (offline_lifetime if offline else refresh_lifetime)
        if not offline and context.session is not None:
            # A refresh token without offline_access ends with the sign-in session at the latest.
            refresh_expires = min(refresh_expires, context.session.expires_at)
    row = Token(
        family_id=context.family_id,
        jti=claims["jti"],
        refresh_hash=hasher.hash(refresh) if refresh else None,
        client_id=client.id,
        user_id=user.id if user else None,
        session_id=context.session.id if context.session is not None and not offline else None,
        grant_type=grant_type,
        scope=token.get("scope") or "",
        auth_time=context.auth_time,
        acr=context.acr,
        amr=list(context.amr),
        sid=context.sid,
        issued_at=now,
        access_expires_at=now + timedelta(seconds=int(token["expires_in"])),
        refresh_expires_at=refresh_expires,
    )
    db.add(row)
    db.flush()
    return row


def revoke_family(db: Session, family_id: str, reason: str, now: datetime) -> int:
    result = db.execute(
        update(Token)
        .where(Token.family_id == family_id, Token.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )
    return rowcount(result)


def revoke_session_tokens(db: Session, session_id: int, reason: str, now: datetime) -> int:
    result = db.execute(
        update(Token)
        .where(Token.session_id == session_id, Token.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )
    return rowcount(result)


def revoke_user_tokens(db: Session, user_id: int, reason: str, now: datetime) -> int:
    result = db.execute(
        update(Token).where(Token.user_id == user_id, Token.revoked_at.is_(None)).values(
            revoked_at=now, revoked_reason=reason
        )
    )
    return rowcount(result)


def is_usable(row: Token, now: datetime) -> bool:
    """Whether a token row may still be honoured: not revoked, its client and user still enabled."""
    if row.revoked_at is not None or not row.client.is_usable:
        return False
    if row.user is not None and not row.user.is_active:
        return False
    return True


class AccessToken(TokenMixin):  # type: ignore[misc]
    """A verified access token as authlib's resource protector and introspection see it."""

    def __init__(self, row: Token, claims: dict[str, Any], client: OAuthClient, now: datetime) -> None:
        self.row = row
        self.claims = claims
        self.client = client
        self.scope = row.scope
        self._now = now

    def check_client(self, client: OAuthClient) -> bool:
        return bool(client.row.id == self.row.client_id)

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return int(self.claims["exp"]) - int(self.claims["iat"])

    def is_expired(self) -> bool:
        return bool(self.row.access_expires_at <= self._now)

    def is_revoked(self) -> bool:
        return not is_usable(self.row, self._now)

    def get_user(self) -> User | None:
        return self.row.user

    def get_client(self) -> OAuthClient:
        return self.client


class RefreshToken(TokenMixin):  # type: ignore[misc]
    def __init__(self, row: Token, client: OAuthClient, now: datetime) -> None:
        self.row = row
        self.client = client
        self.scope = row.scope
        self._now = now

    def check_client(self, client: OAuthClient) -> bool:
        return bool(client.row.id == self.row.client_id)

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        assert self.row.refresh_expires_at is not None
        return int((self.row.refresh_expires_at - self.row.issued_at).total_seconds())

    def is_expired(self) -> bool:
        return self.row.refresh_expires_at is None or self.row.refresh_expires_at <= self._now

    def is_revoked(self) -> bool:
        return self.row.rotated_at is not None or not is_usable(self.row, self._now)

    def get_user(self) -> User | None:
        return self.row.user

    def get_client(self) -> OAuthClient:
        return self.client


def verify_access_token(keys: KeyStore, issuer: str, token_string: str, now: datetime) -> dict[str, Any] | None:
    """Check signature (our keys only, explicit algorithms), ``typ``, ``iss`` and ``exp``; None if anything fails."""
    if not token_string or len(token_string) > 8192 or token_string.count(".") != 2:
        return None
    try:
        header = json.loads(base64.urlsafe_b64decode(token_string.split(".")[0] + "=="))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or header.get("typ") != ACCESS_TOKEN_TYP:
        return None
    key = keys.verification_key(str(header.get("kid", "")))
    if key is None or header.get("alg") != key.alg:
        return None
    try:
        decoded = jwt.decode(token_string, key.private, algorithms=[key.alg])
        jwt.JWTClaimsRegistry(
            now=int(now.timestamp()), leeway=0, iss={"essential": True, "value": issuer}, exp={"essential": True},
            jti={"essential": True},
        ).validate(decoded.claims)
    except (JoseError, ValueError, TypeError):
        return None
    return dict(decoded.claims)


def find_access_token(
    db: Session, keys: KeyStore, hasher: KeyedHasher, issuer: str, token_string: str, now: datetime
) -> AccessToken | None:
    claims = verify_access_token(keys, issuer, token_string, now)
    if claims is None:
        return None
    row = db.scalar(select(Token).where(Token.jti == str(claims["jti"])))
    if row is None:
        return None
    return AccessToken(row, claims, OAuthClient(row.client, hasher, now), now)


def find_refresh_token(db: Session, hasher: KeyedHasher, token_string: str, now: datetime) -> RefreshToken | None:
    if not token_string or len(token_string) > 512:
        return None
    row = db.scalar(select(Token).where(Token.refresh_hash == hasher.hash(token_string)))
    if row is None:
        return None
    return RefreshToken(row, OAuthClient(row.client, hasher, now), now)


def rotate_refresh_token(db: Session, row: Token, now: datetime) -> bool:
    """Mark a refresh token as used, atomically: only one of several parallel uses wins."""
    result = db.execute(
        update(Token)
        .where(Token.id == row.id, Token.rotated_at.is_(None), Token.revoked_at.is_(None))
        .values(rotated_at=now)
    )
    return rowcount(result) == 1

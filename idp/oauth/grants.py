"""The grants we offer, as subclasses of authlib's, and the extensions that harden them.

- ``CodeGrant``: authorization code (RFC 6749 4.1). Codes live at most 60 s, are bound to client,
  redirect URI and PKCE challenge, and are consumed atomically; a second redemption revokes every token
  issued from the code (RFC 6749 4.1.2; RFC 9700 4.5).
- ``RefreshGrant``: refresh tokens rotate on every use; a rotated token presented again revokes its whole
  family (RFC 9700 4.14.2). authlib does neither of these for us.
- ``ClientCredentials``: only the scopes registered for the client, never user scopes.
- ``Pkce``: S256 only; required for public clients (or all, by setting); ``plain`` refused.
- ``IdToken``: the OpenID Connect extension that adds the ID token (``sid``, ``acr``, ``amr``, ``kid``).
- ``AuthorizationRequestChecks``: what OpenID Connect asks of an authorization request beyond RFC 6749.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import CODE_VERIFIER_PATTERN, compare_s256_code_challenge
from authlib.oidc.core import OpenIDCode, UserInfo
from authlib.oidc.core.grants.util import is_openid_scope
from sqlalchemy import select, update

from idp import audit
from idp.crypto import random_token
from idp.db import rowcount
from idp.models import AuthorizationCode, SsoSession, Token, User
from idp.oauth.clients import OAuthClient
from idp.oauth.requests import current_scope
from idp.oauth.tokens import find_refresh_token, revoke_family, rotate_refresh_token, user_claims

TOKEN_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
CONFIDENTIAL_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
PROMPT_VALUES = {"none", "login", "consent", "select_account"}
USER_SCOPES = {"openid", "profile", "email", "groups", "offline_access"}
MAX_PARAMETER_LENGTH = 4096
S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class OpenIDError(InvalidRequestError):  # type: ignore[misc]
    """An OpenID Connect error code that authlib has no class for (e.g. ``request_not_supported``)."""

    def __init__(self, error: str, description: str, **kwargs: Any) -> None:
        super().__init__(description, **kwargs)
        self.error = error


@dataclass(frozen=True)
class Authentication:
    """How the user signed in: handed from the login flow to the code, then to the tokens."""

    session: SsoSession
    auth_time: datetime
    acr: str | None
    amr: list[str]
    acr_values: str | None


class AuthorizationCodeModel:
    """authlib's view of a stored authorization code (``AuthorizationCodeMixin`` + OIDC getters)."""

    def __init__(self, row: AuthorizationCode) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str | None:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope

    def get_nonce(self) -> str | None:
        return self.row.nonce

    def get_auth_time(self) -> int:
        return int(self.row.auth_time.timestamp())

    def get_acr(self) -> str | None:
        return self.row.acr

    def get_amr(self) -> list[str]:
        return list(self.row.amr)


class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    AUTHORIZATION_CODE_LENGTH = 43

    @staticmethod
    def validate_authorization_redirect_uri(request: Any, client: OAuthClient) -> str:
        # authlib's version quotes the refused URI in the error description and so fails with ValueError (a 500)
        # on a URI holding a quote, backslash or non-ASCII character; the user sees the error page either way.
        redirect_uri: str | None = request.payload.redirect_uri
        if redirect_uri:
            if not client.check_redirect_uri(redirect_uri):
                raise InvalidRequestError("the redirect_uri is not registered for this client")
            return redirect_uri
        redirect_uri = client.get_default_redirect_uri()
        if not redirect_uri:
            raise InvalidRequestError("Missing 'redirect_uri' in request.", state=request.payload.state)
        return redirect_uri

    def save_authorization_code(self, code: str, request: Any) -> None:
        scope = current_scope()
        authn: Authentication = scope.extras["authentication"]
        services = scope.extras["services"]
        client: OAuthClient = request.client
        payload = request.payload.data
        scope.db.add(
            AuthorizationCode(
                code_hash=services.hasher.hash(code),
                family_id=random_token(16),
                client_id=client.row.id,
                user_id=request.user.id,
                session_id=authn.session.id,
                redirect_uri=payload.get("redirect_uri"),
                scope=request.scope,
                nonce=payload.get("nonce"),
                code_challenge=payload.get("code_challenge"),
                code_challenge_method=payload.get("code_challenge_method"),
                auth_time=authn.auth_time,
                acr=authn.acr,
                amr=authn.amr,
                sid=authn.session.sid,
                acr_values=authn.acr_values,
                created_at=scope.now,
                expires_at=scope.now + services.settings.tokens.code_lifetime,
            )
        )
        scope.db.flush()

    def query_authorization_code(self, code: str, client: OAuthClient) -> AuthorizationCodeModel | None:
        scope = current_scope()
        services = scope.extras["services"]
        if not code or len(code) > 256:
            return None
        code_hash = services.hasher.hash(code)
        row = scope.db.scalar(select(AuthorizationCode).where(AuthorizationCode.code_hash == code_hash))
        if row is None or row.client_id != client.row.id:
            return None
        consumed = rowcount(scope.db.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.id == row.id, AuthorizationCode.consumed_at.is_(None))
            .values(consumed_at=scope.now)
        ))
        if consumed != 1:
            revoked = revoke_family(scope.db, row.family_id, "code_reuse", scope.now)
            audit.record(scope.db, "token.code_reuse", outcome="failure", origin=scope.origin, subject=row.user.sub,
                         client_id=client.client_id, revoked_tokens=revoked)
            return None
        if row.expires_at <= scope.now:
            return None
        return AuthorizationCodeModel(row)

    def delete_authorization_code(self, authorization_code: AuthorizationCodeModel) -> None:
        """Nothing to do: the code was consumed (kept, marked) when it was looked up."""

    def authenticate_user(self, authorization_code: AuthorizationCodeModel) -> User | None:
        user = authorization_code.row.user
        return user if user.is_active else None


class RefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Any:
        scope = current_scope()
        services = scope.extras["services"]
        token = find_refresh_token(scope.db, services.hasher, refresh_token, scope.now)
        client: OAuthClient = self.request.client
        if token is None or not token.check_client(client):
            return None
        if token.row.rotated_at is not None:
            self._reused(token, client)
            return None
        if token.is_expired() or token.is_revoked():
            return None
        requested = set(scope_to_list(self.request.payload.scope) or [])
        if not requested.issubset(set(scope_to_list(token.row.scope) or [])):
            # Checked before the token is used up, so that a client asking too much keeps its token.
            raise InvalidScopeError()
        if not rotate_refresh_token(scope.db, token.row, scope.now):
            # Another request (perhaps at another server process) rotated it a moment ago: a reuse as well.
            self._reused(token, client)
            return None
        return token

    @staticmethod
    def _reused(token: Any, client: OAuthClient) -> None:
        """A rotated refresh token came back (RFC 9700 4.14.2): revoke its whole family and record it."""
        scope = current_scope()
        revoked = revoke_family(scope.db, token.row.family_id, "refresh_reuse", scope.now)
        user = token.row.user
        audit.record(scope.db, "token.refresh_reuse", outcome="failure", origin=scope.origin,
                     actor=user.sub if user else None, subject=user.username if user else None,
                     client_id=client.client_id, revoked_tokens=revoked)

    def authenticate_user(self, refresh_token: Any) -> User | None:
        user = refresh_token.get_user()
        return user if user is not None and user.is_active else None

    def revoke_old_credential(self, refresh_token: Any) -> None:
        """Nothing to do: the token was marked rotated, atomically, when it was accepted."""


class ClientCredentials(grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def validate_requested_scope(self) -> None:
        super().validate_requested_scope()
        requested = set(scope_to_list(self.request.payload.scope) or [])
        allowed = set(scope_to_list(self.request.client.row.scope) or []) - USER_SCOPES
        if not requested.issubset(allowed):
            raise InvalidScopeError("client_credentials grants only the client's own, non-user scopes")


class Pkce(CodeChallenge):  # type: ignore[misc]
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def __init__(self, required_for_all: bool) -> None:
        super().__init__(required=True)
        self.required_for_all = required_for_all

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        client: OAuthClient = grant.request.client
        required = self.required_for_all or client.row.is_public
        if required and not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256")
        if data.get("code_challenge") and data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        if data.get("code_challenge") and not S256_CHALLENGE.fullmatch(data["code_challenge"]):
            # An S256 challenge is a SHA-256 hash in base64url without padding: exactly 43 characters (RFC 7636
            # 4.2). authlib accepts 43-128 unreserved characters, which no verifier can ever match.
            raise InvalidRequestError("code_challenge must be 43 base64url characters (S256)")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        # Every verifier failure is invalid_grant (RFC 7636 4.6), including a verifier with no challenge
        # (a PKCE downgrade, RFC 9700 4.8.2) and a missing one where a challenge was made.
        request = grant.request
        verifier = request.form.get("code_verifier")
        challenge = request.authorization_code.code_challenge
        if not challenge:
            if verifier:
                raise InvalidGrantError("code_verifier sent, but the authorization request had no code_challenge")
            if request.auth_method == "none":
                raise InvalidGrantError("PKCE is required for public clients")
            return
        if not verifier:
            raise InvalidGrantError("code_verifier is missing")
        # fullmatch: the pattern ends in ``$``, which ``match`` lets pass before a trailing newline.
        if not CODE_VERIFIER_PATTERN.fullmatch(verifier) or not compare_s256_code_challenge(verifier, challenge):
            raise InvalidGrantError("code_verifier does not match the code_challenge")


class IdToken(OpenIDCode):  # type: ignore[misc]
    def __init__(self, services: Any) -> None:
        super().__init__(require_nonce=False)
        self.services = services

    def __call__(self, grant: Any) -> None:
        # authlib's prompt hook is left out on purpose: idp.login.policy decides about prompt and max_age.
        grant.register_hook("after_create_token_response", self.process_token)
        if is_openid_scope(grant.request.payload.scope):
            grant.register_hook("after_validate_authorization_request_payload",
                                self.validate_openid_authorization_request)

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        scope = current_scope()
        client: OAuthClient = request.client
        found = scope.db.scalar(
            select(AuthorizationCode.id).where(
                AuthorizationCode.client_id == client.row.id, AuthorizationCode.nonce == nonce
            ).limit(1)
        )
        return found is not None

    def generate_user_info(self, user: User, scope: str) -> UserInfo:
        return UserInfo(user_claims(user, scope))

    def get_client_algorithm(self, client: OAuthClient) -> str:
        return client.id_token_signed_response_alg

    def resolve_client_private_key(self, client: OAuthClient) -> Any:
        return self.services.keys.signing_key(self.get_client_algorithm(client)).private

    def get_encode_header(self, client: OAuthClient) -> dict[str, str]:
        key = self.services.keys.signing_key(self.get_client_algorithm(client))
        return {"alg": key.alg, "kid": key.kid, "typ": "JWT"}

    def get_client_claims(self, client: OAuthClient) -> dict[str, Any]:
        now = int(self.services.now().timestamp())
        lifetime = int(self.services.settings.tokens.id_token_lifetime.total_seconds())
        return {"iss": self.services.settings.issuer, "aud": client.client_id, "iat": now, "exp": now + lifetime}

    def get_authorization_code_claims(self, authorization_code: AuthorizationCodeModel) -> dict[str, Any]:
        claims: dict[str, Any] = super().get_authorization_code_claims(authorization_code)
        if authorization_code.row.sid:
            claims["sid"] = authorization_code.row.sid
        return claims


class RefreshedIdToken(IdToken):
    """A new ID token with every refresh of a sign-in that asked for ``openid`` (OpenID Connect Core 12.2).

    Relying parties that check the ID token rather than the access token (kubectl's oidc-login, Grafana,
    Vault) can renew their session without sending the user through the browser again, and every party learns
    the user's current claims (a group the directory removed is gone from the next one). ``iss``, ``sub`` and
    ``aud`` are the original's, ``iat`` and ``exp`` new; ``auth_time``, ``acr``, ``amr`` and ``sid`` describe the
    original sign-in (stored with the token family), never the refresh; no ``nonce``, which binds a token to one
    authentication request, and a refresh is none."""

    def __call__(self, grant: Any) -> None:
        grant.register_hook("after_create_token_response", self.process_token)

    def get_compatible_claims(self, request: Any) -> dict[str, Any]:
        claims: dict[str, Any] = super().get_compatible_claims(request)
        row: Token = request.refresh_token.row
        claims.pop("auth_time", None)  # authlib's default is "now": 12.2 wants the original sign-in's time
        if row.auth_time is not None:
            claims["auth_time"] = int(row.auth_time.timestamp())
        if row.acr:
            claims["acr"] = row.acr
        if row.amr:
            claims["amr"] = list(row.amr)
        if row.sid:
            claims["sid"] = row.sid
        return claims


class AuthorizationRequestChecks:
    """Checks of an authorization request that authlib leaves to us; errors go back to the client."""

    def __call__(self, grant: Any) -> None:
        grant.register_hook("after_validate_authorization_request_payload", self.check)

    def check(self, grant: Any, redirect_uri: str) -> None:
        payload = grant.request.payload
        data = payload.data
        for key, values in payload.datalist.items():
            # Only plain names are quoted: authlib refuses (ValueError, so a 500) error descriptions with
            # characters RFC 6749 4.1.2.1 forbids, such as quotes, backslashes or non-ASCII.
            name = repr(key) if SAFE_NAME.fullmatch(key) else "a parameter"
            if len(values) > 1:
                raise InvalidRequestError(f"{name} is repeated")
            if len(values[0]) > MAX_PARAMETER_LENGTH:
                raise InvalidRequestError(f"{name} is too long")
        if "request" in data:
            raise OpenIDError("request_not_supported", "request objects are not supported")
        if "request_uri" in data:
            raise OpenIDError("request_uri_not_supported", "request_uri is not supported")
        if "registration" in data:
            raise OpenIDError("registration_not_supported", "the registration parameter is not supported")
        if data.get("response_mode", "query") != "query":
            raise InvalidRequestError("only response_mode=query is supported")
        if not is_openid_scope(data.get("scope")):
            raise InvalidScopeError("the scope must include openid")
        prompts = (data.get("prompt") or "").split()
        if any(value not in PROMPT_VALUES for value in prompts):
            raise InvalidRequestError("unknown prompt value")
        if "none" in prompts and len(prompts) > 1:
            raise InvalidRequestError("prompt=none cannot be combined with other values")
        max_age = data.get("max_age")
        if max_age is not None and not re.fullmatch(r"[0-9]{1,9}", max_age):  # \d would take any Unicode digit
            raise InvalidRequestError("max_age must be a non-negative whole number of seconds")

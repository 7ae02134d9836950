"""authlib's ``AuthorizationServer`` fitted to Starlette and our storage, with its endpoints.

The server object and its extensions are shared by all threads and hold no request state; what a
callback needs of the running request (database session, time, origin) comes from
``idp.oauth.requests.current_scope``. Every server method returns authlib's ``(status, body, headers)``
triple, turned into a Starlette response only by ``handle_response``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from authlib.oauth2 import AuthorizationServer, OAuth2Error, ResourceProtector
from authlib.oauth2.base import invalid_error_characters
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidRequestError,
    MissingAuthorizationError,
    UnsupportedResponseTypeError,
    UnsupportedTokenTypeError,
)
from authlib.oauth2.rfc6750 import BearerTokenValidator, InsufficientScopeError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core import UserInfo, UserInfoEndpoint
from authlib.oidc.rpinitiated import EndSessionEndpoint
from joserfc.jwk import KeySet
from starlette.responses import Response

from idp import audit
from idp.accounts.sessions import add_participant
from idp.crypto import random_token
from idp.models import SsoSession, Token
from idp.oauth import tokens
from idp.oauth.client_auth import PrivateKeyJwt, client_secret_basic
from idp.oauth.clients import SUPPORTED_SCOPES, OAuthClient, find_client
from idp.oauth.grants import (
    CONFIDENTIAL_AUTH_METHODS,
    AuthorizationRequestChecks,
    ClientCredentials,
    CodeGrant,
    IdToken,
    Pkce,
    RefreshedIdToken,
    RefreshGrant,
)
from idp.oauth.requests import Request, current_scope


class OAuthResponse(Response):
    """A Starlette response with the read/write ``location`` that RFC 9207's extension sets."""

    @property
    def location(self) -> str | None:
        return self.headers.get("location")

    @location.setter
    def location(self, value: str) -> None:
        self.headers["location"] = value


class Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, services: Any) -> None:
        super().__init__(scopes_supported=list(SUPPORTED_SCOPES))
        self.services = services

    def query_client(self, client_id: str) -> OAuthClient | None:
        scope = current_scope()
        row = find_client(scope.db, client_id) if isinstance(client_id, str) else None
        if row is None or not row.is_usable:
            return None
        return OAuthClient(row, self.services.hasher, scope.now)

    def authenticate_client(self, request: Any, methods: list[str], endpoint: str = "token") -> OAuthClient:
        try:
            client: OAuthClient = super().authenticate_client(request, methods, endpoint)
        except InvalidClientError as error:
            scope = current_scope()
            claimed = request.payload.client_id if isinstance(request.payload.client_id, str) else None
            audit.record(scope.db, "client.authentication_failed", outcome="failure", origin=scope.origin,
                         client_id=(claimed or None) and claimed[:64], endpoint=endpoint, at=scope.now)
            if request.headers.get("Authorization"):
                # RFC 6749 5.2: a client that tried the Authorization header gets 401 and WWW-Authenticate, also
                # where authlib's "none" method refused an unknown client_id in the body first (with its 400).
                error.status_code = 401
            raise
        return client

    def get_authorization_grant(self, request: Any) -> Any:
        response_type = request.payload.response_type
        if not response_type or not invalid_error_characters(response_type):
            return super().get_authorization_grant(request)
        # authlib quotes response_type in its error description and fails with ValueError (a 500) on characters
        # RFC 6749 4.1.2.1 forbids there. Such a value matches no grant: refuse it as authlib would, unquoted,
        # redirecting only to a redirect URI validated for a known client (RFC 6749 4.1.2.1).
        redirect_uri = None
        client = self.query_client(request.payload.client_id) if request.payload.client_id else None
        if client is not None:
            requested = request.payload.redirect_uri
            if not requested:
                redirect_uri = client.get_default_redirect_uri()
            elif client.check_redirect_uri(requested):
                redirect_uri = requested
        raise UnsupportedResponseTypeError("", "The response type is not supported.", redirect_uri=redirect_uri)

    def save_token(self, token: dict[str, Any], request: Request) -> None:
        scope = current_scope()
        settings = self.services.settings.tokens
        grant_type = request.payload.grant_type
        client: OAuthClient = request.client
        if request.authorization_code is not None:
            code = request.authorization_code.row
            context = tokens.TokenContext(code.family_id, _session_of(scope.db, code.session_id),
                                          code.auth_time, code.acr, list(code.amr), code.sid)
        elif request.refresh_token is not None:
            old: Token = request.refresh_token.row
            context = tokens.TokenContext(old.family_id, _session_of(scope.db, old.session_id),
                                          old.auth_time, old.acr, list(old.amr), old.sid)
        else:
            context = tokens.TokenContext(random_token(16), None, None, None, [], None)
        row = tokens.store_token(
            scope.db, self.services.hasher, token, client=client.row, user=request.user, grant_type=grant_type,
            context=context, now=scope.now, **tokens.refresh_lifetimes(client.row, settings),
        )
        if request.refresh_token is not None and row.refresh_hash is not None:
            # A rotated refresh token keeps the absolute expiry of its family (OWASP ASVS 10.4.8).
            row.refresh_expires_at = request.refresh_token.row.refresh_expires_at
        if context.session is not None:
            add_participant(scope.db, context.session, client.row.id)
        audit.record(scope.db, "token.issued", origin=scope.origin, subject=request.user.sub if request.user else None,
                     client_id=client.client_id, grant_type=grant_type, scope=row.scope,
                     with_refresh=row.refresh_hash is not None)

    def create_oauth2_request(self, request: Any) -> Any:
        if isinstance(request, Request):
            return request
        raise TypeError("idp builds OAuth requests itself; pass an idp.oauth.requests.Request")

    def create_json_request(self, request: Any) -> Any:
        return request

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> OAuthResponse:
        headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
        if isinstance(body, dict):
            content: bytes | str = json.dumps(body, separators=(",", ":"))
            media_type = "application/json"
        else:
            content = body or ""
            media_type = "text/html; charset=utf-8" if body else ""
        response = OAuthResponse(content, status_code=status, media_type=media_type)
        for key, value in headers:
            response.headers[key] = value
        response.headers.setdefault("cache-control", "no-store")
        return response

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        if name == "after_revoke_token":
            scope = current_scope()
            client = kwargs.get("client")
            audit.record(scope.db, "token.revoked", origin=scope.origin,
                         client_id=client.client_id if client else None)


def _session_of(db: Any, session_id: int | None) -> SsoSession | None:
    return None if session_id is None else db.get(SsoSession, session_id)


class UnsupportedTokenTypeHint(OAuth2Error):  # type: ignore[misc]
    """RFC 7009 2.2.1: an error response in the sense of RFC 6749 5.2, so 400 (authlib's class answers 401)."""

    error = "unsupported_token_type"
    status_code = 400


class _TokenLookup:
    """Finding either kind of token by its string, for introspection and revocation."""

    SUPPORTED_TOKEN_TYPES = ("access_token", "refresh_token")
    CLIENT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS + ["none"]
    server: Server

    def check_params(self, request: Any, client: Any) -> None:
        try:
            super().check_params(request, client)  # type: ignore[misc]
        except UnsupportedTokenTypeError as exc:
            raise UnsupportedTokenTypeHint() from exc

    def query_token(self, token_string: str, token_type_hint: str | None) -> Any:
        scope = current_scope()
        services = self.server.services
        finders: list[Callable[[], Any]] = [
            lambda: tokens.find_access_token(scope.db, services.keys, services.hasher, services.settings.issuer,
                                             token_string, scope.now),
            lambda: tokens.find_refresh_token(scope.db, services.hasher, token_string, scope.now),
        ]
        if token_type_hint == "refresh_token":
            finders.reverse()
        for find in finders:
            found = find()
            if found is not None:
                return found
        return None


class Introspection(_TokenLookup, IntrospectionEndpoint):  # type: ignore[misc]
    # Only confidential clients may introspect (RFC 7662 2.1 requires authorization).
    CLIENT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def check_permission(self, token: Any, client: OAuthClient, request: Any) -> bool:
        return bool(token.check_client(client))

    def introspect_token(self, token: Any) -> dict[str, Any]:
        row: Token = token.row
        is_refresh = isinstance(token, tokens.RefreshToken)
        expires = row.refresh_expires_at if is_refresh else row.access_expires_at
        payload: dict[str, Any] = {
            "active": True,
            "scope": row.scope,
            "client_id": row.client.client_id,
            "token_type": "refresh_token" if is_refresh else "Bearer",
            "exp": int(expires.timestamp()) if expires else None,
            "iat": int(row.issued_at.timestamp()),
            "iss": self.server.services.settings.issuer,
            "sub": row.user.sub if row.user else row.client.client_id,
        }
        if row.user is not None:
            payload["username"] = row.user.username
        if not is_refresh:
            payload["aud"] = row.client.client_id
            payload["jti"] = row.jti
        if row.sid:
            payload["sid"] = row.sid
        return {key: value for key, value in payload.items() if value is not None}


class Revocation(_TokenLookup, RevocationEndpoint):  # type: ignore[misc]
    def revoke_token(self, token: Any, request: Any) -> None:
        scope = current_scope()
        if isinstance(token, tokens.RefreshToken):
            # Revoking a refresh token ends the grant: its access tokens go too (RFC 7009 2.1).
            tokens.revoke_family(scope.db, token.row.family_id, "revoked_by_client", scope.now)
        elif token.row.revoked_at is None:
            token.row.revoked_at = scope.now
            token.row.revoked_reason = "revoked_by_client"


class ScopeMissing(InsufficientScopeError):  # type: ignore[misc]
    """403 with the challenge RFC 6750 3.1 asks for (authlib sends the status without the header)."""

    def __init__(self, scopes: list[str]) -> None:
        super().__init__()
        self.scopes = scopes

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = super().get_headers()
        challenge = f'Bearer error="insufficient_scope", scope="{" ".join(self.scopes)}"'
        return [*headers, ("WWW-Authenticate", challenge)]


class AccessTokenValidator(BearerTokenValidator):  # type: ignore[misc]
    def __init__(self, services: Any) -> None:
        super().__init__()
        self.services = services

    def validate_token(self, token: Any, scopes: list[str] | None, request: Any) -> None:
        try:
            super().validate_token(token, scopes, request)
        except InsufficientScopeError as exc:
            raise ScopeMissing(scopes or []) from exc

    def authenticate_token(self, token_string: str) -> Any:
        scope = current_scope()
        return tokens.find_access_token(scope.db, self.services.keys, self.services.hasher,
                                        self.services.settings.issuer, token_string, scope.now)


class NoBearerCredentials(MissingAuthorizationError):  # type: ignore[misc]
    """No ``Authorization: Bearer`` header at all, or another scheme.

    RFC 6750 3.1: such a request gets the bare ``Bearer`` challenge and SHOULD NOT get an error code in it
    (authlib would send ``bearer error="missing_authorization"``).
    """

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = super().get_headers()
        return [*headers, ("WWW-Authenticate", "Bearer")]


class Protector(ResourceProtector):  # type: ignore[misc]
    """A resource protector whose ``acquire_token`` reads the request of the running scope (see recipe)."""

    def acquire_token(self, scopes: str | list[str] | None = None, **kwargs: Any) -> Any:
        request = current_scope().extras["request"]
        if isinstance(scopes, str):
            scopes = [scopes]
        return self.validate_request(scopes, request, **kwargs)

    def parse_request_authorization(self, request: Any) -> Any:
        try:
            return super().parse_request_authorization(request)
        except (MissingAuthorizationError, UnsupportedTokenTypeError) as exc:
            raise NoBearerCredentials() from exc


class UserInfoEndpointImpl(UserInfoEndpoint):  # type: ignore[misc]
    def __init__(self, server: Server, protector: Protector) -> None:
        super().__init__(server=server, resource_protector=protector)
        self.services = server.services

    def get_issuer(self) -> str:
        return str(self.services.settings.issuer)

    def generate_user_info(self, user: Any, scope: str) -> UserInfo:
        return UserInfo(tokens.user_claims(user, scope))

    def resolve_private_key(self) -> Any:
        return self.services.keys.signing_key("ES256").private


class EndSession(EndSessionEndpoint):  # type: ignore[misc]
    def get_server_jwks(self) -> KeySet:
        keys: KeySet = self.server.services.keys.public_key_set()
        return keys

    def get_algorithms(self) -> list[str]:
        return ["ES256", "RS256"]

    def _validate_id_token_hint(self, id_token_hint: str) -> dict[str, Any]:
        claims: dict[str, Any] = super()._validate_id_token_hint(id_token_hint)
        if claims.get("iss") != self.server.services.settings.issuer or "jti" in claims and "client_id" in claims:
            # An access token (RFC 9068 carries client_id and jti) is not an ID token.
            raise InvalidRequestError("id_token_hint is not an ID token issued here")
        return claims

    def _is_valid_post_logout_redirect_uri(self, client: OAuthClient, post_logout_redirect_uri: str) -> bool:
        return post_logout_redirect_uri in client.row.post_logout_redirect_uris

    def end_session(self, end_session_request: Any) -> None:
        """Ending the session is done by idp.login after the user confirmed; nothing happens here."""


class Issuer(IssuerParameter):  # type: ignore[misc]
    def __init__(self, issuer: str) -> None:
        self.issuer = issuer

    def get_issuer(self) -> str:
        return self.issuer


def build_server(services: Any) -> tuple[Server, Protector]:
    server = Server(services)
    issuer = services.settings.issuer
    server.register_token_generator(
        "default", tokens.TokenIssuer(services.keys, issuer, services.settings.tokens.access_token_lifetime,
                                      services.now)
    )
    server.register_client_auth_method("client_secret_basic", client_secret_basic)
    server.register_client_auth_method("private_key_jwt", PrivateKeyJwt(issuer, issuer + "/token"))
    pkce_for_all = services.settings.tokens.pkce == "all"
    server.register_grant(CodeGrant, [AuthorizationRequestChecks(), IdToken(services), Pkce(pkce_for_all)])
    server.register_grant(RefreshGrant, [RefreshedIdToken(services)])
    server.register_grant(ClientCredentials)
    server.register_endpoint(Introspection)
    server.register_endpoint(Revocation)
    server.register_endpoint(EndSession)
    server.register_extension(Issuer(issuer))
    protector = Protector()
    protector.register_token_validator(AccessTokenValidator(services))
    server.register_endpoint(UserInfoEndpointImpl(server, protector))
    return server, protector

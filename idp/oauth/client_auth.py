"""``private_key_jwt`` client authentication (RFC 7523 section 2.2; OpenID Connect Core 9).

authlib has had advisories for accepting ``alg: none``, keys from a token's own header and HMAC keyed with
a public key. So: the key comes only from the client's registration (``jwks`` or ``jwks_uri``), the
algorithms are an explicit asymmetric list that must match the key, the audience must be us, ``exp`` is
required and near, and each ``jti`` is accepted once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc6749.authenticate_client import authenticate_client_secret_basic
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.exc import IntegrityError

from idp.models import UsedAssertion
from idp.oauth.clients import OAuthClient
from idp.oauth.requests import current_scope

ASSERTION_ALGORITHMS = ["RS256", "PS256", "ES256", "ES384"]
MAX_ASSERTION_LIFETIME = 600
JWKS_CACHE_SECONDS = 300
MAX_JWKS_BYTES = 65536


class JwksFetchError(Exception):
    pass


_jwks_cache: dict[str, tuple[float, dict[str, Any]]] = {}


def fetch_jwks(uri: str) -> dict[str, Any]:
    """GET a client's ``jwks_uri`` (no redirects, bounded size and time), cached for a few minutes."""
    cached = _jwks_cache.get(uri)
    if cached and time.monotonic() - cached[0] < JWKS_CACHE_SECONDS:
        return cached[1]
    try:
        with httpx.Client(timeout=5.0, follow_redirects=False) as http, http.stream("GET", uri) as response:
            if response.status_code != 200:
                raise JwksFetchError(f"jwks_uri answered {response.status_code}")
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise JwksFetchError("jwks_uri document too large")
        data = httpx.Response(200, content=body).json()
    except (httpx.HTTPError, ValueError) as exc:
        raise JwksFetchError(str(exc)) from exc
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise JwksFetchError("jwks_uri did not return a JWK set")
    _jwks_cache[uri] = (time.monotonic(), data)
    return data


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc]
    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, issuer: str, token_endpoint: str) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self._audiences = [token_endpoint, issuer]

    def get_audiences(self) -> list[str]:
        return self._audiences

    def __call__(self, query_client: Any, request: Any) -> OAuthClient | None:
        client: OAuthClient | None = super().__call__(query_client, request)
        # RFC 7521 4.2: a client_id sent along with the assertion MUST identify the same client; authlib
        # ignores it, which would let a request naming client B be served as client A.
        client_id = request.form.get("client_id")
        if client is not None and client_id is not None and client_id != client.get_client_id():
            raise InvalidClientError(description="client_id does not match the client assertion")
        return client

    def resolve_client_public_key(self, client: OAuthClient) -> KeySet:
        try:
            if client.row.jwks:
                data = client.row.jwks
            elif client.row.jwks_uri:
                data = fetch_jwks(client.row.jwks_uri)
            else:
                raise InvalidClientError(description="the client has no registered keys")
            keys = [k for k in data.get("keys", []) if isinstance(k, dict) and k.get("kty") in {"RSA", "EC"}]
            return KeySet.import_key_set({"keys": keys})
        except (JwksFetchError, JoseError, ValueError, TypeError) as exc:
            raise InvalidClientError(description="the client's keys cannot be used") from exc

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGORITHMS)
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidClientError(description="the client assertion is not validly signed") from exc
        claims = dict(token.claims)
        self.verify_claims(claims)
        return claims

    def verify_claims(self, claims: Any) -> None:
        now = int(current_scope().now.timestamp())
        registry = jwt.JWTClaimsRegistry(
            now=now,
            leeway=self.leeway,
            iss={"essential": True},
            sub={"essential": True},
            aud={"essential": True, "values": self.get_audiences()},
            exp={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise InvalidClientError(description=f"client assertion: {exc.description}") from exc
        if claims["sub"] != claims["iss"]:
            raise InvalidClientError(description="client assertion: iss and sub must both be the client_id")
        # Checked before the jti is recorded: a far-future exp (1e30) must neither overflow the expiry of the
        # jti record (a 500) nor use up the jti of an assertion we refuse.
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float) or exp - now > MAX_ASSERTION_LIFETIME:
            raise InvalidClientError(description="the client assertion must expire within 10 minutes")
        if not self.validate_jti(claims, str(claims["jti"])):
            raise InvalidClientError(description="client assertion: this jti was used before")

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        scope = current_scope()
        expires = datetime.fromtimestamp(int(claims["exp"]) + self.leeway, UTC)
        try:
            with scope.db.begin_nested():
                scope.db.add(UsedAssertion(key=f"{claims['sub']}:{jti}"[:128], expires_at=expires))
        except IntegrityError:
            return False
        return True


def client_secret_basic(query_client: Any, request: Any) -> OAuthClient | None:
    """authlib's ``client_secret_basic``, except that credentials which do not decode as UTF-8, and a header
    ``Basic `` with no credentials after it, fail the authentication (401 ``invalid_client``) instead of
    raising ``UnicodeDecodeError`` or ``ValueError`` (authlib unpacks the header's split in two) as a 500."""
    try:
        client: OAuthClient | None = authenticate_client_secret_basic(query_client, request)
    except ValueError:  # UnicodeDecodeError is one too
        return None
    return client

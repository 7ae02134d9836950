"""``private_key_jwt`` client authentication at the token endpoint (RFC 7523 2.2 and 3; OIDC Core 9).

The key comes only from the client's registration (``jwks`` or ``jwks_uri``), never from the assertion's
own ``jwk``/``jku`` header; only asymmetric algorithms are accepted (no ``none``, no HMAC keyed with the
public key); ``aud`` must name us, ``exp`` must be near, each ``jti`` is accepted once, and ``iss`` and
``sub`` are both the client_id. Every refusal is ``invalid_client`` without a token (security case 21 and
the authlib advisories listed in the security cases).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import func, select
from starlette.testclient import TestClient

from idp.db import read_only, unit_of_work
from idp.models import Client, Token
from idp.services import Services
from tests.conftest import ISSUER, FakeClock
from tests.helpers import Flow, add_client, add_user, authorize, decode, exchange

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_ENDPOINT = f"{ISSUER}/token"

EC_KEY = ECKey.generate_key("P-256", parameters={"use": "sig"}, auto_kid=True)
RSA_KEY = RSAKey.generate_key(2048, parameters={"use": "sig"}, auto_kid=True)
ATTACKER_KEY = ECKey.generate_key("P-256", auto_kid=True)


def public_jwks(*keys: ECKey | RSAKey) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


def b64url(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- a small JWKS server on 127.0.0.1: the client's jwks_uri and an attacker's jku ------------------------


class JwksServer:
    """Serves fixed documents by path and counts the requests it receives."""

    def __init__(self) -> None:
        self.documents: dict[str, tuple[int, bytes]] = {}
        self.hits: Counter[str] = Counter()
        documents, hits = self.documents, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
                hits[self.path] += 1
                status, body = documents.get(self.path, (404, b"not found"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Keep the test output quiet."""

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def serve(self, path: str, body: Any, status: int = 200) -> str:
        self.documents[path] = (status, body if isinstance(body, bytes) else json.dumps(body).encode())
        return self.base + path


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    server.thread.join(timeout=5)


# --- clients and assertions -----------------------------------------------------------------------------------


@dataclass
class KeyClient:
    client_id: str
    key: ECKey | RSAKey
    alg: str


def add_key_client(services: Services, key: ECKey | RSAKey, alg: str, **kwargs: Any) -> KeyClient:
    kwargs.setdefault("jwks", public_jwks(key) if "jwks_uri" not in kwargs else None)
    kwargs.setdefault("grant_types", ["client_credentials"])
    kwargs.setdefault("redirect_uris", [] if kwargs["grant_types"] == ["client_credentials"] else None)
    registered = add_client(services, token_endpoint_auth_method="private_key_jwt", **kwargs)
    return KeyClient(registered.client_id, key, alg)


@pytest.fixture
def ec_client(services: Services) -> KeyClient:
    return add_key_client(services, EC_KEY, "ES256", name="Fachverfahren EC")


@pytest.fixture
def rsa_client(services: Services) -> KeyClient:
    return add_key_client(services, RSA_KEY, "RS256", name="Fachverfahren RSA")


def claims_for(client_id: str, clock: FakeClock, *, aud: Any = TOKEN_ENDPOINT, lifetime: int = 120,
               **overrides: Any) -> dict[str, Any]:
    now = int(clock().timestamp())
    claims: dict[str, Any] = {"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + lifetime,
                              "jti": secrets.token_urlsafe(16)}
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def sign(key: ECKey | RSAKey, claims: dict[str, Any], alg: str, **header: Any) -> str:
    header = {"alg": alg, "typ": "JWT", "kid": key.kid, **header}
    return jwt.encode({k: v for k, v in header.items() if v is not None}, claims, key, algorithms=[alg])


def assertion(client: KeyClient, clock: FakeClock, **overrides: Any) -> str:
    return sign(client.key, claims_for(client.client_id, clock, **overrides), client.alg)


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64url(json.dumps(header))}.{b64url(json.dumps(claims))}.{b64url(signature)}"


def hs256(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    signing_input = f"{b64url(json.dumps(header))}.{b64url(json.dumps(claims))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def client_credentials(browser: TestClient, token: str | None, assertion_type: str | None = ASSERTION_TYPE,
                       **extra: str) -> Any:
    data = {"grant_type": "client_credentials", "client_assertion_type": assertion_type, "client_assertion": token,
            **extra}
    return browser.post("/token", data={k: v for k, v in data.items() if v is not None})


def assert_invalid_client(response: Any) -> None:
    assert response.status_code in (400, 401), response.text
    body = response.json()
    assert body["error"] == "invalid_client", body
    assert "access_token" not in body
    assert response.headers["cache-control"] == "no-store"


def tokens_issued(services: Services) -> int:
    with read_only(services.sessions) as db:
        return int(db.scalar(select(func.count()).select_from(Token)) or 0)


# --- success ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aud", [TOKEN_ENDPOINT, ISSUER])
def test_ec_assertion_authenticates(client: TestClient, services: Services, clock: FakeClock, ec_client: KeyClient,
                                    aud: Any) -> None:
    """An ES256 assertion with iss = sub = client_id, our aud (token endpoint or issuer), a near exp and a
    fresh jti authenticates the client (RFC 7523 3)."""
    response = client_credentials(client, assertion(ec_client, clock, aud=aud))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and "refresh_token" not in body
    access = decode(client, body["access_token"])
    assert access.claims["client_id"] == ec_client.client_id and access.claims["sub"] == ec_client.client_id


@pytest.mark.parametrize("alg", ["RS256", "PS256"])
def test_rsa_assertion_authenticates(client: TestClient, clock: FakeClock, rsa_client: KeyClient, alg: str) -> None:
    """An RSA client may sign with RS256 or PS256."""
    token = sign(RSA_KEY, claims_for(rsa_client.client_id, clock), alg)
    response = client_credentials(client, token)
    assert response.status_code == 200, response.text
    assert decode(client, response.json()["access_token"]).claims["client_id"] == rsa_client.client_id


def test_assertion_without_kid_uses_the_single_registered_key(client: TestClient, clock: FakeClock,
                                                              ec_client: KeyClient) -> None:
    """A client with one registered key may omit ``kid``."""
    token = sign(EC_KEY, claims_for(ec_client.client_id, clock), "ES256", kid=None)
    assert client_credentials(client, token).status_code == 200


def test_client_with_several_keys(client: TestClient, services: Services, clock: FakeClock) -> None:
    """With several registered keys, the one named by ``kid`` verifies the assertion."""
    registered = add_key_client(services, EC_KEY, "ES256", name="Zwei Schlüssel", jwks=public_jwks(RSA_KEY, EC_KEY))
    assert client_credentials(client, assertion(registered, clock)).status_code == 200
    rsa = KeyClient(registered.client_id, RSA_KEY, "RS256")
    assert client_credentials(client, assertion(rsa, clock)).status_code == 200


def test_client_id_parameter_matching_the_assertion(client: TestClient, clock: FakeClock,
                                                    ec_client: KeyClient) -> None:
    """``client_id`` may accompany the assertion when it names the same client (RFC 7521 4.2)."""
    response = client_credentials(client, assertion(ec_client, clock), client_id=ec_client.client_id)
    assert response.status_code == 200, response.text


def test_authorization_code_exchange(client: TestClient, services: Services, clock: FakeClock) -> None:
    """A web client exchanges its code with an assertion instead of a secret and gets an ID token."""
    sub = add_user(services)
    registered = add_client(services, token_endpoint_auth_method="private_key_jwt", jwks=public_jwks(EC_KEY),
                            trusted=True)
    key_client = KeyClient(registered.client_id, EC_KEY, "ES256")
    flow = Flow(registered)
    params = authorize(client, flow)
    response = exchange(client, flow, params["code"], client_assertion_type=ASSERTION_TYPE,
                        client_assertion=assertion(key_client, clock, aud=ISSUER))
    assert response.status_code == 200, response.text
    body = response.json()
    id_token = decode(client, body["id_token"])
    assert id_token.claims["aud"] == registered.client_id and id_token.claims["sub"] == sub
    assert id_token.claims["nonce"] == flow.nonce
    assert body["refresh_token"]
    refreshed = client.post("/token", data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"],
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion(key_client, clock)})
    assert refreshed.status_code == 200, refreshed.text


def test_authorization_code_exchange_refused_without_valid_assertion(client: TestClient, services: Services,
                                                                     clock: FakeClock) -> None:
    """A code of a private_key_jwt client is not handed out for a bad assertion, and stays redeemable."""
    add_user(services)
    registered = add_client(services, token_endpoint_auth_method="private_key_jwt", jwks=public_jwks(EC_KEY),
                            trusted=True)
    flow = Flow(registered)
    params = authorize(client, flow)
    forged = sign(ATTACKER_KEY, claims_for(registered.client_id, clock), "ES256", kid=EC_KEY.kid)
    assert_invalid_client(exchange(client, flow, params["code"], client_assertion_type=ASSERTION_TYPE,
                                   client_assertion=forged))
    assert_invalid_client(exchange(client, flow, params["code"]))
    good = assertion(KeyClient(registered.client_id, EC_KEY, "ES256"), clock)
    response = exchange(client, flow, params["code"], client_assertion_type=ASSERTION_TYPE, client_assertion=good)
    assert response.status_code == 200, response.text


def test_jwks_uri_client(client: TestClient, services: Services, clock: FakeClock, jwks_server: JwksServer) -> None:
    """A client registered with a ``jwks_uri`` is authenticated with the keys fetched from it."""
    uri = jwks_server.serve(f"/client-{secrets.token_hex(4)}.json", public_jwks(RSA_KEY))
    remote = add_key_client(services, RSA_KEY, "RS256", name="Fernschlüssel", jwks_uri=uri)
    response = client_credentials(client, assertion(remote, clock))
    assert response.status_code == 200, response.text
    assert jwks_server.hits[uri.removeprefix(jwks_server.base)] >= 1
    forged = sign(ATTACKER_KEY, claims_for(remote.client_id, clock), "ES256", kid=RSA_KEY.kid)
    assert_invalid_client(client_credentials(client, forged))


@pytest.mark.parametrize(("status", "body"), [
    (500, b"oops"),
    (200, b"not json"),
    (200, {"keys": "none"}),
    (200, ["a", "list"]),
    (200, {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
    (200, b'{"keys": [' + b'{"kty":"EC"},' * 8000 + b'{"kty":"EC"}]}'),
])
def test_unusable_jwks_uri_refused(client: TestClient, services: Services, clock: FakeClock,
                                   jwks_server: JwksServer, status: int, body: Any) -> None:
    """A jwks_uri that fails, is not a JWK set, holds only symmetric keys or is too large: invalid_client."""
    uri = jwks_server.serve(f"/broken-{secrets.token_hex(4)}.json", body, status)
    remote = add_key_client(services, EC_KEY, "ES256", name="Kaputt", jwks_uri=uri)
    assert_invalid_client(client_credentials(client, assertion(remote, clock)))


def test_unreachable_jwks_uri_refused(client: TestClient, services: Services, clock: FakeClock) -> None:
    """A jwks_uri nobody answers at gives invalid_client, not a server error."""
    remote = add_key_client(services, EC_KEY, "ES256", name="Weg", jwks_uri="http://127.0.0.1:9/jwks.json")
    assert_invalid_client(client_credentials(client, assertion(remote, clock)))


# --- forged signatures and keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_refused(client: TestClient, services: Services, clock: FakeClock, ec_client: KeyClient,
                          alg: str) -> None:
    """An unsigned assertion (``alg: none``, empty signature) never authenticates (authlib advisory)."""
    claims = claims_for(ec_client.client_id, clock)
    for header in ({"alg": alg}, {"alg": alg, "typ": "JWT", "kid": EC_KEY.kid}):
        assert_invalid_client(client_credentials(client, unsigned(header, claims)))
    assert tokens_issued(services) == 0


@pytest.mark.parametrize("secret", [
    EC_KEY.as_pem(private=False),
    EC_KEY.as_pem(private=False).strip(),
    json.dumps(EC_KEY.as_dict(private=False)).encode(),
    json.dumps(EC_KEY.as_dict(private=False), separators=(",", ":"), sort_keys=True).encode(),
    json.dumps(public_jwks(EC_KEY)).encode(),
    str(EC_KEY.as_dict(private=False)["x"]).encode(),
])
def test_hmac_keyed_with_public_key_refused(client: TestClient, services: Services, clock: FakeClock,
                                            ec_client: KeyClient, secret: bytes) -> None:
    """HS256 keyed with the client's public key (PEM or JWK JSON) is refused: key confusion (authlib advisory)."""
    claims = claims_for(ec_client.client_id, clock)
    for header in ({"alg": "HS256", "typ": "JWT"}, {"alg": "HS256", "kid": EC_KEY.kid}):
        assert_invalid_client(client_credentials(client, hs256(secret, header, claims)))
    assert tokens_issued(services) == 0


def test_hmac_keyed_with_rsa_public_key_refused(client: TestClient, clock: FakeClock, rsa_client: KeyClient) -> None:
    """HS256 keyed with an RSA client's public PEM or JWK is refused."""
    claims = claims_for(rsa_client.client_id, clock)
    for secret in (RSA_KEY.as_pem(private=False), json.dumps(RSA_KEY.as_dict(private=False)).encode()):
        token = hs256(secret, {"alg": "HS256", "kid": RSA_KEY.kid}, claims)
        assert_invalid_client(client_credentials(client, token))


def test_key_in_jwk_header_ignored(client: TestClient, services: Services, clock: FakeClock,
                                   ec_client: KeyClient) -> None:
    """An assertion signed by a key it carries in its own ``jwk`` header is refused (authlib advisory)."""
    claims = claims_for(ec_client.client_id, clock)
    attacker_public = ATTACKER_KEY.as_dict(private=False)
    for kid in (ATTACKER_KEY.kid, EC_KEY.kid, None):
        token = sign(ATTACKER_KEY, dict(claims, jti=secrets.token_urlsafe(8)), "ES256", kid=kid, jwk=attacker_public)
        assert_invalid_client(client_credentials(client, token))
    assert tokens_issued(services) == 0


def test_key_behind_jku_header_never_fetched(client: TestClient, services: Services, clock: FakeClock,
                                             ec_client: KeyClient, jwks_server: JwksServer) -> None:
    """A ``jku`` header pointing at an attacker's key set is neither fetched nor trusted (ASVS 9.1.3)."""
    path = f"/attacker-{secrets.token_hex(4)}.json"
    jku = jwks_server.serve(path, public_jwks(ATTACKER_KEY))
    for kid in (ATTACKER_KEY.kid, EC_KEY.kid):
        token = sign(ATTACKER_KEY, claims_for(ec_client.client_id, clock), "ES256", kid=kid, jku=jku)
        assert_invalid_client(client_credentials(client, token))
    assert jwks_server.hits[path] == 0
    assert tokens_issued(services) == 0


def test_unregistered_key_refused(client: TestClient, services: Services, clock: FakeClock,
                                  ec_client: KeyClient, rsa_client: KeyClient) -> None:
    """An assertion signed by a key the client did not register is refused, whatever ``kid`` it names."""
    claims = claims_for(ec_client.client_id, clock)
    for kid in (ATTACKER_KEY.kid, EC_KEY.kid, None):
        token = sign(ATTACKER_KEY, dict(claims, jti=secrets.token_urlsafe(8)), "ES256", kid=kid)
        assert_invalid_client(client_credentials(client, token))
    # Another client's registered key is no better.
    token = sign(RSA_KEY, claims_for(ec_client.client_id, clock), "RS256")
    assert_invalid_client(client_credentials(client, token))
    assert tokens_issued(services) == 0


def test_signature_tampering_refused(client: TestClient, clock: FakeClock, ec_client: KeyClient) -> None:
    """Changing the payload of a validly signed assertion breaks it."""
    header, _, signature = assertion(ec_client, clock).split(".")
    other = b64url(json.dumps(claims_for(ec_client.client_id, clock)))
    assert_invalid_client(client_credentials(client, f"{header}.{other}.{signature}"))


# --- claims ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aud", [
    "https://evil.example/token",
    "https://evil.example",
    f"{ISSUER}/",
    f"{TOKEN_ENDPOINT}/",
    f"{ISSUER}/authorize",
    f"{ISSUER}/introspect",
    "https://IDP.TEST/token",
    "",
    [],
    ["https://evil.example/token"],
    None,
])
def test_foreign_audience_refused(client: TestClient, clock: FakeClock, ec_client: KeyClient, aud: Any) -> None:
    """An assertion not addressed to our issuer or token endpoint (or without ``aud``) is refused (RFC 7523 3)."""
    assert_invalid_client(client_credentials(client, assertion(ec_client, clock, aud=aud)))


def test_missing_exp_refused(client: TestClient, clock: FakeClock, ec_client: KeyClient) -> None:
    """``exp`` is required (RFC 7523 3, item 4)."""
    assert_invalid_client(client_credentials(client, assertion(ec_client, clock, exp=None)))


@pytest.mark.parametrize("exp", ["soon", 1e30, True])
def test_malformed_exp_refused(client: TestClient, clock: FakeClock, ec_client: KeyClient, exp: Any) -> None:
    """``exp`` that is not a plausible time is refused."""
    assert_invalid_client(client_credentials(client, assertion(ec_client, clock, exp=exp)))


@pytest.mark.parametrize("lifetime", [86400, 3600, 601 + 30])
def test_far_expiry_refused(client: TestClient, clock: FakeClock, ec_client: KeyClient, lifetime: int) -> None:
    """An assertion valid for a day (or an hour) is refused: a stolen one would be usable too long."""
    assert_invalid_client(client_credentials(client, assertion(ec_client, clock, lifetime=lifetime)))


def test_expired_assertion_refused(client: TestClient, clock: FakeClock, ec_client: KeyClient) -> None:
    """An assertion whose ``exp`` has passed (beyond the clock-skew leeway) is refused."""
    assert_invalid_client(client_credentials(client, assertion(ec_client, clock, lifetime=-120)))
    token = assertion(ec_client, clock, lifetime=60)
    clock.advance(seconds=120)
    assert_invalid_client(client_credentials(client, token))


def test_not_yet_valid_assertion_refused(client: TestClient, clock: FakeClock, ec_client: KeyClient) -> None:
    """An assertion with ``nbf`` in the future is not valid yet."""
    now = int(clock().timestamp())
    assert_invalid_client(client_credentials(client, assertion(ec_client, clock, nbf=now + 300, lifetime=500)))


def test_reused_jti_refused(client: TestClient, services: Services, clock: FakeClock, ec_client: KeyClient) -> None:
    """The same assertion (same ``jti``) is accepted once; its replay is refused (RFC 7523 3, item 7)."""
    token = assertion(ec_client, clock)
    assert client_credentials(client, token).status_code == 200
    assert_invalid_client(client_credentials(client, token))
    jti = claims_for(ec_client.client_id, clock)["jti"]
    assert client_credentials(client, assertion(ec_client, clock, jti=jti)).status_code == 200
    assert_invalid_client(client_credentials(client, assertion(ec_client, clock, jti=jti, aud=ISSUER)))
    assert tokens_issued(services) == 2


def test_jti_is_per_client(client: TestClient, clock: FakeClock, ec_client: KeyClient, rsa_client: KeyClient) -> None:
    """Two clients that happen to pick the same ``jti`` do not block each other."""
    assert client_credentials(client, assertion(ec_client, clock, jti="1")).status_code == 200
    assert client_credentials(client, assertion(rsa_client, clock, jti="1")).status_code == 200


@pytest.mark.parametrize("jti", [None, "", 42])
def test_missing_or_bad_jti_refused(client: TestClient, clock: FakeClock, ec_client: KeyClient, jti: Any) -> None:
    """Without a usable ``jti`` replay cannot be detected, so the assertion is refused."""
    assert_invalid_client(client_credentials(client, assertion(ec_client, clock, jti=jti)))


def test_iss_must_equal_sub(client: TestClient, clock: FakeClock, ec_client: KeyClient,
                            rsa_client: KeyClient) -> None:
    """``iss`` and ``sub`` must both be the client_id (RFC 7523 3, items 1-2)."""
    for iss in (rsa_client.client_id, "https://evil.example", None):
        assert_invalid_client(client_credentials(client, assertion(ec_client, clock, iss=iss)))


def test_sub_of_another_client_refused(client: TestClient, services: Services, clock: FakeClock,
                                       ec_client: KeyClient, rsa_client: KeyClient) -> None:
    """An assertion signed with one client's key but naming another client is refused."""
    other = rsa_client.client_id
    token = sign(EC_KEY, claims_for(other, clock), "ES256")
    assert_invalid_client(client_credentials(client, token))
    token = sign(EC_KEY, claims_for(ec_client.client_id, clock, sub=other, iss=other), "ES256")
    assert_invalid_client(client_credentials(client, token))
    token = sign(EC_KEY, claims_for(ec_client.client_id, clock, sub=other), "ES256")
    assert_invalid_client(client_credentials(client, token))
    assert tokens_issued(services) == 0


def test_client_id_parameter_naming_another_client_refused(client: TestClient, services: Services,
                                                           clock: FakeClock, ec_client: KeyClient,
                                                           rsa_client: KeyClient) -> None:
    """A ``client_id`` parameter must identify the same client as the assertion (RFC 7521 4.2)."""
    response = client_credentials(client, assertion(ec_client, clock), client_id=rsa_client.client_id)
    assert_invalid_client(response)
    assert tokens_issued(services) == 0


def test_unknown_or_disabled_client_refused(client: TestClient, services: Services, clock: FakeClock,
                                            ec_client: KeyClient) -> None:
    """An assertion for a client that does not exist, or is disabled, is refused."""
    token = sign(EC_KEY, claims_for("no-such-client", clock), "ES256")
    assert_invalid_client(client_credentials(client, token))
    with unit_of_work(services.sessions) as db:
        row = db.scalar(select(Client).where(Client.client_id == ec_client.client_id))
        assert row is not None
        row.disabled_at = clock()
    assert_invalid_client(client_credentials(client, assertion(ec_client, clock)))


@pytest.mark.parametrize("token", [
    "",
    "abc",
    "a.b",
    "a.b.c",
    "...",
    "a.b.c.d.e",
    "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln",
    unsigned({"alg": "ES256"}, ["not", "an", "object"], b"sig"),  # type: ignore[arg-type]
    unsigned({"alg": "ES256"}, {"sub": 42, "iss": 42}, b"sig"),
    unsigned({"alg": "ES256"}, {"sub": ["a"]}, b"sig"),
    unsigned({"alg": "ES256"}, {"sub": "x" * 5000}, b"sig"),
    "\x00.\xff.\x01",
    "eyJhbGciOiJFUzI1NiJ9." + "A" * 15000 + ".c2ln",
])
def test_malformed_assertion_refused(client: TestClient, services: Services, token: str) -> None:
    """Garbage in ``client_assertion`` is ``invalid_client`` (or ``invalid_request``), never a server error."""
    response = client_credentials(client, token)
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] in ("invalid_client", "invalid_request")
    assert tokens_issued(services) == 0


def test_malformed_claims_in_signed_assertion_refused(client: TestClient, clock: FakeClock,
                                                      ec_client: KeyClient) -> None:
    """A validly signed assertion whose payload is not a claims object is refused."""
    for payload in (b"[1,2,3]", b"not json", b'"a string"', b"null"):
        token = jws.serialize_compact({"alg": "ES256", "kid": EC_KEY.kid}, payload, EC_KEY, algorithms=["ES256"])
        assert_invalid_client(client_credentials(client, token))


@pytest.mark.parametrize("assertion_type", [
    None,
    "",
    "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
    ASSERTION_TYPE.upper(),
    ASSERTION_TYPE + " ",
])
def test_wrong_assertion_type_refused(client: TestClient, services: Services, clock: FakeClock, ec_client: KeyClient,
                                      assertion_type: str | None) -> None:
    """A valid assertion under another ``client_assertion_type`` does not authenticate (RFC 7521 4.2)."""
    response = client_credentials(client, assertion(ec_client, clock), assertion_type=assertion_type)
    assert_invalid_client(response)
    response = client_credentials(client, assertion(ec_client, clock), assertion_type=assertion_type,
                                  client_id=ec_client.client_id)
    assert_invalid_client(response)
    assert tokens_issued(services) == 0


def test_missing_assertion_refused(client: TestClient, ec_client: KeyClient) -> None:
    """An assertion type without an assertion authenticates nobody."""
    assert_invalid_client(client_credentials(client, None, client_id=ec_client.client_id))
    assert_invalid_client(client_credentials(client, "", client_id=ec_client.client_id))


# --- method binding ------------------------------------------------------------------------------------------------


def test_private_key_jwt_client_cannot_use_a_secret(client: TestClient, services: Services,
                                                    ec_client: KeyClient) -> None:
    """A client registered for private_key_jwt has no secret and cannot fall back to one (or to none)."""
    cid = ec_client.client_id
    for secret in ("", "secret", "None", "null"):
        assert_invalid_client(client.post("/token", data={"grant_type": "client_credentials"}, auth=(cid, secret)))
        assert_invalid_client(client.post("/token", data={"grant_type": "client_credentials", "client_id": cid,
                                                          "client_secret": secret}))
    assert_invalid_client(client.post("/token", data={"grant_type": "client_credentials", "client_id": cid}))
    assert tokens_issued(services) == 0


def test_secret_client_cannot_switch_to_private_key_jwt(client: TestClient, services: Services,
                                                        clock: FakeClock) -> None:
    """A client registered for client_secret_basic is not authenticated by an assertion, even with keys on file."""
    registered = add_client(services, name="Geheimnis", grant_types=["client_credentials"], redirect_uris=[],
                            jwks=public_jwks(EC_KEY))
    assert registered.client_secret
    keyed = KeyClient(registered.client_id, EC_KEY, "ES256")
    assert_invalid_client(client_credentials(client, assertion(keyed, clock)))
    response = client.post("/token", data={"grant_type": "client_credentials"},
                           auth=(registered.client_id, registered.client_secret))
    assert response.status_code == 200, response.text


def test_assertion_must_travel_in_the_body(client: TestClient, clock: FakeClock, ec_client: KeyClient) -> None:
    """An assertion in the query string is refused: credentials do not belong in URLs (RFC 6749 3.2)."""
    token = assertion(ec_client, clock)
    response = client.post(f"/token?client_assertion_type={ASSERTION_TYPE}&client_assertion={token}",
                           data={"grant_type": "client_credentials"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"

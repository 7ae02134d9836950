"""RFC 7591 Dynamic Client Registration and RFC 7592 management (issue 5, sections 4 and 5).

Registration needs an initial access token made by an administrator (``idp clients token``); each client gets
its own registration access token, which reads, replaces and deletes that client and no other. Registration
and updates never give a client more than an administrator would: no ``client_credentials``, no skipped
consent, no second-factor relaxations, no public client made from a confidential one. Both tokens are stored
only as keyed hashes. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from idp import cli
from idp.accounts.users import find_user
from idp.audit import Origin
from idp.db import unit_of_work
from idp.models import AuditEvent, Client, ClientOwner, InitialAccessToken
from idp.oauth.client_registry import disable_client
from idp.oauth.registration import (
    RegistrationError,
    authenticate_initial_token,
    authenticate_registration,
    delete_registered_client,
    issue_initial_token,
    register_client,
    replace_client,
)
from idp.services import Services
from tests.conftest import ISSUER, FakeClock
from tests.helpers import Flow, RegisteredClient, add_console_user, add_user, authorize, decode, exchange

REDIRECT = "https://fachverfahren.musterstadt.de/cb"
METADATA: dict[str, Any] = {
    "client_name": "Fachverfahren Bauantrag",
    "redirect_uris": [REDIRECT],
    "post_logout_redirect_uris": ["https://fachverfahren.musterstadt.de/logged-out"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "client_secret_basic",
    "scope": "openid profile email",
    "id_token_signed_response_alg": "ES256",
    "contacts": ["it@musterstadt.de"],
}


def initial_token(services: Services, *, uses: int = 1, lifetime: timedelta = timedelta(days=7),
                  owner: str | None = None) -> str:
    with unit_of_work(services.sessions) as db:
        user = find_user(db, owner) if owner else None
        _, token = issue_initial_token(db, services.hasher, now=services.now(), lifetime=lifetime, uses=uses,
                                       owner=user)
        return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(client: TestClient, token: str | None, metadata: Any = None, **headers: str) -> Any:
    body = json.dumps(METADATA if metadata is None else metadata)
    auth = bearer(token) if token is not None else {}
    return client.post("/register", content=body, headers={"content-type": "application/json", **auth, **headers})


def registered(client: TestClient, services: Services, metadata: Any = None, **kwargs: Any) -> dict[str, Any]:
    response = register(client, initial_token(services, **kwargs), metadata)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def manage(client: TestClient, method: str, uri: str, token: str, body: Any = None) -> Any:
    path = uri.removeprefix(ISSUER)
    content = None if body is None else json.dumps(body)
    headers = {**bearer(token), **({"content-type": "application/json"} if body is not None else {})}
    return client.request(method, path, content=content, headers=headers)


def put_body(info: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """What a client sends to replace its metadata: what it has, without the server-assigned fields."""
    body = {k: v for k, v in info.items() if k not in {"registration_access_token", "registration_client_uri",
                                                       "client_secret_expires_at", "client_id_issued_at",
                                                       "client_secret"}}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def client_row(services: Services, client_id: str) -> Client | None:
    with unit_of_work(services.sessions) as db:
        return db.scalar(select(Client).where(Client.client_id == client_id))


def uses_left(services: Services) -> list[int]:
    with unit_of_work(services.sessions) as db:
        return list(db.scalars(select(InitialAccessToken.uses_left).order_by(InitialAccessToken.id)))


def client_count(services: Services) -> int:
    with unit_of_work(services.sessions) as db:
        return int(db.scalar(select(func.count()).select_from(Client)) or 0)


def events(services: Services, name: str) -> list[AuditEvent]:
    with unit_of_work(services.sessions) as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.event == name).order_by(AuditEvent.id)))


def assert_error(response: Any, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == error, response.text
    assert response.headers["cache-control"] == "no-store"


def assert_invalid_token(response: Any) -> None:
    """RFC 6750 3.1 / RFC 7591 3: 401 with a Bearer challenge naming invalid_token."""
    assert_error(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


# --- discovery and the registration response --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"])
def test_discovery_names_the_registration_endpoint(client: TestClient, path: str) -> None:
    """OIDC Discovery 3 / RFC 8414 2: ``registration_endpoint`` is published in both documents."""
    assert client.get(path).json()["registration_endpoint"] == f"{ISSUER}/register"


def test_registration_returns_credentials_once_and_stores_them_hashed(client: TestClient, services: Services,
                                                                      clock: FakeClock) -> None:
    """RFC 7591 3.2.1: 201 with client_id, secret, issue time, secret expiry, the registered metadata and the
    RFC 7592 registration access token and URI; the response is not cached and the secrets are stored hashed."""
    response = register(client, initial_token(services))
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"
    info = response.json()
    client_id = info["client_id"]
    assert info["registration_client_uri"] == f"{ISSUER}/register/{client_id}"
    assert info["client_id_issued_at"] == int(clock.now.timestamp())
    assert info["client_secret_expires_at"] == 0
    assert len(info["client_secret"]) >= 43 and len(info["registration_access_token"]) >= 43  # 256 bits
    for key in ("client_name", "redirect_uris", "post_logout_redirect_uris", "grant_types", "response_types",
                "token_endpoint_auth_method", "scope", "id_token_signed_response_alg", "contacts"):
        assert info[key] == METADATA[key], key
    row = client_row(services, client_id)
    assert row is not None and row.is_usable and not row.trusted and row.require_mfa is None
    assert row.secret_hash == services.hasher.hash(info["client_secret"])
    assert row.registration_token_hash == services.hasher.hash(info["registration_access_token"])
    assert uses_left(services) == [0]


def test_defaults_follow_the_specifications(client: TestClient, services: Services) -> None:
    """Omitted metadata: client_secret_basic and authorization_code (RFC 7591 2), RS256 ID tokens (OIDC
    Registration 2), web application, every scope this server offers."""
    info = registered(client, services, {"client_name": "Minimal", "redirect_uris": [REDIRECT]})
    assert info["token_endpoint_auth_method"] == "client_secret_basic"
    assert info["grant_types"] == ["authorization_code"] and info["response_types"] == ["code"]
    assert info["id_token_signed_response_alg"] == "RS256"
    assert info["application_type"] == "web" and info["subject_type"] == "public"
    assert info["scope"] == "openid profile email groups offline_access"


def test_public_native_client_gets_no_secret(client: TestClient, services: Services) -> None:
    """A native app (``none``, RFC 8252) may use a reverse-domain custom scheme and loopback; it gets no secret."""
    info = registered(client, services, {"client_name": "Ratsinfo App", "token_endpoint_auth_method": "none",
                                         "application_type": "native",
                                         "redirect_uris": ["de.musterstadt.rats:/cb", "http://127.0.0.1/cb"]})
    assert "client_secret" not in info and "client_secret_expires_at" not in info
    assert info["token_endpoint_auth_method"] == "none" and info["application_type"] == "native"


def test_owner_of_the_initial_token_owns_the_client(client: TestClient, services: Services) -> None:
    """The owner named by ``idp clients token --owner`` becomes the client's owner and the audit actor."""
    add_console_user(services, "appowner", "app-owner")
    info = registered(client, services, owner="appowner")
    with unit_of_work(services.sessions) as db:
        owner = find_user(db, "appowner")
        assert owner is not None
        owners = db.scalars(select(ClientOwner.user_id).join(Client, Client.id == ClientOwner.client_id)
                            .where(Client.client_id == info["client_id"])).all()
        assert owners == [owner.id]
    [event] = events(services, "client.registered")
    assert event.actor == "appowner" and event.client_id == info["client_id"]
    assert event.details["owner"] == "appowner" and event.details["redirect_uris"] == [REDIRECT]
    # Never a secret or token in the audit trail.
    assert info["client_secret"] not in json.dumps(event.details)


def test_registered_client_signs_a_user_in(client: TestClient, services: Services) -> None:
    """A client registered through RFC 7591 completes code + PKCE with its secret; its ID token is signed with
    the algorithm it registered."""
    add_user(services)
    info = registered(client, services)
    flow = Flow(RegisteredClient(info["client_id"], info["client_secret"], REDIRECT), scope="openid profile email")
    params = authorize(client, flow)
    assert params["state"] == flow.state
    tokens = exchange(client, flow, params["code"])
    assert tokens.status_code == 200, tokens.text
    id_token = decode(client, tokens.json()["id_token"])
    assert id_token.header["alg"] == "ES256" and id_token.claims["aud"] == info["client_id"]
    # The registration access token is no credential at the token endpoint.
    wrong = exchange(client, Flow(RegisteredClient(info["client_id"], info["registration_access_token"],
                                                   REDIRECT)), "x")
    assert wrong.status_code == 401


# --- initial access tokens -------------------------------------------------------------------------------------


def test_missing_initial_token_gets_the_bare_bearer_challenge(client: TestClient, services: Services) -> None:
    """RFC 7591 3 with RFC 6750 3.1: no token at all is 401 with ``WWW-Authenticate: Bearer`` (no error code
    in the challenge); no client is made. Open registration is not offered."""
    response = register(client, None)
    assert_error(response, 401, "invalid_token")
    assert response.headers["www-authenticate"] == "Bearer"
    assert client_count(services) == 0


@pytest.mark.parametrize("header", ["Bearer not-a-token", "Basic dXNlcjpwdw==", "Bearer", "Bearer a b",
                                    "Bearer \u00e4\u00f6\u00fc", "Bearer " + "x" * 600])
def test_wrong_initial_token_is_refused(client: TestClient, services: Services, header: str) -> None:
    """An unknown token, another scheme or a malformed header: 401 ``invalid_token``, and nothing is used up."""
    initial_token(services)
    response = client.post("/register", content=json.dumps(METADATA),
                           headers={b"content-type": b"application/json", b"authorization": header.encode()})
    assert_invalid_token(response)
    assert client_count(services) == 0 and uses_left(services) == [1]


def test_expired_initial_token_is_refused(client: TestClient, services: Services, clock: FakeClock) -> None:
    """An initial access token stops working at its expiry."""
    token = initial_token(services, lifetime=timedelta(hours=1), uses=5)
    clock.advance(minutes=59)
    assert register(client, token).status_code == 201
    clock.advance(minutes=1)
    assert_invalid_token(register(client, token))
    assert client_count(services) == 1


def test_initial_token_is_single_use_by_default(client: TestClient, services: Services) -> None:
    """One registration per token unless ``--uses`` says more; a used-up token is refused and audited."""
    token = initial_token(services)
    assert register(client, token).status_code == 201
    assert_invalid_token(register(client, token))
    several = initial_token(services, uses=2)
    assert [register(client, several).status_code for _ in range(3)] == [201, 201, 401]
    assert client_count(services) == 3
    refused = events(services, "client.registration_refused")
    assert [e.details["reason"] for e in refused] == ["invalid_token", "invalid_token"]
    assert all(e.outcome == "failure" for e in refused)


def test_refused_metadata_does_not_use_up_the_token(client: TestClient, services: Services) -> None:
    """A registration refused for its metadata gives the use back: the corrected request then succeeds."""
    token = initial_token(services)
    assert_error(register(client, token, {**METADATA, "redirect_uris": ["http://app.example/cb"]}), 400,
                 "invalid_redirect_uri")
    assert uses_left(services) == [1]
    assert register(client, token).status_code == 201


def test_last_use_is_spent_once_under_concurrency(services: Services) -> None:
    """Eight registrations race for a token with one use left: exactly one registers a client. On PostgreSQL the
    transactions overlap (several read ``uses_left = 1``), and the atomic ``UPDATE ... WHERE uses_left > 0``
    refuses all but one of those; SQLite serializes writers and refuses the others at their first read."""
    token = initial_token(services)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt() -> None:
        barrier.wait()
        try:
            with unit_of_work(services.sessions) as db:
                now = services.now()
                grant = authenticate_initial_token(db, services.hasher, token, now=now, origin=Origin())
                register_client(db, services.hasher, grant, dict(METADATA), now=now, issuer=ISSUER,
                                origin=Origin())
            result = "registered"
        except RegistrationError as exc:
            result = exc.error
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["invalid_token"] * 7 + ["registered"]
    assert client_count(services) == 1 and uses_left(services) == [0]


# --- metadata validation (RFC 7591 2 and 3.2.2; issue 5 section 5) ------------------------------------------------

INVALID_METADATA = [
    # (changes to METADATA, RFC 7591 error)
    ({"redirect_uris": ["https://app.example/cb#frag"]}, "invalid_redirect_uri"),
    ({"redirect_uris": ["https://*.example/cb"]}, "invalid_redirect_uri"),
    ({"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
    ({"redirect_uris": ["/relative/cb"]}, "invalid_redirect_uri"),
    ({"redirect_uris": ["http://app.example/cb"]}, "invalid_redirect_uri"),
    ({"redirect_uris": ["de.musterstadt.app:/cb"]}, "invalid_redirect_uri"),  # custom scheme, confidential
    ({"redirect_uris": ["https://user:pw@app.example/cb"]}, "invalid_redirect_uri"),
    ({"redirect_uris": []}, "invalid_redirect_uri"),
    ({"redirect_uris": None}, "invalid_redirect_uri"),
    ({"redirect_uris": "https://app.example/cb"}, "invalid_redirect_uri"),
    ({"redirect_uris": [123]}, "invalid_redirect_uri"),
    ({"redirect_uris": ["https://[::1/cb"]}, "invalid_redirect_uri"),  # urlsplit raises ValueError on these
    ({"redirect_uris": ["https://app.example:99999/cb"]}, "invalid_redirect_uri"),
    ({"logo_uri": "https://[::1"}, "invalid_client_metadata"),
    ({"post_logout_redirect_uris": ["http://app.example/bye"]}, "invalid_redirect_uri"),
    ({"client_name": None}, "invalid_client_metadata"),
    ({"client_name": ["a"]}, "invalid_client_metadata"),
    ({"client_name": "x" * 256}, "invalid_client_metadata"),
    ({"client_name": "Amt\x00"}, "invalid_client_metadata"),
    ({"client_name": "Amt\nFake"}, "invalid_client_metadata"),
    ({"grant_types": ["client_credentials"]}, "invalid_client_metadata"),
    ({"grant_types": ["authorization_code", "client_credentials"]}, "invalid_client_metadata"),
    ({"grant_types": ["implicit"]}, "invalid_client_metadata"),
    ({"grant_types": ["refresh_token"]}, "invalid_client_metadata"),
    ({"grant_types": "authorization_code"}, "invalid_client_metadata"),
    ({"response_types": ["token"]}, "invalid_client_metadata"),
    ({"response_types": ["code", "id_token"]}, "invalid_client_metadata"),
    ({"token_endpoint_auth_method": "client_secret_jwt"}, "invalid_client_metadata"),
    ({"token_endpoint_auth_method": 1}, "invalid_client_metadata"),
    ({"token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),  # no keys
    ({"scope": "openid admin"}, "invalid_client_metadata"),
    ({"scope": ["openid"]}, "invalid_client_metadata"),
    ({"id_token_signed_response_alg": "HS256"}, "invalid_client_metadata"),
    ({"id_token_signed_response_alg": "none"}, "invalid_client_metadata"),
    ({"subject_type": "pairwise"}, "invalid_client_metadata"),
    ({"application_type": "service"}, "invalid_client_metadata"),
    ({"contacts": "it@musterstadt.de"}, "invalid_client_metadata"),
    ({"contacts": ["not an address"]}, "invalid_client_metadata"),
    ({"logo_uri": "javascript:alert(1)"}, "invalid_client_metadata"),
    ({"logo_uri": "http://cdn.example/logo.png"}, "invalid_client_metadata"),
    ({"client_uri": "https://169.254.169.254/"}, "invalid_client_metadata"),
    ({"client_uri": "https://2130706433/"}, "invalid_client_metadata"),  # 127.0.0.1 in the legacy form
    ({"policy_uri": "https://0x7f.1/"}, "invalid_client_metadata"),
    ({"policy_uri": "https://localhost./"}, "invalid_client_metadata"),
    ({"tos_uri": "file:///etc/passwd"}, "invalid_client_metadata"),
    ({"backchannel_logout_uri": "https://127.0.0.1/logout"}, "invalid_client_metadata"),
    ({"backchannel_logout_uri": "https://10.1.2.3/logout"}, "invalid_client_metadata"),
    ({"backchannel_logout_uri": "https://localhost/logout"}, "invalid_client_metadata"),
    ({"backchannel_logout_uri": "http://app.example/logout"}, "invalid_client_metadata"),
    ({"backchannel_logout_session_required": "yes"}, "invalid_client_metadata"),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://[::1]/jwks"},
     "invalid_client_metadata"),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://192.168.0.10/jwks"},
     "invalid_client_metadata"),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}},
     "invalid_client_metadata"),
    ({"token_endpoint_auth_method": "private_key_jwt",
      "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}]}}, "invalid_client_metadata"),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "EC", "crv": "P-256"}]}},
     "invalid_client_metadata"),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks": [1]}, "invalid_client_metadata"),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": ["RSA"]}]}},
     "invalid_client_metadata"),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "RSA", "n": 1, "e": "AQAB"}]}},
     "invalid_client_metadata"),
    # Reserved to administrators: consent, second factors, lifetimes, state.
    ({"trusted": True}, "invalid_client_metadata"),
    ({"skip_consent": True}, "invalid_client_metadata"),
    ({"require_mfa": False}, "invalid_client_metadata"),
    ({"mfa_methods": ["sms"]}, "invalid_client_metadata"),
    ({"allow_trusted_device": True}, "invalid_client_metadata"),
    ({"access_token_lifetime": 86400}, "invalid_client_metadata"),
    ({"theme": "default"}, "invalid_client_metadata"),
    ({"status": "active"}, "invalid_client_metadata"),
    # Assigned by the server (security-cases 28).
    ({"client_id": "chosen-id"}, "invalid_client_metadata"),
    ({"client_secret": "chosen-secret-chosen-secret-chosen-secret"}, "invalid_client_metadata"),
    ({"registration_access_token": "x"}, "invalid_client_metadata"),
    ({"client_secret_expires_at": 0}, "invalid_client_metadata"),
    ({"software_statement": "eyJhbGciOiJub25lIn0.e30."}, "unapproved_software_statement"),
]


@pytest.mark.parametrize(("changes", "error"), INVALID_METADATA, ids=[json.dumps(c)[:60] for c, _ in INVALID_METADATA])
def test_invalid_metadata_is_refused(client: TestClient, services: Services, changes: dict[str, Any],
                                     error: str) -> None:
    """RFC 7591 3.2.2: 400 with the error code; no client is made and the initial token keeps its use."""
    metadata = {**METADATA, **changes}
    response = register(client, initial_token(services), {k: v for k, v in metadata.items() if v is not None})
    assert_error(response, 400, error)
    assert response.json()["error_description"]
    assert client_count(services) == 0 and uses_left(services) == [1]
    [event] = events(services, "client.registration_refused")
    assert event.details["reason"] == error


@pytest.mark.parametrize(("body", "content_type"), [
    (b"not json", "application/json"),
    (b"", "application/json"),
    (b"[1, 2]", "application/json"),
    (b'"text"', "application/json"),
    (b"null", "application/json"),
    (b'{"client_name": NaN, "redirect_uris": []}', "application/json"),
    (b'{"client_name": "a", "client_name": "b", "redirect_uris": []}', "application/json"),
    (b"\xff\xfe{}", "application/json"),
    (b"[" * 30000 + b"]" * 30000, "application/json"),
    (json.dumps(METADATA).encode(), "application/x-www-form-urlencoded"),
    (json.dumps(METADATA).encode(), "text/plain"),
    (json.dumps(METADATA).encode(), ""),
    (b'{"client_name": "a\\u0000", "redirect_uris": ["https://a.example/cb"]}', "application/json"),
    (b'{"client_name": "a", "redirect_uris": ["https://a.example/cb"], "x": {"y": ["\\u0000"]}}',
     "application/json"),
    (b'{"client_name": "\\ud800", "redirect_uris": ["https://a.example/cb"]}', "application/json"),
    (b'{"client_name": "a", "redirect_uris": ["https://a.example/cb"], "x": ' + b"[" * 900 + b'"\\udfff"'
     + b"]" * 900 + b"}", "application/json"),
])
def test_malformed_bodies_get_a_json_error(client: TestClient, services: Services, body: bytes,
                                           content_type: str) -> None:
    """Malformed JSON, other content types, NaN, repeated members, deep nesting and NUL characters: 400 with an
    error JSON, never a 500."""
    headers = {**bearer(initial_token(services)), **({"content-type": content_type} if content_type else {})}
    response = client.post("/register", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] in {"invalid_request", "invalid_client_metadata"}
    assert client_count(services) == 0 and uses_left(services) == [1]


def test_huge_body_is_refused(client: TestClient, services: Services) -> None:
    """A body above ``[server] max_body_size`` is answered 413 with an error JSON before it is parsed."""
    metadata = {**METADATA, "padding": "x" * 70000}
    response = register(client, initial_token(services), metadata)
    assert response.status_code == 413 and response.json()["error"] == "invalid_request"
    assert client_count(services) == 0


def test_body_is_not_judged_without_a_valid_token(client: TestClient, services: Services) -> None:
    """Without a valid token a malformed body still gets 401: the token is checked first."""
    response = client.post("/register", content=b"not json",
                           headers={"content-type": "application/json", **bearer("unknown")})
    assert_invalid_token(response)


def test_unknown_metadata_is_ignored(client: TestClient, services: Services) -> None:
    """RFC 7591 2: metadata the server does not understand is ignored and not echoed."""
    info = registered(client, services, {**METADATA, "frontchannel_logout_uri": "https://a.example/fc",
                                         "x-custom": {"a": 1}})
    assert "frontchannel_logout_uri" not in info and "x-custom" not in info


# --- RFC 7592 management ------------------------------------------------------------------------------------------


def test_read_returns_metadata_and_token_but_no_secret(client: TestClient, services: Services) -> None:
    """RFC 7592 2.1: GET with the registration access token returns the current metadata, the URI and the
    token; the secret is never shown again."""
    info = registered(client, services)
    response = manage(client, "GET", info["registration_client_uri"], info["registration_access_token"])
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    read = response.json()
    assert "client_secret" not in read
    assert read == {k: v for k, v in info.items() if k != "client_secret"}


def test_update_replaces_metadata_and_rotates_the_token(client: TestClient, services: Services) -> None:
    """RFC 7592 2.2: PUT replaces the metadata (omitted fields are removed or take their defaults), keeps the
    secret, and answers with a new registration access token; the old one stops working."""
    info = registered(client, services)
    old_token = info["registration_access_token"]
    body = put_body(info, client_name="Bauantrag (neu)", redirect_uris=[REDIRECT, REDIRECT + "2"],
                    post_logout_redirect_uris=None, contacts=None, grant_types=None,
                    token_endpoint_auth_method="client_secret_post", client_secret=info["client_secret"])
    response = manage(client, "PUT", info["registration_client_uri"], old_token, body)
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["client_name"] == "Bauantrag (neu)" and updated["redirect_uris"] == [REDIRECT, REDIRECT + "2"]
    assert "post_logout_redirect_uris" not in updated and "contacts" not in updated
    assert updated["grant_types"] == ["authorization_code"]  # the default of an omitted grant_types
    assert updated["token_endpoint_auth_method"] == "client_secret_post"
    assert updated["scope"] == METADATA["scope"] and "client_secret" not in updated
    new_token = updated["registration_access_token"]
    assert new_token != old_token
    assert_invalid_token(manage(client, "GET", info["registration_client_uri"], old_token))
    assert manage(client, "GET", info["registration_client_uri"], new_token).json()["client_name"] == \
        "Bauantrag (neu)"
    row = client_row(services, info["client_id"])
    assert row is not None and row.secret_hash == services.hasher.hash(info["client_secret"])
    [event] = events(services, "client.registration_updated")
    assert event.actor == "registration" and event.details["after"]["name"] == "Bauantrag (neu)"
    assert old_token not in json.dumps(event.details) and new_token not in json.dumps(event.details)


@pytest.mark.parametrize(("changes", "error"), [
    ({"client_id": None}, "invalid_client_metadata"),
    ({"client_id": "someone-else"}, "invalid_client_metadata"),
    ({"client_secret": "a-secret-of-my-own-choosing-a-secret-of-my-own"}, "invalid_client_metadata"),
    ({"registration_access_token": "x"}, "invalid_client_metadata"),
    ({"registration_client_uri": "https://evil.example/"}, "invalid_client_metadata"),
    ({"client_id_issued_at": 0}, "invalid_client_metadata"),
    ({"redirect_uris": ["https://evil.example/cb#x"]}, "invalid_redirect_uri"),
])
def test_update_errors(client: TestClient, services: Services, changes: dict[str, Any], error: str) -> None:
    """RFC 7592 2.2: the body must repeat the client's own id, may repeat only its current secret and must not
    carry the server-assigned fields; the client and its token stay as they were."""
    info = registered(client, services)
    body = put_body(info)
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not None}
    response = manage(client, "PUT", info["registration_client_uri"], info["registration_access_token"], body)
    assert_error(response, 400, error)
    assert manage(client, "GET", info["registration_client_uri"], info["registration_access_token"]).json() == \
        {k: v for k, v in info.items() if k != "client_secret"}


WIDENING = [
    {"token_endpoint_auth_method": "none"},
    {"grant_types": ["authorization_code", "refresh_token", "client_credentials"]},
    {"scope": "openid profile email groups"},
    {"scope": "openid offline_access"},
    {"trusted": True},
    {"skip_consent": True},
    {"require_mfa": False},
    {"mfa_methods": ["totp", "sms"]},
    {"allow_trusted_device": True},
    {"refresh_token_lifetime": 31536000},
    {"disabled": False},
    {"status": "active"},
]


@pytest.mark.parametrize("changes", WIDENING, ids=[json.dumps(c) for c in WIDENING])
def test_update_cannot_widen_privileges(client: TestClient, services: Services, changes: dict[str, Any]) -> None:
    """A registration access token cannot make its client public, add grant types or scopes it did not have,
    skip consent or relax second factors: 400 ``invalid_client_metadata``, nothing changed."""
    info = registered(client, services)
    before = client_row(services, info["client_id"])
    response = manage(client, "PUT", info["registration_client_uri"], info["registration_access_token"],
                      put_body(info, **changes))
    assert_error(response, 400, "invalid_client_metadata")
    after = client_row(services, info["client_id"])
    assert before is not None and after is not None
    for column in ("token_endpoint_auth_method", "grant_types", "scope", "trusted", "require_mfa", "mfa_methods",
                   "allow_trusted_device", "refresh_token_lifetime", "secret_hash", "registration_token_hash"):
        assert getattr(after, column) == getattr(before, column), column
    [event] = events(services, "client.management_refused")
    assert event.details["reason"] == "invalid_client_metadata" and event.client_id == info["client_id"]


def test_public_client_cannot_become_confidential_and_key_client_keeps_its_key(client: TestClient,
                                                                                services: Services) -> None:
    """Public and confidential do not switch through RFC 7592, and a private_key_jwt client cannot fall back to
    a client secret (which it would never be shown)."""
    public = registered(client, services, {"client_name": "App", "token_endpoint_auth_method": "none",
                                           "redirect_uris": ["http://127.0.0.1/cb"]})
    response = manage(client, "PUT", public["registration_client_uri"], public["registration_access_token"],
                      put_body(public, token_endpoint_auth_method="client_secret_basic"))
    assert_error(response, 400, "invalid_client_metadata")
    jwk = {"kty": "EC", "crv": "P-256", "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
           "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM", "use": "sig", "kid": "1"}
    keyed = registered(client, services, {**METADATA, "token_endpoint_auth_method": "private_key_jwt",
                                          "jwks": {"keys": [jwk]}})
    assert "client_secret" not in keyed and keyed["jwks"] == {"keys": [jwk]}
    response = manage(client, "PUT", keyed["registration_client_uri"], keyed["registration_access_token"],
                      put_body(keyed, token_endpoint_auth_method="client_secret_basic", jwks=None))
    assert_error(response, 400, "invalid_client_metadata")


def test_update_keeps_the_administrators_settings(client: TestClient, services: Services) -> None:
    """Settings only an administrator makes (second factor required, allowed methods, no trusted browsers,
    lifetimes) survive an RFC 7592 replacement that does not mention them."""
    info = registered(client, services)
    with unit_of_work(services.sessions) as db:
        row = db.scalar(select(Client).where(Client.client_id == info["client_id"]))
        assert row is not None
        row.require_mfa, row.mfa_methods, row.allow_trusted_device = True, ["webauthn"], False
        row.access_token_lifetime = 300
    response = manage(client, "PUT", info["registration_client_uri"], info["registration_access_token"],
                      put_body(info, client_name="Renamed"))
    assert response.status_code == 200, response.text
    row = client_row(services, info["client_id"])
    assert row is not None and row.name == "Renamed"
    assert (row.require_mfa, row.mfa_methods, row.allow_trusted_device, row.access_token_lifetime) == \
        (True, ["webauthn"], False, 300)


def test_client_disabled_by_an_administrator_stays_disabled(client: TestClient, services: Services,
                                                             clock: FakeClock) -> None:
    """An update through RFC 7592 never re-enables a client an administrator disabled; it still cannot sign in."""
    add_user(services)
    info = registered(client, services)
    with unit_of_work(services.sessions) as db:
        row = db.scalar(select(Client).where(Client.client_id == info["client_id"]))
        assert row is not None
        disable_client(db, row, clock.now, "admin")
    response = manage(client, "PUT", info["registration_client_uri"], info["registration_access_token"],
                      put_body(info, client_name="Please enable"))
    assert response.status_code == 200, response.text
    row = client_row(services, info["client_id"])
    assert row is not None and row.disabled_at is not None and row.disabled_by == "admin" and not row.is_usable
    refused = client.get(Flow(RegisteredClient(info["client_id"], info["client_secret"], REDIRECT)).url())
    assert refused.status_code == 400 and "location" not in refused.headers


def test_delete_removes_the_client_and_its_token(client: TestClient, services: Services) -> None:
    """RFC 7592 2.3: DELETE answers 204; the client, its secret and its registration access token stop working,
    and a replay of the token gets 401."""
    info = registered(client, services)
    uri, token = info["registration_client_uri"], info["registration_access_token"]
    response = manage(client, "DELETE", uri, token)
    assert response.status_code == 204 and response.content == b""
    assert response.headers["cache-control"] == "no-store"
    assert client_row(services, info["client_id"]) is None
    for method in ("GET", "DELETE"):
        assert_invalid_token(manage(client, method, uri, token))
    assert_invalid_token(manage(client, "PUT", uri, token, put_body(info)))
    tokens = client.post("/token", data={"grant_type": "authorization_code", "code": "x", "redirect_uri": REDIRECT},
                         auth=(info["client_id"], info["client_secret"]))
    assert tokens.status_code == 401
    [event] = events(services, "client.registration_deleted")
    assert event.client_id == info["client_id"] and event.actor == "registration"


# --- token scoping: a registration access token manages its own client only -----------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_token_of_one_client_cannot_touch_another(client: TestClient, services: Services, method: str) -> None:
    """Client X's registration access token on client Y's URI: 401 ``invalid_token`` (authlib's reference code
    once let any token manage any client); Y is unchanged."""
    x = registered(client, services)
    y = registered(client, services, {**METADATA, "client_name": "Other office"})
    body = put_body(y, client_name="Taken over", redirect_uris=["https://evil.example/cb"]) if method == "PUT" \
        else None
    response = manage(client, method, y["registration_client_uri"], x["registration_access_token"], body)
    assert_invalid_token(response)
    assert manage(client, "GET", y["registration_client_uri"], y["registration_access_token"]).json()[
        "client_name"] == "Other office"
    [event] = events(services, "client.management_refused")
    assert event.client_id == y["client_id"] and event.details["token_client_id"] == x["client_id"]


@pytest.mark.parametrize("path", ["/register/%ED%A0%80", "/register/" + "a" * 300, "/register/a.b~c!",
                                  "/register/%C3%A4"])
def test_odd_client_ids_in_the_path_get_401(client: TestClient, services: Services, path: str) -> None:
    """Client ids that no client has (not UTF-8, long, path tricks): 401, never a 500."""
    info = registered(client, services)
    response = client.get(path, headers=bearer(info["registration_access_token"]))
    assert_invalid_token(response)


@pytest.mark.parametrize("kind", ["unknown client", "initial token", "client secret", "no token", "guessed id"])
def test_other_credentials_do_not_manage_a_client(client: TestClient, services: Services, kind: str) -> None:
    """Neither an initial access token, nor the client secret, nor a made-up token or client id is a
    registration access token: 401, and the answer does not tell whether a client exists."""
    info = registered(client, services)
    uri = info["registration_client_uri"]
    if kind == "unknown client":
        response = manage(client, "GET", f"{ISSUER}/register/no-such-client", info["registration_access_token"])
    elif kind == "initial token":
        response = manage(client, "GET", uri, initial_token(services))
    elif kind == "client secret":
        response = manage(client, "GET", uri, info["client_secret"])
    elif kind == "guessed id":
        response = manage(client, "GET", f"{ISSUER}/register/no-such-client", "guessed-token")
    else:
        response = client.get(uri.removeprefix(ISSUER))
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        return
    assert_invalid_token(response)


def test_deleted_clients_token_cannot_manage_a_new_client(client: TestClient, services: Services) -> None:
    """After DELETE, the old registration access token is refused on every client's URI."""
    old = registered(client, services)
    assert manage(client, "DELETE", old["registration_client_uri"], old["registration_access_token"]).status_code \
        == 204
    new = registered(client, services)
    for uri in (old["registration_client_uri"], new["registration_client_uri"]):
        assert_invalid_token(manage(client, "GET", uri, old["registration_access_token"]))
        assert_invalid_token(manage(client, "DELETE", uri, old["registration_access_token"]))
    assert client_row(services, new["client_id"]) is not None


def test_one_registration_token_makes_one_change_under_concurrency(client: TestClient, services: Services) -> None:
    """Four updates and four deletions race with the same registration access token: exactly one succeeds (the
    token is swapped with an atomic ``UPDATE ... WHERE registration_token_hash = ...``), the others get
    ``invalid_token``; none fails with a server error."""
    info = registered(client, services)
    token, client_id = info["registration_access_token"], info["client_id"]
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt(number: int) -> None:
        barrier.wait()
        try:
            with unit_of_work(services.sessions) as db:
                now = services.now()
                row = authenticate_registration(db, services.hasher, client_id, token, now=now, origin=Origin())
                if number % 2:
                    delete_registered_client(db, services.hasher, row, token, now=now, origin=Origin())
                else:
                    replace_client(db, services.hasher, row, token, put_body(info, client_name=f"Update {number}"),
                                   now=now, issuer=ISSUER, origin=Origin())
            result = "deleted" if number % 2 else "updated"
        except RegistrationError as exc:
            result = exc.error
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(outcomes) == 8 and outcomes.count("invalid_token") == 7, outcomes
    row = client_row(services, client_id)
    if "deleted" in outcomes:
        assert row is None
    else:
        assert row is not None and row.name.startswith("Update ")
        assert row.registration_token_hash != services.hasher.hash(token)


def test_put_with_a_malformed_body(client: TestClient, services: Services) -> None:
    """A PUT whose body is not a JSON object gets 400 and changes nothing."""
    info = registered(client, services)
    for body, content_type in ((b"{", "application/json"), (b"[]", "application/json"),
                               (json.dumps(put_body(info)).encode(), "text/plain")):
        response = client.put(info["registration_client_uri"].removeprefix(ISSUER), content=body,
                              headers={**bearer(info["registration_access_token"]), "content-type": content_type})
        assert response.status_code == 400 and response.json()["error"] in {"invalid_request",
                                                                            "invalid_client_metadata"}
    assert manage(client, "GET", info["registration_client_uri"], info["registration_access_token"]).status_code \
        == 200


# --- idp clients token -------------------------------------------------------------------------------------------


def run_cli(services: Services, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(cli.common, "services", lambda: services)
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_token_prints_one_json_object_and_stores_a_hash(client: TestClient, services: Services,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str],
                                                            clock: FakeClock) -> None:
    """``idp clients token --expires 2d --owner U --uses 2 --json``: the token once, its expiry and uses; the
    database holds only its keyed hash; it registers two clients for that owner."""
    add_console_user(services, "appowner", "app-owner")
    code, out, err = run_cli(services, monkeypatch, capsys, "clients", "token", "--expires", "2d", "--owner",
                             "appowner", "--uses", "2", "--json")
    assert code == 0, err
    result = json.loads(out)
    token = result["initial_access_token"]
    assert result["uses"] == 2 and result["owner"] == "appowner" and result["expires_in"] == 172800
    assert result["expires_at"] == (clock.now + timedelta(days=2)).isoformat()
    assert result["registration_endpoint"] == f"{ISSUER}/register"
    with unit_of_work(services.sessions) as db:
        row = db.scalar(select(InitialAccessToken))
        assert row is not None and row.token_hash == services.hasher.hash(token) and token not in row.token_hash
    [event] = events(services, "initial_access_token.created")
    assert event.subject == "appowner" and token not in json.dumps(event.details)
    assert [register(client, token).status_code for _ in range(3)] == [201, 201, 401]


def test_cli_token_defaults_to_one_use_for_seven_days(services: Services, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str], clock: FakeClock) -> None:
    """Without options the token allows one registration within 7 days; the text output shows it once."""
    code, out, _ = run_cli(services, monkeypatch, capsys, "clients", "token")
    assert code == 0 and "shown only this once" in out
    with unit_of_work(services.sessions) as db:
        row = db.scalar(select(InitialAccessToken))
        assert row is not None and row.uses_left == 1 and row.owner_id is None
        assert row.expires_at == clock.now + timedelta(days=7)


@pytest.mark.parametrize(("args", "message"), [
    (("--owner", "nobody"), "no user 'nobody'"),
    (("--owner", "erika"), "does not have the app-owner role"),
    (("--uses", "0"), "--uses"),
    (("--uses", "1001"), "--uses"),
    (("--expires", "soon"), "--expires"),
    (("--expires", "91d"), "at most 90d"),
])
def test_cli_token_refuses_bad_options(services: Services, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                       message: str) -> None:
    """An unknown owner or one without the app-owner role, a use count outside 1..1000, a bad or too long
    lifetime: exit 1, nothing stored."""
    add_user(services)
    code, out, err = run_cli(services, monkeypatch, capsys, "clients", "token", *args)
    assert code == 1 and message in err and out == ""
    assert uses_left(services) == []

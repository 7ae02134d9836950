"""The token endpoint: the authorization code grant, client authentication, grant types, malformed bodies and
the ID token (RFC 6749 4.1.3 and 5; RFC 7636; RFC 9700 2.1.1, 2.4 and 4.5; OpenID Connect Core 3.1.3).

Attack cases 13-15, 19, 21 and 22 of the security list; every response is checked for ``no-store``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import Engine, func, select, update
from starlette.testclient import TestClient

from idp.app import create_app
from idp.db import unit_of_work
from idp.models import AuditEvent, AuthorizationCode, Client, SsoSession, Token, User
from idp.services import Services, build_services
from tests.conftest import ISSUER, FakeClock, make_settings
from tests.helpers import (
    PASSWORD,
    REDIRECT_URI,
    Flow,
    RegisteredClient,
    add_client,
    add_user,
    authorize,
    decode,
    exchange,
)

FORM = {"content-type": "application/x-www-form-urlencoded"}


# --- helpers ---------------------------------------------------------------------------------------------------


def assert_no_store(response: Any) -> None:
    assert response.headers["cache-control"] == "no-store", response.headers


def assert_oauth_error(response: Any, error: str, status: int = 400) -> dict[str, Any]:
    """An RFC 6749 5.2 error: the status, a JSON body with ``error``, no token, never cached."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert_no_store(response)
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body and "id_token" not in body
    return body


def assert_tokens(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert_no_store(response)
    body: dict[str, Any] = response.json()
    assert body["token_type"] == "Bearer" and body["access_token"]
    return body


def basic(app: RegisteredClient) -> tuple[str, str]:
    assert app.client_secret
    return app.client_id, app.client_secret


def introspect(browser: TestClient, owner: RegisteredClient, token: str) -> dict[str, Any]:
    response = browser.post("/introspect", data={"token": token}, auth=basic(owner))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def userinfo_status(browser: TestClient, access_token: str) -> int:
    return browser.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"}).status_code


def refresh(browser: TestClient, app: RegisteredClient, refresh_token: str) -> Any:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if app.client_secret is None:
        return browser.post("/token", data={**data, "client_id": app.client_id})
    return browser.post("/token", data=data, auth=basic(app))


class FlowWithoutPkce(Flow):
    """An authorization request of a confidential client that sends no ``code_challenge``."""

    def params(self) -> dict[str, str]:
        params = super().params()
        del params["code_challenge"], params["code_challenge_method"]
        return params


def flow_with_verifier(app: RegisteredClient, verifier: str) -> Flow:
    """A flow whose S256 challenge is made from ``verifier`` exactly, so that only the verifier's form is wrong."""
    flow = Flow(app)
    flow.verifier = verifier
    flow.challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return flow


def disable_client(services: Services, client_id: str, clock: FakeClock) -> None:
    with unit_of_work(services.sessions) as db:
        db.execute(update(Client).where(Client.client_id == client_id).values(disabled_at=clock()))


def disable_user(services: Services, sub: str, clock: FakeClock) -> None:
    with unit_of_work(services.sessions) as db:
        db.execute(update(User).where(User.sub == sub).values(disabled_at=clock()))


def tokens_of_client(services: Services, client_id: str) -> list[Token]:
    with unit_of_work(services.sessions) as db:
        return list(db.scalars(select(Token).join(Client, Client.id == Token.client_id)
                               .where(Client.client_id == client_id)))


@pytest.fixture
def user(services: Services) -> str:
    return add_user(services)


@pytest.fixture
def app(services: Services) -> RegisteredClient:
    return add_client(services)


# --- success, for every way a client authenticates ------------------------------------------------------------


def test_client_secret_basic_redeems_code(client: TestClient, user: str, app: RegisteredClient) -> None:
    """A confidential client authenticating with HTTP Basic gets access, refresh and ID token (RFC 6749 4.1.4)."""
    flow = Flow(app)
    body = assert_tokens(exchange(client, flow, authorize(client, flow)["code"]))
    assert body["refresh_token"] and body["id_token"]
    assert body["expires_in"] == 600
    assert set(body["scope"].split()) == {"openid", "profile", "email", "groups"}
    assert decode(client, body["access_token"]).claims["sub"] == user


def test_client_secret_post_redeems_code(client: TestClient, services: Services, user: str) -> None:
    """A client registered for client_secret_post sends its secret in the body (RFC 6749 2.3.1)."""
    app = add_client(services, token_endpoint_auth_method="client_secret_post")
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    response = client.post("/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri,
        "code_verifier": flow.verifier, "client_id": app.client_id, "client_secret": app.client_secret,
    })
    assert decode(client, assert_tokens(response)["id_token"]).claims["aud"] == app.client_id


def test_public_client_redeems_code_with_pkce(client: TestClient, services: Services, user: str) -> None:
    """A public client (auth method none) redeems its code with client_id and the PKCE verifier (RFC 7636 4.5)."""
    app = add_client(services, public=True)
    assert app.client_secret is None
    flow = Flow(app)
    body = assert_tokens(exchange(client, flow, authorize(client, flow)["code"]))
    assert body["refresh_token"]
    assert decode(client, body["id_token"]).claims["aud"] == app.client_id
    assert userinfo_status(client, body["access_token"]) == 200


def test_confidential_client_without_pkce_redeems_code(client: TestClient, user: str, app: RegisteredClient) -> None:
    """With the default pkce=public setting a confidential client may leave PKCE out entirely."""
    flow = FlowWithoutPkce(app)
    params = authorize(client, flow)
    assert_tokens(exchange(client, flow, params["code"], code_verifier=None))  # type: ignore[arg-type]


def test_client_without_refresh_grant_gets_no_refresh_token(client: TestClient, services: Services,
                                                             user: str) -> None:
    """A client not registered for refresh_token gets none: the AS decides per client (RFC 9700 4.14.2)."""
    app = add_client(services, grant_types=["authorization_code"])
    flow = Flow(app)
    body = assert_tokens(exchange(client, flow, authorize(client, flow)["code"]))
    assert "refresh_token" not in body and body["id_token"]


# --- single use of codes (attack case 13) ---------------------------------------------------------------------


@pytest.mark.parametrize("wait", [0, 30], ids=["immediately", "after-30s"])
def test_code_redeemed_twice_revokes_first_tokens(client: TestClient, services: Services, clock: FakeClock,
                                                  user: str, app: RegisteredClient, wait: int) -> None:
    """A second redemption is invalid_grant and revokes every token issued from the code (RFC 6749 4.1.2)."""
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    first = assert_tokens(exchange(client, flow, code))
    assert introspect(client, app, first["access_token"])["active"] is True
    clock.advance(seconds=wait)
    assert_oauth_error(exchange(client, flow, code), "invalid_grant")
    assert introspect(client, app, first["access_token"]) == {"active": False}
    assert introspect(client, app, first["refresh_token"]) == {"active": False}
    assert userinfo_status(client, first["access_token"]) == 401
    assert_oauth_error(refresh(client, app, first["refresh_token"]), "invalid_grant")
    rows = tokens_of_client(services, app.client_id)
    assert rows and all(row.revoked_reason == "code_reuse" for row in rows)
    with unit_of_work(services.sessions) as db:
        event = db.scalar(select(AuditEvent).where(AuditEvent.event == "token.code_reuse"))
        assert event is not None and event.outcome == "failure" and event.client_id == app.client_id


def test_parallel_redemptions_give_exactly_one_success(client: TestClient, services: Services, user: str,
                                                       app: RegisteredClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten simultaneous redemptions of one code: one token response, nine invalid_grant (oidcc-codereuse)."""
    # The signing key cache reloads on every use: the winner then reads keys while the losers hold the rest of
    # the connection pool waiting for its row lock, which must not need a second connection.
    monkeypatch.setattr("idp.oauth.keys.REFRESH_SECONDS", 0.0)
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    barrier = threading.Barrier(10)
    results: list[Any] = []
    lock = threading.Lock()

    def redeem() -> None:
        barrier.wait(timeout=30)
        response = exchange(client, flow, code)
        with lock:
            results.append(response)

    threads = [threading.Thread(target=redeem) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 10
    successes = [r for r in results if r.status_code == 200]
    assert len(successes) == 1, [r.text for r in results]
    for response in results:
        if response.status_code != 200:
            assert_oauth_error(response, "invalid_grant")
    # The losers came after the winner committed, so each of them revoked what the winner got.
    winner = successes[0].json()
    assert introspect(client, app, winner["access_token"]) == {"active": False}
    assert len(tokens_of_client(services, app.client_id)) == 1


def test_code_is_consumed_in_the_database(client: TestClient, services: Services, user: str,
                                          app: RegisteredClient) -> None:
    """A redeemed code stays as a consumed row (so that reuse is recognised), stored only as a hash."""
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    assert_tokens(exchange(client, flow, code))
    with unit_of_work(services.sessions) as db:
        row = db.scalar(select(AuthorizationCode))
        assert row is not None and row.consumed_at is not None
        assert row.code_hash != code and code not in row.code_hash


# --- binding of the code to client, redirect URI and time (attack case 14) ------------------------------------


def test_code_of_client_a_with_client_b_credentials(client: TestClient, services: Services, user: str,
                                                    app: RegisteredClient) -> None:
    """A code is bound to the client it was issued to (RFC 6749 4.1.3; FAPI2 auth-code-bound-to-client)."""
    other = add_client(services, name="Anderes Verfahren")
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    response = client.post("/token", auth=basic(other), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri,
        "code_verifier": flow.verifier,
    })
    assert_oauth_error(response, "invalid_grant")


def test_code_of_confidential_client_with_public_client_id(client: TestClient, services: Services, user: str,
                                                           app: RegisteredClient) -> None:
    """A public client cannot redeem another client's code even with the right verifier."""
    public = add_client(services, name="App", public=True)
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    response = client.post("/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri,
        "code_verifier": flow.verifier, "client_id": public.client_id,
    })
    assert_oauth_error(response, "invalid_grant")


@pytest.mark.parametrize("redirect_uri", [
    "https://app.example/other", REDIRECT_URI + "/", REDIRECT_URI + "?x=1", "HTTPS://APP.EXAMPLE/cb", None,
], ids=["other-path", "trailing-slash", "query-added", "case", "missing"])
def test_redirect_uri_must_equal_the_authorization_request(client: TestClient, services: Services, user: str,
                                                           redirect_uri: str | None) -> None:
    """redirect_uri must be present and identical when it was sent at /authorize (RFC 6749 4.1.3)."""
    app = add_client(services, redirect_uris=[REDIRECT_URI, "https://app.example/other"])
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    assert_oauth_error(exchange(client, flow, code, redirect_uri=redirect_uri), "invalid_grant")  # type: ignore[arg-type]


def test_expired_code_is_refused(client: TestClient, clock: FakeClock, user: str, app: RegisteredClient) -> None:
    """A code older than its 60 s lifetime is invalid_grant (RFC 6749 4.1.2; FAPI2 expired-auth-code)."""
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    clock.advance(seconds=61)
    assert_oauth_error(exchange(client, flow, code), "invalid_grant")


def test_code_just_within_lifetime_works(client: TestClient, clock: FakeClock, user: str,
                                         app: RegisteredClient) -> None:
    """The lifetime is not shorter than configured: at 59 s the code still works."""
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    clock.advance(seconds=59)
    assert_tokens(exchange(client, flow, code))


def test_unknown_and_malformed_codes(client: TestClient, user: str, app: RegisteredClient) -> None:
    """Codes never issued, empty or absurdly long are invalid_grant or invalid_request, never a 500."""
    flow = Flow(app)
    assert_oauth_error(exchange(client, flow, secrets.token_urlsafe(32)), "invalid_grant")
    assert_oauth_error(exchange(client, flow, ""), "invalid_grant")
    assert_oauth_error(exchange(client, flow, "x" * 5000), "invalid_grant")
    assert_oauth_error(exchange(client, flow, None), "invalid_request")  # type: ignore[arg-type]


def test_code_of_disabled_user_is_refused(client: TestClient, services: Services, clock: FakeClock, user: str,
                                          app: RegisteredClient) -> None:
    """A user disabled between login and redemption gets no tokens (ASVS 7.4.2)."""
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    disable_user(services, user, clock)
    assert_oauth_error(exchange(client, flow, code), "invalid_grant")


# --- PKCE at the token endpoint (attack case 15) --------------------------------------------------------------


@pytest.fixture(params=["public", "confidential"])
def pkce_client(request: pytest.FixtureRequest, services: Services) -> RegisteredClient:
    return add_client(services, public=request.param == "public")


def test_pkce_verifier_missing(client: TestClient, user: str, pkce_client: RegisteredClient) -> None:
    """A challenge was made but no verifier is sent: invalid_grant (RFC 7636 4.6; RFC 9700 2.1.1)."""
    flow = Flow(pkce_client)
    code = authorize(client, flow)["code"]
    assert_oauth_error(exchange(client, flow, code, code_verifier=None), "invalid_grant")  # type: ignore[arg-type]


def test_pkce_verifier_wrong(client: TestClient, user: str, pkce_client: RegisteredClient) -> None:
    """A well-formed verifier that does not hash to the challenge: invalid_grant (RFC 7636 4.6)."""
    flow = Flow(pkce_client)
    code = authorize(client, flow)["code"]
    assert_oauth_error(exchange(client, flow, code, code_verifier=secrets.token_urlsafe(48)), "invalid_grant")


@pytest.mark.parametrize("verifier", [
    "a" * 42,
    "a" * 129,
    "a" * 42 + "+",
    "a" * 42 + "/",
    "a" * 42 + "=",
    "a" * 42 + " ",
    "a" * 42 + "ä",
    "a" * 43 + "\n",
    "\n" + "a" * 43,
], ids=["42-chars", "129-chars", "plus", "slash", "equals", "space", "non-ascii", "trailing-newline",
        "leading-newline"])
def test_pkce_verifier_out_of_grammar(client: TestClient, user: str, pkce_client: RegisteredClient,
                                      verifier: str) -> None:
    """A verifier outside 43-128 unreserved characters is invalid_grant even if its hash matches (RFC 7636 4.1)."""
    flow = flow_with_verifier(pkce_client, verifier)
    code = authorize(client, flow)["code"]
    assert_oauth_error(exchange(client, flow, code), "invalid_grant")


def test_pkce_verifier_at_the_grammar_limits(client: TestClient, user: str, pkce_client: RegisteredClient) -> None:
    """Verifiers of exactly 43 and 128 unreserved characters, including ``-._~``, are accepted (RFC 7636 4.1)."""
    for verifier in ["A-._~" + "b" * 38, "Z9" * 64]:
        flow = flow_with_verifier(pkce_client, verifier)
        code = authorize(client, flow)["code"]
        assert_tokens(exchange(client, flow, code))


def test_pkce_downgrade_is_refused(client: TestClient, user: str, app: RegisteredClient) -> None:
    """A verifier without a challenge at /authorize is a PKCE downgrade: invalid_grant (RFC 9700 4.8.2)."""
    flow = FlowWithoutPkce(app)
    code = authorize(client, flow)["code"]
    assert_oauth_error(exchange(client, flow, code), "invalid_grant")


# --- client authentication (RFC 6749 2.3 and 5.2) ---------------------------------------------------------------


def test_wrong_secret_with_basic(client: TestClient, user: str, app: RegisteredClient) -> None:
    """A wrong secret in the Authorization header: 401 invalid_client with WWW-Authenticate Basic (RFC 6749 5.2)."""
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    response = client.post("/token", auth=(app.client_id, "wrong-" + str(app.client_secret)), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri,
        "code_verifier": flow.verifier,
    })
    assert_oauth_error(response, "invalid_client", 401)
    assert response.headers["www-authenticate"].startswith("Basic ")
    # The code was not spent by the failed attempt.
    assert_tokens(exchange(client, flow, code))


def test_wrong_secret_with_client_secret_post(client: TestClient, services: Services, user: str) -> None:
    """A wrong secret in the body is invalid_client (RFC 6749 5.2)."""
    app = add_client(services, token_endpoint_auth_method="client_secret_post")
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    response = client.post("/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri,
        "code_verifier": flow.verifier, "client_id": app.client_id, "client_secret": "x" * 43,
    })
    assert response.status_code in (400, 401)
    assert_oauth_error(response, "invalid_client", response.status_code)


def test_confidential_client_cannot_authenticate_with_none(client: TestClient, user: str,
                                                           app: RegisteredClient) -> None:
    """A confidential client sending only its client_id (auth method none) is invalid_client (RFC 6749 3.2.1)."""
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    response = client.post("/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri,
        "code_verifier": flow.verifier, "client_id": app.client_id,
    })
    assert_oauth_error(response, "invalid_client", response.status_code)
    assert response.status_code in (400, 401)


def test_client_must_use_its_registered_auth_method(client: TestClient, user: str, app: RegisteredClient) -> None:
    """A client_secret_basic client sending the right secret in the body is refused: the method is registered."""
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    response = client.post("/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri,
        "code_verifier": flow.verifier, "client_id": app.client_id, "client_secret": app.client_secret,
    })
    assert_oauth_error(response, "invalid_client", response.status_code)


def test_public_client_with_made_up_secret(client: TestClient, services: Services, user: str) -> None:
    """A public client has no secret; Basic with an invented one is invalid_client."""
    app = add_client(services, public=True)
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    response = client.post("/token", auth=(app.client_id, "invented"), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri,
        "code_verifier": flow.verifier,
    })
    assert_oauth_error(response, "invalid_client", 401)


@pytest.mark.parametrize("auth", ["basic", "post", "none"])
def test_unknown_client(client: TestClient, user: str, auth: str) -> None:
    """An unknown client_id is invalid_client however it authenticates (RFC 6749 5.2)."""
    data = {"grant_type": "authorization_code", "code": "abc", "redirect_uri": REDIRECT_URI}
    if auth == "basic":
        response = client.post("/token", data=data, auth=("no-such-client", "secret"))
        assert_oauth_error(response, "invalid_client", 401)
        assert response.headers["www-authenticate"].startswith("Basic ")
        return
    data["client_id"] = "no-such-client"
    if auth == "post":
        data["client_secret"] = "secret"
    response = client.post("/token", data=data)
    assert response.status_code in (400, 401)
    assert_oauth_error(response, "invalid_client", response.status_code)


def test_no_client_authentication_at_all(client: TestClient) -> None:
    """A token request naming no client is invalid_client (RFC 6749 3.2.1)."""
    response = client.post("/token", data={"grant_type": "authorization_code", "code": "abc",
                                           "redirect_uri": REDIRECT_URI})
    assert_oauth_error(response, "invalid_client", response.status_code)


def test_malformed_basic_header(client: TestClient, app: RegisteredClient) -> None:
    """Broken Basic credentials (not base64, no colon, huge) are invalid_client, never a 500."""
    for header in ["Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(),
                   "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), "Basic " + "A" * 10000, "Bearer x"]:
        response = client.post("/token", data={"grant_type": "authorization_code", "code": "abc"},
                               headers={"Authorization": header})
        assert response.status_code in (400, 401), (header[:20], response.text)
        assert_oauth_error(response, "invalid_client", response.status_code)


def test_disabled_client_gets_no_tokens_by_any_grant(client: TestClient, services: Services, clock: FakeClock,
                                                     user: str, app: RegisteredClient) -> None:
    """A disabled client cannot redeem codes, refresh, or use what it holds (admin issue 5; Keycloak CVE-2026-93999)."""
    flow = Flow(app)
    first = assert_tokens(exchange(client, flow, authorize(client, flow)["code"]))
    second_flow = Flow(app)
    code = authorize(client, second_flow)["code"]
    disable_client(services, app.client_id, clock)
    assert_oauth_error(exchange(client, second_flow, code), "invalid_client", 401)
    assert_oauth_error(refresh(client, app, first["refresh_token"]), "invalid_client", 401)
    assert userinfo_status(client, first["access_token"]) == 401


def test_disabled_public_client_cannot_refresh(client: TestClient, services: Services, clock: FakeClock,
                                               user: str) -> None:
    """A disabled public client is refused too, although it proves nothing but its client_id."""
    app = add_client(services, public=True)
    flow = Flow(app)
    first = assert_tokens(exchange(client, flow, authorize(client, flow)["code"]))
    disable_client(services, app.client_id, clock)
    response = refresh(client, app, first["refresh_token"])
    assert response.status_code in (400, 401)
    assert_oauth_error(response, "invalid_client", response.status_code)


def test_disabled_client_cannot_use_client_credentials(client: TestClient, services: Services,
                                                       clock: FakeClock) -> None:
    """A disabled service client gets no client_credentials token."""
    service = add_client(services, grant_types=["client_credentials"], redirect_uris=[],
                         post_logout_redirect_uris=[])
    assert_tokens(client.post("/token", data={"grant_type": "client_credentials"}, auth=basic(service)))
    disable_client(services, service.client_id, clock)
    response = client.post("/token", data={"grant_type": "client_credentials"}, auth=basic(service))
    assert_oauth_error(response, "invalid_client", 401)


# --- grant types (attack case 19) -----------------------------------------------------------------------------


@pytest.mark.parametrize("grant_type", [
    "password", "implicit", "token", "urn:ietf:params:oauth:grant-type:device_code",
    "urn:ietf:params:oauth:grant-type:jwt-bearer", "urn:ietf:params:oauth:grant-type:token-exchange",
    "AUTHORIZATION_CODE", "authorization_code ", "no-such-grant",
])
def test_unsupported_grant_types(client: TestClient, user: str, app: RegisteredClient, grant_type: str) -> None:
    """The password grant, implicit and anything unknown: unsupported_grant_type (RFC 9700 2.4; RFC 6749 5.2)."""
    response = client.post("/token", auth=basic(app), data={
        "grant_type": grant_type, "username": "erika", "password": PASSWORD, "scope": "openid",
    })
    assert_oauth_error(response, "unsupported_grant_type")


def test_missing_grant_type_is_invalid_request(client: TestClient, app: RegisteredClient) -> None:
    """A token request without grant_type misses a required parameter: invalid_request (RFC 6749 5.2)."""
    assert_oauth_error(client.post("/token", auth=basic(app), data={"code": "abc"}), "invalid_request")


def test_grant_not_registered_for_client(client: TestClient, app: RegisteredClient) -> None:
    """client_credentials for a client registered only for the code flow: unauthorized_client (RFC 6749 5.2)."""
    response = client.post("/token", auth=basic(app), data={"grant_type": "client_credentials"})
    assert_oauth_error(response, "unauthorized_client")


def test_code_grant_not_registered_for_client(client: TestClient, services: Services) -> None:
    """A service client without authorization_code cannot redeem codes: unauthorized_client."""
    service = add_client(services, grant_types=["client_credentials"], redirect_uris=[],
                         post_logout_redirect_uris=[])
    response = client.post("/token", auth=basic(service), data={"grant_type": "authorization_code", "code": "a"})
    assert_oauth_error(response, "unauthorized_client")


# --- malformed requests (attack case 21) ----------------------------------------------------------------------


def _valid_body(app: RegisteredClient, flow: Flow, code: str) -> dict[str, str]:
    return {"grant_type": "authorization_code", "code": code, "redirect_uri": app.redirect_uri,
            "code_verifier": flow.verifier}


def test_json_body_is_refused(client: TestClient, user: str, app: RegisteredClient) -> None:
    """A JSON body is not a token request (RFC 6749 4.1.3 requires a form): invalid_request, code not spent."""
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    response = client.post("/token", auth=basic(app), content=json.dumps(_valid_body(app, flow, code)),
                           headers={"content-type": "application/json"})
    assert_oauth_error(response, "invalid_request")
    assert_tokens(exchange(client, flow, code))


@pytest.mark.parametrize("content_type", [
    None, "text/plain", "multipart/form-data; boundary=xyz", "application/xml", "application/x-www-form-urlencodedx",
])
def test_wrong_content_type_is_refused(client: TestClient, app: RegisteredClient, content_type: str | None) -> None:
    """Only application/x-www-form-urlencoded is read: anything else is invalid_request (RFC 6749 3.2)."""
    headers = {"content-type": content_type} if content_type else {}
    body = b"grant_type=client_credentials"
    if content_type and content_type.startswith("multipart"):
        body = b'--xyz\r\nContent-Disposition: form-data; name="grant_type"\r\n\r\nclient_credentials\r\n--xyz--\r\n'
    response = client.post("/token", auth=basic(app), content=body, headers=headers)
    assert_oauth_error(response, "invalid_request")


def test_content_type_with_charset_is_accepted(client: TestClient, user: str, app: RegisteredClient) -> None:
    """``application/x-www-form-urlencoded; charset=UTF-8`` is the same media type and works."""
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    response = client.post("/token", auth=basic(app), content=urlencode(_valid_body(app, flow, code)),
                           headers={"content-type": "application/x-www-form-urlencoded; charset=UTF-8"})
    assert_tokens(response)


def test_parameters_in_query_string_are_refused(client: TestClient, user: str, app: RegisteredClient) -> None:
    """Parameters in the URL end up in logs; the token endpoint refuses them (RFC 6749 3.2, 2.3.1)."""
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    response = client.post("/token", auth=basic(app), params={"code": code}, data=_valid_body(app, flow, code))
    assert_oauth_error(response, "invalid_request")
    secret_in_query = client.post("/token", params={"client_secret": str(app.client_secret)},
                                  data={**_valid_body(app, flow, code), "client_id": app.client_id})
    assert_oauth_error(secret_in_query, "invalid_request")
    assert_tokens(exchange(client, flow, code))


@pytest.mark.parametrize("repeated", ["grant_type", "code", "redirect_uri", "code_verifier", "client_id"])
def test_repeated_parameter_is_refused(client: TestClient, user: str, app: RegisteredClient, repeated: str) -> None:
    """Request parameters must not be included more than once (RFC 6749 3.2): invalid_request."""
    flow = Flow(app)
    code = authorize(client, flow)["code"]
    pairs = list({**_valid_body(app, flow, code), "client_id": app.client_id}.items())
    pairs.append((repeated, dict(pairs)[repeated]))
    response = client.post("/token", auth=basic(app), content="&".join(f"{k}={v}" for k, v in pairs).encode(),
                           headers=FORM)
    assert_oauth_error(response, "invalid_request")


def test_ten_megabyte_body_is_refused(client: TestClient, app: RegisteredClient) -> None:
    """A 10 MB body is refused by the size limit with a JSON 413, before anything parses it (RFC 9110 15.5.14)."""
    body = b"grant_type=client_credentials&x=" + b"a" * (10 * 1024 * 1024)
    response = client.post("/token", auth=basic(app), content=body, headers=FORM)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "invalid_request"
    assert_no_store(response)


def test_ten_megabyte_body_without_length_is_refused(client: TestClient, app: RegisteredClient) -> None:
    """A chunked 10 MB body (no Content-Length) is cut off at the limit with the same JSON 413."""
    def chunks() -> Iterator[bytes]:
        yield b"grant_type=client_credentials&x="
        for _ in range(160):
            yield b"a" * 65536

    response = client.post("/token", auth=basic(app), content=chunks(), headers=FORM)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "invalid_request"
    assert_no_store(response)


def test_two_megabyte_jwt_header_is_refused(client: TestClient, app: RegisteredClient) -> None:
    """A client assertion with a 2 MB header segment is refused by size, never decoded (authlib CVE-2025-61920)."""
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","x":"' + b"a" * 2 * 1024 * 1024 + b'"}').rstrip(b"=")
    assertion = header + b".e30.c2ln"
    body = (b"grant_type=client_credentials&client_id=" + app.client_id.encode()
            + b"&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
            + b"&client_assertion=" + assertion)
    response = client.post("/token", content=body, headers=FORM)
    assert response.status_code == 413
    assert response.json()["error"] == "invalid_request"


def test_overlong_parameter_is_refused(client: TestClient, app: RegisteredClient) -> None:
    """A single parameter beyond the length limit, inside the body limit, is invalid_request."""
    response = client.post("/token", auth=basic(app), data={"grant_type": "authorization_code", "code": "c" * 20000})
    assert_oauth_error(response, "invalid_request")


def test_too_many_fields_are_refused(client: TestClient, app: RegisteredClient) -> None:
    """Hundreds of fields are not parsed into memory: invalid_request."""
    body = "grant_type=client_credentials&" + "&".join(f"f{i}=1" for i in range(500))
    assert_oauth_error(client.post("/token", auth=basic(app), content=body.encode(), headers=FORM),
                       "invalid_request")


@pytest.mark.parametrize("body", [
    b"grant_type=authorization_code&code=%FF%FE",
    b"grant_type=authorization_code&code=abc&redirect_uri=%C3%28",
    b"grant_type=authorization_code&code%FF=abc",
    b"grant_type=authorization_code&code=%ED%A0%80",
], ids=["ff-fe", "bad-continuation", "in-name", "surrogate"])
def test_invalid_utf8_is_invalid_request(client: TestClient, app: RegisteredClient, body: bytes) -> None:
    """Percent-encoded bytes that are not UTF-8 are invalid_request (RFC 6749 Appendix B), never a 500."""
    assert_oauth_error(client.post("/token", auth=basic(app), content=body, headers=FORM), "invalid_request")


def test_raw_non_ascii_bytes_are_a_client_error(client: TestClient, app: RegisteredClient) -> None:
    """Raw (not percent-encoded) invalid UTF-8 in the body ends in a JSON 4xx, never a 500."""
    for body in [b"grant_type=authorization_code&code=\xff\xfe", b"grant_type=\xc3\x28", b"\x00\x01\x02"]:
        response = client.post("/token", auth=basic(app), content=body, headers=FORM)
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["error"] in {"invalid_request", "invalid_grant", "unsupported_grant_type"}
        assert_no_store(response)


def test_get_on_token_endpoint(client: TestClient) -> None:
    """The token endpoint accepts only POST (RFC 6749 3.2): 405 with Allow, and nothing cached."""
    response = client.get("/token?grant_type=client_credentials")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert_no_store(response)


# --- the ID token (attack case 22) ----------------------------------------------------------------------------


def _at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def _jwks_entry(client: TestClient, kid: str) -> dict[str, Any]:
    keys = client.get("/jwks").json()["keys"]
    matching = [key for key in keys if key["kid"] == kid]
    assert len(matching) == 1, "the kid must name exactly one published key"
    entry: dict[str, Any] = matching[0]
    return entry


def _session_sid(services: Services) -> str:
    with unit_of_work(services.sessions) as db:
        assert db.scalar(select(func.count()).select_from(SsoSession)) == 1
        sid = db.scalar(select(SsoSession.sid))
        assert sid is not None
        return str(sid)


def test_id_token_es256_contents(client: TestClient, services: Services, clock: FakeClock, user: str,
                                 app: RegisteredClient) -> None:
    """The default ID token: ES256, published kid, aud, nonce, sid, auth_time, at_hash, exp (OIDC Core 2, 3.1.3.6)."""
    flow = Flow(app)
    login_time = int(clock().timestamp())
    clock.advance(seconds=5)
    body = assert_tokens(exchange(client, flow, authorize(client, flow)["code"]))
    token = decode(client, body["id_token"], algorithms=["ES256"])
    assert token.header["alg"] == "ES256"
    entry = _jwks_entry(client, token.header["kid"])
    assert entry["kty"] == "EC" and entry["crv"] == "P-256" and entry["alg"] == "ES256"
    claims = token.claims
    assert claims["iss"] == ISSUER
    assert claims["sub"] == user
    assert claims["aud"] == app.client_id
    assert claims["nonce"] == flow.nonce
    assert claims["sid"] == _session_sid(services)
    assert isinstance(claims["auth_time"], int) and claims["auth_time"] == login_time + 5
    assert claims["iat"] == int(clock().timestamp())
    assert claims["exp"] - claims["iat"] == int(services.settings.tokens.id_token_lifetime.total_seconds())
    assert claims["at_hash"] == _at_hash(body["access_token"])


def test_id_token_rs256_for_client_that_asks(client: TestClient, services: Services, user: str) -> None:
    """A client registered for RS256 gets RS256 from an RSA key of at least 3072 bits (BSI TR-02102-1)."""
    app = add_client(services, id_token_signed_response_alg="RS256")
    flow = Flow(app)
    body = assert_tokens(exchange(client, flow, authorize(client, flow)["code"]))
    token = decode(client, body["id_token"], algorithms=["RS256"])
    assert token.header["alg"] == "RS256" and token.header["kid"]
    entry = _jwks_entry(client, token.header["kid"])
    assert entry["kty"] == "RSA" and entry["alg"] == "RS256"
    modulus = base64.urlsafe_b64decode(entry["n"] + "=" * (-len(entry["n"]) % 4))
    assert int.from_bytes(modulus, "big").bit_length() >= 3072
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(entry)
    claims = token.claims
    assert claims["aud"] == app.client_id and claims["nonce"] == flow.nonce
    assert claims["at_hash"] == _at_hash(body["access_token"])
    # The access token stays ES256 whatever the ID token algorithm.
    assert decode(client, body["access_token"], algorithms=["ES256"]).header["typ"] == "at+jwt"


def test_id_token_auth_time_with_max_age(client: TestClient, services: Services, clock: FakeClock, user: str,
                                         app: RegisteredClient) -> None:
    """With max_age the ID token carries auth_time of the (fresh) login (OIDC Core 3.1.2.1, oidcc-max-age-1)."""
    authorize(client, Flow(app))
    clock.advance(seconds=120)
    flow = Flow(app, extra={"max_age": "60"})
    params = authorize(client, flow)
    assert "code" in params, params
    body = assert_tokens(exchange(client, flow, params["code"]))
    claims = decode(client, body["id_token"]).claims
    assert claims["auth_time"] == int(clock().timestamp())


def test_id_token_lifetime_follows_setting(services: Services, backend: tuple[str, Engine], tmp_path: Path,
                                          clock: FakeClock) -> None:
    """exp - iat equals the configured [tokens] id_token_lifetime, not a built-in constant."""
    settings = make_settings(tmp_path, backend[0], IDP_TOKENS_ID_TOKEN_LIFETIME="3m")
    custom = build_services(settings, engine=backend[1])  # the same (emptied) database as ``services``
    custom.clock = clock
    add_user(custom)
    app = add_client(custom)
    with TestClient(create_app(services=custom), base_url=ISSUER, follow_redirects=False) as browser:
        flow = Flow(app)
        body = assert_tokens(exchange(browser, flow, authorize(browser, flow)["code"]))
        claims = decode(browser, body["id_token"]).claims
    assert claims["exp"] - claims["iat"] == 180


def test_id_token_sid_is_the_session_of_the_login(client: TestClient, services: Services, user: str) -> None:
    """Two clients in one SSO session get the same sid, so back-channel logout can name the session."""
    first, second = add_client(services, trusted=True), add_client(services, trusted=True)
    sids = []
    for app in (first, second):
        flow = Flow(app)
        body = assert_tokens(exchange(client, flow, authorize(client, flow)["code"]))
        sids.append(decode(client, body["id_token"]).claims["sid"])
    assert sids[0] == sids[1] == _session_sid(services)


def test_token_response_keeps_its_lifetimes(client: TestClient, services: Services, user: str,
                                            app: RegisteredClient) -> None:
    """The access token expires after the configured lifetime, and the DB row says the same."""
    flow = Flow(app)
    body = assert_tokens(exchange(client, flow, authorize(client, flow)["code"]))
    access = decode(client, body["access_token"]).claims
    lifetime = services.settings.tokens.access_token_lifetime
    assert access["exp"] - access["iat"] == int(lifetime.total_seconds()) == body["expires_in"]
    assert access["aud"] == app.client_id and access["iss"] == ISSUER
    (row,) = tokens_of_client(services, app.client_id)
    assert row.access_expires_at - row.issued_at == lifetime
    assert row.refresh_expires_at is not None and row.refresh_expires_at - row.issued_at <= timedelta(hours=10)

"""The client credentials grant: machine-to-machine tokens for confidential clients only, never with user
scopes (RFC 6749 4.4; RFC 9068; RFC 9700 2.3). Attack cases 19, 20 and 24.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.db import unit_of_work
from idp.models import AuditEvent, Token
from idp.oauth.clients import ClientError
from idp.services import Services
from tests.conftest import ISSUER, FakeClock
from tests.helpers import RegisteredClient, add_client, decode


def assert_oauth_error(response: Any, error: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body


def token_request(browser: TestClient, app: RegisteredClient, **extra: str) -> Any:
    assert app.client_secret
    return browser.post("/token", data={"grant_type": "client_credentials", **extra},
                        auth=(app.client_id, app.client_secret))


@pytest.fixture
def service(services: Services) -> RegisteredClient:
    """A confidential service client registered only for client_credentials."""
    return add_client(services, name="Fachverfahren-Backend", grant_types=["client_credentials"], redirect_uris=[],
                      post_logout_redirect_uris=[])


def test_client_credentials_issues_jwt_access_token(client: TestClient, services: Services, clock: FakeClock,
                                                    service: RegisteredClient) -> None:
    """Success: an RFC 9068 access token whose subject is the client itself; no refresh token, no ID token."""
    response = token_request(client, service)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert "refresh_token" not in body and "id_token" not in body
    assert body["expires_in"] == int(services.settings.tokens.access_token_lifetime.total_seconds())
    token = decode(client, body["access_token"], algorithms=["ES256"])
    assert token.header["typ"] == "at+jwt" and token.header["kid"]
    claims = token.claims
    assert claims["sub"] == service.client_id
    assert claims["client_id"] == service.client_id
    assert claims["aud"] == service.client_id
    assert claims["iss"] == ISSUER and claims["jti"]
    assert claims["iat"] == int(clock().timestamp())
    assert claims["scope"] == ""
    with unit_of_work(services.sessions) as db:
        row = db.scalar(select(Token))
        assert row is not None and row.user_id is None and row.refresh_hash is None
        assert row.grant_type == "client_credentials"
        event = db.scalar(select(AuditEvent).where(AuditEvent.event == "token.issued"))
        assert event is not None and event.client_id == service.client_id
        assert event.details["grant_type"] == "client_credentials"


def test_client_credentials_with_client_secret_post(client: TestClient, services: Services) -> None:
    """A client registered for client_secret_post authenticates in the body (RFC 6749 2.3.1)."""
    app = add_client(services, grant_types=["client_credentials"], redirect_uris=[], post_logout_redirect_uris=[],
                     token_endpoint_auth_method="client_secret_post")
    response = client.post("/token", data={"grant_type": "client_credentials", "client_id": app.client_id,
                                           "client_secret": str(app.client_secret)})
    assert response.status_code == 200, response.text
    assert decode(client, response.json()["access_token"]).claims["sub"] == app.client_id


def test_client_credentials_token_is_introspectable(client: TestClient, service: RegisteredClient) -> None:
    """Introspection by the owning client describes the token as the client's own (RFC 7662 2.2)."""
    access_token = token_request(client, service).json()["access_token"]
    response = client.post("/introspect", data={"token": access_token},
                           auth=(service.client_id, str(service.client_secret)))
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["active"] is True
    assert info["sub"] == service.client_id and info["client_id"] == service.client_id
    assert "username" not in info


@pytest.mark.parametrize("scope", [
    "openid", "groups", "profile", "email", "offline_access", "openid groups admin", "admin", "unknown-scope",
])
def test_user_and_unknown_scopes_are_invalid_scope(client: TestClient, service: RegisteredClient,
                                                   scope: str) -> None:
    """User scopes and unknown scopes are never granted to a client acting for itself: invalid_scope
    (RFC 6749 5.2; authentik CVE-2024-52287)."""
    assert_oauth_error(token_request(client, service, scope=scope), "invalid_scope")


def test_user_scopes_refused_even_when_registered(client: TestClient, services: Services) -> None:
    """A client that may ask for user scopes in the code flow still gets none of them by client_credentials."""
    app = add_client(services, grant_types=["authorization_code", "client_credentials"],
                     scope="openid profile email groups offline_access")
    for scope in ["openid", "groups", "openid profile email groups offline_access"]:
        assert_oauth_error(token_request(client, app, scope=scope), "invalid_scope")
    response = token_request(client, app)
    assert response.status_code == 200, response.text
    assert decode(client, response.json()["access_token"]).claims["scope"] == ""


def test_client_credentials_token_is_refused_at_userinfo(client: TestClient, service: RegisteredClient) -> None:
    """A token without openid and without a user gets nothing from userinfo: 403 insufficient_scope (OIDC Core 5.3)."""
    access_token = token_request(client, service).json()["access_token"]
    for method in ("GET", "POST"):
        response = client.request(method, "/userinfo", headers={"Authorization": f"Bearer {access_token}"})
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "insufficient_scope"
        assert "sub" not in response.json()


def test_public_client_cannot_use_client_credentials(client: TestClient, services: Services) -> None:
    """A public client has no credentials to prove: refused (RFC 6749 4.4 is for confidential clients only)."""
    public = add_client(services, public=True)
    response = client.post("/token", data={"grant_type": "client_credentials", "client_id": public.client_id})
    # invalid_client (no client authentication, RFC 6749 5.2) or unauthorized_client (security case 19): both
    # refuse; which one depends on whether the client counts as authenticated by its bare client_id.
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] in {"invalid_client", "unauthorized_client"}
    assert "access_token" not in response.json()
    assert response.headers["cache-control"] == "no-store"


def test_public_client_cannot_register_client_credentials(services: Services) -> None:
    """Registration itself refuses a public client with the client_credentials grant."""
    with pytest.raises(ClientError, match="client_credentials"):
        add_client(services, public=True, grant_types=["authorization_code", "client_credentials"])


def test_wrong_secret_is_refused(client: TestClient, service: RegisteredClient) -> None:
    """A wrong secret with HTTP Basic: 401 invalid_client with a Basic challenge (RFC 6749 5.2)."""
    response = client.post("/token", data={"grant_type": "client_credentials"},
                           auth=(service.client_id, "not-the-secret"))
    assert_oauth_error(response, "invalid_client", 401)
    assert response.headers["www-authenticate"].startswith("Basic ")


def test_secret_of_another_client_is_refused(client: TestClient, services: Services,
                                             service: RegisteredClient) -> None:
    """One client's secret does not authenticate another client."""
    other = add_client(services, name="Zweites Backend", grant_types=["client_credentials"], redirect_uris=[],
                       post_logout_redirect_uris=[])
    response = client.post("/token", data={"grant_type": "client_credentials"},
                           auth=(service.client_id, str(other.client_secret)))
    assert_oauth_error(response, "invalid_client", 401)


def test_missing_secret_is_refused(client: TestClient, service: RegisteredClient) -> None:
    """Naming the client without any secret is invalid_client."""
    response = client.post("/token", data={"grant_type": "client_credentials", "client_id": service.client_id})
    assert response.status_code in (400, 401)
    assert_oauth_error(response, "invalid_client", response.status_code)


def test_client_credentials_never_yields_a_refresh_grant(client: TestClient, services: Services) -> None:
    """A client registered for client_credentials and refresh_token still gets no refresh token."""
    app = add_client(services, grant_types=["client_credentials", "refresh_token"], redirect_uris=[],
                     post_logout_redirect_uris=[])
    response = token_request(client, app)
    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.json()

"""The main path: a user signs in once and every client gets tokens (OpenID Connect Core 1.0, 3.1)."""

from __future__ import annotations

from starlette.testclient import TestClient

from idp.services import Services
from tests.conftest import ISSUER
from tests.helpers import Flow, add_client, add_user, authorize, decode, exchange


def test_code_flow_issues_signed_tokens(client: TestClient, services: Services) -> None:
    """A confidential client gets an ES256 ID token and an RFC 9068 access token after login and consent."""
    sub = add_user(services, groups=["Bauamt"])
    app = add_client(services)
    flow = Flow(app)
    params = authorize(client, flow)
    assert params["state"] == flow.state
    assert params["iss"] == ISSUER
    response = exchange(client, flow, params["code"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert "refresh_token" in body
    id_token = decode(client, body["id_token"])
    assert id_token.header["alg"] == "ES256" and id_token.header["kid"]
    claims = id_token.claims
    assert claims["iss"] == ISSUER and claims["aud"] == app.client_id and claims["sub"] == sub
    assert claims["nonce"] == flow.nonce
    assert claims["amr"] == ["pwd"] and claims["acr"] == "https://refeds.org/profile/sfa"
    assert claims["sid"] and claims["auth_time"] and claims["at_hash"]
    assert claims["groups"] == ["Bauamt"] and claims["email"] == "erika@musterstadt.de"
    access = decode(client, body["access_token"])
    assert access.header["typ"] == "at+jwt"
    assert access.claims["sub"] == sub and access.claims["client_id"] == app.client_id
    userinfo = client.get("/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert userinfo.status_code == 200, userinfo.text
    assert userinfo.json()["sub"] == sub


def test_second_client_needs_no_new_login(client: TestClient, services: Services) -> None:
    """Single sign-on: after one login, a second client gets a code without the login page."""
    add_user(services)
    first = add_client(services, name="Intranet", trusted=True)
    second = add_client(services, name="Ticketsystem", trusted=True)
    authorize(client, Flow(first))
    response = client.get(Flow(second).url())
    assert response.status_code == 302
    assert response.headers["location"].startswith(second.redirect_uri + "?code=")

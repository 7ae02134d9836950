"""A client registered through RFC 7591 signs a user in with an independent RP library (issue 5, Tests).

The real ``idp serve`` runs in its own process; an administrator makes an initial access token with
``idp clients token --json``; pyoidc (the ``oic`` package) finds ``registration_endpoint`` in discovery,
registers with its own ``Client.register()`` (which builds the request, checks the registration response and
stores the credentials), reads the registration back through RFC 7592 with its registration access token, and
runs code + PKCE through the login and consent pages, validating the ID token against the published keys.

One detail of pyoidc: ``register(url, registration_token=...)`` base64-encodes a token that is not a JWT before
sending it as a Bearer token (``oic/oic/__init__.py``), which no specification asks for (RFC 6750 2.1 sends the
token as it is), so the server rightly refuses that (tested below). The token as issued is therefore handed to
pyoidc's request hook (``req_callback``), which adds ``Authorization: Bearer <token>`` to the registration request
only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from oic.exception import RegistrationError
from oic.oauth2.message import ErrorResponse
from oic.oic import Client
from oic.oic.message import AccessTokenResponse, AuthorizationResponse, IdToken, RegistrationResponse
from oic.utils.authn.client import CLIENT_AUTHN_METHOD

from tests.e2e.conftest import RegisteredRP, RunningServer, free_port
from tests.e2e.test_rp_library import authorization_url, published_kids, run_browser

pytestmark = pytest.mark.e2e


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False, timeout=30.0) as client:
        yield client


def initial_access_token(server: RunningServer) -> str:
    created = json.loads(server.idp("clients", "token", "--json"))
    token: str = created["initial_access_token"]
    return token


METADATA = {"client_name": "Ratsinformation", "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic", "id_token_signed_response_alg": "ES256",
            "contacts": ["it@musterstadt.de"]}


def register_with_pyoidc(rp: Client, token: str, redirect_uri: str, logged_out: str) -> RegistrationResponse:
    """pyoidc's ``register()`` (RFC 7591 3.1), with the initial access token sent as issued."""

    def with_token(method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        return {**kwargs, "headers": {**kwargs.get("headers", {}), "Authorization": f"Bearer {token}"}}

    rp.req_callback = with_token
    try:
        response: RegistrationResponse = rp.register(rp.provider_info["registration_endpoint"],
                                                     redirect_uris=[redirect_uri],
                                                     post_logout_redirect_uris=[logged_out], **METADATA)
    finally:
        rp.req_callback = None
    return response


def test_registered_client_signs_in_with_pyoidc(idp_server: RunningServer, browser: httpx.Client) -> None:
    """Discovery names the registration endpoint; a client registered with an initial access token completes
    code + PKCE and pyoidc verifies its ID token; RFC 7592 read and delete work over HTTP; the token is used up."""
    rp = Client(client_authn_method=CLIENT_AUTHN_METHOD)
    metadata = rp.provider_config(idp_server.issuer)
    assert metadata["registration_endpoint"] == f"{idp_server.issuer}/register"
    token = initial_access_token(idp_server)
    base = f"http://127.0.0.1:{free_port()}"

    # pyoidc's own way of sending a non-JWT token (base64 of it) is not the token: refused, nothing used up.
    with pytest.raises(RegistrationError, match="invalid_token"):
        rp.register(metadata["registration_endpoint"], registration_token=token, redirect_uris=[f"{base}/cb"],
                    **METADATA)

    registration = register_with_pyoidc(rp, token, f"{base}/cb", f"{base}/logged-out")
    assert isinstance(registration, RegistrationResponse), registration
    assert rp.client_id == registration["client_id"] and rp.client_secret == registration["client_secret"]
    assert registration["registration_client_uri"] == f"{idp_server.issuer}/register/{rp.client_id}"
    assert registration["redirect_uris"] == [f"{base}/cb"]
    assert registration["client_secret_expires_at"] == 0

    # RFC 7592 2.1 through pyoidc: the registration as stored, without the secret.
    read = rp.registration_read()
    assert isinstance(read, RegistrationResponse), read
    assert read["client_id"] == rp.client_id and "client_secret" not in read
    assert read["client_name"] == "Ratsinformation"

    registered = RegisteredRP(rp.client_id, rp.client_secret, f"{base}/cb", f"{base}/logged-out", "ES256")
    authorization = authorization_url(rp, registered)
    location, pages = run_browser(browser, authorization.url, registered.redirect_uri, idp_server)
    assert pages == ["login", "consent"]  # a registered client is never trusted: the user is asked
    answer = rp.parse_response(AuthorizationResponse, info=location, sformat="urlencoded")
    assert isinstance(answer, AuthorizationResponse) and answer["state"] == authorization.state
    tokens = rp.do_access_token_request(
        state=authorization.state,
        request_args={"code": answer["code"], "redirect_uri": registered.redirect_uri,
                      "code_verifier": authorization.verifier},
        authn_method="client_secret_basic", algs=rp.sign_enc_algs("id_token"),
    )
    assert isinstance(tokens, AccessTokenResponse), tokens.to_dict()
    id_token = tokens["id_token"]
    assert isinstance(id_token, IdToken), "pyoidc did not verify the ID token"
    assert id_token.jws_header["alg"] == "ES256" and id_token.jws_header["kid"] in published_kids(idp_server)
    assert id_token["iss"] == idp_server.issuer and id_token["aud"] == [rp.client_id]
    assert id_token["sub"] == idp_server.user_sub and id_token["nonce"] == authorization.request["nonce"]
    rp.verify_id_token(id_token, authorization.request)

    # The initial access token was for one registration only.
    again = httpx.post(metadata["registration_endpoint"], json={**METADATA, "redirect_uris": [f"{base}/cb"]},
                       headers={"authorization": f"Bearer {token}"})
    assert again.status_code == 401 and again.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    # RFC 7592 2.3: deleting the client ends its tokens; the registration access token stops working.
    auth = {"authorization": f"Bearer {rp.registration_access_token}"}
    deleted = httpx.delete(registration["registration_client_uri"], headers=auth)
    assert deleted.status_code == 204, deleted.text
    assert httpx.get(registration["registration_client_uri"], headers=auth).status_code == 401
    refused = rp.do_access_token_refresh(state=authorization.state, authn_method="client_secret_basic")
    assert isinstance(refused, ErrorResponse) and refused["error"] == "invalid_client"


"""An independent relying party (pyoidc, the ``oic`` package) against the running server over real HTTP.

pyoidc shares no code with authlib: it discovers the provider, builds the authorization request with
PKCE (S256), nonce and state, parses the authorization response (state, RFC 9207 ``iss``), redeems the
code with ``client_secret_basic`` and validates the ID token against the published JWKS (signature,
``iss``, ``aud``, ``exp``, ``nonce``), refreshes, and calls userinfo. Introspection (RFC 7662) and
revocation (RFC 7009) are not part of pyoidc's client, so they are plain HTTP calls; the browser is
httpx, which fills in the login and consent forms as a person would.

pyoidc needs no special settings for this server: an ``http`` issuer on 127.0.0.1 is accepted as it is,
and ES256 ID tokens are verified by pyjwkest. Its own DeprecationWarnings are ignored in pyproject.toml.
It logs "Wrong Content_type" for the JWKS because it expects ``application/json``, not the registered
``application/jwk-set+json`` (RFC 7517, 8.5) we send; it reads the keys all the same.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from jwkest import BadSignature
from jwkest.jws import left_hash
from oic.oauth2.message import ErrorResponse, Message
from oic.oic import Client
from oic.oic.message import (
    AccessTokenResponse,
    AuthorizationErrorResponse,
    AuthorizationRequest,
    AuthorizationResponse,
    EndSessionRequest,
    IdToken,
    OpenIDSchema,
    RegistrationResponse,
)
from oic.utils.authn.client import CLIENT_AUTHN_METHOD

from tests.e2e.conftest import RegisteredRP, RunningServer

pytestmark = pytest.mark.e2e

SCOPE = ["openid", "profile", "email", "groups"]
FORM = re.compile(r'<form method="post" action="([^"]+)" id="(login|consent)-form"')


@dataclass
class SignedIn:
    """An RP after a completed code flow: its pyoidc client and what it sent and received."""

    rp: Client
    registered: RegisteredRP
    state: str
    nonce: str
    request: Message
    tokens: AccessTokenResponse
    pages: list[str]


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False, timeout=30.0) as client:
        yield client


def make_rp(server: RunningServer, registered: RegisteredRP) -> Client:
    """A pyoidc client that learned everything from discovery and the output of ``idp clients add``."""
    rp = Client(client_authn_method=CLIENT_AUTHN_METHOD)
    rp.provider_config(server.issuer)
    rp.store_registration_info(RegistrationResponse(
        client_id=registered.client_id,
        client_secret=registered.client_secret,
        redirect_uris=[registered.redirect_uri],
        post_logout_redirect_uris=[registered.post_logout_redirect_uri],
        token_endpoint_auth_method="client_secret_basic",
        id_token_signed_response_alg=registered.id_token_alg,
    ))
    return rp


@dataclass
class Authorization:
    url: str
    request: Message
    verifier: str
    state: str


def authorization_url(rp: Client, registered: RegisteredRP, **extra: str) -> Authorization:
    """The authorization request as pyoidc builds it, with PKCE (S256), nonce and state."""
    pkce, verifier = rp.add_code_challenge()
    state = secrets.token_urlsafe(16)
    url, _, _, request = rp.request_info(AuthorizationRequest, method="GET", request_args={
        "response_type": "code", "scope": SCOPE, "redirect_uri": registered.redirect_uri, "state": state,
        "nonce": secrets.token_urlsafe(16), **pkce, **extra,
    })
    return Authorization(url, request, verifier, state)


def run_browser(browser: httpx.Client, url: str, redirect_uri: str, server: RunningServer) -> tuple[str, list[str]]:
    """Open ``url`` and act as the user until the IdP redirects to ``redirect_uri``.

    Returns that final URL and the pages shown on the way (``login``, ``consent``)."""
    pages: list[str] = []
    response = browser.get(url)
    for _ in range(10):
        if response.status_code in (302, 303):
            location = urljoin(str(response.url), response.headers["location"])
            if location.split("?", 1)[0] == redirect_uri:
                return location, pages
            assert location.startswith(server.issuer + "/"), f"redirected away to {location}"
            response = browser.get(location)
            continue
        assert response.status_code == 200, f"{response.status_code} at {response.url}: {response.text[:500]}"
        match = FORM.search(response.text)
        assert match, f"no login or consent form at {response.url}: {response.text[:500]}"
        action, kind = urljoin(str(response.url), unescape(match.group(1))), match.group(2)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
        assert csrf, "the form has no CSRF token"
        fields = {"csrf_token": unescape(csrf.group(1))}
        if kind == "login":
            fields |= {"username": server.username, "password": server.password}
        else:
            fields["decision"] = "allow"
        pages.append(kind)
        response = browser.post(action, data=fields)
        # A POST that carried the password is answered with 303, never 307 (RFC 9700, 4.11); the consent
        # POST may answer with authlib's 302 straight to the client.
        expected = (303,) if kind == "login" else (302, 303)
        assert response.status_code in expected, f"{response.status_code}: {response.text[:500]}"
    raise AssertionError("too many steps before the redirect to the client")


def sign_in(server: RunningServer, browser: httpx.Client, *, id_token_alg: str = "ES256") -> SignedIn:
    """Register an RP, run code + PKCE through the login form, redeem the code; pyoidc checks every step."""
    registered = server.register_rp(id_token_alg=id_token_alg)
    rp = make_rp(server, registered)
    authorization = authorization_url(rp, registered)
    assert authorization.request["code_challenge_method"] == "S256"
    location, pages = run_browser(browser, authorization.url, registered.redirect_uri, server)

    response = rp.parse_response(AuthorizationResponse, info=location, sformat="urlencoded")
    assert isinstance(response, AuthorizationResponse), response.to_dict()
    assert response["state"] == authorization.state
    # pyoidc compares iss with the discovered issuer while parsing (RFC 9207); make sure it was there.
    assert response["iss"] == server.issuer

    tokens = rp.do_access_token_request(
        state=authorization.state,
        request_args={"code": response["code"], "redirect_uri": registered.redirect_uri,
                      "code_verifier": authorization.verifier},
        authn_method="client_secret_basic",
        # Only the algorithm registered for this client is acceptable for its ID tokens.
        algs=rp.sign_enc_algs("id_token"),
    )
    assert isinstance(tokens, AccessTokenResponse), tokens.to_dict()
    return SignedIn(rp, registered, authorization.state, authorization.request["nonce"],
                    authorization.request, tokens, pages)


def published_kids(server: RunningServer) -> set[str]:
    return {key["kid"] for key in httpx.get(f"{server.issuer}/jwks").json()["keys"]}


def assert_verified_id_token(signed_in: SignedIn, server: RunningServer, id_token: Any, access_token: str) -> None:
    """The ID token pyoidc verified: signed with the client's algorithm by a published key, right claims."""
    assert isinstance(id_token, IdToken), "pyoidc did not parse and verify the ID token"
    assert id_token.jws_header["alg"] == signed_in.registered.id_token_alg
    assert id_token.jws_header["kid"] in published_kids(server)
    assert id_token["iss"] == server.issuer
    assert id_token["aud"] == [signed_in.registered.client_id]
    assert id_token["sub"] == server.user_sub
    assert id_token["nonce"] == signed_in.nonce
    assert id_token["amr"] == ["pwd"] and id_token["sid"] and id_token["auth_time"]
    assert id_token["at_hash"] == left_hash(access_token, "HS256")
    # iss, aud, exp and nonce once more through pyoidc's own RP-side check.
    signed_in.rp.verify_id_token(id_token, signed_in.request)


def introspect(server: RunningServer, registered: RegisteredRP, token: str, hint: str | None = None) -> Any:
    data = {"token": token} | ({"token_type_hint": hint} if hint else {})
    response = httpx.post(f"{server.issuer}/introspect", data=data,
                          auth=(registered.client_id, registered.client_secret))
    assert response.status_code == 200, response.text
    return response.json()


def test_discovery_over_http(idp_server: RunningServer) -> None:
    """pyoidc discovers the issuer, all endpoints and the signing keys (OpenID Connect Discovery 1.0, 4)."""
    rp = Client(client_authn_method=CLIENT_AUTHN_METHOD)
    metadata = rp.provider_config(idp_server.issuer)
    assert metadata["issuer"] == idp_server.issuer
    assert rp.authorization_endpoint == f"{idp_server.issuer}/authorize"
    assert rp.token_endpoint == f"{idp_server.issuer}/token"
    assert rp.userinfo_endpoint == f"{idp_server.issuer}/userinfo"
    assert rp.end_session_endpoint == f"{idp_server.issuer}/logout"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert {"ES256", "RS256"} <= set(metadata["id_token_signing_alg_values_supported"])
    loaded = {key.kid for key in rp.keyjar.get_verify_key(owner=idp_server.issuer)}
    assert loaded == published_kids(idp_server) and len(loaded) >= 2


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_code_flow_with_pkce_yields_a_verified_id_token(idp_server: RunningServer, browser: httpx.Client,
                                                        alg: str) -> None:
    """Code + PKCE through the login and consent pages; pyoidc validates the ID token (OIDC Core 3.1.3.7)."""
    signed_in = sign_in(idp_server, browser, id_token_alg=alg)
    assert signed_in.pages == ["login", "consent"]
    tokens = signed_in.tokens
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"] and tokens["expires_in"] > 0
    assert_verified_id_token(signed_in, idp_server, tokens["id_token"], tokens["access_token"])
    assert tokens["id_token"]["groups"] == ["Bauamt"]

    # The check above is real: the same token with another subject fails pyoidc's signature check.
    header, payload, signature = tokens["id_token_jwt"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps(claims | {"sub": "admin"}).encode()).rstrip(b"=").decode()
    with pytest.raises(BadSignature):
        IdToken().from_jwt(f"{header}.{forged}.{signature}", keyjar=signed_in.rp.keyjar)


def test_refresh_rotates_the_refresh_token(idp_server: RunningServer, browser: httpx.Client) -> None:
    """pyoidc refreshes (OIDC Core 12); the old refresh token is used up and its reuse ends the whole family."""
    signed_in = sign_in(idp_server, browser)
    rp, registered, first = signed_in.rp, signed_in.registered, signed_in.tokens
    refreshed = rp.do_access_token_refresh(state=signed_in.state, authn_method="client_secret_basic")
    assert isinstance(refreshed, AccessTokenResponse), refreshed.to_dict()
    assert refreshed["token_type"] == "Bearer"
    assert refreshed["access_token"] != first["access_token"]
    assert refreshed["refresh_token"] != first["refresh_token"]
    # OIDC Core 12.2: pyoidc parsed and verified the new ID token (signature by a published key, iss, aud, exp);
    # it describes the original sign-in, without its nonce, and is bound to the new access token.
    renewed, original = refreshed["id_token"], first["id_token"]
    assert isinstance(renewed, IdToken) and renewed.jws_header["kid"] in published_kids(idp_server)
    for claim in ("iss", "sub", "aud", "auth_time", "amr", "sid"):
        assert renewed[claim] == original[claim], claim
    assert "nonce" not in renewed and renewed["iat"] >= original["iat"]
    assert renewed["at_hash"] == left_hash(refreshed["access_token"], "HS256")
    claims = rp.do_user_info_request(method="GET", state=signed_in.state)
    assert isinstance(claims, OpenIDSchema) and claims["sub"] == idp_server.user_sub
    assert introspect(idp_server, registered, first["refresh_token"], "refresh_token") == {"active": False}
    assert introspect(idp_server, registered, refreshed["refresh_token"], "refresh_token")["active"] is True

    # A stolen, already rotated refresh token: refused, and every token of the family is revoked.
    reused = httpx.post(f"{idp_server.issuer}/token",
                        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                        auth=(registered.client_id, registered.client_secret))
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    assert introspect(idp_server, registered, refreshed["refresh_token"], "refresh_token") == {"active": False}
    assert introspect(idp_server, registered, refreshed["access_token"]) == {"active": False}


def test_userinfo_through_oic(idp_server: RunningServer, browser: httpx.Client) -> None:
    """pyoidc calls userinfo with the Bearer token by GET and by POST and matches its sub (OIDC Core 5.3)."""
    signed_in = sign_in(idp_server, browser)
    for method in ("GET", "POST"):
        claims = signed_in.rp.do_user_info_request(method=method, state=signed_in.state,
                                                   behavior="use_authorization_header")
        assert isinstance(claims, OpenIDSchema), claims.to_dict()
        assert claims["sub"] == idp_server.user_sub
        assert claims["email"] == "erika@musterstadt.de"
        assert claims["name"] == "Erika Mustermann" and claims["preferred_username"] == "erika"
        assert claims["groups"] == ["Bauamt"]


def test_introspection_and_revocation(idp_server: RunningServer, browser: httpx.Client) -> None:
    """Introspection (RFC 7662) shows both tokens active; revoking the refresh token ends both (RFC 7009 2.1)."""
    signed_in = sign_in(idp_server, browser)
    registered, tokens = signed_in.registered, signed_in.tokens
    access = introspect(idp_server, registered, tokens["access_token"])
    assert access["active"] is True and access["token_type"] == "Bearer"
    assert access["client_id"] == registered.client_id and access["sub"] == idp_server.user_sub
    assert access["iss"] == idp_server.issuer and access["username"] == "erika"
    assert set(access["scope"].split()) == set(SCOPE)
    refresh = introspect(idp_server, registered, tokens["refresh_token"], "refresh_token")
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"

    revoked = httpx.post(f"{idp_server.issuer}/revoke",
                         data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
                         auth=(registered.client_id, registered.client_secret))
    assert revoked.status_code == 200, revoked.text
    assert introspect(idp_server, registered, tokens["refresh_token"]) == {"active": False}
    assert introspect(idp_server, registered, tokens["access_token"]) == {"active": False}
    userinfo = httpx.get(f"{idp_server.issuer}/userinfo",
                         headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 401
    assert 'error="invalid_token"' in userinfo.headers["www-authenticate"]
    refused = signed_in.rp.do_access_token_refresh(state=signed_in.state, authn_method="client_secret_basic")
    assert isinstance(refused, ErrorResponse) and refused["error"] == "invalid_grant"


def test_rp_initiated_logout_ends_the_session(idp_server: RunningServer, browser: httpx.Client) -> None:
    """RP-Initiated Logout 1.0: id_token_hint + post_logout_redirect_uri + state end the SSO session."""
    signed_in = sign_in(idp_server, browser)
    rp, registered = signed_in.rp, signed_in.registered
    # A second user agent with nothing but a copy of the session cookie, as a thief would have it.
    replay = httpx.Client(cookies={"idp_session": browser.cookies["idp_session"]})

    def silent_authorization(agent: httpx.Client) -> Message:
        request = authorization_url(rp, registered, prompt="none")
        response = agent.get(request.url)
        assert response.status_code == 302
        assert parse_qs(urlsplit(response.headers["location"]).query)["iss"] == [idp_server.issuer]
        parsed = rp.parse_response(AuthorizationResponse, info=response.headers["location"], sformat="urlencoded")
        assert parsed["state"] == request.state
        return parsed

    with replay:
        # Signed in: prompt=none gets a code without any page (single sign-on).
        for agent in (browser, replay):
            granted = silent_authorization(agent)
            assert isinstance(granted, AuthorizationResponse) and granted["code"]

        logout_state = secrets.token_urlsafe(12)
        url, _, _, _ = rp.request_info(EndSessionRequest, method="GET", state=signed_in.state, request_args={
            "id_token_hint": signed_in.tokens["id_token_jwt"],
            "post_logout_redirect_uri": registered.post_logout_redirect_uri,
            "state": logout_state,
        })
        assert url.startswith(f"{idp_server.issuer}/logout?")
        logout = browser.get(url)
        assert logout.status_code == 303, logout.text
        target = urlsplit(logout.headers["location"])
        assert f"{target.scheme}://{target.netloc}{target.path}" == registered.post_logout_redirect_uri
        assert parse_qs(target.query) == {"state": [logout_state]}
        assert re.search(r'idp_session=""?;.*Max-Age=0', logout.headers["set-cookie"], re.IGNORECASE)
        assert "idp_session" not in browser.cookies

        # Signed out: prompt=none now reports login_required to the client (OIDC Core 3.1.2.6), also with the
        # copied cookie, because the session ended on the server and not only in the browser.
        for agent in (browser, replay):
            error = silent_authorization(agent)
            assert isinstance(error, AuthorizationErrorResponse) and error["error"] == "login_required"

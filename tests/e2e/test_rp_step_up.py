"""Step-up seen by an independent RP (pyoidc) over real HTTP: acr, amr and auth_time after a second factor.

The user signs in to a password-only tool, then opens a tool registered with ``--require-mfa``: she is asked
only for the missing factor (here: setting up an authenticator app, whose first code proves it), never for
the password again, and pyoidc verifies an ID token whose ``acr`` says MFA and whose ``amr`` says
password + one-time password.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from html import unescape
from typing import Any
from urllib.parse import urljoin

import httpx
import pyotp
import pytest
from oic.oic import Client
from oic.oic.message import AccessTokenResponse, AuthorizationRequest, AuthorizationResponse, IdToken

from idp.factors.policy import ACR_MFA, ACR_SFA
from tests.e2e.conftest import RegisteredRP, RunningServer, free_port
from tests.e2e.test_rp_library import make_rp

pytestmark = pytest.mark.e2e


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False, timeout=30.0) as client:
        yield client


def _register(server: RunningServer, *extra: str) -> RegisteredRP:
    base = f"http://127.0.0.1:{free_port()}"
    created: dict[str, Any] = json.loads(server.idp(
        "clients", "add", "--name", "Tool", "--redirect-uri", f"{base}/cb", "--post-logout-redirect-uri",
        f"{base}/out", "--trusted", "--json", *extra))
    return RegisteredRP(created["client_id"], created["client_secret"], f"{base}/cb", f"{base}/out", "ES256")


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:400]
    return unescape(match.group(1))


def _sign_in(server: RunningServer, browser: httpx.Client, registered: RegisteredRP,
             steps: list[str], totp_secret: list[str]) -> IdToken:
    """One code flow through pyoidc; the browser answers whatever the IdP asks and records the steps."""
    rp: Client = make_rp(server, registered)
    pkce, verifier = rp.add_code_challenge()
    state = secrets.token_urlsafe(16)
    url, _, _, _ = rp.request_info(AuthorizationRequest, method="GET", request_args={
        "response_type": "code", "scope": ["openid", "profile"], "redirect_uri": registered.redirect_uri,
        "state": state, "nonce": secrets.token_urlsafe(16), **pkce})
    response = browser.get(url)
    for _ in range(12):
        if response.status_code in (302, 303):
            location = urljoin(str(response.url), response.headers["location"])
            if location.startswith(registered.redirect_uri):
                break
            response = browser.get(location)
            continue
        assert response.status_code == 200, f"{response.status_code} at {response.url}: {response.text[:300]}"
        page = response.text
        here = str(response.url)
        if 'id="login-form"' in page:
            steps.append("password")
            response = browser.post(here, data={"username": server.username, "password": server.password,
                                                "csrf_token": _csrf(page)})
        elif 'id="enroll-methods"' in page:
            steps.append("enroll")
            response = browser.get(here + "/totp")
        elif 'id="enroll-totp-form"' in page:
            secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page).group(1).replace(" ", "")  # type: ignore[union-attr]
            totp_secret.append(secret)
            steps.append("totp-enrolled")
            response = browser.post(here, data={"code": pyotp.TOTP(secret).now(), "csrf_token": _csrf(page)})
        elif 'id="recovery-codes"' in page:
            steps.append("recovery-codes")
            link = re.search(r'href="(/authorize/resume/[^"]+)"', page).group(1)  # type: ignore[union-attr]
            response = browser.get(urljoin(here, link))
        else:
            raise AssertionError(f"unexpected page at {here}: {page[:400]}")
    else:
        raise AssertionError("too many steps")
    parsed = rp.parse_response(AuthorizationResponse, info=location, sformat="urlencoded")
    assert isinstance(parsed, AuthorizationResponse) and parsed["state"] == state
    tokens = rp.do_access_token_request(
        state=state, request_args={"code": parsed["code"], "redirect_uri": registered.redirect_uri,
                                   "code_verifier": verifier},
        authn_method="client_secret_basic", algs=rp.sign_enc_algs("id_token"))
    assert isinstance(tokens, AccessTokenResponse), tokens.to_dict()
    id_token = tokens["id_token"]
    assert isinstance(id_token, IdToken), "pyoidc did not verify the ID token"
    return id_token


def test_step_up_to_mfa_is_verified_by_pyoidc(idp_server: RunningServer, browser: httpx.Client) -> None:
    """Password for the first tool; only the second factor for the tool that requires MFA; acr/amr/auth_time
    tell the truth in both ID tokens, as pyoidc sees them."""
    plain = _register(idp_server)
    strict = _register(idp_server, "--require-mfa")
    steps: list[str] = []
    secrets_seen: list[str] = []
    first = _sign_in(idp_server, browser, plain, steps, secrets_seen)
    assert steps == ["password"]
    assert first["acr"] == ACR_SFA and first["amr"] == ["pwd"]

    steps.clear()
    second = _sign_in(idp_server, browser, strict, steps, secrets_seen)
    assert steps == ["enroll", "totp-enrolled", "recovery-codes"], "the password was asked again"
    assert second["acr"] == ACR_MFA and second["amr"] == ["pwd", "otp", "mfa"]
    assert second["sid"] == first["sid"]
    assert second["auth_time"] >= first["auth_time"]

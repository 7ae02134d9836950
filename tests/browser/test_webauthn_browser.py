"""Security keys and passkeys end to end in a real Chromium with its virtual authenticator (issue 3).

The browser runs the theme's webauthn.js against the live server: enrollment during the first sign-in,
the key as second step, passkey sign-in without a password, and the refusals a real browser can produce
(a replayed answer, an answer for another RP ID, a cloned key's sign counter). The authorization code is
redeemed with httpx against the same server and the ID token checked for what it says (RFC 8176 amr).
SQLite only: see conftest.py.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from playwright.sync_api import Browser, Request, Route
from sqlalchemy import select

from idp.db import unit_of_work
from idp.factors.policy import ACR_PHR
from idp.models import AuditEvent, User, WebAuthnCredential
from tests.browser.conftest import LiveServer, Tab, free_port, open_tab
from tests.helpers import PASSWORD, Flow, RegisteredClient, add_client, add_user, query_of

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

_ids = itertools.count(1)

# navigator.credentials.get() on another site, answered as PublicKeyCredential.toJSON() would.
_GET_ELSEWHERE = """async ([options, rpId, credentialId]) => {
  const bytes = (text) => {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
    return Uint8Array.from(atob(b64 + "===".slice((b64.length + 3) % 4)), (c) => c.charCodeAt(0));
  };
  const text = (buffer) => btoa(String.fromCharCode(...new Uint8Array(buffer)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const c = await navigator.credentials.get({ publicKey: {
    challenge: bytes(options.challenge), rpId: rpId, userVerification: "preferred",
    allowCredentials: [{ type: "public-key", id: bytes(credentialId) }] } });
  return { id: c.id, rawId: text(c.rawId), type: c.type, clientExtensionResults: {},
           response: { clientDataJSON: text(c.response.clientDataJSON),
                       authenticatorData: text(c.response.authenticatorData),
                       signature: text(c.response.signature), userHandle: null } };
}"""


@pytest.fixture
def account(live_server: LiveServer, client_callback: str) -> tuple[str, RegisteredClient]:
    """A user of their own (the server's database lives for the module) and a trusted client."""
    username = f"user{next(_ids)}"
    add_user(live_server.services, username)
    return username, add_client(live_server.services, trusted=True, name=f"App of {username}",
                                redirect_uris=[client_callback])


def _tab(browser: Browser, tabs: list[Tab], *, transport: str = "usb") -> Tab:
    tab = open_tab(browser, transport=transport)
    tabs.append(tab)
    return tab


def _start(server: LiveServer, tab: Tab, flow: Flow) -> None:
    tab.page.goto(server.issuer + flow.url())
    tab.page.wait_for_url(re.compile(r".*/login/[A-Za-z0-9_-]+$"))


def _password(tab: Tab, username: str) -> None:
    tab.page.fill("#username", username)
    tab.page.fill("#password", PASSWORD)
    tab.page.click("#login-form button[type=submit]")


def _code(tab: Tab, flow: Flow) -> str:
    tab.page.wait_for_url(f"{flow.client.redirect_uri}?**")
    params = query_of(tab.page.url)
    assert params["state"] == flow.state
    return params["code"]


def _id_token(server: LiveServer, flow: Flow, code: str) -> dict[str, Any]:
    """Redeem the code at the live token endpoint and verify the ID token with the published keys."""
    assert flow.client.client_secret is not None
    response = httpx.post(f"{server.issuer}/token", auth=(flow.client.client_id, flow.client.client_secret),
                          data={"grant_type": "authorization_code", "code": code,
                                "redirect_uri": flow.client.redirect_uri, "code_verifier": flow.verifier},
                          timeout=10)
    assert response.status_code == 200, response.text
    keys = KeySet.import_key_set(httpx.get(f"{server.issuer}/jwks", timeout=10).json())
    claims = dict(jwt.decode(response.json()["id_token"], keys, algorithms=["ES256", "RS256"]).claims)
    assert claims["iss"] == server.issuer and claims["aud"] == flow.client.client_id
    assert claims["nonce"] == flow.nonce
    return claims


def _enroll(server: LiveServer, tab: Tab, username: str, client: RegisteredClient, *,
            passkey: bool = False) -> dict[str, Any]:
    """First sign-in: password, then the enrollment page registers the virtual key; returns the ID token."""
    flow = Flow(client)
    _start(server, tab, flow)
    _password(tab, username)
    page = tab.page
    page.wait_for_url("**/enroll")
    page.click("#enroll-passkey" if passkey else '#enroll-methods a[href$="/enroll/webauthn"]')
    page.wait_for_url(re.compile(r".*/enroll/webauthn(\?kind=passkey)?$"))
    page.fill("#webauthn-name", "Passkey of the laptop" if passkey else "Blue key")
    page.click("#webauthn-register")
    page.wait_for_url("**/recovery-codes")
    codes = page.locator("#recovery-codes code").all_text_contents()
    assert len(set(codes)) == 10
    page.click("#recovery-continue")
    return _id_token(server, flow, _code(tab, flow))


def _to_second_step(server: LiveServer, tab: Tab, username: str, client: RegisteredClient) -> Flow:
    """A later sign-in (prompt=login) up to the second step, which offers the security key."""
    flow = Flow(client, extra={"prompt": "login"})
    _start(server, tab, flow)
    _password(tab, username)
    tab.page.wait_for_url("**/factor")
    assert tab.page.get_attribute("#webauthn-authenticate", "data-method") == "webauthn"
    return flow


def _credential(server: LiveServer, username: str) -> WebAuthnCredential:
    with unit_of_work(server.services.sessions) as db:
        user = db.scalar(select(User).where(User.username == username))
        assert user is not None
        credential = db.scalars(select(WebAuthnCredential).where(WebAuthnCredential.user_id == user.id)).one()
        db.expunge(credential)
        return credential


def _audit(server: LiveServer, username: str, event: str) -> list[AuditEvent]:
    with unit_of_work(server.services.sessions) as db:
        rows = list(db.scalars(select(AuditEvent).where(AuditEvent.subject == username, AuditEvent.event == event)
                               .order_by(AuditEvent.id)))
        db.expunge_all()
        return rows


def test_first_sign_in_enrolls_a_security_key(live_server: LiveServer, chromium: Browser, tabs: list[Tab],
                                              account: tuple[str, RegisteredClient]) -> None:
    """Without a factor, the password leads to the enrollment page; the key registered there completes the
    sign-in, and the ID token says pwd + hwk at acr phr (RFC 8176; OpenID EAP ACR values)."""
    username, client = account
    tab = _tab(chromium, tabs)
    claims = _enroll(live_server, tab, username, client)
    assert claims["amr"][0] == "pwd" and "hwk" in claims["amr"] and "mfa" in claims["amr"]
    assert claims["acr"] == ACR_PHR
    stored = _credential(live_server, username)
    assert stored.name == "Blue key" and stored.transports == ["usb"] and not stored.discoverable
    on_key = tab.authenticator.credentials()
    assert [c["rpId"] for c in on_key] == ["localhost"]


def test_later_sign_in_uses_the_key_as_second_step(live_server: LiveServer, chromium: Browser, tabs: list[Tab],
                                                   account: tuple[str, RegisteredClient]) -> None:
    """The next sign-in asks for the key after the password; the key's answer finishes it at acr phr."""
    username, client = account
    tab = _tab(chromium, tabs)
    _enroll(live_server, tab, username, client)
    count = _credential(live_server, username).sign_count
    flow = _to_second_step(live_server, tab, username, client)
    tab.page.click("#webauthn-authenticate")
    claims = _id_token(live_server, flow, _code(tab, flow))
    assert claims["amr"][0] == "pwd" and "hwk" in claims["amr"] and "mfa" in claims["amr"]
    assert claims["acr"] == ACR_PHR
    assert _credential(live_server, username).sign_count > count
    assert [e.details["method"] for e in _audit(live_server, username, "login.second_factor")] == ["webauthn"] * 2


def test_passkey_sign_in_without_a_password(live_server: LiveServer, chromium: Browser, tabs: list[Tab],
                                            account: tuple[str, RegisteredClient]) -> None:
    """A passkey made on a platform authenticator signs in from the login page alone, in another browser
    profile it was moved to: no password, and the ID token says hwk + user + mfa at acr phr."""
    username, client = account
    first = _tab(chromium, tabs, transport="internal")
    _enroll(live_server, first, username, client, passkey=True)
    assert _credential(live_server, username).discoverable
    [passkey] = first.authenticator.credentials()
    assert passkey["isResidentCredential"] and passkey["userHandle"]

    other = _tab(chromium, tabs, transport="internal")
    other.authenticator.add(passkey)
    flow = Flow(client)
    _start(live_server, other, flow)
    assert other.page.input_value("#password") == ""
    other.page.click("#webauthn-authenticate")
    claims = _id_token(live_server, flow, _code(other, flow))
    assert claims["amr"] == ["hwk", "user", "mfa"] and claims["acr"] == ACR_PHR
    assert [e.outcome for e in _audit(live_server, username, "login.passkey")] == ["success"]


def test_replayed_answer_is_refused(live_server: LiveServer, chromium: Browser, tabs: list[Tab],
                                    account: tuple[str, RegisteredClient]) -> None:
    """The browser's answer to the second step, posted again, is refused: its challenge was used up."""
    username, client = account
    tab = _tab(chromium, tabs)
    _enroll(live_server, tab, username, client)
    flow = _to_second_step(live_server, tab, username, client)
    page = tab.page
    answers: list[Request] = []
    page.on("request", lambda request: answers.append(request) if request.url.endswith("/webauthn/verify") else None)

    # Hold the browser before it finishes the sign-in, so that the transaction is still open for the replay.
    def hold(route: Route) -> None:
        route.abort()

    page.route("**/authorize/resume/**", hold)
    with page.expect_request("**/authorize/resume/**") as resume:
        page.click("#webauthn-authenticate")
    [answer] = answers
    assert answer.post_data is not None and '"challenge_id"' in answer.post_data
    replay = tab.context.request.post(answer.url, data=answer.post_data,
                                      headers={"content-type": "application/json"})
    assert replay.status == 400 and "already used" in replay.json()["error"]
    failures = [e.details["reason"] for e in _audit(live_server, username, "login.second_factor")
                if e.outcome == "failure"]
    assert failures == ["replayed_challenge"]

    page.unroute("**/authorize/resume/**")
    page.goto(resume.value.url)
    claims = _id_token(live_server, flow, _code(tab, flow))
    assert "hwk" in claims["amr"]


def test_answer_for_another_rp_id_is_refused(live_server: LiveServer, chromium: Browser, tabs: list[Tab],
                                             account: tuple[str, RegisteredClient]) -> None:
    """The user's own key, moved (WebAuthn.addCredential) to another site's RP ID and used there on this
    server's challenge, as a phishing relay would: refused as an answer for another website, and audited."""
    username, client = account
    tab = _tab(chromium, tabs)
    _enroll(live_server, tab, username, client)
    _to_second_step(live_server, tab, username, client)
    page = tab.page
    button = {name: page.get_attribute("#webauthn-authenticate", f"data-{name}")
              for name in ("options-url", "verify-url", "csrf")}
    started = tab.context.request.post(live_server.issuer + str(button["options-url"]),
                                       data={"csrf_token": button["csrf"]})
    assert started.status == 200
    options = started.json()

    [key] = tab.authenticator.credentials()
    tab.authenticator.remove(key["credentialId"])
    tab.authenticator.add({**key, "rpId": "evil.localhost"})
    evil = f"http://evil.localhost:{free_port()}/"
    page.route(f"{evil}**", lambda route: route.fulfill(status=200, content_type="text/html",
                                                         body="<title>Sign in</title>"))
    page.goto(evil)
    credential = page.evaluate(_GET_ELSEWHERE, [options["publicKey"], "evil.localhost", key["credentialId"]])
    refused = tab.context.request.post(live_server.issuer + str(button["verify-url"]), data={
        "credential": credential, "csrf_token": button["csrf"], "challenge_id": options["challenge_id"]})
    assert refused.status == 400 and "another website" in refused.json()["error"]
    failures = [e.details["reason"] for e in _audit(live_server, username, "login.second_factor")
                if e.outcome == "failure"]
    assert failures == ["wrong_origin_or_rp_id"]
    assert _credential(live_server, username).flagged_at is None


def test_sign_count_regression_blocks_the_key(live_server: LiveServer, chromium: Browser, tabs: list[Tab],
                                              account: tuple[str, RegisteredClient]) -> None:
    """A key whose counter goes back (a clone: WebAuthn.addCredential with a lower signCount) is refused on
    the page, flagged in the database and audited as webauthn.cloned."""
    username, client = account
    tab = _tab(chromium, tabs)
    _enroll(live_server, tab, username, client)
    flow = _to_second_step(live_server, tab, username, client)
    tab.page.click("#webauthn-authenticate")
    _code(tab, flow)
    stored = _credential(live_server, username).sign_count
    [key] = tab.authenticator.credentials()
    assert key["signCount"] == stored >= 1

    tab.authenticator.remove(key["credentialId"])
    tab.authenticator.add({**key, "signCount": 0})
    _to_second_step(live_server, tab, username, client)
    tab.page.click("#webauthn-authenticate")
    error = tab.page.locator("#webauthn-error")
    error.wait_for(state="visible")
    assert "blocked" in error.inner_text()
    assert tab.page.url.endswith("/factor")
    assert _credential(live_server, username).flagged_at is not None
    [cloned] = _audit(live_server, username, "webauthn.cloned")
    assert cloned.details["stored_count"] == stored and cloned.details["presented_count"] == 1

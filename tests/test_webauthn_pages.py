"""WebAuthn in the sign-in over HTTP (idp.login.webauthn_pages): enrollment, second step, passkey sign-in.

The JSON contract is the one of themes/default/static/webauthn.js; the software authenticator answers as a
browser does, with real signatures. The same flows in a real Chromium are in tests/browser/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from starlette.testclient import TestClient

from idp.app import create_app
from idp.db import unit_of_work
from idp.factors.policy import ACR_PHR
from idp.login.transactions import csrf_binding
from idp.models import AuditEvent, LoginTransaction, SsoSession, User, WebAuthnChallenge, WebAuthnCredential
from idp.services import Services, build_services
from idp.web import csrf
from tests.conftest import ISSUER, FakeClock, make_settings
from tests.helpers import Flow, RegisteredClient, add_client, add_user, decode, exchange, finish, query_of, submit_login
from tests.soft_authenticator import SoftAuthenticator

ORIGIN = ISSUER


@pytest.fixture
def mfa_services(backend: tuple[str, Engine], services: Services, tmp_path: Path, clock: FakeClock) -> Services:
    """Every sign-in needs a second factor (the shipped default); few free passkey attempts per address."""
    settings = make_settings(tmp_path, backend[0], IDP_MFA_DEFAULT="required", IDP_THROTTLE_FREE_ATTEMPTS_PER_IP="8")
    strict = build_services(settings, engine=backend[1])
    strict.clock = clock
    return strict


@pytest.fixture
def browser(mfa_services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=mfa_services), base_url=ISSUER, follow_redirects=False) as client:
        yield client


@pytest.fixture
def app(mfa_services: Services) -> RegisteredClient:
    add_user(mfa_services)
    return add_client(mfa_services, trusted=True)


def _data(html: str, name: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*?data-{name}="([^"]*)"', html, re.DOTALL)
    assert match, f"#{element_id} has no data-{name}"
    return match.group(1)


def _button(html: str, element_id: str) -> dict[str, str]:
    return {name: _data(html, name, element_id) for name in ("options-url", "verify-url", "csrf")}


def _after_password(browser: TestClient, flow: Flow) -> str:
    """Start the flow and give the password; return where the sign-in goes next."""
    login = browser.get(flow.url()).headers["location"]
    response = browser.get(submit_login(browser, login).headers["location"])
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


def _ceremony(browser: TestClient, button: dict[str, str], answer: Any, **extra: Any) -> tuple[Any, dict[str, Any]]:
    """Run one ceremony like webauthn.js: options, the authenticator's answer, verify. Returns (response, body)."""
    options = browser.post(button["options-url"], json={"csrf_token": button["csrf"]})
    assert options.status_code == 200, options.text
    started = options.json()
    body = {"credential": answer(started["publicKey"]), "csrf_token": button["csrf"],
            "challenge_id": started["challenge_id"], **extra}
    return browser.post(button["verify-url"], json=body), body


def _enroll(browser: TestClient, flow: Flow, key: SoftAuthenticator, *, passkey: bool = False) -> Any:
    """First sign-in: the password leads to enrollment; register ``key``; returns the recovery codes page."""
    enroll = _after_password(browser, flow)
    assert enroll.endswith("/enroll")
    choice = browser.get(enroll)
    assert 'href="' + enroll + '/webauthn"' in choice.text and 'id="enroll-passkey"' in choice.text
    page = browser.get(enroll + "/webauthn" + ("?kind=passkey" if passkey else ""))
    assert page.status_code == 200 and 'id="webauthn-register"' in page.text
    response, _ = _ceremony(browser, _button(page.text, "webauthn-register"),
                            lambda options: key.create(options, origin=ORIGIN), name="Blue key")
    assert response.status_code == 200, response.text
    codes_url = response.json()["redirect"]
    assert codes_url == enroll.removesuffix("/enroll") + "/recovery-codes"
    return browser.get(codes_url)


def _claims(browser: TestClient, flow: Flow, response: Any) -> dict[str, Any]:
    params = query_of(finish(browser, response))
    token = exchange(browser, flow, params["code"])
    assert token.status_code == 200, token.text
    return dict(decode(browser, token.json()["id_token"]).claims)


def _events(services: Services, event: str) -> list[AuditEvent]:
    with unit_of_work(services.sessions) as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)))


def _second_step_page(browser: TestClient, flow: Flow) -> str:
    flow.extra["prompt"] = "login"
    factor = _after_password(browser, flow)
    assert "/factor" in factor
    page = browser.get(factor)
    assert page.status_code == 200 and 'id="webauthn-authenticate"' in page.text
    return page.text


def test_enrollment_shows_recovery_codes_once_and_the_token_says_hwk_at_phr(
        browser: TestClient, mfa_services: Services, app: RegisteredClient) -> None:
    """Registering a security key after the password completes the sign-in: recovery codes once, then an ID
    token with amr pwd + hwk + mfa and acr phr (RFC 8176; OpenID EAP ACR values)."""
    flow = Flow(app)
    codes = _enroll(browser, flow, SoftAuthenticator())
    assert codes.status_code == 200 and codes.headers["cache-control"] == "no-store"
    shown = re.findall(r"<li><code>([A-Z2-7-]+)</code></li>", codes.text)
    assert 'id="recovery-codes"' in codes.text and len(set(shown)) == 10
    again = browser.get(codes.url)
    assert again.status_code == 303 and again.headers["location"].startswith("/authorize/resume/")
    resume = re.search(r'href="(/authorize/resume/[^"]+)"', codes.text).group(1)  # type: ignore[union-attr]
    claims = _claims(browser, flow, browser.get(resume))
    assert claims["amr"] == ["pwd", "hwk", "mfa"] and claims["acr"] == ACR_PHR
    with unit_of_work(mfa_services.sessions) as db:
        stored = db.scalars(select(WebAuthnCredential)).one()
        assert stored.name == "Blue key" and not stored.discoverable
    assert [e.details["kind"] for e in _events(mfa_services, "factor.enrolled")] == ["webauthn"]


def test_second_step_with_the_key_and_a_replayed_answer_is_refused(
        browser: TestClient, mfa_services: Services, app: RegisteredClient, clock: FakeClock) -> None:
    """The next sign-in (prompt=login) offers the key; its answer, given a while after the password, finishes
    the sign-in without asking for the password again; a replay of it is refused and audited."""
    key = SoftAuthenticator()
    _enroll(browser, Flow(app), key)
    flow = Flow(app)
    page = _second_step_page(browser, flow)
    button = _button(page, "webauthn-authenticate")
    assert button["options-url"].endswith("/webauthn/options")
    clock.advance(seconds=20)
    response, body = _ceremony(browser, button, lambda options: key.get(options, origin=ORIGIN))
    assert response.status_code == 200 and response.json()["redirect"].startswith("/authorize/resume/")
    replay = browser.post(button["verify-url"], json=body)
    assert replay.status_code == 400 and "expired or was already used" in replay.json()["error"]
    claims = _claims(browser, flow, browser.get(response.json()["redirect"]))
    assert claims["amr"] == ["pwd", "hwk", "user", "mfa"] and claims["acr"] == ACR_PHR
    failures = [e for e in _events(mfa_services, "login.second_factor") if e.outcome == "failure"]
    assert [(e.details["method"], e.details["reason"]) for e in failures] == [("webauthn", "replayed_challenge")]


def test_answer_for_another_origin_is_refused(browser: TestClient, mfa_services: Services,
                                              app: RegisteredClient) -> None:
    """An assertion made for another site (phishing relay) is refused with a clear message and audited."""
    key = SoftAuthenticator()
    _enroll(browser, Flow(app), key)
    button = _button(_second_step_page(browser, Flow(app)), "webauthn-authenticate")
    response, _ = _ceremony(browser, button, lambda options: key.get(options, origin="https://idp.test.evil.example",
                                                                      rp_id="idp.test.evil.example"))
    assert response.status_code == 400 and "another website" in response.json()["error"]
    assert _events(mfa_services, "login.second_factor")[-1].details["reason"] == "wrong_origin_or_rp_id"


def test_sign_count_regression_is_refused_and_the_key_blocked(browser: TestClient, mfa_services: Services,
                                                             app: RegisteredClient) -> None:
    """A counter that goes back means a cloned key: refused, the key flagged, webauthn.cloned audited, and the
    refusal's writes are committed although the answer is an error."""
    key = SoftAuthenticator()
    _enroll(browser, Flow(app), key)
    button = _button(_second_step_page(browser, Flow(app)), "webauthn-authenticate")
    ok, _ = _ceremony(browser, button, lambda options: key.get(options, origin=ORIGIN, sign_count=5))
    assert ok.status_code == 200
    button = _button(_second_step_page(browser, Flow(app)), "webauthn-authenticate")
    cloned, _ = _ceremony(browser, button, lambda options: key.get(options, origin=ORIGIN, sign_count=3))
    assert cloned.status_code == 400 and "blocked" in cloned.json()["error"]
    with unit_of_work(mfa_services.sessions) as db:
        assert db.scalars(select(WebAuthnCredential)).one().flagged_at is not None
    assert len(_events(mfa_services, "webauthn.cloned")) == 1


@pytest.mark.parametrize("case", ["no_json", "not_json", "array", "bad_csrf", "nul_challenge", "garbage"])
def test_bad_requests_get_json_errors_never_a_500(browser: TestClient, mfa_services: Services,
                                                  app: RegisteredClient, case: str) -> None:
    """Malformed bodies are 400, a wrong CSRF token 403, hostile values a refusal: JSON errors, never a 500."""
    key = SoftAuthenticator()
    _enroll(browser, Flow(app), key)
    button = _button(_second_step_page(browser, Flow(app)), "webauthn-authenticate")
    url = button["verify-url"]
    if case == "no_json":
        response = browser.post(url, data={"csrf_token": button["csrf"]})
    elif case == "not_json":
        response = browser.post(url, content=b'{"csrf_token": \xff', headers={"content-type": "application/json"})
    elif case == "array":
        response = browser.post(url, json=[button["csrf"]])
    elif case == "bad_csrf":
        response = browser.post(button["options-url"], json={"csrf_token": button["csrf"][:-2] + "xx"})
    elif case == "nul_challenge":
        response = browser.post(url, json={"csrf_token": button["csrf"], "challenge_id": "a\x00b",
                                           "credential": {"id": "\x00"}})
    else:
        response = browser.post(url, json={"csrf_token": button["csrf"], "challenge_id": ["x"],
                                           "credential": "[" * 10000})
    expected = 403 if case == "bad_csrf" else 400
    assert response.status_code == expected and response.headers["content-type"] == "application/json"
    assert response.json()["error"]


def test_failed_answers_are_throttled(browser: TestClient, mfa_services: Services, app: RegisteredClient) -> None:
    """Failed key answers count like wrong codes: after five, even a good answer waits (429)."""
    key = SoftAuthenticator()
    _enroll(browser, Flow(app), key)
    button = _button(_second_step_page(browser, Flow(app)), "webauthn-authenticate")
    for _ in range(5):
        refused, _ = _ceremony(browser, button, lambda options: key.get(options, origin=ORIGIN,
                                                                        corrupt_signature=True))
        assert refused.status_code == 400
    blocked, _ = _ceremony(browser, button, lambda options: key.get(options, origin=ORIGIN))
    assert blocked.status_code == 429 and "wait" in blocked.json()["error"]


def test_passkey_sign_in_without_a_password(browser: TestClient, mfa_services: Services, app: RegisteredClient,
                                            clock: FakeClock) -> None:
    """A passkey on the login page replaces password and second factor: amr hwk + user + mfa, acr phr, no pwd;
    the options name no account and require user verification."""
    key = SoftAuthenticator()
    codes = _enroll(browser, Flow(app), key, passkey=True)
    finish(browser, browser.get(re.search(r'href="(/authorize/resume/[^"]+)"', codes.text).group(1)))  # type: ignore[union-attr]
    clock.advance(seconds=60)
    with TestClient(browser.app, base_url=ISSUER, follow_redirects=False) as fresh:
        flow = Flow(app)
        login = fresh.get(flow.url()).headers["location"]
        page = fresh.get(login)
        button = _button(page.text, "webauthn-authenticate")
        assert button["options-url"] == login + "/passkey/options"
        options = fresh.post(button["options-url"], json={"csrf_token": button["csrf"]}).json()
        assert options["publicKey"]["allowCredentials"] == []
        assert options["publicKey"]["userVerification"] == "required"
        answer = key.get(options["publicKey"], origin=ORIGIN)
        response = fresh.post(button["verify-url"], json={"credential": answer, "csrf_token": button["csrf"],
                                                          "challenge_id": options["challenge_id"]})
        assert response.status_code == 200, response.text
        assert "idp_session=" in response.headers["set-cookie"]
        claims = _claims(fresh, flow, fresh.get(response.json()["redirect"]))
    assert claims["amr"] == ["hwk", "user", "mfa"] and claims["acr"] == ACR_PHR
    with unit_of_work(mfa_services.sessions) as db:
        newest = db.scalars(select(SsoSession).order_by(SsoSession.id.desc())).first()
        assert newest is not None and newest.methods == ["passkey"]
    assert [e.outcome for e in _events(mfa_services, "login.passkey")] == ["success"]


def test_passkey_sign_in_refuses_a_missing_user_handle_and_a_disabled_account(
        browser: TestClient, mfa_services: Services, app: RegisteredClient) -> None:
    """Passkey sign-in needs the authenticator to name the account (user handle), and refuses a disabled one."""
    key = SoftAuthenticator()
    _enroll(browser, Flow(app), key, passkey=True)
    login = browser.get(Flow(app, extra={"prompt": "login"}).url()).headers["location"]
    button = _button(browser.get(login).text, "webauthn-authenticate")
    response, _ = _ceremony(browser, button, lambda options: key.get(options, origin=ORIGIN, user_handle=None))
    assert response.status_code == 400 and "username" in response.json()["error"]

    with unit_of_work(mfa_services.sessions) as db:
        db.execute(update(User).where(User.username == "erika").values(
            disabled_at=db.scalar(select(WebAuthnCredential.created_at))))
    response, _ = _ceremony(browser, button, lambda options: key.get(options, origin=ORIGIN))
    assert response.status_code == 400 and "cannot be used" in response.json()["error"]
    assert "set-cookie" not in response.headers
    reasons = [e.details["reason"] for e in _events(mfa_services, "login.passkey")]
    assert reasons == ["user_handle_missing", "disabled"]


def test_passkey_options_are_throttled_per_address(browser: TestClient, mfa_services: Services,
                                                   app: RegisteredClient) -> None:
    """Passkey options need no account and store a challenge each: one address gets a few, then 429."""
    login = browser.get(Flow(app).url()).headers["location"]
    button = _button(browser.get(login).text, "webauthn-authenticate")
    answers = [browser.post(button["options-url"], json={"csrf_token": button["csrf"]}).status_code
               for _ in range(10)]
    assert answers[:8] == [200] * 8 and answers[-1] == 429
    with unit_of_work(mfa_services.sessions) as db:
        assert len(db.scalars(select(WebAuthnChallenge)).all()) == 8


def test_password_alone_cannot_add_a_key_when_a_factor_exists(browser: TestClient, mfa_services: Services,
                                                              app: RegisteredClient) -> None:
    """With a factor enrolled, the password alone must not register another one (a stolen password would
    otherwise suffice to add the thief's key and pass the second step with it)."""
    _enroll(browser, Flow(app), SoftAuthenticator())
    factor = _after_password(browser, Flow(app, extra={"prompt": "login"}))
    assert factor.endswith("/factor")
    enroll = factor.replace("/factor", "/enroll/webauthn")
    assert browser.get(enroll).status_code == 403
    with unit_of_work(mfa_services.sessions) as db:
        tx = db.get(LoginTransaction, factor.split("/")[2])
        assert tx is not None
        token = csrf.make_token(mfa_services.csrf_key, "enroll", csrf_binding(tx))
    for url in (enroll + "/options", enroll + "/verify"):
        refused = browser.post(url, json={"csrf_token": token})
        assert refused.status_code == 403 and "second factor" in refused.json()["error"]
    # The same holds for the other methods' enrollment pages.
    assert browser.get(factor.replace("/factor", "/enroll/totp")).status_code == 403
    with unit_of_work(mfa_services.sessions) as db:
        assert len(db.scalars(select(WebAuthnCredential)).all()) == 1

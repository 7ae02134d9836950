"""Signing in with a second factor: enrollment after the password, the second step, recovery codes, trusted
browsers, step-up and what the ID token says about it (issue 3; RFC 8176 amr; REFEDS MFA and OpenID EAP acr).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from idp.app import create_app
from idp.db import unit_of_work
from idp.factors.policy import ACR_MFA, ACR_SFA
from idp.models import Client
from idp.services import Services, build_services
from tests.conftest import ISSUER, FakeClock, make_settings
from tests.helpers import (
    Flow,
    add_client,
    add_user,
    csrf_of,
    decode,
    exchange,
    finish,
    query_of,
    submit_login,
    user_row,
)


@pytest.fixture
def mfa_services(backend: tuple[str, Engine], services: Services, tmp_path: Path, clock: FakeClock) -> Services:
    """The shipped default: every sign-in needs a second factor."""
    settings = make_settings(tmp_path, backend[0], IDP_MFA_DEFAULT="required")
    strict = build_services(settings, engine=backend[1])
    strict.clock = clock
    return strict


@pytest.fixture
def browser(mfa_services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=mfa_services), base_url=ISSUER, follow_redirects=False) as client:
        yield client


def _enroll_totp(browser: TestClient, location: str, clock: FakeClock) -> tuple[str, Any]:
    """Follow the enrollment page to the authenticator app and activate it; returns the seed and response."""
    choice = browser.get(location)
    assert choice.status_code == 200
    assert 'data-method="totp"' in choice.text
    page = browser.get(location + "/totp")
    assert page.status_code == 200
    assert re.search(r'<a href="otpauth://totp/[^"]+" id="otpauth-link"', page.text)
    assert "<svg" in page.text
    secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page.text).group(1).replace(" ", "")  # type: ignore[union-attr]
    assert len(secret) >= 32
    wrong = browser.post(location + "/totp", data={"code": "000000", "csrf_token": csrf_of(page.text)})
    assert wrong.status_code == 200 and 'role="alert"' in wrong.text
    code = pyotp.TOTP(secret).at(clock())
    response = browser.post(location + "/totp", data={"code": code, "csrf_token": csrf_of(page.text)})
    return secret, response


def _first_login_with_enrollment(browser: TestClient, flow: Flow, clock: FakeClock) -> tuple[str, dict[str, str]]:
    login = browser.get(flow.url()).headers["location"]
    response = submit_login(browser, login)
    assert response.status_code == 303 and response.headers["location"].endswith("/authorize/resume/" +
                                                                                 login.rsplit("/", 1)[1])
    response = browser.get(response.headers["location"])
    assert response.status_code == 303 and response.headers["location"].endswith("/enroll")
    secret, activated = _enroll_totp(browser, response.headers["location"], clock)
    assert activated.status_code == 200
    codes = re.findall(r"<li><code>([A-Z2-7-]+)</code></li>", activated.text)
    assert 'id="recovery-codes"' in activated.text and len(codes) == 10 and len(set(codes)) == 10
    resume = re.search(r'href="(/authorize/resume/[^"]+)"', activated.text).group(1)  # type: ignore[union-attr]
    params = query_of(finish(browser, browser.get(resume)))
    return secret, params


def _claims(browser: TestClient, flow: Flow, params: dict[str, str]) -> dict[str, Any]:
    response = exchange(browser, flow, params["code"])
    assert response.status_code == 200, response.text
    return dict(decode(browser, response.json()["id_token"]).claims)


def _sign_in_again(browser: TestClient, flow: Flow) -> Any:
    """A fresh browser-like sign-in (prompt=login), answering the password; returns the next response."""
    flow.extra["prompt"] = "login"
    login = browser.get(flow.url()).headers["location"]
    response = submit_login(browser, login)
    return browser.get(response.headers["location"])


def test_first_sign_in_enrolls_totp_and_the_token_tells_the_truth(browser: TestClient, mfa_services: Services,
                                                                  clock: FakeClock) -> None:
    """Without a factor, the password leads to enrollment; the app's first code completes the sign-in,
    recovery codes are shown once, and the ID token says pwd + otp at the MFA level."""
    add_user(mfa_services)
    app = add_client(mfa_services, trusted=True)
    flow = Flow(app)
    _, params = _first_login_with_enrollment(browser, flow, clock)
    claims = _claims(browser, flow, params)
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["acr"] == ACR_MFA


def test_second_step_with_totp_and_replay_refused(browser: TestClient, mfa_services: Services,
                                                  clock: FakeClock) -> None:
    """The next sign-in asks for the app's code; the same code is never accepted twice (RFC 6238 5.2)."""
    add_user(mfa_services)
    app = add_client(mfa_services, trusted=True)
    secret, _ = _first_login_with_enrollment(browser, Flow(app), clock)
    clock.advance(seconds=60)
    flow = Flow(app)
    step = _sign_in_again(browser, flow)
    assert step.status_code == 303 and "/factor" in step.headers["location"]
    page = browser.get(step.headers["location"])
    assert 'autocomplete="one-time-code"' in page.text and 'inputmode="numeric"' in page.text
    assert 'data-method="recovery"' in page.text
    code = pyotp.TOTP(secret).at(clock())
    done = browser.post(step.headers["location"], data={"method": "totp", "code": code,
                                                        "csrf_token": csrf_of(page.text)})
    claims = _claims(browser, flow, query_of(finish(browser, done)))
    assert claims["amr"] == ["pwd", "otp", "mfa"]

    again = Flow(app)
    step = _sign_in_again(browser, again)
    page = browser.get(step.headers["location"])
    replay = browser.post(step.headers["location"], data={"method": "totp", "code": code,
                                                          "csrf_token": csrf_of(page.text)})
    assert replay.status_code == 200 and "not valid" in replay.text


def test_recovery_code_works_once(browser: TestClient, mfa_services: Services, clock: FakeClock) -> None:
    """A recovery code replaces the second factor once; the same code is refused afterwards."""
    add_user(mfa_services)
    app = add_client(mfa_services, trusted=True)
    login = browser.get(Flow(app).url()).headers["location"]
    response = browser.get(submit_login(browser, login).headers["location"])
    _, activated = _enroll_totp(browser, response.headers["location"], clock)
    code = re.findall(r"<li><code>([A-Z2-7-]+)</code></li>", activated.text)[0]
    for expected in ("ok", "refused"):
        flow = Flow(app)
        step = _sign_in_again(browser, flow)
        url = step.headers["location"] + "?method=recovery"
        page = browser.get(url)
        answer = browser.post(step.headers["location"], data={"method": "recovery", "code": code.lower(),
                                                             "csrf_token": csrf_of(page.text)})
        if expected == "ok":
            assert answer.status_code == 303
            assert _claims(browser, flow, query_of(finish(browser, answer)))["amr"] == ["pwd", "otp", "mfa"]
        else:
            assert answer.status_code == 200 and "not valid" in answer.text


def test_wrong_codes_are_throttled(browser: TestClient, mfa_services: Services, clock: FakeClock) -> None:
    """After five wrong codes even the right one waits (429), like passwords."""
    add_user(mfa_services)
    app = add_client(mfa_services, trusted=True)
    secret, _ = _first_login_with_enrollment(browser, Flow(app), clock)
    clock.advance(seconds=30)
    step = _sign_in_again(browser, Flow(app))
    page = browser.get(step.headers["location"])
    token = csrf_of(page.text)
    for _ in range(5):
        answer = browser.post(step.headers["location"], data={"method": "totp", "code": "123456",
                                                             "csrf_token": token})
        assert answer.status_code == 200
    blocked = browser.post(step.headers["location"], data={"method": "totp", "code": pyotp.TOTP(secret).at(clock()),
                                                          "csrf_token": token})
    assert blocked.status_code == 429


def test_trusted_browser_skips_the_second_factor_and_says_so(browser: TestClient, mfa_services: Services,
                                                             clock: FakeClock) -> None:
    """A browser trusted after a second factor asks only for the password later that day; the token names
    the trusted browser in amr instead of claiming a factor that was not used."""
    add_user(mfa_services)
    app = add_client(mfa_services, trusted=True)
    secret, _ = _first_login_with_enrollment(browser, Flow(app), clock)
    clock.advance(seconds=60)
    step = _sign_in_again(browser, Flow(app))
    page = browser.get(step.headers["location"])
    assert 'name="trust_device"' in page.text
    done = browser.post(step.headers["location"], data={"method": "totp", "code": pyotp.TOTP(secret).at(clock()),
                                                       "csrf_token": csrf_of(page.text), "trust_device": "yes"})
    assert "__Host-idp_trusted=" in done.headers["set-cookie"]
    finish(browser, done)

    flow = Flow(app)
    response = _sign_in_again(browser, flow)
    claims = _claims(browser, flow, query_of(finish(browser, response)))
    assert claims["amr"] == ["pwd", "trusted-device"] and claims["acr"] == ACR_MFA

    # A phishing-resistant request is never satisfied by a trusted browser.
    phr = Flow(app, extra={"acr_values": "phr"})
    response = browser.get(phr.url())
    assert response.status_code == 303 and response.headers["location"].endswith("/enroll")

    # The trust is for the workday only.
    clock.advance(hours=13)
    response = _sign_in_again(browser, Flow(app))
    assert response.status_code == 303 and "/factor" in response.headers["location"]


def test_prompt_none_needing_a_second_factor_is_interaction_required(browser: TestClient, mfa_services: Services,
                                                                    clock: FakeClock) -> None:
    """prompt=none cannot show the second step: interaction_required back to the client (OIDC Core 3.1.2.6)."""
    add_user(mfa_services)
    app = add_client(mfa_services, trusted=True)
    login = browser.get(Flow(app).url()).headers["location"]
    submit_login(browser, login)  # password only: the session has no second factor yet
    response = browser.get(Flow(app, extra={"prompt": "none"}).url())
    assert response.status_code == 302
    params = query_of(response.headers["location"])
    assert params["error"] == "interaction_required" and params["iss"] == ISSUER


def test_step_up_asks_only_for_the_missing_factor(client: TestClient, services: Services, clock: FakeClock) -> None:
    """With MFA optional, a client that requires it gets a second-factor step without a new password, and the
    session then carries the factor for the next client too."""
    add_user(services)
    plain = add_client(services, trusted=True, name="Intranet")
    strict = add_client(services, trusted=True, name="E-Akte")
    with unit_of_work(services.sessions) as db:
        db.query(Client).filter(Client.client_id == strict.client_id).update({"require_mfa": True})
    flow = Flow(plain)
    login = client.get(flow.url()).headers["location"]
    claims = _claims(client, flow, query_of(finish(client, submit_login(client, login))))
    assert claims["amr"] == ["pwd"] and claims["acr"] == ACR_SFA

    strict_flow = Flow(strict)
    response = client.get(strict_flow.url())
    assert response.status_code == 303 and response.headers["location"].endswith("/enroll")
    secret, activated = _enroll_totp(client, response.headers["location"], clock)
    resume = re.search(r'href="(/authorize/resume/[^"]+)"', activated.text).group(1)  # type: ignore[union-attr]
    claims = _claims(client, strict_flow, query_of(finish(client, client.get(resume))))
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["acr"] == ACR_MFA
    assert secret


def test_acr_values_mfa_triggers_step_up(client: TestClient, services: Services, clock: FakeClock) -> None:
    """A client asking acr_values=…/mfa gets that level or nothing: never silently less."""
    add_user(services)
    app = add_client(services, trusted=True)
    login = client.get(Flow(app).url()).headers["location"]
    finish(client, submit_login(client, login))
    asking = Flow(app, extra={"acr_values": ACR_MFA})
    response = client.get(asking.url())
    assert response.status_code == 303 and response.headers["location"].endswith("/enroll")
    # Unknown acr values are ignored (OIDC: acr_values are voluntary unless essential).
    other = client.get(Flow(app, extra={"acr_values": "urn:example:unknown"}).url())
    assert other.status_code == 302 and "code=" in other.headers["location"]


def test_consent_cannot_jump_the_second_factor(browser: TestClient, mfa_services: Services) -> None:
    """Posting the consent form after the password alone does not issue a code when MFA is required."""
    add_user(mfa_services)
    app = add_client(mfa_services)
    login = browser.get(Flow(app).url()).headers["location"]
    submit_login(browser, login)
    tx = login.rsplit("/", 1)[1]
    page = browser.get(f"/consent/{tx}")
    assert page.status_code == 303 and page.headers["location"].endswith("/enroll")
    forged = browser.post(f"/consent/{tx}", data={"decision": "allow", "csrf_token": "x"})
    assert forged.status_code in (303, 403)
    assert "code=" not in forged.headers.get("location", "")


def _add_phone(services: Services, username: str = "erika") -> None:
    from idp.accounts.users import find_user
    from idp.factors import sms

    with unit_of_work(services.sessions) as db:
        user = find_user(db, username)
        assert user is not None
        factor = sms.add_phone(db, user, "0151 2345 6789", "Diensthandy", services.settings.sms, services.now())
        sms.confirm(db, factor, services.now())


def test_sms_second_step(browser: TestClient, mfa_services: Services, caplog: pytest.LogCaptureFixture) -> None:
    """A confirmed phone gets a code by SMS (log gateway: the code only at DEBUG), which completes the sign-in
    once; the token says sms, never otp."""
    add_user(mfa_services)
    _add_phone(mfa_services)
    app = add_client(mfa_services, trusted=True)
    flow = Flow(app)
    login = browser.get(flow.url()).headers["location"]
    step = browser.get(submit_login(browser, login).headers["location"])
    url = step.headers["location"]
    page = browser.get(url)
    assert 'id="sms-send-form"' in page.text
    with caplog.at_level("DEBUG", logger="idp.sms"):
        sent = browser.post(login + "/sms/send", data={"csrf_token": csrf_of(page.text)})
    assert sent.status_code == 200 and 'id="factor-notice"' in sent.text
    assert not [r for r in caplog.records if r.levelname == "INFO" and re.search(r"\b\d{6}\b", r.getMessage())]
    message = next(r.getMessage() for r in caplog.records if r.levelname == "DEBUG")
    code = re.findall(r"\b(\d{6})\b", message)[-1]  # the phone number's digits run longer than six
    done = browser.post(url, data={"method": "sms", "code": code, "csrf_token": csrf_of(sent.text)})
    claims = _claims(browser, flow, query_of(finish(browser, done)))
    assert claims["amr"] == ["pwd", "sms", "mfa"] and claims["acr"] == ACR_MFA


def test_with_two_phones_the_user_chooses_where_the_code_goes(browser: TestClient, mfa_services: Services,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A phone from the directory (sms_from_directory) and one of the user's own: the page offers both (masked,
    the directory's marked), the code goes to the one chosen and completes the sign-in there; an id that is not
    one of the user's confirmed phones is refused and sends nothing."""
    from idp.factors import sms
    from idp.models import SmsFactor

    add_user(mfa_services)
    add_user(mfa_services, "max")
    _add_phone(mfa_services)
    with unit_of_work(mfa_services.sessions) as db:
        erika, other = (user_row(db, name).id for name in ("erika", "max"))
        directory = SmsFactor(user_id=erika, name="Directory", phone="+4915199887766", managed_by="rathaus",
                              confirmed_at=mfa_services.now())
        foreign = SmsFactor(user_id=other, name="Handy", phone="+4915111122233", confirmed_at=mfa_services.now())
        db.add_all([directory, foreign])
        db.flush()
        directory_id, foreign_id = directory.id, foreign.id
    flow = Flow(add_client(mfa_services, trusted=True))
    login = browser.get(flow.url()).headers["location"]
    url = browser.get(submit_login(browser, login).headers["location"]).headers["location"]
    page = browser.get(url + "?method=sms")
    choices = re.findall(r'<input type="radio" id="sms-phone-(\d+)" name="phone_id" value="\d+"( checked)?>', page.text)
    assert len(choices) == 2 and sum(bool(checked) for _, checked in choices) == 1
    assert f"{sms.masked('+4915199887766')} (from the directory)" in page.text
    assert "99887766" not in page.text  # numbers are shown masked
    token = csrf_of(page.text)
    with caplog.at_level("DEBUG", logger="idp.sms"):
        refused = browser.post(login + "/sms/send", data={"csrf_token": token, "phone_id": str(foreign_id)})
        assert refused.status_code == 400 and not caplog.records
        sent = browser.post(login + "/sms/send", data={"csrf_token": token, "phone_id": str(directory_id)})
    assert sent.status_code == 200 and 'id="factor-notice"' in sent.text
    [message] = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert message.startswith("SMS to +4915199887766:")
    code = re.findall(r"\b(\d{6})\b", message)[-1]
    done = browser.post(url, data={"method": "sms", "code": code, "csrf_token": csrf_of(sent.text)})
    claims = _claims(browser, flow, query_of(finish(browser, done)))
    assert claims["amr"] == ["pwd", "sms", "mfa"]


def test_client_that_forbids_sms_never_accepts_it(browser: TestClient, mfa_services: Services) -> None:
    """A client for social-welfare data allows no SMS: it is not offered, and a posted SMS code is refused
    (security case 43)."""
    from idp.accounts.users import find_user
    from idp.factors import totp

    add_user(mfa_services)
    _add_phone(mfa_services)
    with unit_of_work(mfa_services.sessions) as db:
        user = find_user(db, "erika")
        assert user is not None
        factor, _ = totp.begin_enrollment(db, mfa_services.sealer, user, "App", mfa_services.now())
        factor.confirmed_at = mfa_services.now()
    app = add_client(mfa_services, trusted=True)
    with unit_of_work(mfa_services.sessions) as db:
        db.query(Client).filter(Client.client_id == app.client_id).update({"mfa_methods": ["webauthn", "totp"]})
    login = browser.get(Flow(app).url()).headers["location"]
    step = browser.get(submit_login(browser, login).headers["location"])
    page = browser.get(step.headers["location"])
    assert page.status_code == 200
    assert 'data-method="sms"' not in page.text and 'id="sms-send-form"' not in page.text
    token = csrf_of(page.text)
    posted = browser.post(step.headers["location"], data={"method": "sms", "code": "123456", "csrf_token": token})
    assert posted.status_code == 400 and "cannot be used here" in posted.text
    send = browser.post(login + "/sms/send", data={"csrf_token": token})
    assert send.status_code == 400


def test_totp_user_asked_for_phr_proves_totp_then_enrolls_a_key(browser: TestClient, mfa_services: Services,
                                                                clock: FakeClock) -> None:
    """A request for phr from a user with only an app: the app proves it is them first (no stolen password
    can add an authenticator), then the enrollment of a security key opens."""
    add_user(mfa_services)
    app = add_client(mfa_services, trusted=True)
    secret, _ = _first_login_with_enrollment(browser, Flow(app), clock)
    clock.advance(seconds=60)
    flow = Flow(app, extra={"acr_values": "phr", "prompt": "login"})
    login = browser.get(flow.url()).headers["location"]
    step = browser.get(submit_login(browser, login).headers["location"])
    # No factor of hers counts for phr, and the password alone may not enroll one.
    enroll = browser.get(step.headers["location"]) if step.headers["location"].endswith("/enroll") else step
    assert enroll.status_code == 303 and enroll.headers["location"].endswith("/factor")
    page = browser.get(enroll.headers["location"])
    assert 'id="factor-proving"' in page.text and 'data-method="totp"' not in page.text  # totp is the chosen one
    done = browser.post(login + "/factor", data={"method": "totp", "code": pyotp.TOTP(secret).at(clock()),
                                                "csrf_token": csrf_of(page.text)})
    after = browser.get(done.headers["location"])
    assert after.status_code == 303 and after.headers["location"].endswith("/enroll")
    choices = browser.get(after.headers["location"])
    assert 'data-method="webauthn"' in choices.text and 'data-method="totp"' not in choices.text


def test_trusted_browser_cookie_does_nothing_for_another_user(browser: TestClient, mfa_services: Services,
                                                              clock: FakeClock) -> None:
    """A trusted-browser cookie copied into another user's browser still leaves that user's second factor to
    be asked (security case 50): the cookie is bound to the user who trusted the browser."""
    add_user(mfa_services)
    add_user(mfa_services, "max", email="max@musterstadt.de")
    app = add_client(mfa_services, trusted=True)
    secret, _ = _first_login_with_enrollment(browser, Flow(app), clock)
    clock.advance(seconds=60)
    step = _sign_in_again(browser, Flow(app))
    page = browser.get(step.headers["location"])
    done = browser.post(step.headers["location"], data={"method": "totp", "code": pyotp.TOTP(secret).at(clock()),
                                                       "csrf_token": csrf_of(page.text), "trust_device": "yes"})
    trusted = re.search(r"__Host-idp_trusted=([^;]+)", done.headers["set-cookie"]).group(1)  # type: ignore[union-attr]

    with TestClient(create_app(services=mfa_services), base_url=ISSUER, follow_redirects=False) as other:
        other.cookies.set("__Host-idp_trusted", trusted, domain="idp.test", path="/")
        login = other.get(Flow(app).url()).headers["location"]
        response = submit_login(other, login, username="max")
        step = other.get(response.headers["location"])
        assert step.status_code == 303 and step.headers["location"].endswith("/enroll")

    # Control: the same cookie in a fresh browser does spare erika her second factor, so it was sent above.
    with TestClient(create_app(services=mfa_services), base_url=ISSUER, follow_redirects=False) as hers:
        hers.cookies.set("__Host-idp_trusted", trusted, domain="idp.test", path="/")
        login = hers.get(Flow(app).url()).headers["location"]
        response = hers.get(submit_login(hers, login).headers["location"])
        assert response.status_code == 302 and "code=" in response.headers["location"]

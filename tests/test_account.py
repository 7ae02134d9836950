"""The self-service account pages under /account (issue 3 sections 5, 7 and 8).

Signing in to /account, the list of factors, codes, trusted browsers and sessions; adding an authenticator app,
a phone (through an HTTP gateway on loopback) and a security key (the JSON endpoints of webauthn.js, answered by
the soft authenticator); recovery codes; renaming and removing with the 5-minute re-authentication (NIST SP
800-63B-4 4.1.2.1); CSRF; one user's ids against another user's factors (security case 38); signing out.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from idp.accounts.sessions import create_session
from idp.app import create_app
from idp.audit import Origin
from idp.db import unit_of_work
from idp.factors import enrolled, recovery, sms, totp, trusted_devices
from idp.models import (
    AuditEvent,
    RecoveryCode,
    SmsFactor,
    SsoSession,
    TotpFactor,
    TrustedDevice,
    WebAuthnCredential,
)
from idp.services import Services, build_services
from idp.web import cookies
from tests.conftest import ISSUER, FakeClock, make_settings
from tests.helpers import (
    LOGIN_PAGE,
    Flow,
    add_client,
    add_user,
    authorize,
    csrf_of,
    exchange,
    open_page,
    seed_totp,
    submit_login,
    through_sign_in,
    user_row,
)
from tests.soft_authenticator import SoftAuthenticator

CODES = re.compile(r"<li><code>([A-Z2-7-]+)</code></li>")
MOBILE_E164 = "+4915112345678"
MASKED = sms.masked(MOBILE_E164)


# --- fixtures and helpers ---------------------------------------------------------------------------------------


def _strict(backend: tuple[str, Engine], tmp_path: Path, clock: FakeClock, **env: str) -> Services:
    strict = build_services(make_settings(tmp_path, backend[0], **env), engine=backend[1])
    strict.clock = clock
    return strict


@pytest.fixture
def mfa_services(backend: tuple[str, Engine], services: Services, tmp_path: Path, clock: FakeClock) -> Services:
    """The shipped default: every sign-in needs a second factor (``services`` empties the tables first)."""
    return _strict(backend, tmp_path, clock, IDP_MFA_DEFAULT="required")


@pytest.fixture
def mfa_browser(mfa_services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=mfa_services), base_url=ISSUER, follow_redirects=False) as browser:
        yield browser


def _other_browser(browser: TestClient) -> TestClient:
    """A second browser on the same server (its own cookies)."""
    return TestClient(browser.app, base_url=ISSUER, follow_redirects=False)


def seed_phone(services: Services, username: str = "erika", *, confirmed: bool = True) -> int:
    with unit_of_work(services.sessions) as db:
        factor = sms.add_phone(db, user_row(db, username), MOBILE_E164, "Diensthandy", services.settings.sms,
                               services.now() - timedelta(days=1))
        if confirmed:
            sms.confirm(db, factor, services.now() - timedelta(days=1))
        return factor.id


def seed_codes(services: Services, username: str = "erika") -> list[str]:
    with unit_of_work(services.sessions) as db:
        return recovery.regenerate(db, services.passwords, user_row(db, username), services.now())


def seed_trusted(services: Services, username: str = "erika") -> tuple[int, str]:
    with unit_of_work(services.sessions) as db:
        value, row = trusted_devices.trust(db, services.hasher, user_row(db, username), lifetime=timedelta(hours=12),
                                           user_agent="Firefox/128.0 (Rathaus)", now=services.now())
        return row.id, value


def seed_session(services: Services, username: str = "erika") -> int:
    with unit_of_work(services.sessions) as db:
        _, row = create_session(db, services.hasher, services.settings.session, user_row(db, username), amr=["pwd"],
                                acr=None, now=services.now(),
                                origin=Origin(ip="198.51.100.7", user_agent="Mozilla/5.0 Edge/120"))
        return row.id


def events(services: Services, name: str) -> list[AuditEvent]:
    with unit_of_work(services.sessions) as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.event == name).order_by(AuditEvent.id)))


def _wrong_code(secret: str, clock: FakeClock) -> str:
    valid = {pyotp.TOTP(secret).at(clock() + timedelta(seconds=30 * step)) for step in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in valid)


def _secret_on(page: Any) -> str:
    match = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page.text)
    assert match, "the page shows no key"
    return match.group(1).replace(" ", "")


def _field(page: Any, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', page.text)
    assert match, f"no {name} field"
    return match.group(1)


def _code_input(page: Any) -> None:
    tag = re.search(r'<input[^>]*name="code"[^>]*>', page.text, re.S)
    assert tag, "no code input"
    assert 'autocomplete="one-time-code"' in tag.group(0) and 'inputmode="numeric"' in tag.group(0)


# --- signing in to /account -------------------------------------------------------------------------------------


def test_account_without_session_goes_through_sign_in_and_back(client: TestClient, services: Services,
                                                               clock: FakeClock) -> None:
    """Without a session /account starts a sign-in of the IdP's own (no client) that ends back at /account."""
    add_user(services)
    response = client.get("/account")
    assert response.status_code == 303 and response.headers["location"].startswith("/authorize/resume/")
    login = client.get(response.headers["location"])
    assert login.status_code == 303 and LOGIN_PAGE.fullmatch(login.headers["location"])
    page = through_sign_in(client, login, clock)
    assert page.status_code == 200 and page.url.path == "/account"
    assert 'id="account-factors"' in page.text and "erika" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "unsafe-inline" not in page.headers["content-security-policy"]


def test_account_needs_the_second_factor_where_policy_requires_it(mfa_browser: TestClient, mfa_services: Services,
                                                                  clock: FakeClock) -> None:
    """With MFA required, the password alone does not open /account: the second step comes first."""
    add_user(mfa_services)
    _, secret = seed_totp(mfa_services)
    visited: list[str] = []
    page = through_sign_in(mfa_browser, mfa_browser.get("/account"), clock, secret=secret, visited=visited)
    assert page.status_code == 200 and page.url.path == "/account"
    assert any(location.endswith("/factor") for location in visited)


def test_account_without_any_factor_leads_to_enrollment_where_required(mfa_browser: TestClient,
                                                                       mfa_services: Services,
                                                                       clock: FakeClock) -> None:
    """A user who must use MFA and has no factor is sent to enrollment after the password, not to /account."""
    add_user(mfa_services)
    response = mfa_browser.get("/account")
    response = mfa_browser.get(response.headers["location"])
    response = submit_login(mfa_browser, response.headers["location"])
    response = mfa_browser.get(response.headers["location"])
    assert response.status_code == 303 and response.headers["location"].endswith("/enroll")


def test_a_user_in_the_grace_period_enrolls_in_account(backend: tuple[str, Engine], services: Services,
                                                      tmp_path: Path, clock: FakeClock) -> None:
    """Where MFA is required with a grace period, a user without a factor who skips enrollment at sign-in
    still reaches /account, adds an app there with the password alone, and then has the factor."""
    strict = _strict(backend, tmp_path, clock, IDP_MFA_DEFAULT="required", IDP_MFA_GRACE_DAYS="7")
    add_user(strict)
    with TestClient(create_app(services=strict), base_url=ISSUER, follow_redirects=False) as browser:
        response = browser.get(browser.get("/account").headers["location"])
        response = browser.get(submit_login(browser, response.headers["location"]).headers["location"])
        assert response.status_code == 303 and response.headers["location"].endswith("/enroll")
        choice = browser.get(response.headers["location"])
        assert 'id="enroll-skip-form"' in choice.text
        skipped = browser.post(response.headers["location"] + "/skip", data={"csrf_token": csrf_of(choice.text)})
        account = browser.get(browser.get(skipped.headers["location"]).headers["location"])
        assert account.status_code == 200 and account.url.path == "/account" and 'id="no-factors"' in account.text
        page = browser.get("/account/totp")
        assert page.status_code == 200
        secret = _secret_on(page)
        done = browser.post("/account/totp", data={"csrf_token": csrf_of(page.text), "handle": _field(page, "handle"),
                                                   "code": pyotp.TOTP(secret).at(clock())})
        assert done.status_code == 200 and len(CODES.findall(done.text)) == 10
        after = browser.get("/account")
        assert after.status_code == 200 and 'class="factor"' in after.text


def test_idle_session_signs_in_again(client: TestClient, services: Services, clock: FakeClock) -> None:
    """After an hour without activity the account pages ask for the password again (NIST SP 800-63B-4 2.2.3)."""
    add_user(services)
    open_page(client, "/account", clock)
    clock.advance(minutes=61)
    response = client.get("/account")
    assert response.status_code == 303
    visited: list[str] = []
    page = through_sign_in(client, response, clock, visited=visited)
    assert page.url.path == "/account" and any(LOGIN_PAGE.fullmatch(v) for v in visited)


# --- the overview -----------------------------------------------------------------------------------------------


def test_account_lists_factors_codes_trusted_browsers_and_sessions(client: TestClient, services: Services,
                                                                   clock: FakeClock) -> None:
    """The page lists each factor (type, name, created, last used), the number of unused codes, trusted browsers
    and the active sessions with IP and browser, the current one marked."""
    add_user(services)
    totp_id, _ = seed_totp(services, name="Diensthandy App")
    seed_phone(services)
    with unit_of_work(services.sessions) as db:
        pending, _ = totp.begin_enrollment(db, services.sealer, user_row(db), "Not yet active", services.now())
        db.get(TotpFactor, totp_id).last_used_at = services.now()  # type: ignore[union-attr]
    codes = seed_codes(services)
    with unit_of_work(services.sessions) as db:
        assert recovery.use(db, services.passwords, user_row(db), codes[0], services.now())
    seed_trusted(services)
    other = seed_session(services)
    page = open_page(client, "/account", clock)
    text = page.text
    assert "Diensthandy App" in text and "Authenticator app" in text
    assert "Not yet active" not in text
    assert "Diensthandy" in text and MASKED in text and MOBILE_E164 not in text
    assert text.count('class="factor"') == 2
    assert "not used yet" in text and "last used" in text
    assert re.search(r'id="recovery-remaining">9<', text)
    assert "Firefox/128.0 (Rathaus)" in text and 'action="/account/trusted/' in text
    assert len(re.findall(r'class="session( current)?"', text)) == 2
    assert re.search(r'class="session current" data-id="\d+" aria-current="true"', text)
    assert f'data-id="{other}"' in text and "198.51.100.7" in text and "Mozilla/5.0 Edge/120" in text
    assert 'id="sign-out-everywhere"' in text
    for method in ("totp", "webauthn", "sms", "recovery"):
        assert f'data-method="{method}"' in text


def test_methods_the_policy_forbids_are_not_offered(backend: tuple[str, Engine], services: Services,
                                                    tmp_path: Path, clock: FakeClock) -> None:
    """Where the policy allows no SMS (a restricted authenticator), /account offers no phone and refuses one."""
    strict = _strict(backend, tmp_path, clock, IDP_MFA_METHODS="webauthn,totp")
    add_user(strict)
    with TestClient(create_app(services=strict), base_url=ISSUER, follow_redirects=False) as browser:
        page = open_page(browser, "/account", clock)
        assert 'data-method="sms"' not in page.text and 'data-method="totp"' in page.text
        assert browser.get("/account/phone").status_code == 403
        refused = browser.post("/account/phone", data={"phone": MOBILE_E164, "csrf_token": csrf_of(page.text)})
        assert refused.status_code == 403
    with unit_of_work(strict.sessions) as db:
        assert db.scalars(select(SmsFactor)).all() == []


# --- adding an authenticator app --------------------------------------------------------------------------------


def test_totp_enrollment_through_the_pages(client: TestClient, services: Services, clock: FakeClock) -> None:
    """QR code, otpauth link and key in groups of four; the factor is inactive until the first valid code, a wrong
    code is refused and audited, the right one activates it and shows the first ten recovery codes once."""
    add_user(services)
    page = open_page(client, "/account/totp", clock)
    assert page.headers["cache-control"] == "no-store"
    assert re.search(r'<a href="otpauth://totp/[^"]+" id="otpauth-link"', page.text)
    assert "<svg" in page.text
    assert re.search(r'id="totp-secret">[A-Z2-7]{4}( [A-Z2-7]{4})+<', page.text)
    _code_input(page)
    secret = _secret_on(page)
    assert len(secret) >= 32
    with unit_of_work(services.sessions) as db:
        assert enrolled.factors_of(db, user_row(db)) == []
        [pending] = db.scalars(select(TotpFactor)).all()
        assert pending.confirmed_at is None and secret.encode() not in pending.secret_sealed
    assert 'id="no-factors"' in client.get("/account").text

    form = {"csrf_token": csrf_of(page.text), "handle": _field(page, "handle"), "name": " Dienst\thandy "}
    wrong = client.post("/account/totp", data={**form, "code": _wrong_code(secret, clock)})
    assert wrong.status_code == 200 and 'role="alert"' in wrong.text
    assert _secret_on(wrong) == secret
    with unit_of_work(services.sessions) as db:
        assert enrolled.factors_of(db, user_row(db)) == []
    [failure] = events(services, "factor.enrollment")
    assert failure.outcome == "failure" and failure.details["reason"] == "wrong_code"

    done = client.post("/account/totp", data={**form, "code": pyotp.TOTP(secret).at(clock())})
    assert done.status_code == 200, done.text
    assert 'id="recovery-codes"' in done.text
    codes = CODES.findall(done.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    with unit_of_work(services.sessions) as db:
        [factor] = enrolled.factors_of(db, user_row(db))
        assert (factor.kind, factor.name) == ("totp", "Dienst handy")
        assert recovery.remaining(db, user_row(db)) == 10
        session = db.scalars(select(SsoSession)).one()
        assert "totp" in session.methods and "otp" in session.amr
    [enrolled_event] = events(services, "factor.enrolled")
    assert enrolled_event.details["kind"] == "totp" and enrolled_event.actor is not None
    assert enrolled_event.ip is not None and enrolled_event.user_agent
    assert secret not in json.dumps(enrolled_event.details)
    assert [e.outcome for e in events(services, "recovery_codes.generated")] == ["success"]

    # The same form cannot confirm the factor twice, and a second app brings no second set of codes.
    again = client.post("/account/totp", data={**form, "code": pyotp.TOTP(secret).at(clock())})
    assert again.status_code == 400
    clock.advance(seconds=30)
    second = client.get("/account/totp")
    assert second.status_code == 200
    other_secret = _secret_on(second)
    assert other_secret != secret
    added = client.post("/account/totp", data={"csrf_token": csrf_of(second.text), "handle": _field(second, "handle"),
                                               "code": pyotp.TOTP(other_secret).at(clock())})
    assert added.status_code == 303 and added.headers["location"] == "/account"


def test_unconfirmed_totp_signs_nobody_in(mfa_browser: TestClient, mfa_services: Services,
                                          clock: FakeClock) -> None:
    """An app added but never confirmed is no factor: the next sign-in still asks for enrollment."""
    add_user(mfa_services)
    with unit_of_work(mfa_services.sessions) as db:
        totp.begin_enrollment(db, mfa_services.sealer, user_row(db), "Half done", mfa_services.now())
    response = mfa_browser.get("/account")
    response = mfa_browser.get(response.headers["location"])
    response = mfa_browser.get(submit_login(mfa_browser, response.headers["location"]).headers["location"])
    assert response.headers["location"].endswith("/enroll")


def test_totp_enrollment_is_throttled(client: TestClient, services: Services, clock: FakeClock) -> None:
    """Wrong codes at enrollment count like wrong codes at sign-in: after five, even the right one waits."""
    add_user(services)
    page = open_page(client, "/account/totp", clock)
    secret = _secret_on(page)
    form = {"csrf_token": csrf_of(page.text), "handle": _field(page, "handle")}
    for _ in range(5):
        assert client.post("/account/totp", data={**form, "code": _wrong_code(secret, clock)}).status_code == 200
    blocked = client.post("/account/totp", data={**form, "code": pyotp.TOTP(secret).at(clock())})
    assert blocked.status_code == 429
    with unit_of_work(services.sessions) as db:
        assert enrolled.factors_of(db, user_row(db)) == []


# --- recovery codes ---------------------------------------------------------------------------------------------


def test_regenerating_recovery_codes_invalidates_the_old_set(client: TestClient, services: Services,
                                                             clock: FakeClock) -> None:
    """New codes are shown once inside #recovery-codes, one per <code>; every old code stops working."""
    add_user(services)
    _, secret = seed_totp(services)
    old = seed_codes(services)
    page = open_page(client, "/account/recovery-codes", clock, secret=secret)
    assert re.search(r'id="recovery-remaining">10<', page.text) and 'data-method="recovery"' in page.text
    response = client.post("/account/recovery-codes", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 200
    assert re.search(r'<ul id="recovery-codes"[^>]*>\s*(<li><code>[A-Z2-7-]+</code></li>\s*){10}</ul>', response.text)
    new = CODES.findall(response.text)
    assert len(new) == 10 and not set(new) & set(old)
    with unit_of_work(services.sessions) as db:
        user = user_row(db)
        assert len(db.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id)).all()) == 10
        assert not recovery.use(db, services.passwords, user, old[0], services.now())
        assert recovery.use(db, services.passwords, user, new[0], services.now())
    [event] = events(services, "recovery_codes.regenerated")
    assert event.details["count"] == 10 and not any(code in json.dumps(event.details) for code in new)


def test_recovery_codes_need_a_factor(client: TestClient, services: Services, clock: FakeClock) -> None:
    """Codes stand in for a second factor: without one, none are made."""
    add_user(services)
    page = open_page(client, "/account/recovery-codes", clock)
    assert 'id="recovery-form"' not in page.text
    token = csrf_of(client.get("/account").text)
    assert client.post("/account/recovery-codes", data={"csrf_token": token}).status_code == 409
    assert client.get("/account/recovery-codes/first").headers["location"] == "/account"
    with unit_of_work(services.sessions) as db:
        assert recovery.remaining(db, user_row(db)) == 0


# --- renaming and removing --------------------------------------------------------------------------------------


def test_rename_and_remove_within_the_five_minutes(client: TestClient, services: Services, clock: FakeClock) -> None:
    """Right after signing in (with the second factor) a factor is renamed and removed, both audited; the last
    one takes the recovery codes with it where MFA is optional."""
    add_user(services)
    totp_id, secret = seed_totp(services)
    phone_id = seed_phone(services)
    seed_codes(services)
    page = open_page(client, f"/account/factors/totp/{totp_id}", clock, secret=secret)
    assert 'id="rename-form"' in page.text and 'id="remove-form"' in page.text
    token = csrf_of(page.text)
    renamed = client.post(f"/account/factors/totp/{totp_id}/rename", data={"csrf_token": token,
                                                                          "name": "  Neues\nHandy "})
    assert renamed.status_code == 303 and renamed.headers["location"] == "/account"
    removed = client.post(f"/account/factors/sms/{phone_id}/remove", data={"csrf_token": token})
    assert removed.status_code == 303
    with unit_of_work(services.sessions) as db:
        [factor] = enrolled.factors_of(db, user_row(db))
        assert (factor.kind, factor.name) == ("totp", "Neues Handy")
        assert db.get(SmsFactor, phone_id) is None
    [rename_event] = events(services, "factor.renamed")
    assert rename_event.details["previous_name"] == "Phone app" and rename_event.details["name"] == "Neues Handy"
    assert events(services, "factor.removed")[0].details["kind"] == "sms"

    last = client.post(f"/account/factors/totp/{totp_id}/remove", data={"csrf_token": token})
    assert last.status_code == 303
    with unit_of_work(services.sessions) as db:
        assert enrolled.factors_of(db, user_row(db)) == []
        assert db.scalars(select(RecoveryCode)).all() == []
    assert events(services, "factor.removed")[-1].details["recovery_codes_removed"] == 10


def test_changes_after_five_minutes_need_a_fresh_sign_in(client: TestClient, services: Services,
                                                         clock: FakeClock) -> None:
    """Six minutes later a rename is not applied: the browser signs in again, password and second factor even
    where MFA is optional (the user has one), and comes back to the factor's page."""
    add_user(services)
    totp_id, secret = seed_totp(services)
    page = open_page(client, f"/account/factors/totp/{totp_id}", clock, secret=secret)
    clock.advance(minutes=6)
    stale = client.post(f"/account/factors/totp/{totp_id}/rename", data={"csrf_token": csrf_of(page.text),
                                                                        "name": "Too late"})
    assert stale.status_code == 303 and stale.headers["location"].startswith("/authorize/resume/")
    removed = client.post(f"/account/factors/totp/{totp_id}/remove", data={"csrf_token": csrf_of(page.text)})
    assert removed.status_code == 303 and removed.headers["location"].startswith("/authorize/resume/")
    with unit_of_work(services.sessions) as db:
        [factor] = enrolled.factors_of(db, user_row(db))
        assert factor.name == "Phone app"
    assert events(services, "factor.renamed") == [] and events(services, "factor.removed") == []
    assert client.get(f"/account/factors/totp/{totp_id}").status_code == 303
    assert client.get("/account/totp").status_code == 303
    assert client.get("/account").status_code == 200  # looking needs no fresh sign-in

    visited: list[str] = []
    # A password is asked although the session is active, then the app's code (30 s later: no loop back).
    again = through_sign_in(client, stale, clock, secret=secret, visited=visited)
    assert again.status_code == 200 and again.url.path == f"/account/factors/totp/{totp_id}"
    assert any(LOGIN_PAGE.fullmatch(v) for v in visited) and any(v.endswith("/factor") for v in visited)
    renamed = client.post(f"/account/factors/totp/{totp_id}/rename", data={"csrf_token": csrf_of(again.text),
                                                                          "name": "In time"})
    assert renamed.status_code == 303 and renamed.headers["location"] == "/account"


def test_a_trusted_browser_does_not_count_as_re_authentication(mfa_browser: TestClient, mfa_services: Services,
                                                               clock: FakeClock) -> None:
    """A browser trusted for the workday opens /account with the password, but removing a factor asks for the
    second factor itself."""
    add_user(mfa_services)
    totp_id, secret = seed_totp(mfa_services)
    seed_phone(mfa_services)
    _, value = seed_trusted(mfa_services)
    mfa_browser.cookies.set(cookies.cookie_name(mfa_services.settings, trusted_devices.COOKIE), value)
    visited: list[str] = []
    page = through_sign_in(mfa_browser, mfa_browser.get("/account"), clock, visited=visited)
    assert page.url.path == "/account" and not any(v.endswith("/factor") for v in visited)
    assert "(this browser)" in page.text
    response = mfa_browser.get(f"/account/factors/totp/{totp_id}")
    assert response.status_code == 303
    visited.clear()
    page = through_sign_in(mfa_browser, response, clock, secret=secret, visited=visited)
    assert page.url.path == f"/account/factors/totp/{totp_id}"
    assert any(v.endswith("/factor") for v in visited)


def test_the_last_factor_cannot_be_removed_where_mfa_is_required(mfa_browser: TestClient, mfa_services: Services,
                                                                 clock: FakeClock) -> None:
    """With MFA required the only factor stays (409, audited); once a second one exists, either may go."""
    add_user(mfa_services)
    totp_id, secret = seed_totp(mfa_services)
    page = open_page(mfa_browser, f"/account/factors/totp/{totp_id}", clock, secret=secret)
    assert 'id="remove-form"' not in page.text and 'id="remove-refused"' in page.text
    refused = mfa_browser.post(f"/account/factors/totp/{totp_id}/remove", data={"csrf_token": csrf_of(page.text)})
    assert refused.status_code == 409 and "last second factor" in refused.text
    with unit_of_work(mfa_services.sessions) as db:
        assert len(enrolled.factors_of(db, user_row(db))) == 1
    [event] = events(mfa_services, "factor.removed")
    assert event.outcome == "failure" and event.details["reason"] == "last_factor"

    seed_phone(mfa_services)
    removed = mfa_browser.post(f"/account/factors/totp/{totp_id}/remove", data={"csrf_token": csrf_of(page.text)})
    assert removed.status_code == 303
    with unit_of_work(mfa_services.sessions) as db:
        assert [f.kind for f in enrolled.factors_of(db, user_row(db))] == ["sms"]


# --- CSRF and other users' ids ----------------------------------------------------------------------------------


def test_posts_without_a_valid_csrf_token_are_refused(client: TestClient, services: Services,
                                                      clock: FakeClock) -> None:
    """No token, a forged one, one from another session of the same user, or another form's purpose: 403 for
    every change, and nothing changes (OWASP ASVS 3.5.1)."""
    add_user(services)
    totp_id, secret = seed_totp(services)
    seed_codes(services)
    device_id, _ = seed_trusted(services)
    page = open_page(client, f"/account/factors/totp/{totp_id}", clock, secret=secret)
    mine = csrf_of(page.text)
    other = _other_browser(client)
    foreign = csrf_of(open_page(other, "/account", clock, secret=secret).text)
    with unit_of_work(services.sessions) as db:
        session_ids = [row.id for row in db.scalars(select(SsoSession))]
    posts = [
        (f"/account/factors/totp/{totp_id}/rename", {"name": "Forged"}),
        (f"/account/factors/totp/{totp_id}/remove", {}),
        ("/account/recovery-codes", {}),
        ("/account/totp", {"handle": "x", "code": "123456"}),
        ("/account/phone", {"phone": MOBILE_E164}),
        (f"/account/trusted/{device_id}/revoke", {}),
        (f"/account/sessions/{session_ids[0]}/end", {}),
        ("/account/sessions/end-all", {}),
    ]
    for path, data in posts:
        for token in (None, "forged", foreign, mine[:-2] + "xx"):
            fields = {**data, **({"csrf_token": token} if token else {"confirm": "yes"})}
            response = client.post(path, data=fields)
            assert response.status_code == 403, (path, token, response.status_code)
    options = client.post("/account/webauthn/options", json={"csrf_token": foreign})
    assert options.status_code == 403 and "error" in options.json()
    with unit_of_work(services.sessions) as db:
        [factor] = enrolled.factors_of(db, user_row(db))
        assert factor.name == "Phone app"
        assert recovery.remaining(db, user_row(db)) == 10
        assert all(row.ended_at is None for row in db.scalars(select(SsoSession)))
        assert db.get(TrustedDevice, device_id).revoked_at is None  # type: ignore[union-attr]
        assert db.scalars(select(SmsFactor)).all() == []
    assert client.get("/account").status_code == 200 and other.get("/account").status_code == 200


def test_one_users_ids_cannot_touch_another_users_factors(client: TestClient, services: Services,
                                                          clock: FakeClock) -> None:
    """Erika, freshly signed in, aims every id of Bob's at the account pages: 404 (or an expired setup) each
    time, and none of Bob's rows changes (security case 38; Keycloak CVE-2026-37982)."""
    add_user(services)
    add_user(services, "bob")
    erika_totp, erika_secret = seed_totp(services)
    bob_totp, _ = seed_totp(services, "bob", name="Bobs app")
    bob_phone = seed_phone(services, "bob", confirmed=False)
    bob_device, _ = seed_trusted(services, "bob")
    bob_session = seed_session(services, "bob")
    with unit_of_work(services.sessions) as db:
        pending, bob_secret = totp.begin_enrollment(db, services.sealer, user_row(db, "bob"), "Bobs new app",
                                                    services.now())
        bob_handle = pending.handle
    page = open_page(client, f"/account/factors/totp/{erika_totp}", clock, secret=erika_secret)
    token = csrf_of(page.text)
    assert client.get(f"/account/factors/totp/{bob_totp}").status_code == 404
    assert client.get(f"/account/factors/sms/{bob_phone}").status_code == 404
    for guessed in ("0", "999999999", "99999999999999999999", "abc", "-1", "1e3", "%00"):
        # A NUL in the path is refused before routing (400); every other guess is a 404.
        assert client.get(f"/account/factors/totp/{guessed}").status_code in (400, 404), guessed
        assert client.post(f"/account/factors/totp/{guessed}/remove", data={"csrf_token": token}
                           ).status_code in (400, 404), guessed
    assert client.get(f"/account/factors/password/{erika_totp}").status_code == 404
    refused = [
        client.post(f"/account/factors/totp/{bob_totp}/rename", data={"csrf_token": token, "name": "Mine"}),
        client.post(f"/account/factors/totp/{bob_totp}/remove", data={"csrf_token": token}),
        client.get(f"/account/phone/{bob_phone}"),
        client.post(f"/account/phone/{bob_phone}", data={"csrf_token": token, "code": "123456"}),
        client.post(f"/account/phone/{bob_phone}/resend", data={"csrf_token": token}),
        client.post(f"/account/sessions/{bob_session}/end", data={"csrf_token": token}),
        client.post(f"/account/trusted/{bob_device}/revoke", data={"csrf_token": token}),
    ]
    assert [r.status_code for r in refused] == [404] * len(refused)
    hijack = client.post("/account/totp", data={"csrf_token": token, "handle": bob_handle,
                                                "code": pyotp.TOTP(bob_secret).at(clock())})
    assert hijack.status_code == 400
    with unit_of_work(services.sessions) as db:
        bob = user_row(db, "bob")
        assert [(f.kind, f.name) for f in enrolled.factors_of(db, bob)] == [("totp", "Bobs app")]
        assert db.get(TotpFactor, pending.id).confirmed_at is None  # type: ignore[union-attr]
        assert db.get(SmsFactor, bob_phone).confirmed_at is None  # type: ignore[union-attr]
        assert db.get(SsoSession, bob_session).ended_at is None  # type: ignore[union-attr]
        assert db.get(TrustedDevice, bob_device).revoked_at is None  # type: ignore[union-attr]
        assert len(db.scalars(select(TotpFactor).where(TotpFactor.user_id == user_row(db).id)).all()) == 1
    assert events(services, "factor.renamed") == [] and events(services, "factor.enrolled") == []


# --- sessions and trusted browsers ------------------------------------------------------------------------------


def _tokens(browser: TestClient, app: Any, scope: str) -> dict[str, Any]:
    flow = Flow(app, scope=scope)
    params = authorize(browser, flow)
    response = exchange(browser, flow, params["code"])
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _refresh(browser: TestClient, app: Any, token: str) -> Any:
    return browser.post("/token", data={"grant_type": "refresh_token", "refresh_token": token},
                        auth=(app.client_id, app.client_secret))


def test_sign_out_of_another_session(client: TestClient, services: Services, clock: FakeClock) -> None:
    """"Sign out" on another browser's session ends it there: its tokens are revoked and it must sign in again."""
    add_user(services)
    app = add_client(services, trusted=True)
    laptop = _other_browser(client)
    laptop_tokens = _tokens(laptop, app, "openid profile")
    page = open_page(client, "/account", clock)
    current = re.search(r'class="session current" data-id="(\d+)"', page.text).group(1)  # type: ignore[union-attr]
    with unit_of_work(services.sessions) as db:
        [laptop_session] = [row.id for row in db.scalars(select(SsoSession)) if str(row.id) != current]
    assert len(re.findall(r'class="session( current)?"', page.text)) == 2
    response = client.post(f"/account/sessions/{laptop_session}/end", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 303 and response.headers["location"] == "/account"
    assert laptop.get("/account").status_code == 303
    refused = _refresh(client, app, laptop_tokens["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert client.get("/account").status_code == 200
    [event] = [e for e in events(services, "logout") if e.details["reason"] == "account_sign_out"]
    assert event.actor is not None and event.ip is not None


def test_sign_out_everywhere(client: TestClient, services: Services, clock: FakeClock) -> None:
    """"Sign out everywhere" ends every session of the user, revokes all tokens (offline ones too) and every
    trusted browser, and signs this browser out (security cases 18 and 50)."""
    add_user(services)
    add_user(services, "bob")
    app = add_client(services, trusted=True)
    laptop = _other_browser(client)
    laptop_tokens = _tokens(laptop, app, "openid profile")
    offline_tokens = _tokens(client, app, "openid offline_access")
    device_id, value = seed_trusted(services)
    client.cookies.set(cookies.cookie_name(services.settings, trusted_devices.COOKIE), value)
    bob_session = seed_session(services, "bob")
    page = open_page(client, "/account", clock)
    response = client.post("/account/sessions/end-all", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 200 and 'id="logged-out"' in response.text
    set_cookie = response.headers.get_list("set-cookie")
    assert any(c.startswith("__Host-idp_session=") and "Max-Age=0" in c for c in set_cookie)
    assert any(c.startswith("__Host-idp_trusted=") and "Max-Age=0" in c for c in set_cookie)
    for token in (laptop_tokens["refresh_token"], offline_tokens["refresh_token"]):
        refused = _refresh(client, app, token)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert laptop.get("/account").status_code == 303
    assert client.get("/account").status_code == 303
    with unit_of_work(services.sessions) as db:
        ended = {row.id: row.end_reason for row in db.scalars(select(SsoSession))}
        assert ended.pop(bob_session) is None
        assert set(ended.values()) == {"sign_out_everywhere"}
        assert db.get(TrustedDevice, device_id).revoked_at is not None  # type: ignore[union-attr]
    [event] = events(services, "account.signed_out_everywhere")
    assert event.details["sessions"] == 2 and event.details["trusted_devices_revoked"] == 1
    assert events(services, "trusted_device.revoked")[0].details["reason"] == "sign_out_everywhere"


def test_signing_out_this_session_signs_this_browser_out(client: TestClient, services: Services,
                                                         clock: FakeClock) -> None:
    """"Sign out" on the current session ends it and clears the cookie."""
    add_user(services)
    page = open_page(client, "/account", clock)
    current = re.search(r'class="session current" data-id="(\d+)"', page.text).group(1)  # type: ignore[union-attr]
    response = client.post(f"/account/sessions/{current}/end", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 200 and 'id="logged-out"' in response.text
    assert client.get("/account").status_code == 303


def test_revoking_a_trusted_browser(mfa_browser: TestClient, mfa_services: Services, clock: FakeClock) -> None:
    """A trusted browser revoked in /account no longer replaces the second factor; the revocation is audited."""
    add_user(mfa_services)
    _, secret = seed_totp(mfa_services)
    device_id, value = seed_trusted(mfa_services)
    mfa_browser.cookies.set(cookies.cookie_name(mfa_services.settings, trusted_devices.COOKIE), value)
    page = open_page(mfa_browser, "/account", clock)
    response = mfa_browser.post(f"/account/trusted/{device_id}/revoke", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 303
    set_cookie = response.headers.get_list("set-cookie")
    assert any(c.startswith("__Host-idp_trusted=") and "Max-Age=0" in c for c in set_cookie)
    assert mfa_browser.post(f"/account/trusted/{device_id}/revoke",
                            data={"csrf_token": csrf_of(page.text)}).status_code == 404
    with unit_of_work(mfa_services.sessions) as db:
        assert db.get(TrustedDevice, device_id).revoked_at is not None  # type: ignore[union-attr]
        assert not trusted_devices.is_trusted(db, mfa_services.hasher, user_row(db), value, mfa_services.now())
    [event] = events(mfa_services, "trusted_device.revoked")
    assert event.details == {"device": device_id, "count": 1, "reason": "user"}
    assert secret


# --- adding a phone ---------------------------------------------------------------------------------------------


class Gateway:
    """A JSON SMS gateway on loopback that records what it receives; ``fail`` makes it answer 500."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.fail = False
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                gateway.messages.append(json.loads(body))
                status = 500 if gateway.fail else 202
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/sms"

    def code(self) -> str:
        match = re.search(r"\b(\d{6})\b", self.messages[-1]["text"])
        assert match, self.messages[-1]
        return match.group(1)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    server = Gateway()
    yield server
    server.close()


@pytest.fixture
def sms_services(backend: tuple[str, Engine], services: Services, tmp_path: Path, clock: FakeClock,
                 gateway: Gateway) -> Services:
    return _strict(backend, tmp_path, clock, IDP_SMS_GATEWAY="http", IDP_SMS_URL=gateway.url,
                   IDP_SMS_TIMEOUT="2s", IDP_SMS_RETRIES="0")


@pytest.fixture
def sms_browser(sms_services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=sms_services), base_url=ISSUER, follow_redirects=False) as browser:
        yield browser


def test_phone_enrollment_through_the_gateway(sms_browser: TestClient, sms_services: Services, clock: FakeClock,
                                              gateway: Gateway) -> None:
    """A national number is sent a code in E.164; a wrong code is refused; the right one confirms the phone,
    which is then listed masked; the audit trail holds neither the full number nor the code."""
    add_user(sms_services)
    page = open_page(sms_browser, "/account/phone", clock)
    assert re.search(r'<input[^>]*name="phone"', page.text)
    sent = sms_browser.post("/account/phone", data={"phone": "0151 12345678", "name": "Diensthandy",
                                                    "csrf_token": csrf_of(page.text)})
    assert sent.status_code == 303 and re.fullmatch(r"/account/phone/\d+", sent.headers["location"])
    [message] = gateway.messages
    assert message["to"] == MOBILE_E164
    code = gateway.code()
    confirm_url = sent.headers["location"]
    page = sms_browser.get(confirm_url)
    assert page.status_code == 200 and MASKED in page.text and code not in page.text
    _code_input(page)
    with unit_of_work(sms_services.sessions) as db:
        assert enrolled.factors_of(db, user_row(db)) == []
    wrong = sms_browser.post(confirm_url, data={"code": "000000" if code != "000000" else "111111",
                                                "csrf_token": csrf_of(page.text)})
    assert wrong.status_code == 200 and 'role="alert"' in wrong.text
    done = sms_browser.post(confirm_url, data={"code": code, "csrf_token": csrf_of(page.text)})
    assert done.status_code == 200 and len(CODES.findall(done.text)) == 10
    with unit_of_work(sms_services.sessions) as db:
        [factor] = enrolled.factors_of(db, user_row(db))
        assert (factor.kind, factor.name, factor.detail) == ("sms", "Diensthandy", MASKED)
    assert MASKED in sms_browser.get("/account").text
    trail = json.dumps([e.details for e in events(sms_services, "factor.enrolled")]
                       + [e.details for e in events(sms_services, "factor.enrollment")])
    assert MOBILE_E164 not in trail and code not in trail
    assert events(sms_services, "factor.enrolled")[0].details["phone"] == MASKED
    assert sms_browser.get(confirm_url).status_code == 404  # confirmed: nothing left to confirm


def test_phone_enrollment_refusals(sms_browser: TestClient, sms_services: Services, clock: FakeClock,
                                   gateway: Gateway) -> None:
    """An invalid number is refused with a message; a new code waits 30 s; a failing gateway gives a message and
    a way to another method (503), never a 500, and is audited."""
    add_user(sms_services)
    page = open_page(sms_browser, "/account/phone", clock)
    token = csrf_of(page.text)
    invalid = sms_browser.post("/account/phone", data={"phone": "12ab", "csrf_token": token})
    assert invalid.status_code == 400 and 'role="alert"' in invalid.text and gateway.messages == []
    sent = sms_browser.post("/account/phone", data={"phone": MOBILE_E164, "csrf_token": token})
    resend = sms_browser.post(sent.headers["location"] + "/resend", data={"csrf_token": token})
    assert resend.status_code == 429 and "wait" in resend.text
    clock.advance(seconds=31)
    gateway.fail = True
    failed = sms_browser.post(sent.headers["location"] + "/resend", data={"csrf_token": token})
    assert failed.status_code == 503 and "authenticator app" in failed.text
    [event] = events(sms_services, "factor.enrollment")
    assert event.outcome == "failure" and event.details["reason"] == "gateway_unavailable"
    # The first code still works after the failed resend.
    gateway.fail = False
    done = sms_browser.post(sent.headers["location"], data={"code": re.search(  # type: ignore[union-attr]
        r"\b(\d{6})\b", gateway.messages[0]["text"]).group(1), "csrf_token": token})
    assert done.status_code == 200 and len(CODES.findall(done.text)) == 10


def test_phone_enrollment_with_the_log_gateway(client: TestClient, services: Services, clock: FakeClock,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """The development gateway writes the text (with the code) only at DEBUG level; the code from it works."""
    add_user(services)
    page = open_page(client, "/account/phone", clock)
    with caplog.at_level("DEBUG", logger="idp.sms"):
        sent = client.post("/account/phone", data={"phone": MOBILE_E164, "csrf_token": csrf_of(page.text)})
    assert sent.status_code == 303
    [debug] = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG" and r.name == "idp.sms"]
    code = re.search(r"\b(\d{6})\b", debug.split(":", 1)[1]).group(1)  # type: ignore[union-attr]
    assert not any(code in r.getMessage() for r in caplog.records if r.levelname != "DEBUG")
    done = client.post(sent.headers["location"], data={"code": code, "csrf_token": csrf_of(page.text)})
    assert done.status_code == 200 and len(CODES.findall(done.text)) == 10


# --- adding a security key or passkey ---------------------------------------------------------------------------


def _register_button(page: Any) -> tuple[str, str, str]:
    tag = re.search(r'<button[^>]*id="webauthn-register"[^>]*>', page.text, re.S)
    assert tag, "no #webauthn-register button"
    attributes = dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', tag.group(0)))
    assert attributes["data-method"] == "webauthn"
    return attributes["data-options-url"], attributes["data-verify-url"], attributes["data-csrf"]


def test_security_key_registration_through_the_json_endpoints(client: TestClient, services: Services,
                                                              clock: FakeClock) -> None:
    """The options endpoint answers {"publicKey", "challenge_id"}; the authenticator's answer registers the key
    under its name; the first factor's codes follow; the same answer again is refused (single-use challenge)."""
    add_user(services)
    page = open_page(client, "/account/webauthn", clock)
    assert re.search(r'<script src="/static/[0-9a-f]{16}/webauthn\.js"', page.text)
    options_url, verify_url, token = _register_button(page)
    started = client.post(options_url, json={"csrf_token": token})
    assert started.status_code == 200, started.text
    body = started.json()
    assert set(body) == {"publicKey", "challenge_id"}
    assert body["publicKey"]["rp"]["id"] == "idp.test"
    assert body["publicKey"]["authenticatorSelection"]["residentKey"] == "discouraged"
    key = SoftAuthenticator()
    answer = key.create(body["publicKey"], origin=ISSUER)
    payload = {"credential": answer, "csrf_token": token, "challenge_id": body["challenge_id"], "name": "YubiKey 5"}
    done = client.post(verify_url, json=payload)
    assert done.status_code == 200 and done.json() == {"redirect": "/account/recovery-codes/first"}
    codes_page = client.get("/account/recovery-codes/first")
    assert codes_page.status_code == 200 and len(CODES.findall(codes_page.text)) == 10
    assert client.get("/account/recovery-codes/first").headers["location"] == "/account"
    replay = client.post(verify_url, json=payload)
    assert replay.status_code == 400 and replay.json()["error"]
    with unit_of_work(services.sessions) as db:
        [credential] = db.scalars(select(WebAuthnCredential)).all()
        assert credential.name == "YubiKey 5" and not credential.discoverable
        assert credential.user_id == user_row(db).id
    [event] = events(services, "factor.enrolled")
    assert event.details["kind"] == "webauthn" and event.details["passkey"] is False
    assert events(services, "factor.enrollment")[0].details["reason"] == "replayed_challenge"


def test_passkey_registration(client: TestClient, services: Services, clock: FakeClock) -> None:
    """?kind=passkey asks for a discoverable credential with user verification, stored as a passkey."""
    add_user(services)
    seed_codes(services)
    page = open_page(client, "/account/webauthn?kind=passkey", clock)
    options_url, verify_url, token = _register_button(page)
    assert options_url.endswith("?kind=passkey")
    body = client.post(options_url, json={"csrf_token": token}).json()
    assert body["publicKey"]["authenticatorSelection"]["residentKey"] == "required"
    assert body["publicKey"]["authenticatorSelection"]["userVerification"] == "required"
    answer = SoftAuthenticator(backup_eligible=True).create(body["publicKey"], origin=ISSUER)
    done = client.post(verify_url, json={"credential": answer, "csrf_token": token,
                                         "challenge_id": body["challenge_id"], "name": "iPhone"})
    assert done.json() == {"redirect": "/account"}
    with unit_of_work(services.sessions) as db:
        [credential] = db.scalars(select(WebAuthnCredential)).all()
        assert credential.discoverable and credential.backup_eligible and credential.name == "iPhone"


def test_security_key_registration_refusals(client: TestClient, services: Services, clock: FakeClock) -> None:
    """An answer for another origin, a body that is not JSON, no session and a stale session are refused with
    a message or a redirect for webauthn.js, and nothing is stored."""
    add_user(services)
    page = open_page(client, "/account/webauthn", clock)
    options_url, verify_url, token = _register_button(page)
    body = client.post(options_url, json={"csrf_token": token}).json()
    answer = SoftAuthenticator().create(body["publicKey"], origin="https://idp.test.evil.example")
    foreign = client.post(verify_url, json={"credential": answer, "csrf_token": token,
                                            "challenge_id": body["challenge_id"]})
    assert foreign.status_code == 400 and "another website" in foreign.json()["error"]
    assert client.post(options_url, content=b"csrf_token=x",
                       headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 400
    assert client.post(options_url, content=b"[1, 2",
                       headers={"content-type": "application/json"}).status_code == 400
    nul = client.post(verify_url, json={"csrf_token": token, "challenge_id": "a\x00b", "credential": {}})
    assert nul.status_code == 400
    stranger = _other_browser(client)
    anonymous = stranger.post(options_url, json={"csrf_token": token})
    assert anonymous.status_code == 200 and anonymous.json() == {"redirect": "/account/webauthn"}
    clock.advance(minutes=6)
    stale = client.post(options_url, json={"csrf_token": token})
    assert stale.status_code == 200 and stale.json() == {"redirect": "/account/webauthn"}
    assert client.get("/account/webauthn").headers["location"].startswith("/authorize/resume/")
    with unit_of_work(services.sessions) as db:
        assert db.scalars(select(WebAuthnCredential)).all() == []
    assert events(services, "factor.enrollment")[0].details["reason"] == "wrong_origin_or_rp_id"

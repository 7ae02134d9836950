"""The browser sign-in: login page, sign-in transactions, consent (issue 2 section 4; attack cases 31-35).

Failed sign-ins all look alike to the person signing in while the audit trail keeps the real reason
(BSI ORP.4.A23; OWASP ASVS 6.3.8); every POST form carries a CSRF token bound to its transaction and
browser (ASVS 3.5.1); the login POST answers 303 so the password is never re-posted (RFC 9700 4.12).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest
from sqlalchemy import Engine, func, select
from starlette.testclient import TestClient

from idp.app import create_app
from idp.db import Base, unit_of_work
from idp.models import AuditEvent, Consent, SsoSession, User
from idp.services import Services, build_services
from tests.conftest import ISSUER, FakeClock, make_settings
from tests.helpers import (
    PASSWORD,
    Flow,
    add_client,
    add_user,
    authorize,
    csrf_of,
    finish,
    follow_to_login,
    query_of,
    submit_login,
)

GENERIC_ERROR = "Username or password is incorrect."
SESSION_COOKIE = "__Host-idp_session"


@pytest.fixture
def other_browser(services: Services) -> Iterator[TestClient]:
    """A second browser (its own cookie jar) on its own app instance over the same database."""
    with TestClient(create_app(services=services), base_url=ISSUER, follow_redirects=False) as browser:
        yield browser


def _tx_of(login_url: str) -> str:
    return login_url.rsplit("/", 1)[1]


def _error_text(html: str) -> str | None:
    match = re.search(r'id="login-error">([^<]*)<', html)
    return match.group(1) if match else None


def _page_skeleton(html: str) -> str:
    """The login page with what may legitimately differ between two attempts blanked out."""
    html = re.sub(r'name="csrf_token" value="[^"]*"', 'name="csrf_token" value=""', html)
    html = re.sub(r'(<input id="username"[^>]*value=")[^"]*"', r'\1"', html)
    return html


def _count(services: Services, model: type[Base]) -> int:
    with unit_of_work(services.sessions) as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def _password_events(services: Services) -> list[AuditEvent]:
    with unit_of_work(services.sessions) as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.event == "login.password")
                               .order_by(AuditEvent.id)))


def _disable(services: Services, username: str, clock: FakeClock) -> None:
    with unit_of_work(services.sessions) as db:
        user = db.scalar(select(User).where(User.username == username))
        assert user is not None
        user.disabled_at = clock()


def _post_login(browser: TestClient, login_url: str, username: str, password: str,
                token: str | None) -> httpx2.Response:
    data = {"username": username, "password": password}
    if token is not None:
        data["csrf_token"] = token
    return browser.post(login_url, data=data)


def _consent_location(browser: TestClient, flow: Flow) -> str | None:
    """Start ``flow`` in a signed-in browser; return the consent page URL, or None when a code came at once."""
    response = browser.get(flow.url())
    location = response.headers["location"]
    if response.status_code == 302:
        assert location.startswith(flow.client.redirect_uri + "?"), location
        assert "code" in query_of(location)
        return None
    assert response.status_code == 303, response.text
    assert location.startswith("/consent/"), location
    return str(location)


def _sign_in_steps(browser: TestClient, flow: Flow, username: str = "erika") -> tuple[list[str], dict[str, str]]:
    """Run the whole flow, answering ``allow``; return the IdP pages passed through and the client's parameters."""
    response = browser.get(flow.url())
    steps: list[str] = []
    for _ in range(8):
        assert response.status_code in (302, 303), response.text
        location = str(response.headers["location"])
        if not location.startswith("/"):
            return steps, query_of(location)
        steps.append(location.split("/")[1])
        if location.startswith("/login/"):
            response = submit_login(browser, location, username)
        elif location.startswith("/consent/"):
            page = browser.get(location)
            assert page.status_code == 200, page.text
            response = browser.post(location, data={"decision": "allow", "csrf_token": csrf_of(page.text)})
        else:
            response = browser.get(location)
    raise AssertionError("too many redirects inside the IdP")


# --- No enumeration (case 31) ---------------------------------------------------------------------


def test_failed_sign_ins_look_alike(client: TestClient, services: Services, clock: FakeClock) -> None:
    """Unknown user, wrong password, disabled account and account without password give one answer (ASVS 6.3.8)."""
    add_user(services, "erika")
    add_user(services, "dieter")
    add_user(services, "nopass", password=None)
    _disable(services, "dieter", clock)
    login_url = follow_to_login(client, Flow(add_client(services)))
    attempts = [("unknown", PASSWORD), ("erika", "wrong password"), ("dieter", PASSWORD), ("nopass", PASSWORD)]
    answers = []
    for username, password in attempts:
        response = submit_login(client, login_url, username, password)
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
        answers.append((response.status_code, _error_text(response.text), _page_skeleton(response.text)))
    assert answers[0][0] == 200 and answers[0][1] == GENERIC_ERROR
    assert all(answer == answers[0] for answer in answers), "failed sign-ins must not differ"
    assert _count(services, SsoSession) == 0


def test_failed_sign_ins_are_audited_with_the_real_reason(client: TestClient, services: Services,
                                                           clock: FakeClock) -> None:
    """The audit trail records why each sign-in failed, with client and address, but never the password."""
    add_user(services, "erika")
    add_user(services, "dieter")
    add_user(services, "nopass", password=None)
    _disable(services, "dieter", clock)
    app = add_client(services)
    login_url = follow_to_login(client, Flow(app))
    for username, password in [("Unknown", PASSWORD), ("erika", "wrong password"), ("dieter", PASSWORD),
                               ("nopass", PASSWORD), ("erika", PASSWORD)]:
        submit_login(client, login_url, username, password)
    events = _password_events(services)
    assert [(e.subject, e.outcome, e.details.get("reason")) for e in events] == [
        ("unknown", "failure", "unknown_user"),
        ("erika", "failure", "wrong_password"),
        ("dieter", "failure", "disabled"),
        ("nopass", "failure", "no_password"),
        ("erika", "success", None),
    ]
    assert all(e.client_id == app.client_id and e.ip == "testclient" for e in events)
    for event in events:
        assert PASSWORD not in str(event.details) and "wrong password" not in str(event.details)


def test_overlong_credentials_get_the_generic_error(client: TestClient, services: Services) -> None:
    """A username over 255 or a password over 1024 characters is refused with the same message, without a check."""
    add_user(services)
    login_url = follow_to_login(client, Flow(add_client(services)))
    for username, password in [("e" * 256, PASSWORD), ("erika", "p" * 1025)]:
        response = submit_login(client, login_url, username, password)
        assert response.status_code == 400
        assert _error_text(response.text) == GENERIC_ERROR
    assert _password_events(services) == []
    assert _count(services, SsoSession) == 0


def test_one_megabyte_password_is_refused_before_hashing(client: TestClient, services: Services) -> None:
    """A 1 MB password is refused by the body limit (413) before any form parsing or hashing; nothing is audited."""
    add_user(services)
    login_url = follow_to_login(client, Flow(add_client(services)))
    token = csrf_of(client.get(login_url).text)
    response = _post_login(client, login_url, "erika", "p" * 1_000_000, token)
    assert response.status_code == 413
    assert "Traceback" not in response.text
    assert _password_events(services) == []
    assert _count(services, SsoSession) == 0


def test_nul_byte_in_the_login_form_is_a_clear_400(client: TestClient, services: Services) -> None:
    """A NUL character in the password or username is refused as a malformed form (400) before any check."""
    add_user(services)
    login_url = follow_to_login(client, Flow(add_client(services)))
    token = csrf_of(client.get(login_url).text)
    for username, password in [("erika", PASSWORD + "\x00"), ("erika", "\x00" + PASSWORD), ("erika\x00", PASSWORD)]:
        response = _post_login(client, login_url, username, password, token)
        assert response.status_code == 400
        assert "location" not in response.headers and "Traceback" not in response.text
    assert _password_events(services) == []
    assert _count(services, SsoSession) == 0


# --- CSRF and the binding of a transaction to its browser (case 32) ---------------------------------


def test_login_without_csrf_token_is_refused(client: TestClient, services: Services) -> None:
    """A login POST without a CSRF token answers 403; no password is checked, no session created."""
    add_user(services)
    login_url = follow_to_login(client, Flow(add_client(services)))
    for token in (None, "", "forged." + "A" * 40):
        response = _post_login(client, login_url, "erika", PASSWORD, token)
        assert response.status_code == 403
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert _password_events(services) == []
    assert _count(services, SsoSession) == 0


def test_cross_site_form_post_is_refused(client: TestClient, services: Services) -> None:
    """A login form posted from another site carries no valid token: 403 and nothing changes (case 34)."""
    add_user(services, "mallory")
    login_url = follow_to_login(client, Flow(add_client(services)))
    response = client.post(login_url, data={"username": "mallory", "password": PASSWORD},
                           headers={"Origin": "https://evil.example", "Referer": "https://evil.example/form"})
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert _password_events(services) == []
    assert _count(services, SsoSession) == 0


def test_csrf_token_of_another_transaction_is_refused(client: TestClient, services: Services) -> None:
    """A token from another sign-in in the same browser does not fit this one: 403, no session."""
    add_user(services)
    app = add_client(services)
    first = follow_to_login(client, Flow(app))
    second = follow_to_login(client, Flow(app))
    assert first != second
    foreign_token = csrf_of(client.get(second).text)
    client.get(first)
    response = _post_login(client, first, "erika", PASSWORD, foreign_token)
    assert response.status_code == 403
    assert _password_events(services) == []
    assert _count(services, SsoSession) == 0
    # The right token still works afterwards.
    assert submit_login(client, first).status_code == 303


def test_csrf_token_from_another_browser_is_refused(client: TestClient, other_browser: TestClient,
                                                    services: Services) -> None:
    """Login CSRF: an attacker's token, posted from the victim's browser into the victim's sign-in, gives 403."""
    add_user(services)
    add_user(services, "mallory")
    app = add_client(services)
    attacker_login = follow_to_login(other_browser, Flow(app))
    attacker_token = csrf_of(other_browser.get(attacker_login).text)
    victim_login = follow_to_login(client, Flow(app))
    response = _post_login(client, victim_login, "mallory", PASSWORD, attacker_token)
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert _password_events(services) == []
    assert _count(services, SsoSession) == 0


def test_login_post_answers_303_to_resume(client: TestClient, services: Services) -> None:
    """After the password, the browser is sent on with 303 (never 307, which would re-post it; RFC 9700 4.12)."""
    add_user(services)
    flow = Flow(add_client(services, trusted=True))
    login_url = follow_to_login(client, flow)
    response = submit_login(client, login_url)
    assert response.status_code == 303
    assert response.headers["location"] == f"/authorize/resume/{_tx_of(login_url)}"
    assert response.headers["cache-control"] == "no-store"
    resumed = client.get(response.headers["location"])
    assert resumed.status_code == 302
    params = query_of(resumed.headers["location"])
    assert params["state"] == flow.state and params["iss"] == ISSUER and params["code"]


def test_transaction_is_bound_to_its_browser(client: TestClient, other_browser: TestClient,
                                             services: Services) -> None:
    """Another browser that learns the sign-in URL gets the expired page and cannot sign in through it."""
    add_user(services)
    login_url = follow_to_login(client, Flow(add_client(services)))
    tx = _tx_of(login_url)
    token = csrf_of(client.get(login_url).text)
    for path in (login_url, f"/authorize/resume/{tx}", f"/consent/{tx}"):
        page = other_browser.get(path)
        assert page.status_code == 400, path
        assert "This sign-in has expired" in page.text
    stolen = _post_login(other_browser, login_url, "erika", PASSWORD, token)
    assert stolen.status_code == 400
    assert "This sign-in has expired" in stolen.text
    assert _count(services, SsoSession) == 0
    # The owner's sign-in is unaffected.
    assert submit_login(client, login_url).status_code == 303


def test_expired_transaction_shows_the_expired_page(client: TestClient, services: Services,
                                                    clock: FakeClock) -> None:
    """A sign-in left open longer than ``[session] login_timeout`` is over: expired page, even with the password."""
    add_user(services)
    login_url = follow_to_login(client, Flow(add_client(services)))
    token = csrf_of(client.get(login_url).text)
    clock.advance(seconds=services.settings.session.login_timeout.total_seconds() + 1)
    page = client.get(login_url)
    assert page.status_code == 400 and "This sign-in has expired" in page.text
    response = _post_login(client, login_url, "erika", PASSWORD, token)
    assert response.status_code == 400
    assert "This sign-in has expired" in response.text
    assert _password_events(services) == []
    assert _count(services, SsoSession) == 0


def test_transaction_just_before_its_timeout_still_works(client: TestClient, services: Services,
                                                         clock: FakeClock) -> None:
    """One second before ``login_timeout`` the sign-in still goes through."""
    add_user(services)
    flow = Flow(add_client(services, trusted=True))
    login_url = follow_to_login(client, flow)
    clock.advance(seconds=services.settings.session.login_timeout.total_seconds() - 1)
    params = query_of(finish(client, submit_login(client, login_url)))
    assert params["code"] and params["state"] == flow.state


def test_completed_transaction_cannot_be_resumed_twice(client: TestClient, services: Services) -> None:
    """Once a transaction produced its code, replaying its resume, login or consent URL gives no second code."""
    add_user(services)
    login_url = follow_to_login(client, Flow(add_client(services, trusted=True)))
    tx = _tx_of(login_url)
    resumed = client.get(submit_login(client, login_url).headers["location"])
    assert resumed.status_code == 302 and "code=" in resumed.headers["location"]
    for path in (f"/authorize/resume/{tx}", login_url, f"/consent/{tx}"):
        again = client.get(path)
        assert again.status_code == 400, path
        assert "This sign-in has expired" in again.text
        assert "location" not in again.headers


def test_completed_consent_transaction_cannot_be_replayed(client: TestClient, services: Services) -> None:
    """Posting the consent form of a finished transaction a second time yields no second code."""
    add_user(services)
    flow = Flow(add_client(services))
    response = submit_login(client, follow_to_login(client, flow))
    consent_url = client.get(response.headers["location"]).headers["location"]
    assert consent_url.startswith("/consent/")
    token = csrf_of(client.get(consent_url).text)
    first = client.post(consent_url, data={"decision": "allow", "csrf_token": token})
    assert first.status_code == 302 and "code=" in first.headers["location"]
    second = client.post(consent_url, data={"decision": "allow", "csrf_token": token})
    assert second.status_code == 400 and "location" not in second.headers


# --- Consent (case 33-35) -------------------------------------------------------------------------


def test_consent_deny_returns_access_denied(client: TestClient, services: Services) -> None:
    """Refusing consent sends ``access_denied`` with ``state`` and ``iss`` (RFC 6749 4.1.2.1; RFC 9207)."""
    add_user(services)
    app = add_client(services)
    flow = Flow(app)
    params = authorize(client, flow, consent="deny")
    assert params == {"error": "access_denied", "state": flow.state, "iss": ISSUER} | (
        {"error_description": params["error_description"]} if "error_description" in params else {}
    )
    assert _count(services, Consent) == 0
    with unit_of_work(services.sessions) as db:
        denied = db.scalars(select(AuditEvent).where(AuditEvent.event == "consent.denied")).all()
    assert len(denied) == 1 and denied[0].client_id == app.client_id and denied[0].subject == "erika"
    # Nothing was remembered: the next request asks again.
    assert _consent_location(client, Flow(app)) is not None


def test_consent_deny_redirect_goes_to_the_registered_uri(client: TestClient, services: Services) -> None:
    """The ``access_denied`` redirect goes to the registered redirect URI and carries no code."""
    add_user(services)
    app = add_client(services)
    response = submit_login(client, follow_to_login(client, Flow(app)))
    consent_url = client.get(response.headers["location"]).headers["location"]
    denied = client.post(consent_url, data={"decision": "deny", "csrf_token": csrf_of(client.get(consent_url).text)})
    assert denied.status_code == 302
    assert denied.headers["location"].startswith(app.redirect_uri + "?")
    assert "code" not in query_of(denied.headers["location"])


def test_consent_is_remembered_per_user_client_and_scopes(client: TestClient, other_browser: TestClient,
                                                          services: Services) -> None:
    """A granted consent covers later requests of the same user and client for those scopes, and nothing more."""
    add_user(services)
    add_user(services, "max")
    app = add_client(services, name="Ticketsystem")
    other_app = add_client(services, name="Bauakte")
    steps, params = _sign_in_steps(client, Flow(app, scope="openid profile"))
    assert steps == ["login", "authorize", "consent"] and params["code"]
    # Same user, same client, same (or fewer) scopes: no page.
    assert _consent_location(client, Flow(app, scope="openid profile")) is None
    assert _consent_location(client, Flow(app, scope="openid")) is None
    # One scope more: asked again; allowing it remembers the union.
    consent_url = _consent_location(client, Flow(app, scope="openid profile email"))
    assert consent_url is not None
    page = client.get(consent_url)
    assert "Your email address" in page.text
    client.post(consent_url, data={"decision": "allow", "csrf_token": csrf_of(page.text)})
    assert _consent_location(client, Flow(app, scope="openid email profile")) is None
    # Another client of the same user: asked.
    assert _consent_location(client, Flow(other_app, scope="openid")) is not None
    # Another user of the same client: asked.
    other_steps, _ = _sign_in_steps(other_browser, Flow(app, scope="openid"), username="max")
    assert other_steps == ["login", "authorize", "consent"]
    with unit_of_work(services.sessions) as db:
        rows = {(row.user_id, row.client_id): sorted(row.scopes) for row in db.scalars(select(Consent))}
    assert sorted(rows.values()) == [["email", "openid", "profile"], ["openid"]]


def test_trusted_client_never_asks_for_consent(client: TestClient, services: Services) -> None:
    """A client marked trusted gets its code without a consent page, whatever it asks for."""
    add_user(services)
    app = add_client(services, trusted=True)
    steps, params = _sign_in_steps(client, Flow(app, scope="openid profile email groups offline_access"))
    assert steps == ["login", "authorize"] and params["code"]
    assert _consent_location(client, Flow(app, scope="openid email")) is None
    assert _count(services, Consent) == 0


def test_prompt_consent_always_asks(client: TestClient, services: Services) -> None:
    """``prompt=consent`` shows the consent page even when consent was given and even for a trusted client."""
    add_user(services)
    app = add_client(services)
    trusted = add_client(services, name="Intranet", trusted=True)
    authorize(client, Flow(app, scope="openid"))
    assert _consent_location(client, Flow(app, scope="openid")) is None
    assert _consent_location(client, Flow(app, scope="openid", extra={"prompt": "consent"})) is not None
    assert _consent_location(client, Flow(trusted, scope="openid", extra={"prompt": "consent"})) is not None


def test_consent_page_shows_what_is_asked(client: TestClient, services: Services) -> None:
    """The consent page names the client (escaped) and every requested scope, with allow and deny buttons."""
    add_user(services)
    app = add_client(services, name="<script>alert(1)</script> Akte")
    submitted = submit_login(client, follow_to_login(client, Flow(app, scope="openid profile groups")))
    page = client.get(client.get(submitted.headers["location"]).headers["location"])
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;" in page.text
    for text in ("Confirm who you are", "Your name and username", "Your group memberships"):
        assert text in page.text
    assert 'name="decision" value="allow"' in page.text and 'name="decision" value="deny"' in page.text
    assert page.headers["cache-control"] == "no-store"


# --- Headers of the sign-in pages (case 47) ------------------------------------------------------


def _assert_page_headers(response: httpx2.Response) -> None:
    csp = response.headers["content-security-policy"]
    directives = {part.strip().split(" ", 1)[0]: part.strip() for part in csp.split(";")}
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"
    assert directives["object-src"] == "object-src 'none'"
    assert directives["base-uri"] == "base-uri 'none'"
    assert "unsafe-inline" not in directives.get("script-src", "") and "unsafe-inline" not in directives["default-src"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["strict-transport-security"].startswith("max-age=31536000")
    assert response.headers["cache-control"] == "no-store"
    assert "access-control-allow-origin" not in response.headers
    # No third-party resources (RFC 9700 4.2.4): every src, form action and linked resource is local (links the
    # person follows, such as the theme's imprint, may lead elsewhere).
    for found in re.findall(r'(?:src|action)="([^"]*)"|<link [^>]*href="([^"]*)"', response.text):
        url = "".join(found)
        assert url.startswith("/") or url.startswith(ISSUER), url
    assert "<script>" not in response.text, "no inline scripts"


def test_sign_in_pages_carry_the_security_headers(client: TestClient, services: Services) -> None:
    """Login, failed login, consent, expired pages and redirects all send CSP, no-store and the rest."""
    add_user(services)
    login_url = follow_to_login(client, Flow(add_client(services)))
    _assert_page_headers(client.get(login_url))
    _assert_page_headers(submit_login(client, login_url, password="wrong password"))
    submitted = submit_login(client, login_url)
    _assert_page_headers(submitted)
    consent_url = client.get(submitted.headers["location"]).headers["location"]
    _assert_page_headers(client.get(consent_url))
    _assert_page_headers(client.get("/login/" + "x" * 32))
    redirect = client.get(Flow(add_client(services, name="Zweite")).url())
    _assert_page_headers(redirect)


# --- Rehash on login (issue 2 section 4) ----------------------------------------------------------


@pytest.fixture
def stronger_services(backend: tuple[str, Engine], tmp_path: Path, clock: FakeClock,
                      services: Services) -> Services:
    """Services over the same database whose argon2 parameters differ from those the users were created with."""
    settings = make_settings(tmp_path / "stronger", backend[0], IDP_PASSWORDS_ARGON2_MEMORY_COST="2048",
                             IDP_PASSWORDS_ARGON2_TIME_COST="2")
    stronger = build_services(settings, engine=backend[1])
    stronger.clock = clock
    return stronger


def _stored_hash(services: Services, username: str = "erika") -> str:
    with unit_of_work(services.sessions) as db:
        user = db.scalar(select(User).where(User.username == username))
        assert user is not None and user.password_hash is not None
        return user.password_hash


def test_password_is_rehashed_when_parameters_change(services: Services, stronger_services: Services) -> None:
    """A successful login rehashes a password made with old argon2 parameters; a failed one changes nothing."""
    add_user(services)
    old = _stored_hash(services)
    assert old.startswith("$argon2id$v=19$m=1024,t=1,")
    with TestClient(create_app(services=stronger_services), base_url=ISSUER, follow_redirects=False) as browser:
        login_url = follow_to_login(browser, Flow(add_client(services, trusted=True)))
        assert submit_login(browser, login_url, password="wrong password").status_code == 200
        assert _stored_hash(services) == old
        response = submit_login(browser, login_url)
        assert response.status_code == 303
    new = _stored_hash(services)
    assert new != old and new.startswith("$argon2id$v=19$m=2048,t=2,")
    assert stronger_services.passwords.verify(new, PASSWORD)
    assert not stronger_services.passwords.needs_rehash(new)
    assert not stronger_services.passwords.verify(new, "wrong password")


def test_current_hash_is_not_rewritten_on_login(client: TestClient, services: Services) -> None:
    """With unchanged parameters a login leaves the stored hash alone."""
    add_user(services)
    before = _stored_hash(services)
    authorize(client, Flow(add_client(services, trusted=True)))
    assert _stored_hash(services) == before


def test_login_timeout_setting_is_used(backend: tuple[str, Engine], tmp_path: Path, clock: FakeClock,
                                       services: Services) -> None:
    """``[session] login_timeout`` from the configuration decides when a sign-in expires."""
    settings = make_settings(tmp_path / "short", backend[0], IDP_SESSION_LOGIN_TIMEOUT="2m")
    short = build_services(settings, engine=backend[1])
    short.clock = clock
    assert short.settings.session.login_timeout == timedelta(minutes=2)
    add_user(services)
    app = add_client(services, trusted=True)
    with TestClient(create_app(services=short), base_url=ISSUER, follow_redirects=False) as browser:
        login_url = follow_to_login(browser, Flow(app))
        clock.advance(seconds=121)
        page = browser.get(login_url)
        assert page.status_code == 400 and "This sign-in has expired" in page.text

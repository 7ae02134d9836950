"""The SSO session: its cookie, its server-side row, idle timeout and absolute lifetime (issue 2 section 4).

Attack cases 47 and 49: the cookie is ``__Host-`` prefixed, ``Secure``, ``HttpOnly``, ``SameSite=Lax``,
``Path=/``, without ``Domain``, and holds only an opaque random value whose keyed hash is stored (ASVS 3.3,
7.2.3; NIST SP 800-63B-4 5.1). Timeouts are enforced on the server (ASVS 7.3); logout ends the row, so a
replayed cookie fails (ASVS 7.4.1).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from http.cookies import SimpleCookie

import httpx2
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.app import create_app
from idp.db import unit_of_work
from idp.models import AuditEvent, SsoSession, User
from idp.services import Services
from tests.conftest import ISSUER, FakeClock
from tests.helpers import (
    PASSWORD,
    Flow,
    RegisteredClient,
    add_client,
    add_user,
    authorize,
    csrf_of,
    decode,
    exchange,
    follow_to_login,
    query_of,
    submit_login,
)

SESSION_COOKIE = "__Host-idp_session"
BROWSER_COOKIE = "__Host-idp_browser"


@pytest.fixture
def app(services: Services) -> RegisteredClient:
    """A trusted client, so that no consent page stands between the login and the code."""
    add_user(services)
    return add_client(services, trusted=True)


@pytest.fixture
def other_browser(services: Services) -> Iterator[TestClient]:
    with TestClient(create_app(services=services), base_url=ISSUER, follow_redirects=False) as browser:
        yield browser


def _set_cookie_headers(response: httpx2.Response, name: str) -> list[str]:
    headers = response.headers.get_list("set-cookie")
    return [header for header in headers if header.startswith(name + "=")]


def _cookie_value(browser: TestClient) -> str | None:
    return browser.cookies.get(SESSION_COOKIE)


def _replace_cookie(browser: TestClient, value: str) -> None:
    """Put ``value`` back into the browser as the session cookie (as an attacker replaying a copy would)."""
    browser.cookies.delete(SESSION_COOKIE)
    browser.cookies.set(SESSION_COOKIE, value, domain="idp.test", path="/")


def _sessions(services: Services) -> list[SsoSession]:
    with unit_of_work(services.sessions) as db:
        return list(db.scalars(select(SsoSession).order_by(SsoSession.id)))


def _prompt_none(browser: TestClient, app: RegisteredClient) -> dict[str, str]:
    """A silent authorization request; the parameters the client receives."""
    response = browser.get(Flow(app, extra={"prompt": "none"}).url())
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(app.redirect_uri + "?"), location
    return query_of(location)


def _sign_in(browser: TestClient, app: RegisteredClient, username: str = "erika", **extra: str) -> httpx2.Response:
    """Start a flow that needs the login page and post the password; the login POST's response."""
    login_url = follow_to_login(browser, Flow(app, extra=extra))
    response: httpx2.Response = submit_login(browser, login_url, username)
    assert response.status_code == 303, response.text
    return response


# --- The cookie (case 49) -------------------------------------------------------------------------


def test_session_cookie_attributes(client: TestClient, services: Services, app: RegisteredClient) -> None:
    """The session cookie is ``__Host-idp_session``: Secure, HttpOnly, SameSite=Lax, Path=/, no Domain, < 4 kB."""
    response = _sign_in(client, app)
    headers = _set_cookie_headers(response, SESSION_COOKIE)
    assert len(headers) == 1
    header = headers[0]
    assert len(header) < 4096
    parsed = SimpleCookie()
    parsed.load(header)
    morsel = parsed[SESSION_COOKIE]
    attributes = {part.strip().split("=", 1)[0].lower() for part in header.split(";")[1:]}
    assert "secure" in attributes and "httponly" in attributes
    assert morsel["samesite"].lower() == "lax"
    assert morsel["path"] == "/"
    assert "domain" not in attributes and not morsel["domain"]


def test_browser_cookie_has_the_same_protection(client: TestClient, app: RegisteredClient) -> None:
    """The cookie binding sign-in transactions to the browser is ``__Host-`` prefixed, Secure, HttpOnly, Lax too."""
    response = client.get(Flow(app).url())
    headers = _set_cookie_headers(response, BROWSER_COOKIE)
    assert len(headers) == 1
    attributes = {part.strip().lower() for part in headers[0].split(";")[1:]}
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= attributes
    assert not any(attribute.startswith("domain") for attribute in attributes)


def test_cookie_value_is_opaque_and_only_its_hmac_is_stored(client: TestClient, services: Services,
                                                             app: RegisteredClient) -> None:
    """The cookie holds >= 128 random bits that name nothing; the row stores only their keyed hash."""
    _sign_in(client, app)
    value = _cookie_value(client)
    assert value is not None and len(value) >= 32
    rows = _sessions(services)
    assert len(rows) == 1
    row = rows[0]
    assert row.cookie_hash != value
    assert row.cookie_hash == services.hasher.hash(value)
    assert value not in (row.sid, str(row.id), row.user.sub)
    for public in ("erika", row.user.sub, row.sid):
        assert public not in value
    # Nothing in the row repeats the value.
    for column in SsoSession.__table__.columns:
        assert getattr(row, column.key) != value


def test_new_cookie_value_at_every_login(client: TestClient, services: Services, app: RegisteredClient) -> None:
    """Re-login with ``prompt=login`` gives a new cookie value but keeps the session (same ``sid``; ASVS 7.2.4)."""
    _sign_in(client, app)
    first_value = _cookie_value(client)
    first_sid = _sessions(services)[0].sid
    _sign_in(client, app, prompt="login")
    second_value = _cookie_value(client)
    assert second_value and second_value != first_value
    rows = _sessions(services)
    assert len(rows) == 1 and rows[0].sid == first_sid and rows[0].ended_at is None
    assert rows[0].cookie_hash == services.hasher.hash(second_value)
    # The value before the re-login opens nothing any more.
    assert first_value is not None
    _replace_cookie(client, first_value)
    assert _prompt_none(client, app)["error"] == "login_required"


def test_planted_cookie_is_replaced_at_login(client: TestClient, services: Services, app: RegisteredClient) -> None:
    """Session fixation: a cookie value chosen before the login is never adopted as the session's value."""
    planted = "attacker-chosen-value-0123456789abcdefghijk"
    _replace_cookie(client, planted)
    _sign_in(client, app)
    value = _cookie_value(client)
    assert value and value != planted
    assert _sessions(services)[0].cookie_hash == services.hasher.hash(value)


def test_unknown_or_oversized_cookie_is_no_session(client: TestClient, app: RegisteredClient) -> None:
    """A guessed, empty or oversized cookie is treated as no session: ``prompt=none`` answers ``login_required``."""
    for value in ("guess", "A" * 43, "A" * 5000):
        _replace_cookie(client, value)
        assert _prompt_none(client, app)["error"] == "login_required"


# --- Idle timeout and absolute lifetime (case 49, NIST SP 800-63B-4 AAL2) ----------------------------


def test_activity_within_the_idle_timeout_keeps_the_session(client: TestClient, services: Services,
                                                            clock: FakeClock, app: RegisteredClient) -> None:
    """A request just inside the idle timeout gets a code without the login page."""
    _sign_in(client, app)
    clock.advance(seconds=services.settings.session.idle_timeout.total_seconds() - 1)
    assert "code" in _prompt_none(client, app)


def test_idle_session_asks_for_the_password_and_resumes(client: TestClient, services: Services,
                                                        clock: FakeClock, app: RegisteredClient) -> None:
    """After the idle timeout the login page is shown; the password alone resumes the same session (same sid)."""
    params = authorize(client, Flow(app))
    first = _sessions(services)[0]
    clock.advance(seconds=services.settings.session.idle_timeout.total_seconds() + 1)
    assert _prompt_none(client, app)["error"] == "login_required"
    flow = Flow(app)
    login_url = follow_to_login(client, flow)
    page = client.get(login_url)
    assert 'name="password"' in page.text
    response = client.post(login_url, data={"username": "erika", "password": PASSWORD,
                                            "csrf_token": csrf_of(page.text)})
    assert response.status_code == 303
    code = query_of(client.get(response.headers["location"]).headers["location"])["code"]
    rows = _sessions(services)
    assert len(rows) == 1
    assert rows[0].sid == first.sid and rows[0].ended_at is None
    assert rows[0].authenticated_at == clock() and rows[0].expires_at == first.expires_at
    tokens = exchange(client, flow, code).json()
    claims = decode(client, tokens["id_token"]).claims
    assert claims["sid"] == first.sid
    assert claims["auth_time"] == int(clock().timestamp())
    assert params["code"] != code


def test_absolute_lifetime_ends_the_session_despite_activity(client: TestClient, services: Services,
                                                             clock: FakeClock, app: RegisteredClient) -> None:
    """However active, a session ends 10 h after the login: then ``prompt=none`` answers ``login_required``."""
    assert services.settings.session.absolute_lifetime == timedelta(hours=10)
    _sign_in(client, app)
    started = clock()
    while clock() + timedelta(minutes=50) < started + timedelta(hours=10):
        clock.advance(minutes=50)
        assert "code" in _prompt_none(client, app), f"still active after {clock() - started}"
    clock.advance(seconds=(started + timedelta(hours=10, seconds=1) - clock()).total_seconds())
    assert _prompt_none(client, app)["error"] == "login_required"
    # The next login opens a new session (a new sid), not an extension of the old one.
    old_sid = _sessions(services)[0].sid
    _sign_in(client, app)
    rows = _sessions(services)
    assert len(rows) == 2 and rows[1].sid != old_sid


def test_password_does_not_resume_an_expired_session(client: TestClient, services: Services,
                                                     clock: FakeClock, app: RegisteredClient) -> None:
    """After the absolute lifetime the password starts a new session instead of reviving the old one."""
    _sign_in(client, app)
    old = _sessions(services)[0]
    clock.advance(hours=10, seconds=1)
    _sign_in(client, app)
    rows = _sessions(services)
    assert [row.sid for row in rows][0] == old.sid and rows[0].expires_at == old.expires_at
    assert len(rows) == 2 and rows[1].sid != old.sid
    assert rows[1].expires_at == clock() + timedelta(hours=10)


# --- Ending sessions ----------------------------------------------------------------------------------


def test_stale_cookie_after_logout_is_refused(client: TestClient, services: Services, app: RegisteredClient) -> None:
    """Logout ends the server row and deletes the cookie; replaying the old value finds no session."""
    _sign_in(client, app)
    value = _cookie_value(client)
    assert value is not None
    _replace_cookie(client, value)  # the replay below really sends the value: before logout, it works
    assert "code" in _prompt_none(client, app)
    confirm = client.get("/logout")
    assert confirm.status_code == 200
    response = client.post("/logout/confirm", data={"csrf_token": csrf_of(confirm.text)})
    assert response.status_code == 200
    deleted = _set_cookie_headers(response, SESSION_COOKIE)
    assert deleted and ("max-age=0" in deleted[0].lower() or "expires=thu, 01 jan 1970" in deleted[0].lower())
    assert _cookie_value(client) is None
    row = _sessions(services)[0]
    assert row.ended_at is not None and row.end_reason == "logout"
    _replace_cookie(client, value)
    assert _prompt_none(client, app)["error"] == "login_required"
    assert follow_to_login(client, Flow(app)).startswith("/login/")


def test_signing_in_as_another_user_ends_the_first_session(client: TestClient, services: Services,
                                                           app: RegisteredClient) -> None:
    """A second user signing in in the same browser ends the first user's session (no mixed identities)."""
    add_user(services, "max", display_name="Max Mustermann")
    _sign_in(client, app)
    erika_value = _cookie_value(client)
    _sign_in(client, app, username="max", prompt="login")
    rows = _sessions(services)
    assert len(rows) == 2
    assert rows[0].user.username == "erika" and rows[0].ended_at is not None
    assert rows[0].end_reason == "other_user_signed_in"
    assert rows[1].user.username == "max" and rows[1].ended_at is None and rows[1].sid != rows[0].sid
    with unit_of_work(services.sessions) as db:
        logout = db.scalars(select(AuditEvent).where(AuditEvent.event == "logout")).all()
    assert [(event.subject, event.details["reason"]) for event in logout] == [("erika", "other_user_signed_in")]
    assert erika_value is not None
    _replace_cookie(client, erika_value)
    assert _prompt_none(client, app)["error"] == "login_required"


def test_disabled_user_loses_the_session(client: TestClient, services: Services, clock: FakeClock,
                                         app: RegisteredClient) -> None:
    """Once the account is disabled its session opens nothing (ASVS 7.4.2)."""
    _sign_in(client, app)
    assert "code" in _prompt_none(client, app)
    with unit_of_work(services.sessions) as db:
        user = db.scalar(select(User).where(User.username == "erika"))
        assert user is not None
        user.disabled_at = clock()
    assert _prompt_none(client, app)["error"] == "login_required"


def test_session_is_shared_by_clients_but_not_by_browsers(client: TestClient, other_browser: TestClient,
                                                          services: Services, app: RegisteredClient) -> None:
    """A second client in the same browser needs no login; another browser without the cookie does."""
    second = add_client(services, name="Ticketsystem", trusted=True)
    _sign_in(client, app)
    assert "code" in _prompt_none(client, second)
    assert _prompt_none(other_browser, app)["error"] == "login_required"

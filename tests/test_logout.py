"""Ending a session: RP-Initiated Logout 1.0 at /logout and Back-Channel Logout 1.0 to the relying parties.

Attack cases 29-30 of the security list. Back-channel deliveries go to a real HTTP receiver on 127.0.0.1,
sent by the background sender that the TestClient's lifespan starts; retry scheduling is also driven
directly through ``lease_due`` / ``record_result`` with the fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.accounts.sessions import add_participant, create_session
from idp.app import create_app
from idp.audit import Origin
from idp.db import read_only, unit_of_work
from idp.models import AuditEvent, BackchannelDelivery, Client, SsoSession, User
from idp.oauth.logout import LEASE, LOGOUT_EVENT, BackchannelSender, end_session, lease_due, record_result
from idp.services import Services
from idp.web import cookies
from tests.conftest import ISSUER, FakeClock
from tests.helpers import (
    Flow,
    RegisteredClient,
    add_client,
    add_user,
    authorize,
    csrf_of,
    decode,
    exchange,
    query_of,
)

LOGGED_OUT = 'id="logged-out"'
WAIT_SECONDS = 10.0


# --- a relying party's back-channel logout endpoint -------------------------------------------------------------


@dataclass
class Receiver:
    """A small HTTP server that records the POSTs it gets; a path may fail once or answer slowly."""

    server: ThreadingHTTPServer
    posts: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    fail_first: set[str] = field(default_factory=set)
    delay: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def posts_to(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [form for p, form, _ in self.posts if p == path]

    def wait_for(self, path: str, count: int, timeout: float = WAIT_SECONDS) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.posts_to(path)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{path} received {len(self.posts_to(path))} POSTs within {timeout}s, wanted {count}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (name fixed by http.server)
            rec = state["receiver"]
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length).decode()
            form = {key: values[0] for key, values in parse_qs(body).items()}
            path = self.path
            with rec.lock:
                first = not any(p == path for p, _, _ in rec.posts)
                rec.posts.append((path, form, {k.lower(): v for k, v in self.headers.items()}))
            if path in rec.delay:
                time.sleep(rec.delay[path])
            status = 500 if first and path in rec.fail_first else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (signature of http.server)
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["receiver"] = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["receiver"]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# --- helpers ----------------------------------------------------------------------------------------------------


def _sign_in(browser: TestClient, app: RegisteredClient, scope: str = "openid profile") -> dict[str, Any]:
    """Authorize and redeem the code, so that ``app`` takes part in the browser's session."""
    flow = Flow(app, scope=scope)
    params = authorize(browser, flow)
    response = exchange(browser, flow, params["code"])
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _prompt_none(browser: TestClient, app: RegisteredClient) -> dict[str, str]:
    response = browser.get(Flow(app, scope="openid", extra={"prompt": "none"}).url())
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(app.redirect_uri + "?")
    return query_of(location)


def _assert_signed_in(browser: TestClient, app: RegisteredClient) -> None:
    assert "code" in _prompt_none(browser, app), "the session should still be there"


def _assert_signed_out(browser: TestClient, app: RegisteredClient) -> None:
    assert _prompt_none(browser, app)["error"] == "login_required"


def _logout_url(**params: str) -> str:
    return "/logout?" + urlencode(params)


def _session_cookie_name(services: Services) -> str:
    return cookies.cookie_name(services.settings, cookies.SESSION)


def _deletes_session_cookie(response: Any, services: Services) -> bool:
    name = _session_cookie_name(services)
    return any(header.startswith(f"{name}=") and "Max-Age=0" in header
               for header in response.headers.get_list("set-cookie"))


def _refresh(browser: TestClient, app: RegisteredClient, refresh_token: str) -> Any:
    assert app.client_secret is not None
    return browser.post("/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                        auth=(app.client_id, app.client_secret))


@dataclass(frozen=True)
class SessionRow:
    username: str
    ended_at: Any
    end_reason: str | None


def _sessions(services: Services) -> list[SessionRow]:
    with read_only(services.sessions) as db:
        return [SessionRow(row.user.username, row.ended_at, row.end_reason)
                for row in db.scalars(select(SsoSession).order_by(SsoSession.id))]


def _deliveries(services: Services) -> list[BackchannelDelivery]:
    with read_only(services.sessions) as db:
        rows = list(db.scalars(select(BackchannelDelivery).order_by(BackchannelDelivery.id)))
        db.expunge_all()
        return rows


def _wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- RP-initiated logout ----------------------------------------------------------------------------------------


def test_logout_with_id_token_hint_redirects_with_state(client: TestClient, services: Services) -> None:
    """A valid id_token_hint of the current session and a registered URI: logout and 303 back with state
    (RP-Initiated Logout 1.0, 2-3)."""
    add_user(services)
    app = add_client(services)
    body = _sign_in(client, app)
    assert app.post_logout_redirect_uri is not None
    response = client.get(_logout_url(id_token_hint=body["id_token"],
                                      post_logout_redirect_uri=app.post_logout_redirect_uri, state="xyz 1"))
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.split("?")[0] == app.post_logout_redirect_uri
    assert query_of(location) == {"state": "xyz 1"}
    assert _deletes_session_cookie(response, services)
    assert response.headers["cache-control"] == "no-store"
    [row] = _sessions(services)
    assert row.ended_at is not None and row.end_reason == "logout"
    _assert_signed_out(client, app)


def test_logout_ends_the_session_on_the_server(client: TestClient, services: Services) -> None:
    """After logout, the old session cookie is worthless even if a browser keeps it (ASVS 7.4.1)."""
    add_user(services)
    app = add_client(services)
    body = _sign_in(client, app)
    name = _session_cookie_name(services)
    old_cookie = client.cookies.get(name)
    assert old_cookie
    response = client.get(_logout_url(id_token_hint=body["id_token"]))
    assert response.status_code == 200 and LOGGED_OUT in response.text
    assert _deletes_session_cookie(response, services)
    client.cookies.set(name, old_cookie, domain="idp.test", path="/")
    _assert_signed_out(client, app)
    with read_only(services.sessions) as db:
        events = db.scalars(select(AuditEvent).where(AuditEvent.event == "logout")).all()
        assert len(events) == 1 and events[0].details["sid"] == decode(client, body["id_token"]).claims["sid"]


def test_logout_also_accepts_post(client: TestClient, services: Services) -> None:
    """The end_session endpoint supports POST with form parameters as well (RP-Initiated Logout 1.0, 2)."""
    add_user(services)
    app = add_client(services)
    body = _sign_in(client, app)
    assert app.post_logout_redirect_uri is not None
    response = client.post("/logout", data={"id_token_hint": body["id_token"],
                                            "post_logout_redirect_uri": app.post_logout_redirect_uri})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == app.post_logout_redirect_uri
    _assert_signed_out(client, app)


@pytest.mark.parametrize("uri", [
    "https://evil.example/logged-out",
    "https://app.example/logged-out?foo=bar",
    "https://app.example/logged-out/",
    "HTTPS://APP.EXAMPLE/logged-out",
    "https://app.example/cb",
])
def test_logout_never_redirects_to_unregistered_uri(client: TestClient, services: Services, uri: str) -> None:
    """A post_logout_redirect_uri that is not byte-equal to a registered one is never followed
    (RP-Initiated Logout 1.0, 3; oidcc-rp-initiated-logout-bad-post-logout-redirect-uri, -query-added)."""
    add_user(services)
    app = add_client(services)
    body = _sign_in(client, app)
    response = client.get(_logout_url(id_token_hint=body["id_token"], post_logout_redirect_uri=uri, state="s"))
    assert response.status_code == 200, response.text
    assert "location" not in response.headers
    assert uri not in response.text
    assert LOGGED_OUT in response.text


def test_logout_without_hint_never_redirects(client: TestClient, services: Services) -> None:
    """Without id_token_hint, even a registered URI (with client_id) is not followed; the user confirms
    and sees our logged-out page (RP-Initiated Logout 1.0, 3; oidcc-rp-initiated-logout-no-id-token-hint)."""
    add_user(services)
    app = add_client(services)
    _sign_in(client, app)
    assert app.post_logout_redirect_uri is not None
    for params in ({"post_logout_redirect_uri": app.post_logout_redirect_uri},
                   {"post_logout_redirect_uri": app.post_logout_redirect_uri, "client_id": app.client_id}):
        page = client.get(_logout_url(**params, state="s"))
        assert page.status_code == 200, page.text
        assert "location" not in page.headers
        assert 'action="/logout/confirm"' in page.text
    response = client.post("/logout/confirm", data={**params, "state": "s", "csrf_token": csrf_of(page.text)})
    assert response.status_code == 200, response.text
    assert "location" not in response.headers
    assert LOGGED_OUT in response.text
    _assert_signed_out(client, app)


def test_logout_without_hint_asks_for_confirmation(client: TestClient, services: Services) -> None:
    """A logout request without id_token_hint shows a confirmation form with a CSRF token and ends nothing
    yet (RP-Initiated Logout 1.0, 6; ASVS 10.6.2)."""
    add_user(services)
    app = add_client(services)
    _sign_in(client, app)
    page = client.get("/logout")
    assert page.status_code == 200, page.text
    assert 'action="/logout/confirm"' in page.text and 'method="post"' in page.text
    assert csrf_of(page.text)
    assert not _deletes_session_cookie(page, services)
    assert _sessions(services)[0].ended_at is None
    _assert_signed_in(client, app)
    response = client.post("/logout/confirm", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 200 and LOGGED_OUT in response.text
    assert _deletes_session_cookie(response, services)
    _assert_signed_out(client, app)


def test_confirmation_names_the_client(client: TestClient, services: Services) -> None:
    """With client_id the confirmation page says which application asks, escaped as HTML."""
    add_user(services)
    app = add_client(services, name="<b>Bürgerbüro</b>")
    _sign_in(client, app)
    page = client.get(_logout_url(client_id=app.client_id))
    assert page.status_code == 200
    assert "&lt;b&gt;Bürgerbüro&lt;/b&gt;" in page.text and "<b>Bürgerbüro" not in page.text


@pytest.mark.parametrize("token", [None, "", "forged", "x" * 600])
def test_confirmation_without_valid_csrf_is_refused(client: TestClient, services: Services,
                                                    token: str | None) -> None:
    """A confirming POST without, or with a wrong, CSRF token is 403 and the session survives (ASVS 3.5.1)."""
    add_user(services)
    app = add_client(services)
    _sign_in(client, app)
    client.get("/logout")
    data = {"ui_locales": "de"} if token is None else {"csrf_token": token}
    response = client.post("/logout/confirm", data=data)
    assert response.status_code == 403, response.text
    assert not _deletes_session_cookie(response, services)
    assert _sessions(services)[0].ended_at is None
    _assert_signed_in(client, app)


def test_confirmation_with_another_browsers_csrf_is_refused(client: TestClient, services: Services) -> None:
    """An attacker's own valid CSRF token does not log a victim out: the token is bound to the session."""
    add_user(services)
    add_user(services, "mallory", email="mallory@example.org")
    app = add_client(services)
    _sign_in(client, app)
    # A second app on the same database, as the attacker's own browser (its sender is never started).
    attacker = TestClient(create_app(services=services), base_url=ISSUER, follow_redirects=False)
    try:
        authorize(attacker, Flow(app), username="mallory")
        attacker_token = csrf_of(attacker.get("/logout").text)
    finally:
        attacker.close()
    response = client.post("/logout/confirm", data={"csrf_token": attacker_token})
    assert response.status_code == 403, response.text
    _assert_signed_in(client, app)
    victim = [row for row in _sessions(services) if row.username == "erika"]
    assert victim[0].ended_at is None


def test_confirmation_form_is_not_accepted_by_get(client: TestClient, services: Services) -> None:
    """Confirming is a state change and only accepts POST (ASVS 3.5.3)."""
    add_user(services)
    app = add_client(services)
    _sign_in(client, app)
    token = csrf_of(client.get("/logout").text)
    response = client.get("/logout/confirm", params={"csrf_token": token})
    assert response.status_code == 405
    _assert_signed_in(client, app)


def test_hint_signed_by_foreign_key_is_an_error(client: TestClient, services: Services) -> None:
    """An id_token_hint not signed by us is refused with an error page; nothing ends and nothing redirects
    (RP-Initiated Logout 1.0, 2 and 4)."""
    add_user(services)
    app = add_client(services)
    body = _sign_in(client, app)
    real = decode(client, body["id_token"])
    forged = jwt.encode(dict(real.header), dict(real.claims), ECKey.generate_key("P-256"), algorithms=["ES256"])
    assert app.post_logout_redirect_uri is not None
    response = client.get(_logout_url(id_token_hint=forged, post_logout_redirect_uri=app.post_logout_redirect_uri,
                                      state="s"))
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert "text/html" in response.headers["content-type"]
    assert not _deletes_session_cookie(response, services)
    _assert_signed_in(client, app)


def test_access_token_as_hint_is_an_error(client: TestClient, services: Services) -> None:
    """An access token is not an ID token, even though we signed it: error page, session kept (RFC 9068 4)."""
    add_user(services)
    app = add_client(services)
    body = _sign_in(client, app)
    assert app.post_logout_redirect_uri is not None
    response = client.get(_logout_url(id_token_hint=body["access_token"],
                                      post_logout_redirect_uri=app.post_logout_redirect_uri))
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    _assert_signed_in(client, app)


@pytest.mark.parametrize("hint", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2lkcC50ZXN0In0."])
def test_malformed_hint_is_an_error(client: TestClient, services: Services, hint: str) -> None:
    """Garbage and unsigned (`alg: none`) hints give an error page, never a 500 or a logout."""
    add_user(services)
    app = add_client(services)
    _sign_in(client, app)
    response = client.get(_logout_url(id_token_hint=hint))
    assert response.status_code == 400, response.text
    _assert_signed_in(client, app)


def test_hint_with_other_client_id_is_an_error(client: TestClient, services: Services) -> None:
    """client_id and the hint's `aud` must agree (RP-Initiated Logout 1.0, 2)."""
    add_user(services)
    first = add_client(services, name="A")
    second = add_client(services, name="B")
    body = _sign_in(client, first)
    response = client.get(_logout_url(id_token_hint=body["id_token"], client_id=second.client_id))
    assert response.status_code == 400, response.text
    _assert_signed_in(client, first)


def test_hint_of_an_older_session_asks_for_confirmation(client: TestClient, services: Services) -> None:
    """A genuine ID token from an earlier session does not end the current one without confirmation
    (RP-Initiated Logout 1.0, 6: the hint must identify the session being ended)."""
    add_user(services)
    app = add_client(services)
    old = _sign_in(client, app)
    client.get(_logout_url(id_token_hint=old["id_token"]))
    _sign_in(client, app)
    assert app.post_logout_redirect_uri is not None
    page = client.get(_logout_url(id_token_hint=old["id_token"], post_logout_redirect_uri=app.post_logout_redirect_uri))
    assert page.status_code == 200, page.text
    assert 'action="/logout/confirm"' in page.text
    _assert_signed_in(client, app)


def test_expired_hint_of_current_session_still_works(client: TestClient, services: Services,
                                                     clock: FakeClock) -> None:
    """An ID token past its `exp` still identifies the session (RP-Initiated Logout 1.0, 2: OPs SHOULD accept)."""
    add_user(services)
    app = add_client(services)
    body = _sign_in(client, app)
    clock.advance(seconds=services.settings.tokens.id_token_lifetime.total_seconds() + 60)
    response = client.get(_logout_url(id_token_hint=body["id_token"]))
    assert response.status_code == 200 and LOGGED_OUT in response.text
    _assert_signed_out(client, app)


def test_logout_without_session(client: TestClient, services: Services) -> None:
    """Logging out without a session shows the logged-out page and does not fail."""
    response = client.get("/logout")
    assert response.status_code == 200, response.text
    assert LOGGED_OUT in response.text


def test_logout_revokes_session_tokens_but_not_offline_access(client: TestClient, services: Services) -> None:
    """At logout the refresh tokens bound to the session are revoked, offline_access ones survive
    (OIDC Core 11; RFC 9700 4.14.2)."""
    add_user(services)
    online = add_client(services, name="Online")
    offline = add_client(services, name="Offline")
    online_tokens = _sign_in(client, online, scope="openid profile")
    offline_tokens = _sign_in(client, offline, scope="openid offline_access")
    response = client.get(_logout_url(id_token_hint=online_tokens["id_token"]))
    assert response.status_code == 200 and LOGGED_OUT in response.text
    refused = _refresh(client, online, online_tokens["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert client.get("/userinfo", headers={"Authorization": f"Bearer {online_tokens['access_token']}"}
                      ).status_code == 401
    kept = _refresh(client, offline, offline_tokens["refresh_token"])
    assert kept.status_code == 200, kept.text


# --- back-channel logout ----------------------------------------------------------------------------------------


def test_backchannel_logout_reaches_every_client_of_the_session(client: TestClient, services: Services,
                                                                receiver: Receiver) -> None:
    """Every client that took part gets one POST with a valid logout token (Back-Channel Logout 1.0, 2.4-2.5)."""
    sub = add_user(services)
    first = add_client(services, name="A", backchannel_logout_uri=receiver.url("/a"))
    second = add_client(services, name="B", backchannel_logout_uri=receiver.url("/b"),
                        id_token_signed_response_alg="RS256")
    add_client(services, name="C", backchannel_logout_uri=receiver.url("/c"))  # registered, never signed in to
    first_tokens = _sign_in(client, first)
    second_tokens = _sign_in(client, second)
    sid = decode(client, first_tokens["id_token"]).claims["sid"]
    assert decode(client, second_tokens["id_token"]).claims["sid"] == sid
    response = client.get(_logout_url(id_token_hint=first_tokens["id_token"]))
    assert response.status_code == 200, response.text
    jtis = set()
    for path, app, alg in (("/a", first, "ES256"), ("/b", second, "RS256")):
        [form] = receiver.wait_for(path, 1)
        assert set(form) == {"logout_token"}
        token = decode(client, form["logout_token"], algorithms=[alg])
        header, claims = token.header, token.claims
        assert header["typ"] == "logout+jwt" and header["kid"] and header["alg"] == alg
        assert claims["iss"] == ISSUER and claims["aud"] == app.client_id
        assert claims["sub"] == sub and claims["sid"] == sid
        assert claims["events"] == {LOGOUT_EVENT: {}}
        assert 0 < claims["exp"] - claims["iat"] <= 120
        assert abs(claims["iat"] - int(services.now().timestamp())) <= 5
        assert "nonce" not in claims
        assert claims["jti"] and claims["jti"] not in jtis
        jtis.add(claims["jti"])
        jwt.JWTClaimsRegistry(iss={"essential": True, "value": ISSUER}, aud={"essential": True, "value": app.client_id},
                              exp={"essential": True}, iat={"essential": True}, jti={"essential": True}
                              ).validate(claims)
    with receiver.lock:
        headers = [h for p, _, h in receiver.posts if p == "/a"][0]
    assert headers["content-type"].startswith("application/x-www-form-urlencoded")
    _wait_until(lambda: all(d.delivered_at is not None for d in _deliveries(services)), "deliveries recorded")
    assert [d.attempts for d in _deliveries(services)] == [1, 1]
    time.sleep(0.2)
    assert receiver.posts_to("/c") == []
    assert len(receiver.posts_to("/a")) == 1 and len(receiver.posts_to("/b")) == 1


def test_backchannel_retries_after_a_failure(client: TestClient, services: Services, clock: FakeClock,
                                            receiver: Receiver) -> None:
    """A receiver answering 500 gets the same token again after the pause (Back-Channel Logout 1.0, 2.8)."""
    add_user(services)
    app = add_client(services, backchannel_logout_uri=receiver.url("/flaky"))
    receiver.fail_first.add("/flaky")
    body = _sign_in(client, app)
    client.get(_logout_url(id_token_hint=body["id_token"]))
    [first] = receiver.wait_for("/flaky", 1)
    _wait_until(lambda: _deliveries(services)[0].attempts == 1, "the failure to be recorded")
    [row] = _deliveries(services)
    assert row.delivered_at is None and row.failed_at is None and row.last_error == "HTTP 500"
    assert row.next_attempt_at > clock()
    clock.advance(seconds=(row.next_attempt_at - clock()).total_seconds())
    # Wake the sender in its own event loop instead of waiting for its next poll.
    sender: BackchannelSender = client.app.state.ctx.sender  # type: ignore[attr-defined]
    assert client.portal is not None
    client.portal.call(sender.wake)
    posts = receiver.wait_for("/flaky", 2)
    assert posts[1]["logout_token"] == first["logout_token"]
    _wait_until(lambda: _deliveries(services)[0].delivered_at is not None, "the retry to be recorded")
    assert _deliveries(services)[0].attempts == 2


def test_slow_receiver_does_not_delay_the_user(client: TestClient, services: Services, receiver: Receiver) -> None:
    """Delivery happens in the background: a receiver taking 3 s does not hold up the logout response."""
    add_user(services)
    app = add_client(services, backchannel_logout_uri=receiver.url("/slow"))
    receiver.delay["/slow"] = 3.0
    body = _sign_in(client, app)
    started = time.monotonic()
    response = client.get(_logout_url(id_token_hint=body["id_token"]))
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert elapsed < 2.0, f"logout took {elapsed:.1f}s"
    receiver.wait_for("/slow", 1)
    _wait_until(lambda: _deliveries(services)[0].delivered_at is not None, "the slow delivery to finish")


def test_unreachable_receiver_does_not_break_logout(client: TestClient, services: Services) -> None:
    """A receiver that refuses connections only leaves a failed attempt; the user is logged out."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    add_user(services)
    app = add_client(services, backchannel_logout_uri=f"http://127.0.0.1:{port}/gone")
    body = _sign_in(client, app)
    response = client.get(_logout_url(id_token_hint=body["id_token"]))
    assert response.status_code == 200 and LOGGED_OUT in response.text
    _wait_until(lambda: _deliveries(services)[0].attempts == 1, "the failed attempt")
    [row] = _deliveries(services)
    assert row.delivered_at is None and row.last_error == "ConnectError"
    _assert_signed_out(client, app)


def test_client_without_backchannel_uri_gets_no_delivery(client: TestClient, services: Services) -> None:
    """Only clients that registered a backchannel_logout_uri are queued (Back-Channel Logout 1.0, 2.2)."""
    add_user(services)
    app = add_client(services)
    body = _sign_in(client, app)
    client.get(_logout_url(id_token_hint=body["id_token"]))
    assert _deliveries(services) == []


# --- retry scheduling, driven directly ----------------------------------------------------------------------


def _ended_session_with_delivery(services: Services, clock: FakeClock, uri: str) -> tuple[int, str]:
    """A session in which one client with a back-channel URI took part, ended: one delivery queued."""
    add_user(services)
    app = add_client(services, backchannel_logout_uri=uri)
    with unit_of_work(services.sessions) as db:
        user = db.scalars(select(User)).one()
        client_row = db.scalars(select(Client).where(Client.client_id == app.client_id)).one()
        _, session = create_session(db, services.hasher, services.settings.session, user, amr=["pwd"], acr=None,
                                    now=clock(), origin=Origin())
        add_participant(db, session, client_row.id)
        db.flush()
        assert end_session(db, services, session, reason="logout", now=clock(), origin=Origin()) == 1
        # Ending twice queues nothing more.
        assert end_session(db, services, session, reason="logout", now=clock(), origin=Origin()) == 0
    [row] = _deliveries(services)
    return row.id, app.client_id


def test_delivery_is_leased_to_one_sender(services: Services, clock: FakeClock) -> None:
    """A due delivery is leased once; a second sender gets nothing until the lease lapses."""
    delivery_id, _ = _ended_session_with_delivery(services, clock, "https://rp.example/bc")
    with unit_of_work(services.sessions) as db:
        assert [row.id for row in lease_due(db, clock())] == [delivery_id]
    with unit_of_work(services.sessions) as db:
        assert lease_due(db, clock()) == []
    clock.advance(seconds=LEASE.total_seconds() + 1)
    with unit_of_work(services.sessions) as db:
        assert [row.id for row in lease_due(db, clock())] == [delivery_id]


def test_retry_schedule_and_giving_up(services: Services, clock: FakeClock) -> None:
    """Failures are retried with growing pauses; after backchannel_attempts the delivery is given up and
    audited as logout.backchannel_failed."""
    delivery_id, client_id = _ended_session_with_delivery(services, clock, "https://rp.example/bc")
    attempts = services.settings.logout.backchannel_attempts
    pauses = []
    for attempt in range(1, attempts + 1):
        with unit_of_work(services.sessions) as db:
            assert [row.id for row in lease_due(db, clock())] == [delivery_id], f"attempt {attempt}"
            record_result(db, delivery_id, "HTTP 500", clock(), attempts)
        [row] = _deliveries(services)
        assert row.attempts == attempt and row.leased_until is None and row.last_error == "HTTP 500"
        if attempt == attempts:
            break
        assert row.failed_at is None
        pause = row.next_attempt_at - clock()
        pauses.append(pause)
        clock.advance(seconds=pause.total_seconds() - 1)
        with unit_of_work(services.sessions) as db:
            assert lease_due(db, clock()) == [], "retried before its pause was over"
        clock.advance(seconds=1)
    assert pauses == sorted(pauses) and pauses[0] >= timedelta(seconds=1) and pauses[-1] > pauses[0]
    [row] = _deliveries(services)
    assert row.failed_at is not None and row.delivered_at is None
    clock.advance(days=1)
    with unit_of_work(services.sessions) as db:
        assert lease_due(db, clock()) == []
    with read_only(services.sessions) as db:
        events = db.scalars(select(AuditEvent).where(AuditEvent.event == "logout.backchannel_failed")).all()
        assert len(events) == 1
        assert events[0].outcome == "failure" and events[0].client_id == client_id
        assert events[0].details["attempts"] == attempts
        assert "logout_token" not in str(events[0].details) and "eyJ" not in str(events[0].details)


def test_success_after_failures_stops_retrying(services: Services, clock: FakeClock) -> None:
    """A delivery that succeeds is done: it is not leased again and raises no failure event."""
    delivery_id, _ = _ended_session_with_delivery(services, clock, "https://rp.example/bc")
    max_attempts = services.settings.logout.backchannel_attempts
    with unit_of_work(services.sessions) as db:
        lease_due(db, clock())
        record_result(db, delivery_id, "ConnectError", clock(), max_attempts)
    clock.advance(hours=2)
    with unit_of_work(services.sessions) as db:
        assert len(lease_due(db, clock())) == 1
        record_result(db, delivery_id, None, clock(), max_attempts)
    [row] = _deliveries(services)
    assert row.delivered_at == clock() and row.attempts == 2 and row.failed_at is None
    clock.advance(days=1)
    with unit_of_work(services.sessions) as db:
        assert lease_due(db, clock()) == []
    with read_only(services.sessions) as db:
        assert db.scalars(select(AuditEvent).where(AuditEvent.event == "logout.backchannel_failed")).all() == []


def test_backchannel_uri_with_query_is_used_as_registered(client: TestClient, services: Services,
                                                          receiver: Receiver) -> None:
    """A registered URI with a query is POSTed to as is; the token goes in the body, not the URL
    (Back-Channel Logout 1.0, 2.5)."""
    add_user(services)
    app = add_client(services, backchannel_logout_uri=receiver.url("/bc?tenant=1"))
    body = _sign_in(client, app)
    client.get(_logout_url(id_token_hint=body["id_token"]))
    [form] = receiver.wait_for("/bc?tenant=1", 1)
    assert form["logout_token"].count(".") == 2
    with receiver.lock:
        assert all("logout_token" not in urlsplit(path).query for path, _, _ in receiver.posts)

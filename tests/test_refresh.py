"""The refresh token grant: rotation, reuse detection, binding to client, scope, user, session and lifetime
(RFC 6749 6; RFC 9700 2.2.2 and 4.14.2; OWASP ASVS 10.4.5 and 10.4.8). Attack cases 16-18.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from idp.accounts.users import ensure_group
from idp.db import unit_of_work
from idp.models import AuditEvent, Client, SsoSession, Token, User
from idp.services import Services
from tests.conftest import FakeClock
from tests.helpers import Flow, RegisteredClient, add_client, add_user, authorize, decode, exchange

# --- helpers ---------------------------------------------------------------------------------------------------


def assert_oauth_error(response: Any, error: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body and "refresh_token" not in body


def assert_tokens(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert body["token_type"] == "Bearer" and body["access_token"]
    return body


def refresh(browser: TestClient, app: RegisteredClient, refresh_token: str, **extra: str) -> Any:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    if app.client_secret is None:
        return browser.post("/token", data={**data, "client_id": app.client_id})
    return browser.post("/token", data=data, auth=(app.client_id, app.client_secret))


def introspect(browser: TestClient, owner: RegisteredClient, token: str) -> dict[str, Any]:
    assert owner.client_secret
    response = browser.post("/introspect", data={"token": token}, auth=(owner.client_id, owner.client_secret))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def userinfo_status(browser: TestClient, access_token: str) -> int:
    return browser.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"}).status_code


def sign_in(browser: TestClient, app: RegisteredClient, scope: str = "openid profile email groups") -> dict[str, Any]:
    """The browser flow and the code exchange: the first token response of a new family."""
    flow = Flow(app, scope=scope)
    body = assert_tokens(exchange(browser, flow, authorize(browser, flow)["code"]))
    assert body["refresh_token"]
    return body


def family_rows(services: Services, app: RegisteredClient) -> list[Token]:
    with unit_of_work(services.sessions) as db:
        return list(db.scalars(select(Token).join(Client, Client.id == Token.client_id)
                               .where(Client.client_id == app.client_id).order_by(Token.id)))


@pytest.fixture
def user(services: Services) -> str:
    return add_user(services)


@pytest.fixture
def app(services: Services) -> RegisteredClient:
    return add_client(services)


# --- rotation and reuse detection (attack case 16) ------------------------------------------------------------


def test_refresh_rotates_the_refresh_token(client: TestClient, user: str, app: RegisteredClient) -> None:
    """Each refresh returns a new access token and a new refresh token (RFC 9700 4.14.2)."""
    first = sign_in(client, app)
    second = assert_tokens(refresh(client, app, first["refresh_token"]))
    assert second["refresh_token"] and second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == first["scope"]
    claims = decode(client, second["access_token"]).claims
    assert claims["sub"] == user and claims["client_id"] == app.client_id
    assert userinfo_status(client, second["access_token"]) == 200
    third = assert_tokens(refresh(client, app, second["refresh_token"]))
    assert third["refresh_token"] not in {first["refresh_token"], second["refresh_token"]}


def test_public_client_refresh_rotates(client: TestClient, services: Services, user: str) -> None:
    """A public client's refresh tokens are rotated too: that is their protection (RFC 9700 2.2.2)."""
    app = add_client(services, public=True)
    first = sign_in(client, app)
    second = assert_tokens(refresh(client, app, first["refresh_token"]))
    assert second["refresh_token"] != first["refresh_token"]
    assert_oauth_error(refresh(client, app, first["refresh_token"]), "invalid_grant")
    assert_oauth_error(refresh(client, app, second["refresh_token"]), "invalid_grant")


@pytest.mark.parametrize("replayed", [0, 1], ids=["first", "previous"])
def test_reused_refresh_token_revokes_the_family(client: TestClient, services: Services, user: str,
                                                 app: RegisteredClient, replayed: int) -> None:
    """A rotated refresh token presented again: invalid_grant, and every token of the family is revoked,
    the newest refresh token included (RFC 9700 4.14.2; ASVS 10.4.5)."""
    responses = [sign_in(client, app)]
    for _ in range(2):
        responses.append(assert_tokens(refresh(client, app, responses[-1]["refresh_token"])))
    newest = responses[-1]
    assert introspect(client, app, newest["access_token"])["active"] is True

    assert_oauth_error(refresh(client, app, responses[replayed]["refresh_token"]), "invalid_grant")

    assert_oauth_error(refresh(client, app, newest["refresh_token"]), "invalid_grant")
    for response in responses:
        assert introspect(client, app, response["access_token"]) == {"active": False}
        assert introspect(client, app, response["refresh_token"]) == {"active": False}
        assert userinfo_status(client, response["access_token"]) == 401
    rows = family_rows(services, app)
    assert len(rows) == 3 and len({row.family_id for row in rows}) == 1
    assert all(row.revoked_at is not None for row in rows)
    assert rows[-1].revoked_reason == "refresh_reuse"
    with unit_of_work(services.sessions) as db:
        event = db.scalar(select(AuditEvent).where(AuditEvent.event == "token.refresh_reuse"))
        assert event is not None and event.outcome == "failure" and event.client_id == app.client_id


def test_reuse_revokes_only_its_own_family(client: TestClient, services: Services, user: str,
                                           app: RegisteredClient) -> None:
    """Reuse detection revokes the replayed family, not the user's other grants to the same client."""
    family_a = sign_in(client, app)
    family_b = sign_in(client, app)
    assert_tokens(refresh(client, app, family_a["refresh_token"]))
    assert_oauth_error(refresh(client, app, family_a["refresh_token"]), "invalid_grant")
    assert_tokens(refresh(client, app, family_b["refresh_token"]))


@pytest.mark.parametrize("parallel", [2, 6])
def test_parallel_refreshes_with_one_token(client: TestClient, services: Services, user: str,
                                           app: RegisteredClient, parallel: int) -> None:
    """Simultaneous refreshes with one token: at most one succeeds, the rest are invalid_grant, and the
    family ends up revoked because the token was replayed (RFC 9700 4.14.2; Keycloak CVE-2026-1035)."""
    first = sign_in(client, app)
    barrier = threading.Barrier(parallel)
    results: list[Any] = []
    lock = threading.Lock()

    def use() -> None:
        barrier.wait(timeout=30)
        response = refresh(client, app, first["refresh_token"])
        with lock:
            results.append(response)

    threads = [threading.Thread(target=use) for _ in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == parallel
    successes = [r for r in results if r.status_code == 200]
    assert len(successes) <= 1, [r.text for r in results]
    for response in results:
        if response.status_code != 200:
            assert_oauth_error(response, "invalid_grant")
    for success in successes:
        assert_oauth_error(refresh(client, app, success.json()["refresh_token"]), "invalid_grant")
    assert all(row.revoked_at is not None for row in family_rows(services, app))


# --- binding to the client and the granted scope (attack case 17) ---------------------------------------------


def test_other_client_cannot_use_refresh_token(client: TestClient, services: Services, user: str,
                                               app: RegisteredClient) -> None:
    """A refresh token is bound to the client it was issued to (RFC 6749 6, 10.4): invalid_grant for others."""
    first = sign_in(client, app)
    confidential = add_client(services, name="Anderes Verfahren")
    public = add_client(services, name="App", public=True)
    assert_oauth_error(refresh(client, confidential, first["refresh_token"]), "invalid_grant")
    assert_oauth_error(refresh(client, public, first["refresh_token"]), "invalid_grant")
    assert family_rows(services, confidential) == [] and family_rows(services, public) == []


@pytest.mark.parametrize("scope", ["openid profile email groups offline_access", "openid admin", "openid phone"])
def test_wider_scope_is_invalid_scope_and_token_survives(client: TestClient, user: str, app: RegisteredClient,
                                                         scope: str) -> None:
    """Asking for more than was granted is invalid_scope (RFC 6749 6), and the refresh token is not spent."""
    first = sign_in(client, app)
    assert_oauth_error(refresh(client, app, first["refresh_token"], scope=scope), "invalid_scope")
    second = assert_tokens(refresh(client, app, first["refresh_token"]))
    assert second["scope"] == first["scope"]


# --- a new ID token with each refresh (OpenID Connect Core 12.2) -------------------------------------------------

def test_refresh_answers_with_a_new_id_token_of_the_same_sign_in(client: TestClient, services: Services,
                                                                 clock: FakeClock, user: str,
                                                                 app: RegisteredClient) -> None:
    """The same iss, sub and aud; a new iat and exp; auth_time, acr, amr and sid of the original sign-in (not of
    the refresh); no nonce; at_hash of the new access token; and the user's claims as they are now: a group the
    directory (here: the database) took away is gone from it."""
    with unit_of_work(services.sessions) as db:
        row = db.scalar(select(User).where(User.sub == user))
        assert row is not None
        row.groups = [ensure_group(db, "Bauamt"), ensure_group(db, "VPN-Nutzer")]
    first = sign_in(client, app)
    original = decode(client, first["id_token"]).claims
    assert original["nonce"] and original["groups"] == ["Bauamt", "VPN-Nutzer"]
    with unit_of_work(services.sessions) as db:
        row = db.scalar(select(User).where(User.sub == user))
        assert row is not None
        row.groups = [ensure_group(db, "Bauamt")]
    clock.advance(seconds=600)
    second = assert_tokens(refresh(client, app, first["refresh_token"]))
    renewed = decode(client, second["id_token"]).claims
    assert decode(client, second["id_token"]).header["kid"] == decode(client, first["id_token"]).header["kid"]
    for claim in ("iss", "sub", "aud", "auth_time", "acr", "amr", "sid"):
        assert renewed[claim] == original[claim], claim
    assert renewed["iat"] == original["iat"] + 600 and renewed["exp"] == original["exp"] + 600
    assert "nonce" not in renewed
    assert renewed["at_hash"] != original["at_hash"]
    assert renewed["at_hash"] == _at_hash(second["access_token"])
    assert renewed["groups"] == ["Bauamt"]


def test_a_refresh_without_openid_gets_no_id_token(client: TestClient, user: str, app: RegisteredClient) -> None:
    """An ID token describes a sign-in to a relying party that asked for one: a refresh narrowed to scopes without
    ``openid`` answers with tokens for those scopes only."""
    first = sign_in(client, app)
    second = assert_tokens(refresh(client, app, first["refresh_token"], scope="email"))
    assert second["scope"] == "email" and "id_token" not in second


def _at_hash(access_token: str) -> str:
    """OpenID Connect Core 3.1.3.6 for ES256: the left half of SHA-256 of the token, base64url without padding."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode("ascii")


def test_narrower_scope_is_granted(client: TestClient, services: Services, user: str, app: RegisteredClient) -> None:
    """A refresh may ask for fewer scopes; the new access token carries only those (RFC 6749 6)."""
    first = sign_in(client, app)
    second = assert_tokens(refresh(client, app, first["refresh_token"], scope="openid email"))
    assert set(second["scope"].split()) == {"openid", "email"}
    assert set(decode(client, second["access_token"]).claims["scope"].split()) == {"openid", "email"}
    info = client.get("/userinfo", headers={"Authorization": f"Bearer {second['access_token']}"})
    assert info.status_code == 200 and "email" in info.json() and "groups" not in info.json()
    assert family_rows(services, app)[-1].scope == second["scope"]


def test_missing_and_unknown_refresh_tokens(client: TestClient, user: str, app: RegisteredClient) -> None:
    """No refresh_token is invalid_request; an unknown one, or an access token in its place, is invalid_grant."""
    first = sign_in(client, app)
    response = client.post("/token", data={"grant_type": "refresh_token"}, auth=(app.client_id, str(app.client_secret)))
    assert_oauth_error(response, "invalid_request")
    assert_oauth_error(refresh(client, app, "x" * 43), "invalid_grant")
    assert_oauth_error(refresh(client, app, ""), "invalid_grant")
    assert_oauth_error(refresh(client, app, "x" * 5000), "invalid_grant")
    assert_oauth_error(refresh(client, app, first["access_token"]), "invalid_grant")
    assert_oauth_error(refresh(client, app, first["id_token"]), "invalid_grant")
    assert_tokens(refresh(client, app, first["refresh_token"]))


# --- the user and the session (attack case 18) ----------------------------------------------------------------


def test_refresh_after_user_disabled(client: TestClient, services: Services, clock: FakeClock, user: str,
                                     app: RegisteredClient) -> None:
    """A disabled account's refresh tokens stop working (ASVS 7.4.2; Zitadel CVE-2023-22492)."""
    first = sign_in(client, app, scope="openid offline_access")
    with unit_of_work(services.sessions) as db:
        db.execute(update(User).where(User.sub == user).values(disabled_at=clock()))
    assert_oauth_error(refresh(client, app, first["refresh_token"]), "invalid_grant")
    assert userinfo_status(client, first["access_token"]) == 401


def _log_out(browser: TestClient, services: Services, id_token: str) -> None:
    """RP-initiated logout with an id_token_hint for the current session: no confirmation needed."""
    response = browser.get("/logout?" + urlencode({"id_token_hint": id_token}))
    assert response.status_code in (200, 303), response.text
    with unit_of_work(services.sessions) as db:
        session = db.scalar(select(SsoSession))
        assert session is not None and session.ended_at is not None


def test_refresh_token_ends_with_the_sso_session(client: TestClient, services: Services, user: str,
                                                 app: RegisteredClient) -> None:
    """Without offline_access a refresh token is bound to the sign-in session: logout ends it (RFC 9700 4.14.2)."""
    first = sign_in(client, app)
    second = assert_tokens(refresh(client, app, first["refresh_token"]))
    _log_out(client, services, first["id_token"])
    assert_oauth_error(refresh(client, app, second["refresh_token"]), "invalid_grant")
    assert userinfo_status(client, second["access_token"]) == 401


def test_offline_access_survives_logout(client: TestClient, services: Services, user: str,
                                        app: RegisteredClient) -> None:
    """With offline_access the refresh token outlives the sign-in session (OIDC Core 11)."""
    first = sign_in(client, app, scope="openid profile offline_access")
    assert "offline_access" in first["scope"].split()
    _log_out(client, services, first["id_token"])
    second = assert_tokens(refresh(client, app, first["refresh_token"]))
    assert "offline_access" in second["scope"].split()
    assert_tokens(refresh(client, app, second["refresh_token"]))


# --- lifetime -------------------------------------------------------------------------------------------------


def test_refresh_token_expires(client: TestClient, services: Services, clock: FakeClock, user: str,
                               app: RegisteredClient) -> None:
    """After refresh_token_lifetime the refresh token is invalid_grant (ASVS 10.4.8)."""
    first = sign_in(client, app)
    clock.advance(seconds=services.settings.tokens.refresh_token_lifetime.total_seconds() + 1)
    assert_oauth_error(refresh(client, app, first["refresh_token"]), "invalid_grant")


def test_rotation_keeps_the_family_expiry(client: TestClient, services: Services, clock: FakeClock, user: str,
                                          app: RegisteredClient) -> None:
    """A rotated refresh token keeps the absolute expiry of its family: refreshing does not extend it."""
    lifetime = services.settings.tokens.refresh_token_lifetime
    first = sign_in(client, app)
    clock.advance(seconds=lifetime.total_seconds() * 0.6)
    second = assert_tokens(refresh(client, app, first["refresh_token"]))
    rows = family_rows(services, app)
    assert rows[-1].refresh_expires_at == rows[0].refresh_expires_at
    clock.advance(seconds=lifetime.total_seconds() * 0.4 + 1)
    assert_oauth_error(refresh(client, app, second["refresh_token"]), "invalid_grant")


def test_offline_rotation_keeps_the_family_expiry(client: TestClient, services: Services, clock: FakeClock,
                                                  user: str, app: RegisteredClient) -> None:
    """Offline tokens live offline_token_lifetime from the login, however often they are refreshed."""
    lifetime = services.settings.tokens.offline_token_lifetime
    first = sign_in(client, app, scope="openid offline_access")
    rows = family_rows(services, app)
    assert rows[0].refresh_expires_at == rows[0].issued_at + lifetime
    clock.advance(seconds=lifetime.total_seconds() * 2 / 3)
    second = assert_tokens(refresh(client, app, first["refresh_token"]))
    clock.advance(seconds=lifetime.total_seconds() / 3 - 60)
    third = assert_tokens(refresh(client, app, second["refresh_token"]))
    clock.advance(seconds=61)
    assert_oauth_error(refresh(client, app, third["refresh_token"]), "invalid_grant")


def test_refreshed_access_token_lifetime(client: TestClient, services: Services, clock: FakeClock, user: str,
                                         app: RegisteredClient) -> None:
    """A refreshed access token lives the configured access token lifetime from the refresh, not the login."""
    first = sign_in(client, app)
    clock.advance(minutes=30)
    second = assert_tokens(refresh(client, app, first["refresh_token"]))
    claims = decode(client, second["access_token"]).claims
    assert claims["iat"] == int(clock().timestamp())
    lifetime = services.settings.tokens.access_token_lifetime
    assert claims["exp"] - claims["iat"] == int(lifetime.total_seconds()) == second["expires_in"]
    assert userinfo_status(client, first["access_token"]) == 401  # the first one expired meanwhile
    assert userinfo_status(client, second["access_token"]) == 200
    assert lifetime < timedelta(minutes=30)

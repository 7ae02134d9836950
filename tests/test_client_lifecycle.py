"""A client's life after registration (issue 5, "Console: clients", "Onboarding with governance", "CLI parity"):
the full update with the registration rules, secret rotation with a grace period and expiry (checked at the real
token endpoint), disabling, deleting with what was issued, per-client token lifetimes, and the ``idp clients``
commands that script all of it."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from idp import cli
from idp.db import unit_of_work
from idp.models import AuditEvent, AuthorizationCode, Client, ClientOwner, Consent, Token
from idp.oauth import client_registry as registry
from idp.oauth.clients import ClientError, NewClient, find_client, needs_secret, update_client
from idp.services import Services
from tests.conftest import FakeClock
from tests.console_cli import Cli
from tests.helpers import Flow, RegisteredClient, add_client, add_user, authorize, decode, exchange


def service(services: Services, **kwargs: Any) -> RegisteredClient:
    """A confidential client for client_credentials (its secret is checked at /token without a browser)."""
    kwargs.setdefault("name", "Fachverfahren-Backend")
    return add_client(services, grant_types=["client_credentials"], redirect_uris=[], post_logout_redirect_uris=[],
                      **kwargs)


def token_with(browser: TestClient, client_id: str, secret: str) -> Any:
    return browser.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))


def rotate(services: Services, client_id: str, grace: timedelta | None, **kwargs: Any) -> str:
    with unit_of_work(services.sessions) as db:
        row = find_client(db, client_id)
        assert row is not None
        return registry.rotate_secret(row, services.hasher, services.now(), grace, **kwargs)


def events(services: Services, name: str) -> list[AuditEvent]:
    with unit_of_work(services.sessions) as db:
        rows = list(db.scalars(select(AuditEvent).where(AuditEvent.event == name).order_by(AuditEvent.id)))
        for row in rows:
            db.expunge(row)
        return rows


# --- update_client ---------------------------------------------------------------------------------------------

def test_update_client_replaces_every_property_and_reports_what_changed(services: Services) -> None:
    """A full replacement: fields not given go back to their defaults; (before, after) name only what changed."""
    app = add_client(services, trusted=True, theme="default")
    with unit_of_work(services.sessions) as db:
        row = find_client(db, app.client_id)
        assert row is not None
        before, after = update_client(db, services.hasher, row, NewClient(
            name="Fallakte", redirect_uris=["https://fallakte.example/cb"], logo_uri="https://fallakte.example/l.png",
            access_token_lifetime=300, refresh_token_lifetime=3600, scope="openid email"))
        assert after == {"name": "Fallakte", "redirect_uris": ["https://fallakte.example/cb"],
                         "post_logout_redirect_uris": [], "trusted": False, "theme": None, "scope": "openid email",
                         "logo_uri": "https://fallakte.example/l.png", "access_token_lifetime": 300,
                         "refresh_token_lifetime": 3600}
        assert before["name"] == "Fachverfahren" and before["trusted"] is True and before["theme"] == "default"
        assert row.secret_hash is not None, "the secret stays while the client authenticates with one"
        assert "secret_hash" not in after and "secret_hash" not in before


@pytest.mark.parametrize(("new", "error"), [
    (NewClient(name="App", redirect_uris=["http://app.example/cb"]), "invalid_redirect_uri"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb#x"]), "invalid_redirect_uri"),
    (NewClient(name="App", redirect_uris=["https://*.example/cb"]), "invalid_redirect_uri"),
    (NewClient(name="", redirect_uris=["https://app.example/cb"]), "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], logo_uri="http://app.example/logo.png"),
     "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], access_token_lifetime=10),
     "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], refresh_token_lifetime=10 ** 9),
     "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], token_endpoint_auth_method="private_key_jwt",
               jwks={"keys": "none"}), "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], token_endpoint_auth_method="private_key_jwt",
               jwks={"keys": []}, jwks_uri="https://app.example/jwks"), "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], token_endpoint_auth_method="private_key_jwt",
               jwks_uri="http://app.example/jwks"), "invalid_client_metadata"),
])
def test_update_client_checks_like_registration_and_changes_nothing_on_error(services: Services, new: NewClient,
                                                                              error: str) -> None:
    """The same rules as ``create_client``; a refused update leaves the row as it was."""
    app = add_client(services)
    with unit_of_work(services.sessions) as db:
        row = find_client(db, app.client_id)
        assert row is not None
        with pytest.raises(ClientError) as refused:
            update_client(db, services.hasher, row, new)
        assert refused.value.error == error
        assert row.name == "Fachverfahren" and row.redirect_uris == ["https://app.example/cb"]


def test_leaving_secret_authentication_drops_the_secret_and_coming_back_needs_a_new_one(
        client: TestClient, services: Services) -> None:
    """A confidential client made public keeps no secret; made confidential again it has none until rotated."""
    app = add_client(services)
    with unit_of_work(services.sessions) as db:
        row = find_client(db, app.client_id)
        assert row is not None
        update_client(db, services.hasher, row, NewClient(name="App", public=True,
                                                          redirect_uris=["http://127.0.0.1/cb"]))
        assert row.secret_hash is None and not needs_secret(row)
        update_client(db, services.hasher, row, NewClient(name="App", redirect_uris=["https://app.example/cb"]))
        assert row.secret_hash is None and needs_secret(row)
        secret = registry.rotate_secret(row, services.hasher, services.now(), None)
        assert not needs_secret(row) and services.hasher.matches(secret, row.secret_hash)
    assert app.client_secret and secret != app.client_secret


# --- secret rotation -------------------------------------------------------------------------------------------

def test_old_secret_works_within_the_grace_and_is_refused_after_it(client: TestClient, services: Services,
                                                                    clock: FakeClock) -> None:
    """Rotation with a one-hour grace: both secrets work at /token for the hour, then only the new one."""
    app = service(services)
    assert app.client_secret
    new = rotate(services, app.client_id, timedelta(hours=1))
    assert len(new) >= 43, "256 bits, base64url"
    assert token_with(client, app.client_id, app.client_secret).status_code == 200
    assert token_with(client, app.client_id, new).status_code == 200
    clock.advance(minutes=59)
    assert token_with(client, app.client_id, app.client_secret).status_code == 200
    clock.advance(minutes=1)
    refused = token_with(client, app.client_id, app.client_secret)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    assert token_with(client, app.client_id, new).status_code == 200


def test_rotation_without_grace_stops_the_old_secret_at_once(client: TestClient, services: Services) -> None:
    app = service(services)
    assert app.client_secret
    new = rotate(services, app.client_id, None)
    assert token_with(client, app.client_id, app.client_secret).status_code == 401
    assert token_with(client, app.client_id, new).status_code == 200


def test_a_second_rotation_ends_the_first_grace(client: TestClient, services: Services) -> None:
    """Only one previous secret is kept: the one before the last rotation."""
    app = service(services)
    assert app.client_secret
    second = rotate(services, app.client_id, timedelta(days=1))
    third = rotate(services, app.client_id, timedelta(days=1))
    assert token_with(client, app.client_id, app.client_secret).status_code == 401
    assert token_with(client, app.client_id, second).status_code == 200
    assert token_with(client, app.client_id, third).status_code == 200


def test_a_secret_expires_and_the_grace_never_outlives_the_old_secret(client: TestClient, services: Services,
                                                                       clock: FakeClock) -> None:
    """A secret with a lifetime stops at its expiry; an old secret that expires within the grace stops then."""
    app = service(services)
    first = rotate(services, app.client_id, None, lifetime=timedelta(hours=2))
    clock.advance(hours=1)
    second = rotate(services, app.client_id, timedelta(days=7), lifetime=timedelta(days=90))
    assert token_with(client, app.client_id, first).status_code == 200
    clock.advance(hours=1)
    assert token_with(client, app.client_id, first).status_code == 401
    assert token_with(client, app.client_id, second).status_code == 200
    clock.advance(days=90)
    assert token_with(client, app.client_id, second).status_code == 401


@pytest.mark.parametrize("grace", [timedelta(0), timedelta(seconds=-1), timedelta(days=31)])
def test_a_grace_period_out_of_bounds_is_refused(services: Services, grace: timedelta) -> None:
    app = service(services)
    with pytest.raises(ClientError):
        rotate(services, app.client_id, grace)


def test_a_public_client_has_no_secret_to_rotate(services: Services) -> None:
    app = add_client(services, public=True, redirect_uris=["http://127.0.0.1/cb"])
    with pytest.raises(ClientError):
        rotate(services, app.client_id, None)


def test_expiring_secrets_lists_those_within_30_days_soonest_first(services: Services) -> None:
    """For the dashboard and the console: secrets expiring within 30 days (or expired), not later ones, not none."""
    soon, later, expired, never = (service(services, name=n) for n in ("Bald", "Später", "Abgelaufen", "Nie"))
    rotate(services, soon.client_id, None, lifetime=timedelta(days=10))
    rotate(services, later.client_id, None, lifetime=timedelta(days=60))
    rotate(services, expired.client_id, None, lifetime=timedelta(seconds=1))
    now = services.now() + timedelta(seconds=5)
    with unit_of_work(services.sessions) as db:
        listed = [row.name for row in registry.expiring_secrets(db, now)]
        assert listed == ["Abgelaufen", "Bald"]
        assert [row.name for row in registry.expiring_secrets(db, now, within=timedelta(days=61))] == [
            "Abgelaufen", "Bald", "Später"]
        states = {row.name: registry.secret_state(row, now) for row in db.scalars(select(Client))}
    assert states == {"Bald": "expiring", "Später": "valid", "Abgelaufen": "expired", "Nie": "valid"}
    assert never.client_secret


# --- disable, enable, delete -----------------------------------------------------------------------------------

def test_disable_revokes_tokens_and_an_owner_cannot_enable_what_an_admin_disabled(
        client: TestClient, services: Services) -> None:
    app = service(services)
    assert app.client_secret
    assert token_with(client, app.client_id, app.client_secret).status_code == 200
    with unit_of_work(services.sessions) as db:
        row = find_client(db, app.client_id)
        assert row is not None
        assert registry.disable_client(db, row, services.now(), "admin") == 1
        assert registry.disable_client(db, row, services.now(), "owner") == 0, "disabled already: no change"
        assert row.disabled_by == "admin"
    assert token_with(client, app.client_id, app.client_secret).status_code == 401
    with unit_of_work(services.sessions) as db:
        row = find_client(db, app.client_id)
        assert row is not None
        with pytest.raises(ClientError):
            registry.enable_client(row, "owner")
        assert registry.enable_client(row, "admin") is True
        assert db.scalar(select(func.count()).select_from(Token).where(Token.revoked_at.is_(None))) == 0
        registry.disable_client(db, row, services.now(), "owner")
        assert registry.enable_client(row, "owner") is True
    assert token_with(client, app.client_id, app.client_secret).status_code == 200


def test_delete_removes_the_client_with_codes_tokens_consents_and_owners(client: TestClient,
                                                                          services: Services) -> None:
    add_user(services)
    app = add_client(services)
    flow = Flow(app, scope="openid offline_access")
    code = authorize(client, flow)["code"]
    assert exchange(client, flow, code).status_code == 200
    authorize(client, Flow(app))  # a second, unused code
    with unit_of_work(services.sessions) as db:
        row = find_client(db, app.client_id)
        assert row is not None
        user = db.scalar(select(ClientOwner))
        assert user is None
        removed = registry.delete_client(db, row)
    assert removed["tokens"] == 1 and removed["consents"] == 1 and removed["authorization_codes"] == 2
    with unit_of_work(services.sessions) as db:
        assert find_client(db, app.client_id) is None
        for model in (Token, AuthorizationCode, Consent):
            assert db.scalar(select(func.count()).select_from(model)) == 0
    assert token_with(client, app.client_id, str(app.client_secret)).status_code == 401


# --- token lifetimes -------------------------------------------------------------------------------------------

def test_a_clients_access_token_lifetime_is_in_the_issued_token(client: TestClient, services: Services) -> None:
    app = service(services, access_token_lifetime=120)
    response = token_with(client, app.client_id, str(app.client_secret))
    assert response.status_code == 200
    body = response.json()
    claims = decode(client, body["access_token"]).claims
    assert body["expires_in"] == 120 and claims["exp"] - claims["iat"] == 120
    other = service(services, name="Standard")
    default = token_with(client, other.client_id, str(other.client_secret)).json()
    assert default["expires_in"] == int(services.settings.tokens.access_token_lifetime.total_seconds())


def test_a_clients_refresh_token_lifetime_bounds_its_refresh_tokens(client: TestClient, services: Services,
                                                                     clock: FakeClock) -> None:
    """An offline refresh token of a client with a one-hour refresh lifetime ends after the hour."""
    add_user(services)
    app = add_client(services, refresh_token_lifetime=3600, access_token_lifetime=300)
    flow = Flow(app, scope="openid offline_access")
    tokens = exchange(client, flow, authorize(client, flow)["code"]).json()
    assert tokens["expires_in"] == 300
    with unit_of_work(services.sessions) as db:
        row = db.scalar(select(Token))
        assert row is not None and row.refresh_expires_at is not None
        assert row.refresh_expires_at - row.issued_at == timedelta(hours=1)
    clock.advance(minutes=30)
    refreshed = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                            auth=(app.client_id, str(app.client_secret)))
    assert refreshed.status_code == 200, refreshed.text
    clock.advance(minutes=31)
    late = client.post("/token", data={"grant_type": "refresh_token",
                                       "refresh_token": refreshed.json()["refresh_token"]},
                       auth=(app.client_id, str(app.client_secret)))
    assert late.status_code == 400 and late.json()["error"] == "invalid_grant"


# --- the command line ------------------------------------------------------------------------------------------

@pytest.fixture
def run(services: Services, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(services, capsys, monkeypatch)


def test_cli_show_update_every_property_and_owners(run: Cli, services: Services) -> None:
    """``clients update`` changes any property (others stay), adds owners; ``show --json`` has no secret."""
    add_user(services, "olaf")
    from tests.helpers import add_console_user
    add_console_user(services, "anna", "app-owner")
    app = add_client(services)
    result = run.json("clients", "update", app.client_id, "--name", "Fallakte", "--redirect-uri",
                      "https://fallakte.example/cb", "--logo-uri", "https://fallakte.example/logo.png",
                      "--access-token-lifetime", "10m", "--refresh-token-lifetime", "8h", "--scope", "openid",
                      "--owner", "anna")
    assert result["changed"] == ["access_token_lifetime", "logo_uri", "name", "redirect_uris",
                                 "refresh_token_lifetime", "scope"]
    shown = run.json("clients", "show", app.client_id)
    assert shown["owners"] == ["anna"] and shown["access_token_lifetime"] == 600
    assert shown["refresh_token_lifetime"] == 8 * 3600 and shown["has_secret"] is True
    assert shown["post_logout_redirect_uris"] == ["https://app.example/logged-out"], "not given: unchanged"
    assert str(app.client_secret) not in json.dumps(shown) and "secret_hash" not in shown
    refused = run("clients", "update", app.client_id, "--redirect-uri", "http://fallakte.example/cb")
    assert refused.code == 1 and "https" in refused.err
    not_owner = run("clients", "update", app.client_id, "--owner", "olaf")
    assert not_owner.code == 1 and "app-owner" in not_owner.err
    [event] = events(services, "client.updated")
    assert event.details["after"]["name"] == "Fallakte" and event.details["before"]["name"] == "Fachverfahren"
    assert [e.details["owner"] for e in events(services, "client.owner_added")] == ["anna"]


def test_cli_rotate_secret_with_grace_disable_enable_delete(run: Cli, services: Services, client: TestClient,
                                                            clock: FakeClock) -> None:
    app = service(services)
    rotated = run.json("clients", "rotate-secret", app.client_id, "--grace", "1h", "--expires", "365d")
    assert rotated["previous_secret_expires_at"] and rotated["secret_expires_at"]
    assert token_with(client, app.client_id, str(app.client_secret)).status_code == 200
    assert token_with(client, app.client_id, rotated["client_secret"]).status_code == 200
    clock.advance(hours=1)
    assert token_with(client, app.client_id, str(app.client_secret)).status_code == 401
    [event] = events(services, "client.secret_rotated")
    assert event.details["grace_seconds"] == 3600 and rotated["client_secret"] not in json.dumps(event.details)
    assert run("clients", "rotate-secret", app.client_id, "--grace", "soon").code == 1

    assert run.json("clients", "disable", app.client_id)["tokens_revoked"] == 2, "both issued above"
    assert token_with(client, app.client_id, rotated["client_secret"]).status_code == 401
    assert run.json("clients", "enable", app.client_id)["changed"] is True
    assert token_with(client, app.client_id, rotated["client_secret"]).status_code == 200
    deleted = run.json("clients", "delete", app.client_id)
    assert deleted["deleted"] is True and deleted["removed"]["tokens"] == 3
    assert run("clients", "show", app.client_id).code == 1
    [gone] = events(services, "client.deleted")
    assert gone.client_id == app.client_id and gone.details["before"]["name"] == "Fachverfahren-Backend"


def test_cli_approve_and_decline(run: Cli, services: Services) -> None:
    """``decline`` needs a comment; only a requested client is declined; ``approve`` makes it active."""
    app = add_client(services)
    with unit_of_work(services.sessions) as db:
        row = find_client(db, app.client_id)
        assert row is not None
        row.status = "requested"
    with pytest.raises(SystemExit):
        cli.main(["clients", "decline", app.client_id])
    declined = run.json("clients", "decline", app.client_id, "--comment", "Bitte über den Datenschutz gehen")
    assert declined["status"] == "declined"
    assert run("clients", "decline", app.client_id, "--comment", "noch einmal").code == 1
    assert run.json("clients", "list", "--status", "declined")[0]["client_id"] == app.client_id  # type: ignore[index]
    approved = run.json("clients", "approve", app.client_id)
    assert approved["status"] == "active"
    assert [e.details["after"] for e in events(services, "client.declined") + events(services, "client.approved")] == [
        {"status": "declined"}, {"status": "active"}]

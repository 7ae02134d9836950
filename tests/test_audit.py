"""The audit trail: refused requests and failed client authentication leave a trace, and no secret does."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from idp import audit
from idp.accounts.authenticate import address_key
from idp.db import read_only, unit_of_work
from idp.models import AuditEvent
from idp.services import Services
from tests.helpers import Flow, add_client, add_user, csrf_of, follow_to_login


def _events(services: Services, name: str) -> list[AuditEvent]:
    with read_only(services.sessions) as db:
        events = list(db.scalars(select(AuditEvent).where(AuditEvent.event == name).order_by(AuditEvent.id)))
        db.expunge_all()  # keep the loaded values after the read-only transaction is rolled back
        return events


def test_refused_authorization_request_is_audited(client: TestClient, services: Services) -> None:
    """An unregistered redirect URI gets the error page and an ``authorize.refused`` event naming the client."""
    app = add_client(services)
    params = {**Flow(app).params(), "redirect_uri": "https://evil.example/cb"}
    response = client.get("/authorize?" + urlencode(params))
    assert response.status_code == 400 and "location" not in response.headers
    [event] = _events(services, "authorize.refused")
    assert event.outcome == "failure" and event.client_id == app.client_id
    assert event.details["error"] == "invalid_request"


def test_unknown_client_is_audited(client: TestClient, services: Services) -> None:
    """An unknown client_id is recorded as claimed, cut to the column's size."""
    response = client.get("/authorize?" + urlencode({"client_id": "x" * 100, "response_type": "code",
                                                     "scope": "openid"}))
    assert response.status_code == 400
    [event] = _events(services, "authorize.refused")
    assert event.client_id == "x" * 64 and event.details["error"] == "invalid_client"


def test_failed_client_authentication_is_audited(client: TestClient, services: Services) -> None:
    """A wrong client secret at the token endpoint is recorded with the endpoint, and the secret is not."""
    app = add_client(services, grant_types=["client_credentials"], redirect_uris=[], post_logout_redirect_uris=[])
    response = client.post("/token", data={"grant_type": "client_credentials", "client_id": app.client_id,
                                           "client_secret": "wrong-secret"})
    assert response.status_code in (400, 401) and response.json()["error"] == "invalid_client"
    [event] = _events(services, "client.authentication_failed")
    assert event.client_id == app.client_id and event.details == {"endpoint": "token"}
    assert "wrong-secret" not in str(event.details)


def test_repeated_login_field_is_refused(client: TestClient, services: Services) -> None:
    """A login form with a field sent twice is refused (400) rather than guessed at, and nothing is checked."""
    add_user(services)
    app = add_client(services)
    login_url = follow_to_login(client, Flow(app))
    token = csrf_of(client.get(login_url).text)
    response = client.post(login_url, content=urlencode([("username", "erika"), ("username", "admin"),
                                                         ("password", "x"), ("csrf_token", token)]),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert _events(services, "login.password") == []


def test_secrets_cannot_enter_the_audit_trail(services: Services) -> None:
    """record() refuses details named like secrets, so a careless caller fails loudly in tests."""
    with unit_of_work(services.sessions) as db, pytest.raises(AssertionError, match="secrets"):
        audit.record(db, "token.issued", refresh_token="abc")


@pytest.mark.parametrize(("ip", "key"), [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("testclient", "testclient"),
])
def test_address_counter_groups_ipv6_by_64(ip: str, key: str) -> None:
    """One IPv6 /64 is one counter, so hopping inside a subscriber's prefix gains nothing."""
    assert address_key(ip) == key

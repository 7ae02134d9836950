"""The application pages of the console (issue 5, "Console: clients" and "Authorization checked on the server for
every action"): who may do what, on the server, with guessed ids and CSRF; the form's validation shown on the
form; every change audited with actor, before and after, never a secret."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from markupsafe import escape
from sqlalchemy import func, select
from starlette.testclient import TestClient

from idp.app import create_app
from idp.db import unit_of_work
from idp.models import AuditEvent, Client
from idp.oauth import client_registry as registry
from idp.oauth.clients import find_client
from idp.services import Services
from tests.admin.console_clients import app_of, client_row, csrf_token, form_of, sign_in
from tests.conftest import ISSUER, FakeClock
from tests.helpers import add_console_user

Action = Callable[[TestClient, str, int], Any]


def _post(path: str, **data: str) -> Action:
    return lambda browser, token, key: browser.post(path.format(key), data={**data, "csrf_token": token})


ACTIONS: dict[str, Action] = {
    "list": lambda browser, token, key: browser.get("/admin/clients"),
    "view": lambda browser, token, key: browser.get(f"/admin/clients/{key}"),
    "create": lambda browser, token, key: browser.post("/admin/clients/new",
                                                       data={**form_of(name="Neu"), "csrf_token": token}),
    "edit": lambda browser, token, key: browser.post(f"/admin/clients/{key}/edit",
                                                     data={**form_of(name="Umbenannt",
                                                                     redirect_uris="https://app.example/cb"),
                                                           "csrf_token": token}),
    "rotate": _post("/admin/clients/{}/rotate", grace="", secret_lifetime=""),
    "disable": _post("/admin/clients/{}/disable"),
    "enable": _post("/admin/clients/{}/enable"),
    "delete": _post("/admin/clients/{}/delete"),
    "approve": _post("/admin/clients/{}/approve", comment="ok"),
}
OK = {"list": 200, "view": 200, "create": 200, "edit": 303, "rotate": 200, "disable": 303, "enable": 303,
      "delete": 303, "approve": 303}
EXPECTED: dict[str, dict[str, int]] = {
    "admin": OK,
    "helpdesk": {**{a: 403 for a in OK}, "list": 200, "view": 200},
    "owner": {**OK, "approve": 403},
    "stranger": {**{a: 404 for a in OK}, "list": 200, "create": 200, "approve": 403},
    "nobody": {a: 403 for a in OK},
}
"""The matrix: admin everything; helpdesk reads; the owner manages their client but reviews nothing; another app
owner gets 404 for it (as for a missing one) and may file their own; a user without a role gets nothing."""


def _prepare(services: Services, action: str, key: int) -> None:
    """What the action needs: a client an owner disabled (enable) or one waiting for review (approve)."""
    with unit_of_work(services.sessions) as db:
        row = db.get(Client, key)
        assert row is not None
        if action == "enable":
            registry.disable_client(db, row, services.now(), "owner")
        if action == "approve":
            row.status = "requested"


def _state(services: Services) -> tuple[int, list[dict[str, Any]]]:
    with unit_of_work(services.sessions) as db:
        rows = list(db.scalars(select(Client).order_by(Client.id)))
        return len(rows), [{**registry.summary(r), "secret_hash": r.secret_hash} for r in rows]


@pytest.mark.parametrize("action", list(OK))
@pytest.mark.parametrize("who", list(EXPECTED))
def test_role_action_matrix(client: TestClient, services: Services, clock: FakeClock, who: str,
                            action: str) -> None:
    """Every console role against every action on one application owned by ``owner``; a refused action
    changes nothing at all."""
    if who != "owner":
        add_console_user(services, "owner", "app-owner")
    token = sign_in(client, services, clock, who)
    if who != "stranger":
        add_console_user(services, "stranger", "app-owner")
    key, client_id, _ = app_of(services, owner="owner")
    _prepare(services, action, key)
    before = _state(services)
    response = ACTIONS[action](client, token, key)
    expected = EXPECTED[who][action]
    assert response.status_code == expected, response.text
    if expected >= 400 or action in {"list", "view"}:
        assert _state(services) == before, "a refused (or read-only) action changed something"
    else:
        assert _state(services) != before
    if action == "list" and expected == 200:
        assert (client_id in response.text) is (who != "stranger"), "app owners see only their own applications"


@pytest.mark.parametrize("who", ["admin", "helpdesk", "owner", "stranger"])
def test_guessed_ids_answer_404_like_a_missing_client(client: TestClient, services: Services, clock: FakeClock,
                                                      who: str) -> None:
    """A missing id, a malformed one and one too large for the database: 404 for every page and form. For the
    app owner who does not own it, an existing client's pages are the very same 404 page."""
    if who != "owner":
        add_console_user(services, "owner", "app-owner")
    token = sign_in(client, services, clock, who)
    key, _, _ = app_of(services, owner="owner")
    missing = client.get("/admin/clients/999999")
    assert missing.status_code == 404
    for bad in ("999999", "abc", "99999999999", "-1", "1e3", "%C3%A9"):
        assert client.get(f"/admin/clients/{bad}").status_code == 404
        assert client.get(f"/admin/clients/{bad}/edit").status_code == 404
        for path in ("edit", "rotate", "disable", "enable", "delete", "owners"):
            response = client.post(f"/admin/clients/{bad}/{path}", data={"csrf_token": token, **form_of()})
            assert response.status_code == 404, (bad, path, response.text)
    foreign = client.get(f"/admin/clients/{key}")
    if who == "stranger":
        def same(response: Any, path: str) -> str:  # the language links name the page's own path
            return str(response.text.replace(path.replace("/", "%2F"), "PATH"))

        assert foreign.status_code == 404
        assert same(foreign, f"/admin/clients/{key}") == same(missing, "/admin/clients/999999")
        delete_page = client.get(f"/admin/clients/{key}/delete")
        assert same(delete_page, f"/admin/clients/{key}/delete") == same(missing, "/admin/clients/999999")
    else:
        assert foreign.status_code == 200


def test_helpdesk_sees_an_application_without_any_form_to_change_it(client: TestClient, services: Services,
                                                                    clock: FakeClock) -> None:
    sign_in(client, services, clock, "helpdesk")
    key, client_id, _ = app_of(services)
    page = client.get(f"/admin/clients/{key}")
    assert page.status_code == 200 and client_id in page.text
    for element in ('id="client-edit"', 'id="rotate-form"', 'id="disable-form"', 'id="owner-add-form"',
                    'id="client-delete"'):
        assert element not in page.text
    assert 'id="client-new"' not in client.get("/admin/clients").text
    assert client.get(f"/admin/clients/{key}/edit").status_code == 403
    assert client.get(f"/admin/clients/{key}/delete").status_code == 403
    assert client.get("/admin/clients/new").status_code == 403


@pytest.mark.parametrize("token", ["", "forged", "other-session"])
def test_forms_without_a_valid_csrf_token_change_nothing(client: TestClient, services: Services, clock: FakeClock,
                                                         token: str) -> None:
    """No token, a made-up one, or the token of another signed-in administrator's session: 403, nothing changed."""
    sign_in(client, services, clock, "admin")
    key, _, _ = app_of(services)
    if token == "other-session":
        with TestClient(create_app(services=services), base_url=ISSUER, follow_redirects=False) as other:
            token = sign_in(other, services, clock, "helpdesk")
            assert token != csrf_token(client, services)
    before = _state(services)
    for action in ("create", "edit", "rotate", "disable", "delete"):
        response = ACTIONS[action](client, token, key)
        assert response.status_code == 403, action
        assert 'id="client-secret"' not in response.text
    assert _state(services) == before


def test_create_shows_the_secret_once_and_stores_it_hashed(client: TestClient, services: Services,
                                                          clock: FakeClock) -> None:
    token = sign_in(client, services, clock, "admin")
    add_console_user(services, "anna", "app-owner")
    page = client.post("/admin/clients/new", data={**form_of(owners="anna", secret_lifetime="90d",
                                                             access_token_lifetime="600", trusted="1"),
                                                   "csrf_token": token})
    assert page.status_code == 200
    client_id = re.search(r'id="client-id">([^<]+)<', page.text).group(1)  # type: ignore[union-attr]
    secret = re.search(r'id="client-secret">([^<]+)<', page.text).group(1)  # type: ignore[union-attr]
    assert page.headers["cache-control"] == "no-store"
    with unit_of_work(services.sessions) as db:
        row = find_client(db, client_id)
        assert row is not None and row.status == "active" and row.trusted and row.access_token_lifetime == 600
        assert services.hasher.matches(secret, row.secret_hash) and secret not in json.dumps(registry.summary(row))
        assert row.secret_expires_at is not None and [u.username for u in registry.owners_of(db, row)] == ["anna"]
        event = db.scalar(select(AuditEvent).where(AuditEvent.event == "client.created"))
        assert event is not None and event.actor is not None and secret not in json.dumps(event.details)
        assert event.details["owners"] == ["anna"]
    detail = client.get(f"/admin/clients/{row.id}")
    assert secret not in detail.text, "shown only once"
    assert 'data-state="valid"' in detail.text


INVALID = [
    ({"redirect_uris": "http://fallakte.musterstadt.de/cb"}, "https"),
    ({"redirect_uris": "https://fallakte.musterstadt.de/cb#frag"}, "fragment"),
    ({"redirect_uris": "https://*.musterstadt.de/cb"}, "wildcard"),
    ({"redirect_uris": "de.musterstadt.app:/cb"}, "custom schemes"),
    ({"name": ""}, "name"),
    ({"name": "x" * 300}, "name"),
    ({"client_type": "both"}, "confidential or public"),
    ({"token_endpoint_auth_method": "client_secret_jwt"}, "authentication method"),
    ({"token_endpoint_auth_method": "private_key_jwt"}, "private_key_jwt needs jwks or jwks_uri"),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks": "{not json"}, "not valid JSON"),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks": "[1, 2]"}, "JWK set"),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://keys.example/jwks"}, "https"),
    ({"access_token_lifetime": "abc"}, "number of seconds"),
    ({"access_token_lifetime": "5"}, "between"),
    ({"refresh_token_lifetime": "99999999"}, "between"),
    ({"logo_uri": "javascript:alert(1)"}, "logo_uri"),
    ({"backchannel_logout_uri": "http://fallakte.musterstadt.de/bc"}, "https"),
    ({"theme": "../default"}, "theme"),
    ({"theme": "gibtsnicht"}, "theme"),
    ({"secret_lifetime": "7y"}, "secret lifetime"),
    ({"grant_type_authorization_code": "", "grant_type_client_credentials": "1", "client_type": "public"},
     "public client"),
]


TYPED = {"name", "redirect_uris", "jwks", "jwks_uri", "logo_uri", "access_token_lifetime", "refresh_token_lifetime",
         "backchannel_logout_uri"}


@pytest.mark.parametrize(("changes", "message"), INVALID)
def test_invalid_input_is_shown_on_the_form_not_a_500(client: TestClient, services: Services, clock: FakeClock,
                                                      changes: dict[str, str], message: str) -> None:
    """Registration and edit refuse what the rules refuse: 400 with the reason on the form, what was typed kept,
    nothing stored."""
    token = sign_in(client, services, clock, "admin")
    key, _, _ = app_of(services)
    before = _state(services)
    paths = ["/admin/clients/new"] if "secret_lifetime" in changes else ["/admin/clients/new",
                                                                         f"/admin/clients/{key}/edit"]
    for path in paths:
        fields = {k: v for k, v in form_of(**changes).items() if v != ""}
        response = client.post(path, data={**fields, "csrf_token": token})
        assert response.status_code == 400, (path, response.text)
        error = re.search(r'id="client-form-error">([^<]*)<', response.text)
        assert error and message in error.group(1).replace("&#39;", "'"), (path, error)
        assert 'id="client-form"' in response.text
        for name, value in changes.items():
            if name in TYPED and value and len(value) < 100:
                assert str(escape(value)) in response.text, f"{name} was not kept"
    assert _state(services) == before


def test_a_repeated_field_is_refused_cleanly(client: TestClient, services: Services, clock: FakeClock) -> None:
    token = sign_in(client, services, clock, "admin")
    response = client.post("/admin/clients/new", content=f"csrf_token={token}&name=a&name=b",
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400


def test_edit_changes_every_property_and_audits_before_and_after(client: TestClient, services: Services,
                                                                 clock: FakeClock) -> None:
    """Every registered property through the form; the audit row names the actor, before and after, and no
    secret or hash."""
    token = sign_in(client, services, clock, "admin")
    key, client_id, secret = app_of(services)
    jwks = json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                                 "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "kid": "k1"}]})
    fields = form_of(
        name="Fallakte", logo_uri="https://fallakte.musterstadt.de/logo.png",
        redirect_uris="https://fallakte.musterstadt.de/cb\r\nhttps://fallakte.musterstadt.de/cb2",
        post_logout_redirect_uris="https://fallakte.musterstadt.de/bye",
        backchannel_logout_uri="https://fallakte.musterstadt.de/bc", token_endpoint_auth_method="private_key_jwt",
        jwks=jwks, id_token_signed_response_alg="RS256", grant_type_client_credentials="1", scope_groups="1",
        scope_offline_access="1", trusted="1", require_mfa="1", mfa_method_webauthn="1", mfa_method_totp="1",
        no_trusted_device="1", theme="default", access_token_lifetime="300", refresh_token_lifetime="7200",
    )
    response = client.post(f"/admin/clients/{key}/edit", data={**fields, "csrf_token": token})
    assert response.status_code == 303 and response.headers["location"] == f"/admin/clients/{key}?done=updated"
    row = client_row(services, client_id)
    assert row is not None
    assert (row.name, row.logo_uri, row.token_endpoint_auth_method, row.id_token_signed_response_alg) == (
        "Fallakte", "https://fallakte.musterstadt.de/logo.png", "private_key_jwt", "RS256")
    assert row.redirect_uris == ["https://fallakte.musterstadt.de/cb", "https://fallakte.musterstadt.de/cb2"]
    assert row.post_logout_redirect_uris == ["https://fallakte.musterstadt.de/bye"]
    assert row.backchannel_logout_uri == "https://fallakte.musterstadt.de/bc"
    assert row.grant_types == ["authorization_code", "refresh_token", "client_credentials"]
    assert row.scope == "openid profile email groups offline_access" and row.jwks == json.loads(jwks)
    assert (row.trusted, row.require_mfa, row.mfa_methods, row.allow_trusted_device, row.theme) == (
        True, True, ["webauthn", "totp"], False, "default")
    assert (row.access_token_lifetime, row.refresh_token_lifetime) == (300, 7200)
    assert row.secret_hash is None, "private_key_jwt: the secret is gone"
    page = client.get(f"/admin/clients/{key}?done=updated")
    assert 'id="client-notice"' in page.text and "300 s" in page.text
    with unit_of_work(services.sessions) as db:
        [event] = db.scalars(select(AuditEvent).where(AuditEvent.event == "client.updated")).all()
        assert event.client_id == client_id and event.actor is not None
        assert event.details["before"]["name"] == "Fachverfahren" and event.details["after"]["name"] == "Fallakte"
        assert event.details["after"]["access_token_lifetime"] == 300
        text = json.dumps(event.details)
        assert secret and secret not in text and "secret_hash" not in text
    unchanged = client.post(f"/admin/clients/{key}/edit", data={**fields, "csrf_token": token})
    assert unchanged.headers["location"].endswith("done=unchanged")


def test_rotate_shows_the_new_secret_once_with_its_grace(client: TestClient, services: Services,
                                                         clock: FakeClock) -> None:
    token = sign_in(client, services, clock, "admin")
    key, client_id, old = app_of(services)
    page = client.post(f"/admin/clients/{key}/rotate", data={"grace": "1d", "secret_lifetime": "365d",
                                                             "csrf_token": token})
    assert page.status_code == 200 and 'id="previous-secret-grace"' in page.text
    secret = re.search(r'id="client-secret">([^<]+)<', page.text).group(1)  # type: ignore[union-attr]
    row = client_row(services, client_id)
    assert row is not None and services.hasher.matches(secret, row.secret_hash)
    assert old and services.hasher.matches(old, row.previous_secret_hash)
    with unit_of_work(services.sessions) as db:
        event = db.scalar(select(AuditEvent).where(AuditEvent.event == "client.secret_rotated"))
        assert event is not None and event.details["grace_seconds"] == 86400
        assert secret not in json.dumps(event.details) and old not in json.dumps(event.details)
    bad = client.post(f"/admin/clients/{key}/rotate", data={"grace": "99y", "csrf_token": token})
    assert bad.status_code == 400 and 'id="client-error"' in bad.text


def test_delete_asks_first_then_removes_and_audits(client: TestClient, services: Services, clock: FakeClock) -> None:
    token = sign_in(client, services, clock, "admin")
    key, client_id, _ = app_of(services)
    confirm = client.get(f"/admin/clients/{key}/delete")
    assert confirm.status_code == 200 and 'id="delete-form"' in confirm.text
    assert client_row(services, client_id) is not None, "the confirmation page deletes nothing"
    done = client.post(f"/admin/clients/{key}/delete", data={"csrf_token": token})
    assert done.status_code == 303 and done.headers["location"] == "/admin/clients?done=deleted"
    assert client_row(services, client_id) is None
    assert client.get(f"/admin/clients/{key}").status_code == 404
    with unit_of_work(services.sessions) as db:
        event = db.scalar(select(AuditEvent).where(AuditEvent.event == "client.deleted"))
        assert event is not None and event.client_id == client_id and event.actor is not None
        assert event.details["before"]["name"] == "Fachverfahren"


def test_list_searches_by_name_and_client_id(client: TestClient, services: Services, clock: FakeClock) -> None:
    sign_in(client, services, clock, "admin")
    _, bau, _ = app_of(services, name="Bauportal")
    _, archiv, _ = app_of(services, name="Archiv_100%")
    page = client.get("/admin/clients", params={"q": "bau"})
    assert bau in page.text and archiv not in page.text
    assert archiv in client.get("/admin/clients", params={"q": archiv[:10]}).text
    escaped = client.get("/admin/clients", params={"q": "_100%"}).text
    assert archiv in escaped and bau not in escaped, "LIKE wildcards in the search are literal"
    assert client.get("/admin/clients", params={"q": "x" * 5000, "status": "bogus"}).status_code == 200
    with unit_of_work(services.sessions) as db:
        assert db.scalar(select(func.count()).select_from(Client)) == 2

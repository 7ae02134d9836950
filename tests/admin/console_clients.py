"""Shared steps of the application console tests: a signed-in console user per role, and their CSRF token."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from idp.accounts.users import find_user
from idp.db import unit_of_work
from idp.models import Client
from idp.oauth import client_registry
from idp.oauth.clients import find_client
from idp.services import Services
from idp.web import cookies, csrf
from tests.conftest import FakeClock
from tests.helpers import add_client, add_console_user, through_sign_in

ROLES = {"admin": ("admin",), "helpdesk": ("helpdesk",), "owner": ("app-owner",), "stranger": ("app-owner",),
         "nobody": ()}
"""The console users of the matrix: ``owner`` owns the application under test, ``stranger`` is an app owner who
does not, ``nobody`` has no console role."""


def sign_in(browser: TestClient, services: Services, clock: FakeClock, who: str) -> str:
    """Make ``who`` (one of ``ROLES``) and sign them in to the console; returns their CSRF token."""
    return sign_in_as(browser, services, clock, who, add_console_user(services, who, *ROLES[who]))


def sign_in_as(browser: TestClient, services: Services, clock: FakeClock, username: str, seed: str) -> str:
    """Sign a console user in (password and authenticator app ``seed``); returns their CSRF token."""
    page = through_sign_in(browser, browser.get("/admin/clients"), clock, username=username, secret=seed)
    assert page.status_code == (403 if username == "nobody" else 200), page.text
    return csrf_token(browser, services)


def csrf_token(browser: TestClient, services: Services) -> str:
    """The console's CSRF token for this browser's session (what every form of the console carries)."""
    session = browser.cookies.get(cookies.cookie_name(services.settings, cookies.SESSION)) or ""
    return csrf.make_token(services.csrf_key, "admin", "session:" + services.hasher.hash(session))


def app_of(services: Services, owner: str | None = None, **kwargs: Any) -> tuple[int, str, str | None]:
    """An application (row id, client id, secret), owned by ``owner`` when given."""
    registered = add_client(services, **kwargs)
    with unit_of_work(services.sessions) as db:
        row = find_client(db, registered.client_id)
        assert row is not None
        if owner is not None:
            user = find_user(db, owner)
            assert user is not None
            client_registry.add_owner(db, row, user)
        return row.id, row.client_id, registered.client_secret


def client_row(services: Services, client_id: str) -> Client | None:
    with unit_of_work(services.sessions) as db:
        row = find_client(db, client_id)
        if row is not None:
            db.expunge(row)
        return row


def form_of(row_or_defaults: dict[str, Any] | None = None, **changes: str) -> dict[str, str]:
    """The fields of a complete client form (a confidential web application), with ``changes``."""
    fields = {
        "name": "Fallakte", "redirect_uris": "https://fallakte.musterstadt.de/cb",
        "post_logout_redirect_uris": "", "backchannel_logout_uri": "", "logo_uri": "",
        "client_type": "confidential", "token_endpoint_auth_method": "client_secret_basic", "jwks": "",
        "jwks_uri": "", "id_token_signed_response_alg": "ES256", "grant_type_authorization_code": "1",
        "grant_type_refresh_token": "1", "scope_openid": "1", "scope_profile": "1", "scope_email": "1",
        "theme": "", "access_token_lifetime": "", "refresh_token_lifetime": "", "secret_lifetime": "",
    }
    fields.update(row_or_defaults or {})
    fields.update(changes)
    return {key: value for key, value in fields.items() if value is not None}

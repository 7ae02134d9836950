"""Building blocks for tests: users, clients, PKCE, the browser flow and token checks."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp
from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.testclient import TestClient

from idp.accounts.users import create_user, find_user, grant_role
from idp.db import unit_of_work
from idp.factors import totp
from idp.models import RoleGrant, User
from idp.oauth.clients import NewClient, create_client
from idp.services import Services

if TYPE_CHECKING:
    from tests.conftest import FakeClock

PASSWORD = "correct horse battery staple"
LOGIN_PAGE = re.compile(r"/login/[A-Za-z0-9_-]+")
REDIRECT_URI = "https://app.example/cb"


@dataclass
class RegisteredClient:
    client_id: str
    client_secret: str | None
    redirect_uri: str
    post_logout_redirect_uri: str | None = None


def add_user(services: Services, username: str = "erika", password: str | None = PASSWORD, **kwargs: Any) -> str:
    kwargs.setdefault("email", f"{username}@musterstadt.de")
    kwargs.setdefault("display_name", "Erika Mustermann")
    with unit_of_work(services.sessions) as db:
        user = create_user(db, username, password_hash=services.passwords.hash(password) if password else None,
                           **kwargs)
        return user.sub


def add_client(services: Services, **kwargs: Any) -> RegisteredClient:
    kwargs.setdefault("name", "Fachverfahren")
    kwargs.setdefault("redirect_uris", [REDIRECT_URI])
    kwargs.setdefault("post_logout_redirect_uris", ["https://app.example/logged-out"])
    with unit_of_work(services.sessions) as db:
        row, secret = create_client(db, services.hasher, NewClient(**kwargs))
        return RegisteredClient(row.client_id, secret, row.redirect_uris[0] if row.redirect_uris else "",
                                row.post_logout_redirect_uris[0] if row.post_logout_redirect_uris else None)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query_of(location: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


@dataclass
class Flow:
    """One authorization request in a test browser, with its PKCE verifier and nonce."""

    client: RegisteredClient
    scope: str = "openid profile email groups"
    state: str = field(default_factory=lambda: secrets.token_urlsafe(8))
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(8))
    verifier: str = ""
    challenge: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.verifier, self.challenge = pkce_pair()

    def params(self) -> dict[str, str]:
        return {
            "response_type": "code",
            "client_id": self.client.client_id,
            "redirect_uri": self.client.redirect_uri,
            "scope": self.scope,
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
            **self.extra,
        }

    def url(self) -> str:
        return "/authorize?" + urlencode(self.params())


def follow_to_login(browser: TestClient, flow: Flow) -> str:
    """Start the flow; return the login page URL it leads to."""
    response = browser.get(flow.url())
    assert response.status_code == 303, response.text
    assert response.headers["location"].startswith("/login/")
    return str(response.headers["location"])


def submit_login(browser: TestClient, login_url: str, username: str = "erika", password: str = PASSWORD) -> Any:
    page = browser.get(login_url)
    assert page.status_code == 200, page.text
    return browser.post(login_url, data={"username": username, "password": password, "csrf_token": csrf_of(page.text)})


def finish(browser: TestClient, response: Any, *, consent: str = "allow") -> str:
    """Follow redirects inside the IdP (resume, consent) until the client's redirect URI is reached."""
    for _ in range(6):
        assert response.status_code in (302, 303), response.text
        location = response.headers["location"]
        if not location.startswith("/"):
            return str(location)
        if location.startswith("/consent/"):
            page = browser.get(location)
            assert page.status_code == 200, page.text
            response = browser.post(location, data={"decision": consent, "csrf_token": csrf_of(page.text)})
        else:
            response = browser.get(location)
    raise AssertionError("too many redirects inside the IdP")


def authorize(browser: TestClient, flow: Flow, username: str = "erika", password: str = PASSWORD,
              consent: str = "allow") -> dict[str, str]:
    """Run the whole browser flow and return the parameters the client receives."""
    response = browser.get(flow.url())
    if response.status_code == 303 and response.headers["location"].startswith("/login/"):
        response = submit_login(browser, response.headers["location"], username, password)
    return query_of(finish(browser, response, consent=consent))


def exchange(browser: TestClient, flow: Flow, code: str, **overrides: str) -> Any:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": flow.client.redirect_uri,
        "code_verifier": flow.verifier,
        **overrides,
    }
    auth = (flow.client.client_id, flow.client.client_secret) if flow.client.client_secret else None
    if auth is None:
        data.setdefault("client_id", flow.client.client_id)
    return browser.post("/token", data={k: v for k, v in data.items() if v is not None}, auth=auth)


def server_keys(browser: TestClient) -> KeySet:
    return KeySet.import_key_set(browser.get("/jwks").json())


def decode(browser: TestClient, token: str, algorithms: list[str] | None = None) -> jwt.Token:
    return jwt.decode(token, server_keys(browser), algorithms=algorithms or ["ES256", "RS256"])


def user_row(db: Any, username: str = "erika") -> User:
    user = find_user(db, username)
    assert user is not None
    return user


def seed_totp(services: Services, username: str = "erika", name: str = "Phone app") -> tuple[int, str]:
    """A confirmed authenticator app, added yesterday; returns its row id and seed."""
    with unit_of_work(services.sessions) as db:
        factor, secret = totp.begin_enrollment(db, services.sealer, user_row(db, username), name, services.now())
        factor.created_at = factor.confirmed_at = services.now() - timedelta(days=1)
        return factor.id, secret


def through_sign_in(browser: TestClient, response: Any, clock: FakeClock, *, username: str = "erika",
                    secret: str | None = None, visited: list[str] | None = None) -> Any:
    """Follow the IdP's redirects, answering the password and (with ``secret``) the authenticator app's code,
    until a page is shown. Each code is for a new 30-second step, so that none is a replay."""
    for _ in range(12):
        if response.status_code not in (302, 303):
            return response
        location = response.headers["location"]
        assert location.startswith("/"), location
        if visited is not None:
            visited.append(location)
        if LOGIN_PAGE.fullmatch(location):
            response = submit_login(browser, location, username)
        elif location.endswith("/factor"):
            assert secret is not None, "a second factor was asked"
            page = browser.get(location)
            assert page.status_code == 200, page.text
            clock.advance(seconds=30)
            response = browser.post(location, data={"method": "totp", "code": pyotp.TOTP(secret).at(clock()),
                                                    "csrf_token": csrf_of(page.text)})
            assert response.status_code == 303, response.text
        else:
            response = browser.get(location)
    raise AssertionError("too many redirects")


def open_page(browser: TestClient, path: str, clock: FakeClock, **kwargs: Any) -> Any:
    page = through_sign_in(browser, browser.get(path), clock, **kwargs)
    assert page.status_code == 200, page.text
    assert page.url.path == path.split("?")[0], page.url
    return page




def add_console_user(services: Services, username: str, *roles: str, group: str | None = None) -> str:
    """A user with a password and an authenticator app, holding console ``roles`` (directly, or through
    ``group`` when given); returns the app's seed for ``open_page(..., secret=...)``."""
    add_user(services, username, groups=[group] if group else [])
    _, secret = seed_totp(services, username)
    with unit_of_work(services.sessions) as db:
        user = user_row(db, username)
        for role in roles:
            if group is None:
                grant_role(db, user, role)
            else:
                group_row = next(g for g in user.groups if g.name == group)
                db.add(RoleGrant(role=role, group_id=group_row.id))
    return secret

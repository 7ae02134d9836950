"""Every page of the IdP, reached the way a person reaches it, for the language and accessibility checks.

``walk`` drives one browser (a TestClient) through the sign-in with a first second factor, a later sign-in
that asks for it, the account pages, errors and the sign-out, and returns each page's response by name. The
same walk runs in each language (tests/test_i18n.py) and under each theme (tests/browser/test_accessibility.py,
``make screenshots``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyotp
from starlette.testclient import TestClient

from idp.accounts.users import find_user, grant_role
from idp.db import unit_of_work
from idp.oauth.clients import find_client
from idp.services import Services
from tests.conftest import ISSUER, FakeClock
from tests.helpers import PASSWORD, Flow, add_client, add_user, csrf_of

TOTP_SECRET = re.compile(r'id="totp-secret">([A-Z2-7 ]+)<')
FACTOR_LINK = re.compile(r'href="(/account/factors/totp/\d+)"')
PHONE_CONFIRM = re.compile(r"/account/phone/\d+")

CONSOLE_PAGES = {
    "admin_dashboard": "/admin", "admin_clients": "/admin/clients", "admin_client": "/admin/clients/{client}",
    "admin_client_new": "/admin/clients/new", "admin_client_edit": "/admin/clients/{client}/edit",
    "admin_client_delete": "/admin/clients/{client}/delete", "admin_client_requests": "/admin/clients/requests",
    "admin_client_domains": "/admin/clients/domains", "admin_users": "/admin/users",
    "admin_user": "/admin/users/{user}", "admin_groups": "/admin/groups", "admin_sessions": "/admin/sessions",
    "admin_audit": "/admin/audit", "admin_sync": "/admin/sync",
}
"""The console's pages, by GET; ``admin_client_secret`` (below) is the answer to rotating a secret."""

PAGES = ("index", "accessibility", "error_not_found", "error_expired", "login", "login_error", "enroll",
         "enroll_totp", "enroll_totp_error", "enroll_sms", "enroll_webauthn", "recovery_codes", "consent", "factor",
         "factor_error", "account", "account_totp", "account_webauthn", "account_phone", "account_phone_error",
         "account_phone_confirm", "account_factor", "account_recovery", *CONSOLE_PAGES, "admin_client_secret",
         "logout", "logged_out")
"""Every page ``walk`` returns: each template, and the error states of the forms."""


@dataclass
class Visit:
    path: str
    status: int
    html: str
    headers: dict[str, str]


def _visit(response: Any) -> Visit:
    return Visit(str(response.url.path), response.status_code, response.text, dict(response.headers))


def _code(secret: str, clock: FakeClock) -> str:
    clock.advance(seconds=30)  # a new time step each time: no code is a replay
    return pyotp.TOTP(secret).at(clock())


def _follow(browser: TestClient, response: Any, stop: str) -> Any:
    """Follow redirects inside the IdP until a page whose path contains ``stop`` is shown."""
    for _ in range(10):
        if response.status_code not in (302, 303):
            break
        location = response.headers["location"]
        assert location.startswith("/"), location
        response = browser.get(location)
    assert response.status_code == 200 and stop in str(response.url.path), (response.url, response.status_code)
    return response


def walk(app: Any, services: Services, clock: FakeClock, headers: dict[str, str] | None = None,
         username: str = "erika") -> dict[str, Visit]:
    """Every page in ``PAGES``, for a new user (added here) on MFA-required services."""
    add_user(services, username)
    client = add_client(services, name="Bürgerportal")
    pages: dict[str, Visit] = {}
    with TestClient(app, base_url=ISSUER, follow_redirects=False, headers=headers or {}) as browser:
        pages["index"] = _visit(browser.get("/"))
        pages["accessibility"] = _visit(browser.get("/accessibility"))
        pages["error_not_found"] = _visit(browser.get("/no-such-page"))
        pages["error_expired"] = _visit(browser.get("/login/no-such-sign-in"))

        # First sign-in: password, then setting up a second factor, recovery codes, consent.
        started = browser.get(Flow(client).url())
        login_url = started.headers["location"]
        login = browser.get(login_url)
        pages["login"] = _visit(login)
        pages["login_error"] = _visit(browser.post(login_url, data={
            "username": username, "password": "not the password", "csrf_token": csrf_of(login.text)}))
        login = browser.get(login_url)
        enroll = _follow(browser, browser.post(login_url, data={
            "username": username, "password": PASSWORD, "csrf_token": csrf_of(login.text)}),
            "/enroll")
        pages["enroll"] = _visit(enroll)
        base = enroll.url.path
        pages["enroll_sms"] = _visit(browser.get(f"{base}/sms"))
        pages["enroll_webauthn"] = _visit(browser.get(f"{base}/webauthn"))
        totp_page = browser.get(f"{base}/totp")
        pages["enroll_totp"] = _visit(totp_page)
        match = TOTP_SECRET.search(totp_page.text)
        assert match, "the app's key is not shown"
        secret = match.group(1).replace(" ", "")
        pages["enroll_totp_error"] = _visit(browser.post(f"{base}/totp", data={
            "code": "000000" if _code(secret, clock) != "000000" else "111111", "csrf_token": csrf_of(totp_page.text)}))
        totp_page = browser.get(f"{base}/totp")
        codes = browser.post(f"{base}/totp", data={"code": _code(secret, clock), "csrf_token": csrf_of(totp_page.text)})
        pages["recovery_codes"] = _visit(codes)
        go_on = re.search(r'href="(/authorize/resume/[^"]+)"', codes.text)
        assert go_on, "no way on from the recovery codes"
        consent = _follow(browser, browser.get(go_on.group(1)), "/consent/")
        pages["consent"] = _visit(consent)
        browser.post(str(consent.url.path), data={"decision": "allow", "csrf_token": csrf_of(consent.text)})

        # A later sign-in that asks for the password again, then for the second factor.
        started = browser.get(Flow(client, extra={"prompt": "login"}).url())
        login_url = started.headers["location"]
        login = browser.get(login_url)
        factor = _follow(browser, browser.post(login_url, data={
            "username": username, "password": PASSWORD, "csrf_token": csrf_of(login.text)}),
            "/factor")
        pages["factor"] = _visit(factor)
        pages["factor_error"] = _visit(browser.post(str(factor.url.path), data={
            "method": "totp", "code": "000000", "csrf_token": csrf_of(factor.text)}))
        factor = browser.get(str(factor.url.path))
        browser.post(str(factor.url.path), data={"method": "totp", "code": _code(secret, clock),
                                                   "csrf_token": csrf_of(factor.text)})

        # The account pages (the session is fresh: no new sign-in is asked for).
        account = browser.get("/account")
        if account.status_code in (302, 303):
            account = _account_sign_in(browser, account, secret, clock, username)
        pages["account"] = _visit(account)
        pages["account_totp"] = _visit(browser.get("/account/totp"))
        pages["account_webauthn"] = _visit(browser.get("/account/webauthn"))
        phone = browser.get("/account/phone")
        pages["account_phone"] = _visit(phone)
        pages["account_phone_error"] = _visit(browser.post("/account/phone", data={
            "phone": "12", "name": "Diensthandy", "csrf_token": csrf_of(phone.text)}))
        confirm = _follow(browser, browser.post("/account/phone", data={
            "phone": "+49 151 12345678", "name": "Diensthandy", "csrf_token": csrf_of(phone.text)}), "/account/phone/")
        pages["account_phone_confirm"] = _visit(confirm)
        link = FACTOR_LINK.search(account.text)
        assert link, "the account page links no factor"
        pages["account_factor"] = _visit(browser.get(link.group(1)))
        pages["account_recovery"] = _visit(browser.get("/account/recovery-codes"))

        # The admin console: the user is an administrator, and the session holds the second factor it asks for.
        with unit_of_work(services.sessions) as db:
            user = find_user(db, username)
            assert user is not None
            grant_role(db, user, "admin")
            ids = {"user": user.id, "client": find_client(db, client.client_id).id}  # type: ignore[union-attr]
        for name, path in CONSOLE_PAGES.items():
            pages[name] = _visit(browser.get(path.format(**ids)))
        detail = pages["admin_client"].html
        pages["admin_client_secret"] = _visit(browser.post(f"/admin/clients/{ids['client']}/rotate", data={
            "csrf_token": csrf_of(detail), "grace": "", "secret_lifetime": ""}))

        # Signing out.
        logout = browser.get("/logout")
        pages["logout"] = _visit(logout)
        form = re.search(r'<form method="post" action="([^"]+)" id="logout-form">(.*?)</form>', logout.text, re.S)
        assert form, "no logout form"
        fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(2)))
        pages["logged_out"] = _visit(_follow(browser, browser.post(form.group(1), data=fields), "/"))
    assert set(pages) == set(PAGES)
    return pages


def _account_sign_in(browser: TestClient, response: Any, secret: str, clock: FakeClock, username: str) -> Any:
    for _ in range(10):
        if response.status_code not in (302, 303):
            return response
        location = response.headers["location"]
        if re.fullmatch(r"/login/[A-Za-z0-9_-]+", location):
            page = browser.get(location)
            response = browser.post(location, data={"username": username, "password": PASSWORD,
                                                    "csrf_token": csrf_of(page.text)})
        elif location.endswith("/factor"):
            page = browser.get(location)
            response = browser.post(location, data={"method": "totp", "code": _code(secret, clock),
                                                    "csrf_token": csrf_of(page.text)})
        else:
            response = browser.get(location)
    raise AssertionError("too many redirects")

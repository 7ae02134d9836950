"""Registering an application in a real Chromium (issue 5, "Tests": console pages in headless Chromium for the
main tasks, here "create a client"), with scripts off; and the application pages checked by axe-core."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyotp
import pytest
from playwright.sync_api import Browser, Page

from idp.db import unit_of_work
from idp.oauth.clients import find_client
from tests.browser.conftest import ACTION_TIMEOUT_MS, LiveServer
from tests.browser.rendered import AXE
from tests.helpers import PASSWORD, add_client, add_console_user

pytestmark = pytest.mark.browser


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A fresh profile with scripts off: the console works without JavaScript."""
    context = chromium.new_context(java_script_enabled=False)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def sign_in(page: Page, server: LiveServer, path: str, username: str, seed: str) -> None:
    page.goto(server.issuer + path)
    page.wait_for_url(re.compile(r".*/login/[A-Za-z0-9_-]+$"))
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/factor$"))
    page.fill("#code", pyotp.TOTP(seed).now())
    page.click("#factor-form button[type=submit]")
    page.wait_for_url(server.issuer + path)


def test_an_administrator_registers_an_application(live_server: LiveServer, page: Page) -> None:
    """The form, a mistake shown on it, then the secret shown once and the application's page."""
    services = live_server.services
    seed = add_console_user(services, "apps-admin", "admin")
    sign_in(page, live_server, "/admin/clients", "apps-admin", seed)
    page.click("#client-new")
    page.fill("#client-name", "Fallakte")
    page.fill("#client-redirect-uris", "http://fallakte.musterstadt.de/cb")
    page.check("#scope-groups")
    page.click("#client-submit")
    assert "https" in (page.text_content("#client-form-error") or "")
    assert page.input_value("#client-name") == "Fallakte", "what was typed is kept"
    page.fill("#client-redirect-uris", "https://fallakte.musterstadt.de/cb")
    page.check("#client-require-mfa")
    page.select_option("#client-secret-lifetime", "365d")
    page.click("#client-submit")
    client_id = page.text_content("#client-id") or ""
    secret = page.text_content("#client-secret") or ""
    assert client_id and len(secret) >= 43
    with unit_of_work(services.sessions) as db:
        row = find_client(db, client_id)
        assert row is not None and row.require_mfa and "groups" in row.scope.split()
        assert services.hasher.matches(secret, row.secret_hash) and row.secret_expires_at is not None
    page.click("#client-back")
    assert page.get_attribute("#client-status", "data-status") == "active"
    assert secret not in page.content()


CLIENT_PAGES = ["/admin/clients", "/admin/clients/new", "/admin/clients/{id}", "/admin/clients/{id}/edit",
                "/admin/clients/{id}/delete", "/admin/clients/requests", "/admin/clients/domains"]


def test_application_pages_pass_axe(live_server: LiveServer, chromium: Browser) -> None:
    """WCAG 2.1 A/AA (axe-core): no serious or critical violation on the application pages, and no
    Content-Security-Policy report."""
    assert AXE.is_file(), "axe-core is missing: run scripts/ensure-test-services.sh (`make test` does)"
    services = live_server.services
    seed = add_console_user(services, "axe-apps", "admin")
    app = add_client(services, name="Axe-Prüfung")
    with unit_of_work(services.sessions) as db:
        row = find_client(db, app.client_id)
        assert row is not None
        key = row.id
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.add_init_script(path=str(AXE))
    problems: list[str] = []
    try:
        page = context.new_page()
        messages: list[str] = []
        page.on("console", lambda message: messages.append(message.text))
        sign_in(page, live_server, "/admin/clients", "axe-apps", seed)
        for path in CLIENT_PAGES:
            page.goto(live_server.issuer + path.format(id=key), wait_until="load")
            result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})",
                                   ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"])
            assert result["passes"], f"axe-core checked nothing on {path}"
            problems += [f"{path}: {v['id']} ({v['impact']}): {v['help']} at {v['nodes'][0]['target']}"
                         for v in result["violations"] if v["impact"] in {"serious", "critical"}]
        problems += [text for text in messages if "Content Security Policy" in text]
    finally:
        context.close()
    assert problems == []

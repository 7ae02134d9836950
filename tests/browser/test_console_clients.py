"""Registering an application in a real Chromium (issue 5, "Tests": console pages in headless Chromium for the
main tasks, here "create a client"), with scripts off; and the application pages checked by axe-core."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page

from idp.db import unit_of_work
from idp.oauth.clients import find_client
from tests.browser.conftest import LiveServer
from tests.browser.console import axe_problems, sign_in
from tests.helpers import add_client, add_console_user

pytestmark = pytest.mark.browser


def test_an_administrator_registers_an_application(live_server: LiveServer, console_page: Page) -> None:
    """The form, a mistake shown on it, then the secret shown once and the application's page."""
    services = live_server.services
    seed = add_console_user(services, "apps-admin", "admin")
    sign_in(console_page, live_server, "/admin/clients", "apps-admin", seed)
    console_page.click("#client-new")
    console_page.fill("#client-name", "Fallakte")
    console_page.fill("#client-redirect-uris", "http://fallakte.musterstadt.de/cb")
    console_page.check("#scope-groups")
    console_page.click("#client-submit")
    assert "https" in (console_page.text_content("#client-form-error") or "")
    assert console_page.input_value("#client-name") == "Fallakte", "what was typed is kept"
    console_page.fill("#client-redirect-uris", "https://fallakte.musterstadt.de/cb")
    console_page.check("#client-require-mfa")
    console_page.select_option("#client-secret-lifetime", "365d")
    console_page.click("#client-submit")
    client_id = console_page.text_content("#client-id") or ""
    secret = console_page.text_content("#client-secret") or ""
    assert client_id and len(secret) >= 43
    with unit_of_work(services.sessions) as db:
        row = find_client(db, client_id)
        assert row is not None and row.require_mfa and "groups" in row.scope.split()
        assert services.hasher.matches(secret, row.secret_hash) and row.secret_expires_at is not None
    console_page.click("#client-back")
    assert console_page.get_attribute("#client-status", "data-status") == "active"
    assert secret not in console_page.content()


CLIENT_PAGES = ["/admin/clients", "/admin/clients/new", "/admin/clients/{id}", "/admin/clients/{id}/edit",
                "/admin/clients/{id}/delete", "/admin/clients/requests", "/admin/clients/domains"]


def test_application_pages_pass_axe(live_server: LiveServer, chromium: Browser) -> None:
    """WCAG 2.1 A/AA (axe-core): no serious or critical violation on the application pages, and no
    Content-Security-Policy report."""
    services = live_server.services
    seed = add_console_user(services, "axe-apps", "admin")
    app = add_client(services, name="Axe-Prüfung")
    with unit_of_work(services.sessions) as db:
        row = find_client(db, app.client_id)
        assert row is not None
        key = row.id
    paths = [path.format(id=key) for path in CLIENT_PAGES]
    assert axe_problems(chromium, live_server, "axe-apps", seed, "/admin/clients", paths) == []

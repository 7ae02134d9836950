"""The service desk's main tasks in a real Chromium (issue 5, "Tests"): find a user, reset the second factors
after a lost phone, and export the audit log as CSV; no script needed on these pages."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator

import pyotp
import pytest
from playwright.sync_api import Browser, Page

from idp.db import unit_of_work
from tests.browser.conftest import ACTION_TIMEOUT_MS, LiveServer
from tests.browser.rendered import AXE
from tests.helpers import PASSWORD, add_console_user, add_user, seed_totp, user_row

pytestmark = pytest.mark.browser


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A fresh profile with scripts off: the console works without JavaScript."""
    context = chromium.new_context(java_script_enabled=False, accept_downloads=True)
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


def test_reset_factors_and_export_the_audit_log(live_server: LiveServer, page: Page) -> None:
    services = live_server.services
    seed = add_console_user(services, "desk", "helpdesk")
    add_user(services, "erika.b", display_name="Erika Beispiel")
    seed_totp(services, "erika.b", name="Altes Handy")
    sign_in(page, live_server, "/admin/users", "desk", seed)

    page.fill("#user-search-q", "beispiel")
    page.click("#user-search button[type=submit]")
    page.click("#user-list a:text-is('erika.b')")
    assert page.text_content("#user-factors li[data-kind=totp]") is not None
    assert "Altes Handy" in (page.text_content("#user-factors") or "")
    page.click("#user-reset-mfa button")
    page.wait_for_url(re.compile(r".*/admin/users/\d+\?done=reset-mfa$"))
    assert page.is_visible("#admin-notice")
    assert "Altes Handy" not in (page.text_content("#user-factors") or "")

    page.goto(live_server.issuer + "/admin/audit?event=user.mfa_reset")
    assert page.locator("#audit-list .audit-row").count() == 1
    with page.expect_download() as download:
        page.click("#audit-export")
    path = download.value.path()
    with open(path, encoding="utf-8-sig", newline="") as exported:
        rows = list(csv.DictReader(io.StringIO(exported.read())))
    assert [(row["event"], row["subject"], row["actor_username"]) for row in rows] == [
        ("user.mfa_reset", "erika.b", "desk")]


CONSOLE_PAGES = ["/admin", "/admin/users", "/admin/users/{user}", "/admin/groups", "/admin/sessions",
                 "/admin/audit", "/admin/audit?from=bad", "/admin/sync"]


def test_console_pages_pass_axe(live_server: LiveServer, chromium: Browser) -> None:
    """WCAG 2.1 A/AA (axe-core): no serious or critical violation on the people pages and the overview with
    its charts, and no Content-Security-Policy report."""
    assert AXE.is_file(), "axe-core is missing: run scripts/ensure-test-services.sh (`make test` does)"
    services = live_server.services
    seed = add_console_user(services, "axe-admin", "admin", group="IT-Administration")
    add_user(services, "axe-target", groups=["IT-Administration"])
    with unit_of_work(services.sessions) as db:
        target = user_row(db, "axe-target").id
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.add_init_script(path=str(AXE))
    problems: list[str] = []
    try:
        page = context.new_page()
        messages: list[str] = []
        page.on("console", lambda message: messages.append(message.text))
        sign_in(page, live_server, "/admin", "axe-admin", seed)
        for path in CONSOLE_PAGES:
            page.goto(live_server.issuer + path.format(user=target), wait_until="load")
            result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})",
                                   ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"])
            assert result["passes"], f"axe-core checked nothing on {path}"
            problems += [f"{path}: {v['id']} ({v['impact']}): {v['help']} at {v['nodes'][0]['target']}"
                         for v in result["violations"] if v["impact"] in {"serious", "critical"}]
        problems += [text for text in messages if "Content Security Policy" in text]
    finally:
        context.close()
    assert problems == []

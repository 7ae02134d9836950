"""The service desk's main tasks in a real Chromium (issue 5, "Tests"): find a user, reset the second factors
after a lost phone, and export the audit log as CSV; no script needed on these pages."""

from __future__ import annotations

import csv
import io
import re

import pytest
from playwright.sync_api import Browser, Page

from idp.db import unit_of_work
from tests.browser.conftest import LiveServer
from tests.browser.console import axe_problems, sign_in
from tests.helpers import add_console_user, add_user, seed_totp, user_row

pytestmark = pytest.mark.browser


def test_reset_factors_and_export_the_audit_log(live_server: LiveServer, console_page: Page) -> None:
    services = live_server.services
    seed = add_console_user(services, "desk", "helpdesk")
    add_user(services, "erika.b", display_name="Erika Beispiel")
    seed_totp(services, "erika.b", name="Altes Handy")
    sign_in(console_page, live_server, "/admin/users", "desk", seed)

    console_page.fill("#user-search-q", "beispiel")
    console_page.click("#user-search button[type=submit]")
    console_page.click("#user-list a:text-is('erika.b')")
    assert console_page.text_content("#user-factors li[data-kind=totp]") is not None
    assert "Altes Handy" in (console_page.text_content("#user-factors") or "")
    console_page.click("#user-reset-mfa button")
    console_page.wait_for_url(re.compile(r".*/admin/users/\d+\?done=reset-mfa$"))
    assert console_page.is_visible("#admin-notice")
    assert "Altes Handy" not in (console_page.text_content("#user-factors") or "")

    console_page.goto(live_server.issuer + "/admin/audit?event=user.mfa_reset")
    assert console_page.locator("#audit-list .audit-row").count() == 1
    with console_page.expect_download() as download:
        console_page.click("#audit-export")
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
    services = live_server.services
    seed = add_console_user(services, "axe-admin", "admin", group="IT-Administration")
    add_user(services, "axe-target", groups=["IT-Administration"])
    with unit_of_work(services.sessions) as db:
        target = user_row(db, "axe-target").id
    paths = [path.format(user=target) for path in CONSOLE_PAGES]
    assert axe_problems(chromium, live_server, "axe-admin", seed, "/admin", paths) == []

"""The console in a real Chromium: signing in with a password and a TOTP code, and axe-core over a list of
console pages (tests/browser/test_console_clients.py, tests/browser/test_console_people.py)."""

from __future__ import annotations

import re

import pyotp
from playwright.sync_api import Browser, Page

from tests.browser.conftest import ACTION_TIMEOUT_MS, LiveServer
from tests.browser.rendered import AXE
from tests.helpers import PASSWORD

WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def sign_in(page: Page, server: LiveServer, path: str, username: str, seed: str) -> None:
    """Open ``path``, sign in through the password and TOTP pages, and wait until ``path`` is back."""
    page.goto(server.issuer + path)
    page.wait_for_url(re.compile(r".*/login/[A-Za-z0-9_-]+$"))
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/factor$"))
    page.fill("#code", pyotp.TOTP(seed).now())
    page.click("#factor-form button[type=submit]")
    page.wait_for_url(server.issuer + path)


def axe_problems(chromium: Browser, server: LiveServer, username: str, seed: str, start: str,
                 paths: list[str]) -> list[str]:
    """Sign in at ``start``, then run axe-core (WCAG 2.1 A and AA) on each of ``paths``: the serious and
    critical violations, and every Content-Security-Policy report on the console."""
    assert AXE.is_file(), "axe-core is missing: run scripts/ensure-test-services.sh (`make test` does)"
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.add_init_script(path=str(AXE))
    problems: list[str] = []
    try:
        page = context.new_page()
        messages: list[str] = []
        page.on("console", lambda message: messages.append(message.text))
        sign_in(page, server, start, username, seed)
        for path in paths:
            page.goto(server.issuer + path, wait_until="load")
            result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_TAGS)
            assert result["passes"], f"axe-core checked nothing on {path}"
            problems += [f"{path}: {v['id']} ({v['impact']}): {v['help']} at {v['nodes'][0]['target']}"
                         for v in result["violations"] if v["impact"] in {"serious", "critical"}]
        problems += [text for text in messages if "Content Security Policy" in text]
    finally:
        context.close()
    return problems

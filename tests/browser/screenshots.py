"""Screenshots of the main pages for human review: ``make screenshots`` (not part of ``make test``).

Writes ``<folder>/<theme>/<language>/<width>/<page>.png`` for the ``default`` and ``musterstadt`` themes, German
and English, 1280 and 375 px wide (full page), using the same in-process pages as the accessibility tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.browser.conftest import ACTION_TIMEOUT_MS, CHROMIUM, CHROMIUM_ARGS
from tests.browser.rendered import open_page, site

MAIN_PAGES = ("index", "login", "login_error", "factor", "enroll", "enroll_totp", "recovery_codes", "consent",
              "account", "account_phone_error", "logout", "logged_out", "error_not_found", "accessibility")
THEMES = ("default", "musterstadt")
WIDTHS = (1280, 375)


def main(folder: Path) -> int:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            for theme in THEMES:
                for language in ("de", "en"):
                    with site(theme, language) as target:
                        for width in WIDTHS:
                            out = folder / theme / language / str(width)
                            out.mkdir(parents=True, exist_ok=True)
                            context = browser.new_context(viewport={"width": width, "height": 800})
                            context.set_default_timeout(ACTION_TIMEOUT_MS)
                            for name in MAIN_PAGES:
                                page = open_page(context, target, name)
                                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                                page.close()
                            context.close()
                    print(f"{theme} {language}: {len(MAIN_PAGES) * len(WIDTHS)} screenshots")
        finally:
            browser.close()
    print(f"written to {folder}/<theme>/<language>/<width>/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/screenshots")))

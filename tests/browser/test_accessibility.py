"""Accessibility (issue 6, "Accessibility" and "Privacy"): axe-core in Chromium finds no serious or critical
violation of WCAG 2.1 A/AA on any page, for the ``default`` and ``musterstadt`` themes; no page requests
anything from another origin, and the Content-Security-Policy is never violated.

axe-core comes from npm (scripts/ensure-test-services.sh installs it into .cache/node_modules) and is added to
every page as an init script, which the page's CSP does not apply to.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from tests.browser.conftest import ACTION_TIMEOUT_MS
from tests.browser.rendered import AXE, Site, site
from tests.pages import PAGES

pytestmark = pytest.mark.browser

WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BLOCKING = {"serious", "critical"}


@pytest.fixture(scope="module", params=["default", "musterstadt"])
def themed(request: pytest.FixtureRequest) -> Iterator[dict[str, Site]]:
    """Every page of one theme, in German and in English."""
    with site(request.param, "de") as german, site(request.param, "en") as english:
        yield {"de": german, "en": english}


def _check(browser: Browser, target: Site, names: tuple[str, ...], width: int) -> list[str]:
    """Run axe-core on each page at one viewport width; the serious and critical violations, and CSP reports."""
    assert AXE.is_file(), "axe-core is missing: run scripts/ensure-test-services.sh (`make test` does)"
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.add_init_script(path=str(AXE))
    problems: list[str] = []
    try:
        for name in names:
            page = context.new_page()
            console: list[str] = []
            page.on("console", lambda message, seen=console: seen.append(message.text))  # type: ignore[misc]
            page.route("**/*", target.handle)
            page.goto(target.url(name), wait_until="load")
            result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG_TAGS)
            assert result["passes"], f"axe-core checked nothing on {name}"
            for violation in result["violations"]:
                if violation["impact"] in BLOCKING:
                    nodes = "; ".join(str(node["target"][0]) for node in violation["nodes"][:3])
                    problems.append(f"{name} @{width}px: {violation['id']} ({violation['impact']}): "
                                    f"{violation['help']} at {nodes}")
            problems += [f"{name}: {text}" for text in console if "Content Security Policy" in text]
            page.close()
    finally:
        context.close()
    return problems


@pytest.mark.parametrize("language", ["de", "en"])
def test_no_serious_accessibility_violation_on_any_page(chromium: Browser, themed: dict[str, Site],
                                                        language: str) -> None:
    """axe-core (WCAG 2.1 A and AA rules) reports no serious or critical violation on any page, on a desktop
    (1280 px) and, for the German pages, on a phone (375 px); the CSP reports no violation either; and no page
    requests anything (style, script, image, font) from another origin: every request the browser made went
    through ``Site.handle``, which records those."""
    target = themed[language]
    problems = _check(chromium, target, PAGES, 1280)
    if language == "de":
        problems += _check(chromium, target, PAGES, 375)
    assert problems == []
    assert target.foreign == [], "a page requested another origin"
    assert any(path.startswith("/static/") for path in target.files), "no static file was requested"


def test_axe_reports_what_it_should(chromium: Browser, themed: dict[str, Site]) -> None:
    """The check itself works: a page with an unlabelled input and grey-on-white text is reported."""
    target = themed["de"]
    broken = target.pages["login"]
    html = broken.html.replace('<label for="username">', '<label for="nothing">').replace(
        'class="client"', 'class="client detail" hidden')
    target.pages["broken"] = type(broken)(broken.path, 200, html, broken.headers)
    try:
        problems = _check(chromium, target, ("broken",), 1280)
    finally:
        del target.pages["broken"]
    assert any("label" in problem for problem in problems), problems

"""Every page of the IdP in a real Chromium, without a server: the pages come from ``tests.pages.walk`` (the app
in-process), and Playwright answers every request of the browser from that same app.

Because every request passes through ``Site.handle``, nothing reaches the network, and a request to any other
origin (a CDN, a web font, an analytics script) is recorded in ``Site.foreign`` and refused. The pages keep the
headers the app sent, Content-Security-Policy included, so Chromium enforces it as in production.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, Page, Route
from starlette.testclient import TestClient

from idp import migrate
from idp.app import create_app
from idp.db import unit_of_work
from idp.oauth.keys import ensure_keys
from idp.services import Services, build_services
from idp.web import i18n
from tests.conftest import ISSUER, FakeClock, make_settings
from tests.pages import Visit, walk

ROOT = Path(__file__).resolve().parent.parent.parent
AXE = ROOT / ".cache" / "node_modules" / "axe-core" / "axe.min.js"
"""Installed by scripts/ensure-test-services.sh (npm install --no-save axe-core)."""
PAGE_PREFIX = "/__page/"


@dataclass
class Site:
    """The pages of one theme in one language, and the app that serves their static files."""

    app: Any
    pages: dict[str, Visit]
    foreign: list[str] = field(default_factory=list)
    files: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"{ISSUER}{PAGE_PREFIX}{name}"

    def handle(self, route: Route) -> None:
        url = route.request.url
        if not url.startswith(ISSUER + "/"):  # another origin: never fetched, always reported
            self.foreign.append(url)
            route.abort("blockedbyclient")
            return
        path = url[len(ISSUER):]
        if path.startswith(PAGE_PREFIX):
            visit = self.pages[path[len(PAGE_PREFIX):]]
            route.fulfill(status=visit.status, headers=visit.headers, body=visit.html)
            return
        if path not in self.files:  # static files: asked once from the app (no lifespan: nothing to start)
            answer = TestClient(self.app, base_url=ISSUER).get(path)
            self.files[path] = (answer.status_code, dict(answer.headers), answer.content)
        status, headers, body = self.files[path]
        route.fulfill(status=status, headers=headers, body=body)


@contextmanager
def site(theme: str, language: str) -> Iterator[Site]:
    """Walk every page on a fresh SQLite database with MFA required, in ``language``, under ``theme``."""
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        settings = make_settings(data, f"sqlite:///{data / 'idp.sqlite3'}", IDP_MFA_DEFAULT="required",
                                 IDP_THEME=theme)
        services: Services = build_services(settings)
        services.clock = FakeClock()
        try:
            migrate.upgrade(services.engine)
            with unit_of_work(services.sessions) as db:
                ensure_keys(db, services.sealer, settings.keys.rsa_bits, services.now())
            app = create_app(services=services)
            yield Site(app, walk(app, services, services.clock, headers={"accept-language": language}))
        finally:
            services.engine.dispose()


def open_page(context: BrowserContext, target: Site, name: str) -> Page:
    """A new tab showing one page, every request answered by ``target`` (see the module's docstring)."""
    page = context.new_page()
    page.route("**/*", target.handle)
    page.goto(target.url(name), wait_until="load")
    return page


def languages() -> tuple[str, ...]:
    return i18n.LOCALES

"""A real Chromium against the real app served by uvicorn, with Chromium's virtual WebAuthn authenticator.

The app runs in a uvicorn server on a background thread at ``http://localhost:PORT``: WebAuthn needs a secure
context, which ``localhost`` is, and Chromium refuses an IP address as RP ID. One backend is enough here:
the server uses SQLite (the WebAuthn endpoints run on both backends in tests/test_webauthn_pages.py).

Chromium is Debian's ``/usr/bin/chromium`` (installed by scripts/ensure-test-services.sh), driven by
Playwright through its path with the flags that keep it off the network; ``playwright install`` is never
run. The authenticator is added through a DevTools session (the WebAuthn domain), one per page.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, CDPSession, Page, Playwright, sync_playwright

from idp import migrate
from idp.app import create_app
from idp.db import unit_of_work
from idp.oauth.keys import ensure_keys
from idp.services import Services, build_services
from tests.conftest import make_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STARTUP_SECONDS = 30.0
ACTION_TIMEOUT_MS = 15_000
"""Every Playwright action and wait gives up after this: a test never hangs on a browser."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    issuer: str
    port: int
    services: Services


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app on ``http://localhost:PORT`` with MFA required by default, on a SQLite file of its own."""
    data_dir = tmp_path_factory.mktemp("browser")
    port = free_port()
    issuer = f"http://localhost:{port}"
    settings = make_settings(data_dir, f"sqlite:///{data_dir / 'idp.sqlite3'}", IDP_ISSUER=issuer,
                             IDP_MFA_DEFAULT="required")
    services = build_services(settings)
    migrate.upgrade(services.engine)
    with unit_of_work(services.sessions) as db:
        ensure_keys(db, services.sealer, settings.keys.rsa_bits, services.now())
    # Loopback only; no websockets (nothing here uses them, and their import warns).
    config = uvicorn.Config(create_app(services=services), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", ws="none", server_header=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-browser-tests", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, f"uvicorn did not start within {STARTUP_SECONDS:.0f}s"
            time.sleep(0.05)
        assert httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=5).status_code == 200
        yield LiveServer(issuer, port, services)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        services.engine.dispose()
    assert not thread.is_alive(), "uvicorn did not stop"


class _ClientPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!DOCTYPE html><title>Client</title><p>The client received the answer.</p>"
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def client_callback() -> Iterator[str]:
    """A relying party's redirect URI on loopback that answers every request with a page; the tests read the
    authorization response from the browser's address (Playwright does not intercept redirected requests)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ClientPage)
    thread = threading.Thread(target=server.serve_forever, name="client-callback", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cb"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    assert CHROMIUM.exists(), ("Debian's chromium is missing: run scripts/ensure-test-services.sh "
                               "(`make test` does), never `playwright install`")
    playwright: Playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
                                             timeout=ACTION_TIMEOUT_MS * 2)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def console_page(chromium: Browser) -> Iterator[Page]:
    """A fresh profile with scripts off (the console works without JavaScript) that accepts downloads."""
    context = chromium.new_context(java_script_enabled=False, accept_downloads=True)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@dataclass
class VirtualAuthenticator:
    """Chromium's virtual authenticator on one page, through the DevTools WebAuthn domain."""

    cdp: CDPSession
    authenticator_id: str

    def credentials(self) -> list[dict[str, Any]]:
        answer = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator_id})
        return list(answer["credentials"])

    def remove(self, credential_id: str) -> None:
        self.cdp.send("WebAuthn.removeCredential", {"authenticatorId": self.authenticator_id,
                                                     "credentialId": credential_id})

    def add(self, credential: dict[str, Any]) -> None:
        """Add a credential as ``WebAuthn.getCredentials`` returns them (``addCredential`` takes the same)."""
        fields = ("credentialId", "isResidentCredential", "rpId", "privateKey", "userHandle", "signCount")
        self.cdp.send("WebAuthn.addCredential", {"authenticatorId": self.authenticator_id,
                                                 "credential": {k: credential[k] for k in fields if k in credential}})


@dataclass
class Tab:
    context: BrowserContext
    page: Page
    authenticator: VirtualAuthenticator


def open_tab(browser: Browser, *, transport: str = "usb") -> Tab:
    """A fresh browser profile (no cookies) with one page and a virtual authenticator: a security key
    (``usb``) or a platform authenticator (``internal``), both with resident keys and user verification."""
    context = browser.new_context()
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": transport, "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True, "automaticPresenceSimulation": True,
    }})
    return Tab(context, page, VirtualAuthenticator(cdp, added["authenticatorId"]))


@pytest.fixture
def tabs(chromium: Browser) -> Iterator[list[Tab]]:
    """Browser profiles opened by a test (``open_tab``), closed after it whatever happened."""
    opened: list[Tab] = []
    yield opened
    for tab in opened:
        tab.context.close()

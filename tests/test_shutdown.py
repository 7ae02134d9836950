"""Graceful shutdown (issue 7, operations): on SIGTERM `idp serve` finishes the requests in flight, stops its
background tasks and exits 0; a request stuck longer than ``[server] shutdown_timeout`` cannot hold the stop.

The request kept in flight is a genuinely slow one, with nothing added to the server for the test: a
``client_credentials`` token request of a ``private_key_jwt`` client whose ``jwks_uri`` is a loopback server
that answers only when the test lets it. The token endpoint waits for that key set, inside its request.
"""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import Engine, update

from idp.db import unit_of_work
from idp.models import Client
from idp.services import Services
from tests.helpers import add_client
from tests.serving import Served, serve, server_environment

KEY = ECKey.generate_key("P-256", parameters={"use": "sig"}, auto_kid=True)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

pytestmark = pytest.mark.e2e


class GatedJwks:
    """A client's jwks_uri that answers only once ``release`` is set (or after ``hold`` seconds)."""

    def __init__(self, hold: float = 30) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()
        body = json.dumps({"keys": [KEY.as_dict(private=False)]}).encode()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
                gate.asked.set()
                gate.release.wait(timeout=hold)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the server gave up waiting (the stuck-request test)

            def log_message(self, format: str, *args: Any) -> None:
                """Keep the test output quiet."""

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture
def gated() -> Iterator[GatedJwks]:
    server = GatedJwks()
    server.thread.start()
    yield server
    server.release.set()
    server.httpd.shutdown()
    server.httpd.server_close()
    server.thread.join(timeout=5)


def _key_client(served: Served, jwks_uri: str) -> str:
    """A private_key_jwt client whose keys are at ``jwks_uri``. Registration accepts only https key set URLs;
    the loopback server here speaks http, so the row is pointed at it after the registration."""
    services = served.services()
    try:
        registered = add_client(services, name="Fachverfahren", token_endpoint_auth_method="private_key_jwt",
                                jwks={"keys": [KEY.as_dict(private=False)]}, grant_types=["client_credentials"],
                                redirect_uris=[], post_logout_redirect_uris=[])
        with unit_of_work(services.sessions) as db:
            db.execute(update(Client).where(Client.client_id == registered.client_id)
                       .values(jwks=None, jwks_uri=jwks_uri))
    finally:
        services.engine.dispose()
    return registered.client_id


def _assertion(client_id: str, audience: str) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": now, "exp": now + 120,
              "jti": secrets.token_urlsafe(16)}
    return jwt.encode({"alg": "ES256", "typ": "JWT", "kid": KEY.kid}, claims, KEY, algorithms=["ES256"])


class InFlight:
    """A token request sent from a thread; its response (or the error it ended with) once it is done."""

    def __init__(self, served: Served, client_id: str) -> None:
        self.response: httpx.Response | None = None
        self.error: Exception | None = None
        data = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": _assertion(client_id, f"{served.base}/token")}

        def send() -> None:
            try:
                self.response = httpx.post(f"{served.base}/token", data=data, timeout=60)
            except httpx.HTTPError as exc:
                self.error = exc

        self.thread = threading.Thread(target=send, daemon=True)
        self.thread.start()

    def wait(self) -> None:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


def _assert_clean_stop(served: Served, workers: int) -> None:
    log = served.log.read_text()
    # Each worker ran its lifespan shutdown: back-channel sender, directory scheduler and purger stopped.
    assert log.count("Application shutdown complete.") == workers, log
    assert "Traceback" not in log and "ERROR" not in log, log


@pytest.mark.parametrize("workers", [1, 2])
def test_a_request_in_flight_is_finished_before_the_stop(backend: tuple[str, Engine], services: Services,
                                                         tmp_path: Path, gated: GatedJwks, workers: int) -> None:
    """SIGTERM while a token request waits for its client's key set: the server keeps running until that
    request is answered (200 with a token), then stops its background tasks and exits 0. On the test run's
    database (``services`` emptied it), SQLite and PostgreSQL."""
    with serve(server_environment(tmp_path, backend[0]), tmp_path, workers=workers) as served:
        request = InFlight(served, _key_client(served, gated.url))
        assert gated.asked.wait(timeout=30), served.log.read_text()
        served.process.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        assert served.process.poll() is None, "the server stopped with a request in flight"
        assert request.response is None and request.error is None
        gated.release.set()
        request.wait()
        assert request.error is None, request.error
        assert request.response is not None and request.response.status_code == 200, request.response
        assert request.response.json()["token_type"] == "Bearer"
        assert served.process.wait(timeout=30) == 0
    _assert_clean_stop(served, workers)


def test_a_stuck_request_cannot_hold_the_stop(tmp_path: Path, gated: GatedJwks) -> None:
    """With `[server] shutdown_timeout = "1s"`, a request still waiting after that second is given up and the
    server exits 0 well before the request would have ended (the key set fetch itself waits up to 5 s)."""
    env = server_environment(tmp_path, IDP_SERVER_SHUTDOWN_TIMEOUT="1s")
    with serve(env, tmp_path) as served:
        request = InFlight(served, _key_client(served, gated.url))
        assert gated.asked.wait(timeout=30), served.log.read_text()
        signalled = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=30) == 0
        assert time.monotonic() - signalled < 4
        request.wait()
        assert request.response is None or request.response.status_code >= 500
    assert "Application shutdown complete." in served.log.read_text()

"""Serving: forwarded headers only from configured proxies, and ``idp serve --workers N``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from idp.app import create_app
from idp.db import unit_of_work
from idp.models import AuditEvent
from idp.services import Services, build_services
from tests.conftest import ISSUER, FakeClock, make_settings
from tests.helpers import add_client
from tests.serving import Served, serve, server_environment


def _failed_client_auth(browser: TestClient, services: Services, forwarded: str) -> str | None:
    """Fail a client authentication with ``X-Forwarded-For: forwarded``; the address the audit trail recorded."""
    app = add_client(services, grant_types=["client_credentials"], redirect_uris=[], post_logout_redirect_uris=[])
    response = browser.post("/token", data={"grant_type": "client_credentials", "client_id": app.client_id,
                                            "client_secret": "wrong"}, headers={"X-Forwarded-For": forwarded})
    assert response.json()["error"] == "invalid_client"
    with unit_of_work(services.sessions) as db:
        event = db.scalars(select(AuditEvent).where(AuditEvent.event == "client.authentication_failed")).one()
        return event.ip


def test_forwarded_for_from_an_untrusted_peer_is_ignored(services: Services) -> None:
    """Without trusted proxies, X-Forwarded-For is the client's own claim: the audit trail keeps the peer."""
    app = create_app(services=services)
    with TestClient(app, base_url=ISSUER, client=("198.51.100.9", 50000)) as browser:
        assert _failed_client_auth(browser, services, "203.0.113.7") == "198.51.100.9"


def test_forwarded_for_from_a_peer_not_in_the_list_is_ignored(backend: tuple[str, Engine], tmp_path: Path,
                                                              services: Services, clock: FakeClock) -> None:
    """With trusted proxies configured, a peer that is not one of them cannot set its address either."""
    trusting = build_services(make_settings(tmp_path, backend[0], IDP_SERVER_TRUSTED_PROXIES="10.0.0.0/24"),
                              engine=backend[1])
    trusting.clock = clock
    with TestClient(create_app(services=trusting), base_url=ISSUER, client=("198.51.100.9", 50000)) as browser:
        assert _failed_client_auth(browser, trusting, "203.0.113.7") == "198.51.100.9"


def test_forwarded_for_from_a_trusted_proxy_gives_the_client_address(backend: tuple[str, Engine], tmp_path: Path,
                                                                     services: Services, clock: FakeClock) -> None:
    """From a trusted proxy, the right-most address it did not add is the client; what the client itself wrote
    further left (a spoofed address) is not believed."""
    trusting = build_services(make_settings(tmp_path, backend[0], IDP_SERVER_TRUSTED_PROXIES="10.0.0.0/24"),
                              engine=backend[1])
    trusting.clock = clock
    with TestClient(create_app(services=trusting), base_url=ISSUER, client=("10.0.0.2", 50000)) as browser:
        assert _failed_client_auth(browser, trusting, "192.0.2.66, 203.0.113.7, 10.0.0.3") == "203.0.113.7"


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Served]:
    """``idp serve --workers 2`` on a free loopback port, stopped (SIGTERM to the process we started) afterwards."""
    with serve(server_environment(tmp_path), tmp_path, workers=2) as served:
        yield served


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def _workers(pid: int) -> set[int]:
    """The uvicorn worker processes among ``pid``'s children (multiprocessing's resource tracker, also a child,
    leaves on its own a moment after the parent: it is not a worker)."""
    workers = set()
    for child in _children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.add(child)
        except FileNotFoundError:
            pass
    return workers


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_serve_with_two_workers(two_workers: Served) -> None:
    """`idp serve --workers 2` prepares the database once in the parent, then two worker processes serve it,
    each applying X-Forwarded-For from the trusted proxy (127.0.0.1) to the audit trail; SIGTERM stops all."""
    base, process, log = two_workers.base, two_workers.process, two_workers.log
    workers = _workers(process.pid)
    assert len(workers) == 2, workers
    # The first administrator was created once, by the parent, before any worker started.
    assert log.read_text().count("Created the administrator account") == 1
    services = two_workers.services()
    try:
        app = add_client(services, grant_types=["client_credentials"], redirect_uris=[], post_logout_redirect_uris=[])
        for _ in range(6):
            with httpx.Client(base_url=base, timeout=10) as http:  # a new connection each time: any worker answers
                response = http.post("/token", data={"grant_type": "client_credentials", "client_id": app.client_id,
                                                     "client_secret": "wrong"},
                                     headers={"X-Forwarded-For": "203.0.113.7"})
            assert response.json()["error"] == "invalid_client"
        assert httpx.get(f"{base}/healthz", timeout=5).text == "ok"
        with unit_of_work(services.sessions) as db:
            ips = {event.ip for event in db.scalars(
                select(AuditEvent).where(AuditEvent.event == "client.authentication_failed"))}
        assert ips == {"203.0.113.7"}
    finally:
        services.engine.dispose()
    assert two_workers.stop() == 0
    assert not any(_running(pid) for pid in workers)

"""A database outage answers 503 with Retry-After, writes nothing half-way, and the server recovers by itself.

The PostgreSQL tests create their own database, serve requests from it, refuse connections to it
(``ALLOW_CONNECTIONS false`` and terminating its backends), and let it back in: only that database is touched.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from idp import audit, migrate
from idp.app import create_app
from idp.db import CONNECT_TIMEOUT_SECONDS, create_db_engine, log_background_failure, unit_of_work
from idp.models import AuditEvent, Token
from idp.oauth.keys import ensure_keys
from idp.services import Services, build_services
from tests.conftest import BACKENDS, ISSUER, PG_ADMIN_URL, _create_pg_database, _drop_pg_database, make_settings
from tests.helpers import add_client

needs_postgresql = pytest.mark.skipif("postgresql" not in BACKENDS, reason="IDP_TEST_BACKENDS excludes postgresql")


class Outage:
    """Switches connections to one throwaway database off and on, from an administrative connection."""

    def __init__(self, name: str) -> None:
        self.name = name

    def begin(self) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (self.name,))

    def end(self) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')

    def terminate(self, pid: int) -> None:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[tuple[Services, Outage]]:
    """Services on a PostgreSQL database of their own, migrated and keyed, dropped afterwards."""
    name, url = _create_pg_database()
    outage = Outage(name)
    engine = create_db_engine(url, pool_size=2)
    try:
        migrate.upgrade(engine)
        services = build_services(make_settings(tmp_path, url), engine=engine)
        with unit_of_work(services.sessions) as db:
            ensure_keys(db, services.sealer, services.settings.keys.rsa_bits, services.now())
        yield services, outage
    finally:
        outage.end()
        engine.dispose()
        _drop_pg_database(name)


@needs_postgresql
def test_outage_answers_503_and_recovers(pg: tuple[Services, Outage]) -> None:
    """While the database refuses connections, API calls get 503 JSON and pages the 503 error page, both with
    Retry-After: 5; once it is back, the next request succeeds without restarting anything."""
    services, outage = pg
    app = add_client(services, name="Backend", grant_types=["client_credentials"], redirect_uris=[],
                     post_logout_redirect_uris=[])
    assert app.client_secret
    auth = (app.client_id, app.client_secret)
    form = {"grant_type": "client_credentials"}
    with TestClient(create_app(services=services), base_url=ISSUER, follow_redirects=False) as browser:
        assert browser.post("/token", data=form, auth=auth).status_code == 200
        assert browser.get("/login/no-such-transaction").status_code < 500
        started = time.monotonic()
        outage.begin()
        try:
            api = browser.post("/token", data=form, auth=auth)
            page = browser.get("/login/no-such-transaction")
            ready = browser.get("/readyz")
            alive = browser.get("/healthz")
        finally:
            outage.end()
        assert time.monotonic() - started < 30
        recovered = browser.post("/token", data=form, auth=auth)

    assert api.status_code == 503, api.text
    assert api.headers["retry-after"] == "5"
    assert api.headers["content-type"] == "application/json"
    assert api.json()["error"] == "temporarily_unavailable"
    assert page.status_code == 503
    assert page.headers["retry-after"] == "5"
    assert page.headers["content-type"].startswith("text/html")
    assert "Traceback" not in page.text and "OperationalError" not in page.text
    assert ready.status_code == 503 and ready.json()["failed"] == "database"
    assert alive.status_code == 200
    assert recovered.status_code == 200, recovered.text
    with unit_of_work(services.sessions) as db:
        # The token refused during the outage was never issued: two successful requests, two rows.
        assert db.scalar(select(func.count()).select_from(Token)) == 2


@needs_postgresql
def test_connection_lost_before_commit_writes_nothing(pg: tuple[Services, Outage]) -> None:
    """A unit of work whose connection dies before the commit raises a connection error and leaves no row."""
    services, outage = pg

    with pytest.raises(OperationalError), unit_of_work(services.sessions) as db:
        audit.record(db, "test.half_written")
        db.flush()
        outage.terminate(int(db.scalar(text("SELECT pg_backend_pid()"))))
    with unit_of_work(services.sessions) as db:
        # The pool noticed the dead connection; the next unit of work gets a fresh one.
        assert db.scalar(select(func.count()).where(AuditEvent.event == "test.half_written")) == 0


def test_unopenable_database_answers_503(tmp_path: Path) -> None:
    """An SQLite database that cannot be opened answers 503 with Retry-After, never a 500."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    url = f"sqlite:///{blocker / 'idp.sqlite3'}"
    services = build_services(make_settings(tmp_path, url), engine=create_engine(url))
    with TestClient(create_app(services=services), base_url=ISSUER, follow_redirects=False) as browser:
        page = browser.get("/login/no-such-transaction")
        api = browser.post("/token", data={"grant_type": "client_credentials"}, auth=("x", "y"))
    services.engine.dispose()
    assert page.status_code == 503 and page.headers["retry-after"] == "5"
    assert page.headers["content-type"].startswith("text/html")
    assert api.status_code == 503 and api.headers["retry-after"] == "5"
    assert api.json()["error"] == "temporarily_unavailable"


def test_a_database_that_accepts_but_never_answers_fails_the_connection_within_seconds() -> None:
    """A PostgreSQL host that swallows packets (a firewall, a hung server) must not hang a request for the
    operating system's TCP timeout: the connection attempt gives up after ``CONNECT_TIMEOUT_SECONDS``."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the TCP handshake; nobody ever speaks the protocol
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except TimeoutError:
                continue

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    engine = create_db_engine(f"postgresql+psycopg://idp@127.0.0.1:{silent.getsockname()[1]}/idp")
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError):
            with engine.connect():
                pass
        assert time.monotonic() - started < CONNECT_TIMEOUT_SECONDS * 3
    finally:
        engine.dispose()
        stop.set()
        holder.join()
        for conn in accepted:
            conn.close()
        silent.close()


def test_background_rounds_log_one_line_while_the_database_is_away(caplog: pytest.LogCaptureFixture) -> None:
    """The back-channel sender, the purger and the directory schedule retry by themselves: during an outage each
    failed round is one warning line (every round of every process fails alike); anything else keeps its trace."""
    logger = logging.getLogger("idp.test-background")
    with caplog.at_level(logging.WARNING, logger="idp.test-background"):
        log_background_failure(logger, "purging expired rows failed",
                               OperationalError("SELECT 1", {}, ConnectionRefusedError("refused")))
        log_background_failure(logger, "purging expired rows failed", ValueError("a bug"))
    outage, bug = caplog.records
    assert outage.levelname == "WARNING" and outage.exc_info is None
    assert "database is unavailable (ConnectionRefusedError)" in outage.getMessage()
    assert bug.levelname == "ERROR" and bug.exc_info is not None and bug.exc_info[0] is ValueError

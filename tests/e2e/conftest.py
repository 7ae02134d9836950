"""The real server as a separate process, reached over real HTTP, on SQLite and on PostgreSQL.

``idp serve`` is started the way an operator starts it: on the embedded SQLite database it migrates and
creates the administrator itself; on PostgreSQL ``idp db upgrade`` runs first. Users and clients are made
with the ``idp`` command against the same configuration, so these tests also show that the CLI and a
running server share one database. One server runs per backend and test module.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import BACKENDS, PG_ADMIN_URL
from tests.helpers import PASSWORD
from tests.serving import free_port, idp_command

STARTUP_SECONDS = 60.0
USERNAME = "erika"


@dataclass(frozen=True)
class RegisteredRP:
    """A client registered with ``idp clients add --json``."""

    client_id: str
    client_secret: str
    redirect_uri: str
    post_logout_redirect_uri: str
    id_token_alg: str


@dataclass
class RunningServer:
    backend: str
    issuer: str
    env: dict[str, str]
    log_path: Path
    username: str = USERNAME
    password: str = PASSWORD
    user_sub: str = ""

    def idp(self, *args: str, stdin: str | None = None) -> str:
        """Run the ``idp`` command with the server's configuration; return its standard output."""
        result = subprocess.run([idp_command(), *args], input=stdin, env=self.env, capture_output=True, text=True,
                                timeout=120, check=False)
        assert result.returncode == 0, f"idp {' '.join(args)} failed: {result.stderr}"
        return result.stdout

    def register_rp(self, *, id_token_alg: str = "ES256") -> RegisteredRP:
        """Register a confidential client whose redirect URI is a loopback port nothing listens on."""
        base = f"http://127.0.0.1:{free_port()}"
        output = self.idp("clients", "add", "--name", f"RP {id_token_alg}", "--redirect-uri", f"{base}/cb",
                          "--post-logout-redirect-uri", f"{base}/logged-out", "--id-token-alg", id_token_alg,
                          "--json")
        created: dict[str, Any] = json.loads(output)
        return RegisteredRP(created["client_id"], created["client_secret"], f"{base}/cb", f"{base}/logged-out",
                            id_token_alg)


def _environment(data_dir: Path, database_url: str | None) -> dict[str, str]:
    # The developer's own IDP_* variables must not leak in: an unknown one would even stop the server.
    env = {key: value for key, value in os.environ.items() if not key.startswith("IDP_")}
    env["IDP_DATA_DIR"] = str(data_dir)
    env["IDP_BOOTSTRAP_ADMIN_PASSWORD"] = "bootstrap admin password"
    # Password-only sign-ins, except for clients registered with --require-mfa (the step-up test).
    env["IDP_MFA_DEFAULT"] = "optional"
    if database_url:
        env["IDP_DATABASE_URL"] = database_url
    return env


def _wait_until_serving(process: subprocess.Popen[bytes], issuer: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    url = f"{issuer}/.well-known/openid-configuration"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"idp serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"idp serve did not answer {url} within {STARTUP_SECONDS:.0f}s:\n{log_path.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _create_database() -> tuple[str, str]:
    name = f"idp_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return name, f"{base}/{name}"


def _drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module", params=BACKENDS)
def idp_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """``idp serve`` on a free port, with the user erika (group Bauamt); stopped after the module."""
    backend = request.param
    data_dir = tmp_path_factory.mktemp(f"e2e-{backend}")
    database: str | None = None
    url: str | None = None
    if backend == "postgresql":
        database, url = _create_database()
    elif backend != "sqlite":
        raise ValueError(f"unknown backend {backend}")
    port = free_port()
    server = RunningServer(backend, f"http://127.0.0.1:{port}", _environment(data_dir, url), data_dir / "server.log")
    process: subprocess.Popen[bytes] | None = None
    try:
        if url is not None:
            server.idp("db", "upgrade")
        with server.log_path.open("wb") as log:
            process = subprocess.Popen([idp_command(), "serve", "--port", str(port)], env=server.env,
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait_until_serving(process, server.issuer, server.log_path)
        created = json.loads(server.idp("users", "add", USERNAME, "--password-stdin", "--group", "Bauamt",
                                        "--email", "erika@musterstadt.de", "--name", "Erika Mustermann", "--json",
                                        stdin=PASSWORD + "\n"))
        server.user_sub = created["sub"]
        yield server
    finally:
        if process is not None:
            _stop(process)
        if database is not None:
            _drop_database(database)

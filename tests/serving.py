"""A real ``idp serve`` for the operations tests (metrics, logs, shutdown, workers): started on a free loopback port,
waited for until ready, and stopped with SIGTERM (then SIGKILL) if the test has not stopped it itself."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from idp.config import load_settings
from idp.db import create_db_engine
from idp.services import Services, build_services

ROOT = Path(__file__).resolve().parents[1]


def idp_command() -> str:
    """The ``idp`` command of this checkout's virtual environment, else the one installed beside this Python."""
    local = ROOT / ".venv" / "bin" / "idp"
    if local.exists():
        return str(local)
    beside = Path(sys.executable).with_name("idp")
    assert beside.exists(), "the `idp` command is not installed (pip install -e .)"
    return str(beside)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the server started on it binds it again)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_environment(data_dir: Path, database_url: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without its IDP_* variables, plus a cheap argon2 cost and the secrets of
    ``tests.conftest.make_settings`` (so a server can share the test run's database, ``database_url``, and its
    signing keys); without ``database_url`` the server makes its own embedded database in ``data_dir``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("IDP_")}
    if database_url is not None:
        env["IDP_DATABASE_URL"] = database_url
    env.update({
        "IDP_DATA_DIR": str(data_dir),
        "IDP_SECRET_KEY": "dGVzdC1zZWNyZXQta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMTIzNDU2Nzg5MA==",
        "IDP_KEYS_ENCRYPTION_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        "IDP_PASSWORDS_ARGON2_TIME_COST": "1",
        "IDP_PASSWORDS_ARGON2_MEMORY_COST": "1024",
        "IDP_BOOTSTRAP_ADMIN_PASSWORD": "bootstrap-password-1",
        "IDP_SERVER_TRUSTED_PROXIES": "127.0.0.1",
        **extra,
    })
    return env


@dataclass
class Served:
    base: str
    process: subprocess.Popen[str]
    log: Path
    env: dict[str, str]

    def services(self) -> Services:
        """Services on the server's database, for the test to add clients and users; dispose the engine after."""
        settings = load_settings(environ=self.env)
        return build_services(settings, engine=create_db_engine(settings.database_url))

    def stop(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


@contextmanager
def serve(env: dict[str, str], data_dir: Path, workers: int = 1) -> Iterator[Served]:
    port = free_port()
    log = data_dir / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen([idp_command(), "serve", "--workers", str(workers), "--port", str(port)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT, text=True, cwd=data_dir)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield Served(base, process, log, env)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


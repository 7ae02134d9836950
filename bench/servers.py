"""The servers under test: ``idp serve`` on a fresh database, seeded through the same plain functions as the CLI,
and node-oidc-provider from npm, each a child process whose CPU time and memory are read from /proc."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
IDP = ROOT / ".venv" / "bin" / "idp"
NODE_DIR = ROOT / ".cache" / "bench-node"
NODE_SERVER = ROOT / "bench" / "node" / "server.mjs"
OIDC_PROVIDER_VERSION = "9"
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
PASSWORD = "correct horse battery staple"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of these processes (fields 14 and 15 of /proc/PID/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


@dataclass
class BenchUser:
    username: str
    address: str
    """The address the user signs in from (sent as X-Forwarded-For by the driver)."""
    totp_secret: str | None = None
    last_step: int = 0
    """The last TOTP time step this user's code was spent for: the server refuses a step twice (replay)."""


@dataclass
class Seeded:
    """What the harness needs to drive one IdP: its clients (id, secret, redirect URI) and its users."""

    web: tuple[str, str, str]
    """A trusted (consent-free) confidential client: password sign-ins, refresh tokens, userinfo, introspection."""
    mfa_web: tuple[str, str, str]
    """The same, but every sign-in needs a second factor (require_mfa): the complete sign-ins of (b)."""
    service: tuple[str, str]
    """A client_credentials-only service client."""
    password_users: list[BenchUser] = field(default_factory=list)
    totp_users: list[BenchUser] = field(default_factory=list)


def _address(number: int) -> str:
    return f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"


class IdpServer:
    """``idp serve --workers N`` on a fresh SQLite file or a fresh PostgreSQL database (dropped at the end)."""

    def __init__(self, backend: str, workers: int, work_dir: Path, *, password_users: int,
                 totp_users: int, extra_env: dict[str, str] | None = None) -> None:
        self.backend, self.workers = backend, workers
        self.data_dir = work_dir / f"idp-{backend}-{workers}w"
        self.data_dir.mkdir(parents=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.database: str | None = None
        self.env = {name: value for name, value in os.environ.items() if not name.startswith("IDP_")}
        self.env.update({
            "IDP_DATA_DIR": str(self.data_dir),
            "IDP_SECRET_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "IDP_KEYS_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "IDP_BOOTSTRAP_ADMIN_PASSWORD": secrets.token_urlsafe(16),
            "IDP_SERVER_PORT": str(self.port),
            # Password-only sign-ins for (a); the client of (b) requires the second factor itself.
            "IDP_MFA_DEFAULT": "optional",
            # The sign-in driver plays a reverse proxy that forwards users from many addresses (X-Forwarded-For).
            "IDP_SERVER_TRUSTED_PROXIES": "127.0.0.1",
            # The argon2id cost stays the configured default (OWASP: m=19 MiB, t=2, p=1): that is what (a) measures.
        })
        self.env.update(extra_env or {})
        if backend == "postgresql":
            self.database = f"idp_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.database}"')
            self.env["IDP_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.database}"
        self.seeded = self._seed(password_users, totp_users)
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_seconds = 0.0
        self.log_path = self.data_dir / "serve.log"

    def _seed(self, password_users: int, totp_users: int) -> Seeded:
        """Migrate, create keys and the administrator (what ``idp serve`` does on a first start), then users
        and clients with the plain functions the CLI uses; one argon2id hash serves every user (the cost of
        verifying it is the same, and hashing thousands at full cost would take minutes)."""
        from idp import migrate
        from idp.accounts.users import create_user
        from idp.cli import prepare
        from idp.config import load_settings
        from idp.db import unit_of_work
        from idp.factors import totp
        from idp.oauth.clients import NewClient, create_client
        from idp.services import build_services

        services = build_services(load_settings(environ=self.env))
        try:
            migrate.upgrade(services.engine)
            prepare(services, out=lambda _: None)
            now = services.now()
            password_hash = services.passwords.hash(PASSWORD)
            redirect = f"http://127.0.0.1:{free_port()}/cb"
            with unit_of_work(services.sessions) as db:
                web, web_secret = create_client(db, services.hasher, NewClient(
                    name="Bench web", redirect_uris=[redirect], trusted=True))
                mfa, mfa_secret = create_client(db, services.hasher, NewClient(
                    name="Bench web MFA", redirect_uris=[redirect], trusted=True, require_mfa=True,
                    mfa_methods=["totp"]))
                service, service_secret = create_client(db, services.hasher, NewClient(
                    name="Bench service", redirect_uris=[], grant_types=["client_credentials"]))
                seeded = Seeded((web.client_id, str(web_secret), redirect), (mfa.client_id, str(mfa_secret), redirect),
                                (service.client_id, str(service_secret)))
                for number in range(password_users):
                    name = f"pw{number:05d}"
                    create_user(db, name, password_hash=password_hash, email=f"{name}@bench.example",
                                display_name=f"Bench {number}")
                    seeded.password_users.append(BenchUser(name, _address(number)))
                for number in range(totp_users):
                    name = f"mfa{number:05d}"
                    user = create_user(db, name, password_hash=password_hash, email=f"{name}@bench.example",
                                       display_name=f"Bench MFA {number}")
                    factor, secret = totp.begin_enrollment(db, services.sealer, user, "Phone app", now)
                    factor.created_at = factor.confirmed_at = now - timedelta(days=1)
                    seeded.totp_users.append(BenchUser(name, _address(password_users + number), secret))
            return seeded
        finally:
            services.engine.dispose()

    def start(self) -> None:
        """Start the server; the time from the start of the command to the first ``/readyz`` 200 is kept."""
        with self.log_path.open("ab") as log:
            started = time.monotonic()
            self.process = subprocess.Popen([str(IDP), "serve", "--workers", str(self.workers)], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=self.data_dir)
        deadline = started + 60
        with httpx.Client(timeout=2) as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"idp serve exited:\n{self.log_path.read_text()[-3000:]}")
                try:
                    if http.get(f"{self.base}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"idp serve not ready within 60 s:\n{self.log_path.read_text()[-3000:]}")
                time.sleep(0.01)
        self.ready_seconds = time.monotonic() - started
        # With several workers, wait until each has started (a worker that answers nothing is not measured).
        while len(self.worker_pids()) < self.workers and time.monotonic() < deadline:
            time.sleep(0.05)

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: the command itself with one worker, else uvicorn's spawned
        workers (multiprocessing's resource tracker, also a child, is not one)."""
        assert self.process is not None
        if self.workers == 1:
            return [self.process.pid]
        workers = []
        for child in _children(self.process.pid):
            try:
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    workers.append(child)
            except FileNotFoundError:
                pass
        return sorted(workers)

    def all_pids(self) -> list[int]:
        assert self.process is not None
        return [self.process.pid, *self.worker_pids()] if self.workers > 1 else [self.process.pid]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.database is not None:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            self.database = None


def ensure_oidc_provider() -> Path:
    """npm's ``oidc-provider`` in .cache/bench-node (a local prefix, never global, no package.json saved)."""
    modules = NODE_DIR / "node_modules"
    if not (modules / "oidc-provider" / "package.json").exists():
        if shutil.which("npm") is None:
            raise RuntimeError("npm is missing: apt-get install npm")
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-save", "--no-audit", "--no-fund", "--no-package-lock", "--prefix",
                        ".", f"oidc-provider@{OIDC_PROVIDER_VERSION}"], cwd=NODE_DIR, check=True,
                       stdout=subprocess.DEVNULL)
    return modules


def oidc_provider_version() -> str:
    import json

    package = NODE_DIR / "node_modules" / "oidc-provider" / "package.json"
    return str(json.loads(package.read_text())["version"])


class NodeServer:
    """bench/node/server.mjs: node-oidc-provider with its in-memory adapter, one process."""

    def __init__(self, work_dir: Path) -> None:
        self.modules = ensure_oidc_provider()
        self.port = free_port()
        self.mint_port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.client_id = "bench-service"
        self.client_secret = secrets.token_urlsafe(32)
        self.work_dir = work_dir
        self.log_path = work_dir / "node.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_seconds = 0.0

    def start(self) -> None:
        env = {**os.environ, "PORT": str(self.port), "CLIENT_ID": self.client_id,
               "CLIENT_SECRET": self.client_secret, "MINT_PORT": str(self.mint_port),
               "NODE_MODULES_DIR": str(self.modules), "NODE_ENV": "production"}
        with self.log_path.open("ab") as log:
            started = time.monotonic()
            self.process = subprocess.Popen(["node", str(NODE_SERVER)], env=env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.work_dir)
        deadline = started + 60
        with httpx.Client(timeout=2) as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"node-oidc-provider exited:\n{self.log_path.read_text()[-3000:]}")
                try:
                    if http.get(f"{self.base}/.well-known/openid-configuration").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node-oidc-provider not ready:\n{self.log_path.read_text()[-3000:]}")
                time.sleep(0.01)
        self.ready_seconds = time.monotonic() - started

    def mint(self, count: int) -> list[str]:
        """``count`` never-used refresh tokens, minted now: its in-memory adapter (an LRU of 1,000 entries)
        forgets a token that waits through a second of other rotations, so a pool must be minted just before use."""
        answer = httpx.get(f"http://127.0.0.1:{self.mint_port}/mint", params={"count": count}, timeout=30)
        answer.raise_for_status()
        tokens = answer.text.split()
        if len(tokens) != count:
            raise RuntimeError(f"node-oidc-provider minted {len(tokens)} refresh tokens, not {count}")
        return tokens

    def pids(self) -> list[int]:
        assert self.process is not None
        return [self.process.pid]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

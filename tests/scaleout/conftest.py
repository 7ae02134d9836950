"""Real ``idp serve`` processes on one PostgreSQL database, and a browser-less user that signs in through them.

The tests in this folder prove what issue 7 asks of scale-out: every invariant holds across server processes
(``test_races.py``), two workers hold 200 users signing in at once (``test_load.py``), and a killed worker or a
restarted PostgreSQL loses nothing (``test_faults.py``). Each server is started the way an operator starts it:
the database is migrated first (``idp db upgrade``; here in-process), then ``idp serve`` is pointed at it with
environment variables only. Servers get a fresh database of their own, created here and dropped afterwards.

The test process seeds users, factors and clients straight into the same database with the same keys (the
key-encryption key seals TOTP seeds, the secret key hashes client secrets), then talks to the servers over
loopback HTTP like browsers and relying parties do. PostgreSQL only: SQLite has one writer and no second host.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select

from idp import migrate
from idp.accounts.users import create_user, find_user
from idp.config import Settings, load_settings
from idp.db import create_db_engine, unit_of_work
from idp.factors import totp
from idp.models import AuthorizationCode, SsoSession, Token, User
from idp.oauth.keys import ensure_keys
from idp.services import Services, build_services
from tests.conftest import BACKENDS, _create_pg_database, _drop_pg_database
from tests.helpers import PASSWORD, Flow, RegisteredClient, add_client, csrf_of, query_of
from tests.serving import free_port, idp_command

STARTUP_SECONDS = 60.0
SECRET_KEY = "dGVzdC1zZWNyZXQta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMTIzNDU2Nzg5MA=="
KEYS_ENCRYPTION_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
CHEAP_ARGON2 = {"IDP_PASSWORDS_ARGON2_TIME_COST": "1", "IDP_PASSWORDS_ARGON2_MEMORY_COST": "1024"}

needs_postgresql = pytest.mark.skipif(
    "postgresql" not in BACKENDS,
    reason="scale-out tests run idp serve on PostgreSQL, which IDP_TEST_BACKENDS excludes",
)


# --- the database and the test process's view of it -------------------------------------------------------

def server_environment(data_dir: Path, database_url: str, issuer: str, **extra: str) -> dict[str, str]:
    """What an operator's unit file would set; the developer's own IDP_* variables do not leak in."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("IDP_")}
    env.update({
        "IDP_ISSUER": issuer,
        "IDP_DATA_DIR": str(data_dir),
        "IDP_DATABASE_URL": database_url,
        "IDP_SECRET_KEY": SECRET_KEY,
        "IDP_KEYS_ENCRYPTION_KEY": KEYS_ENCRYPTION_KEY,
        "IDP_MFA_DEFAULT": "required",
        **extra,
    })
    return env


def services_for(env: dict[str, str], *, pool_size: int = 5) -> Services:
    """Services in the test process with the servers' settings: for seeding rows and reading them back."""
    settings: Settings = load_settings(environ=env)
    assert settings.database_url is not None
    return build_services(settings, engine=create_db_engine(settings.database_url, pool_size=pool_size))


def prepare_database(services: Services) -> None:
    """Migrated (``idp db upgrade``), with signing keys and a first account, before any server starts: most
    tests here are about other things than the first start (``test_races.py`` has a test for that)."""
    migrate.upgrade(services.engine)
    with unit_of_work(services.sessions) as db:
        ensure_keys(db, services.sealer, services.settings.keys.rsa_bits, services.now())
        if find_user(db, "admin") is None:
            create_user(db, "admin", password_hash=None, display_name="Administrator")


@dataclass
class Deployment:
    """One fresh PostgreSQL database, the servers' environment for it, and services to seed and inspect it."""

    name: str
    url: str
    issuer: str
    env: dict[str, str]
    services: Services
    data_dir: Path
    servers: list[Server] = field(default_factory=list)

    @property
    def issuer_port(self) -> int:
        return int(self.issuer.rsplit(":", 1)[1])

    def start(self, *, port: int | None = None, workers: int = 1, log_name: str | None = None) -> Server:
        server = start_server(self.env, port or free_port(), workers=workers,
                              log=self.data_dir / (log_name or f"serve-{len(self.servers)}.log"))
        self.servers.append(server)
        return server

    def start_together(self, count: int) -> list[Server]:
        """``count`` single-process servers started at the same moment (the first on the issuer's port)."""
        ports = [self.issuer_port] + [free_port() for _ in range(count - 1)]
        started: list[Server | BaseException | None] = [None] * count

        def start(index: int) -> None:
            try:
                started[index] = start_server(self.env, ports[index], workers=1,
                                              log=self.data_dir / f"serve-{index}.log")
            except BaseException as exc:  # reported below, after every server was started or failed
                started[index] = exc

        threads = [threading.Thread(target=start, args=(index,)) for index in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=STARTUP_SECONDS + 30)
        servers = [server for server in started if isinstance(server, Server)]
        self.servers.extend(servers)
        for outcome in started:
            if not isinstance(outcome, Server):
                raise AssertionError(f"a server did not start: {outcome!r}")
        return servers

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.services.engine.dispose()


def deploy(data_dir: Path, *, port: int | None = None, database_url: str | None = None, prepared: bool = True,
           **extra: str) -> Deployment:
    """A new database (or ``database_url``), migrated and (``prepared``) keyed, with a first account; the
    issuer is the first server's address."""
    name = ""
    if database_url is None:
        name, database_url = _create_pg_database()
    port = port or free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = server_environment(data_dir, database_url, issuer, **extra)
    services = services_for(env)
    try:
        if prepared:
            prepare_database(services)
        else:
            migrate.upgrade(services.engine)  # ``idp db upgrade`` only: the servers make keys and the admin
    except BaseException:
        services.engine.dispose()
        if name:
            _drop_pg_database(name)
        raise
    return Deployment(name, database_url, issuer, env, services, data_dir)


def undeploy(deployment: Deployment) -> None:
    deployment.close()
    if deployment.name:
        _drop_pg_database(deployment.name)


# --- server processes ----------------------------------------------------------------------------------------

@dataclass
class Server:
    """One ``idp serve`` process (with ``workers`` uvicorn workers under it) on a loopback port."""

    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """SIGTERM (graceful: requests in flight finish), then SIGKILL if it does not stop."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def workers(self) -> set[int]:
        """The uvicorn worker processes under this server (multiprocessing's spawned children)."""
        found: set[int] = set()
        try:
            tasks = list(Path(f"/proc/{self.process.pid}/task").iterdir())
        except FileNotFoundError:
            return found
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except FileNotFoundError:
                continue
            for child in map(int, children):
                try:
                    if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes() and is_running(child):
                        found.add(child)
                except FileNotFoundError:
                    pass
        return found

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


ACCESS_STATUS = re.compile(r'" (\d{3})$', re.MULTILINE)


def server_errors(log: str) -> list[str]:
    """The statuses in uvicorn's access log that are server errors other than 503 (the outage answer)."""
    return [status for status in ACCESS_STATUS.findall(log) if status.startswith("5") and status != "503"]


def is_running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def start_server(env: dict[str, str], port: int, *, workers: int, log: Path) -> Server:
    """``idp serve --port PORT --workers N``; returns once ``/readyz`` answers 200."""
    with log.open("wb") as out:
        process = subprocess.Popen([idp_command(), "serve", "--port", str(port), "--workers", str(workers)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=env["IDP_DATA_DIR"])
    server = Server(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + STARTUP_SECONDS
    # Ready means: /readyz answers, and with several workers all of them run (one answering is not enough).
    while not (server.ready() and (workers == 1 or len(server.workers()) == workers)):
        if process.poll() is not None:
            raise AssertionError(f"idp serve exited with {process.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"idp serve was not ready within {STARTUP_SECONDS:.0f}s:\n{log.read_text()}")
        time.sleep(0.1)
    return server


def wait_for(condition: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


# --- people and relying parties ----------------------------------------------------------------------------

@dataclass
class Person:
    username: str
    sub: str
    totp_secret: str

    def code(self, *, steps_ahead: int = 0) -> str:
        """The authenticator app's code now (or for a later 30-second step: the server accepts one ahead)."""
        return pyotp.TOTP(self.totp_secret).at(time.time() + 30 * steps_ahead)


def add_people(services: Services, prefix: str, count: int) -> list[Person]:
    """``count`` accounts with the password ``PASSWORD`` and a confirmed authenticator app each.

    The password is hashed once at the configured argon2id cost and the hash shared: every sign-in then
    verifies at the real cost, while seeding stays fast."""
    shared_hash = services.passwords.hash(PASSWORD)
    people: list[Person] = []
    with unit_of_work(services.sessions) as db:
        now = services.now()
        for number in range(count):
            user = create_user(db, f"{prefix}{number:04d}", password_hash=shared_hash,
                               display_name=f"Person {number}", email=f"{prefix}{number:04d}@musterstadt.de")
            factor, secret = totp.begin_enrollment(db, services.sealer, user, "Phone app", now)
            factor.created_at = factor.confirmed_at = now - timedelta(days=1)
            people.append(Person(user.username, user.sub, secret))
    return people


def add_rp(services: Services, name: str = "Fachverfahren") -> RegisteredClient:
    """A confidential, first-party client (no consent page), with a refresh token for every sign-in."""
    return add_client(services, name=name, trusted=True)


# --- a browser without a browser -------------------------------------------------------------------------

class SignInFailed(AssertionError):
    """The server answered something a sign-in does not expect (kept with the step and the status)."""

    def __init__(self, step: str, response: httpx.Response) -> None:
        super().__init__(f"{step}: HTTP {response.status_code} {response.text[:300]}")
        self.step = step
        self.response = response


class Browser:
    """One person's browser: a cookie jar, and requests to whichever server (process) the test names.

    The cookie jar matches on the host only, not the port, like browsers: a session cookie set by one server
    is sent to the other, as a reverse proxy in front of both would do."""

    def __init__(self, transport: httpx.BaseTransport | None = None, timeout: float = 60.0, *,
                 reload_when_unavailable: bool = False) -> None:
        self.reload_when_unavailable = reload_when_unavailable
        self.unavailable: list[httpx.Response] = []
        """503 answers this browser saw (and, with ``reload_when_unavailable``, repeated the request after)."""
        self.resent: list[str] = []
        """URLs of GETs sent again on a new connection after the first one was lost."""
        # English pages (the product's default is German): the tests read a few of their messages.
        self.http = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False,
                                 headers={"accept-language": "en"})

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, base: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._send("GET", base + path, **kwargs)

    def post(self, base: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._send("POST", base + path, **kwargs)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request; a 503 is kept, and with ``reload_when_unavailable`` the request is sent again (what a
        person does with "Please reload the page"), a little sooner than Retry-After asks, for at most 60 s."""
        deadline = time.monotonic() + 60
        while True:
            try:
                response = self.http.request(method, url, **kwargs)
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
                # A kept-alive connection that the server closed (idle timeout) just as the request went out.
                # Browsers send an idempotent request again on a new connection (RFC 9110 9.2.2); a POST fails.
                if method != "GET":
                    raise
                self.resent.append(url)
                response = self.http.request(method, url, **kwargs)
            if response.status_code != 503:
                return response
            self.unavailable.append(response)
            if not self.reload_when_unavailable or time.monotonic() > deadline:
                return response
            time.sleep(min(float(response.headers.get("retry-after", "1")), 0.5))

    # --- the steps of a sign-in, each a function of the server it talks to ---

    def authorize(self, base: str, flow: Flow) -> str:
        """Start the flow; returns the login page's path."""
        response = self.get(base, flow.url())
        if response.status_code != 303 or not response.headers["location"].startswith("/login/"):
            raise SignInFailed("authorize", response)
        return str(response.headers["location"])

    def password(self, base: str, login_path: str, username: str, password: str = PASSWORD) -> httpx.Response:
        page = self.get(base, login_path)
        if page.status_code != 200:
            raise SignInFailed("login page", page)
        return self.post(base, login_path, data={"username": username, "password": password,
                                                 "csrf_token": csrf_of(page.text)})

    def to_factor_page(self, base: str, response: httpx.Response) -> str:
        """After the password: follow the resume redirect to the second-factor page; returns its path."""
        if response.status_code != 303:
            raise SignInFailed("password", response)
        resume = self.get(base, response.headers["location"])
        if resume.status_code != 303 or not resume.headers["location"].endswith("/factor"):
            raise SignInFailed("resume after password", resume)
        return str(resume.headers["location"])

    def factor_csrf(self, base: str, factor_path: str) -> str:
        page = self.get(base, factor_path)
        if page.status_code != 200:
            raise SignInFailed("factor page", page)
        # The page shows the preferred method: a form (authenticator app, SMS) or the security key's button.
        button = re.search(r'data-csrf="([^"]+)"', page.text)
        return button.group(1) if button else csrf_of(page.text)

    def submit_code(self, base: str, factor_path: str, csrf: str, code: str, method: str = "totp") -> httpx.Response:
        return self.post(base, factor_path, data={"method": method, "code": code, "csrf_token": csrf})

    def finish(self, base: str, response: httpx.Response) -> dict[str, str]:
        """Follow the IdP's own redirects to the client's redirect URI; returns what the client receives."""
        for _ in range(6):
            if response.status_code not in (302, 303):
                raise SignInFailed("finish", response)
            location = str(response.headers["location"])
            if not location.startswith("/"):
                return query_of(location)
            response = self.get(base, location)
        raise SignInFailed("finish (too many redirects)", response)

    def exchange(self, base: str, flow: Flow, code: str) -> httpx.Response:
        assert flow.client.client_secret
        return self.post(base, "/token", auth=(flow.client.client_id, flow.client.client_secret),
                         data={"grant_type": "authorization_code", "code": code,
                               "redirect_uri": flow.client.redirect_uri, "code_verifier": flow.verifier})

    def refresh(self, base: str, rp: RegisteredClient, refresh_token: str) -> httpx.Response:
        assert rp.client_secret
        return self.post(base, "/token", auth=(rp.client_id, rp.client_secret),
                         data={"grant_type": "refresh_token", "refresh_token": refresh_token})

    def authorization_code(self, bases: list[str], flow: Flow, person: Person, *, steps_ahead: int = 0) -> str:
        """Password and authenticator app, each request to the next of ``bases`` in turn; returns the code
        the client receives."""
        pick = iter(bases * 8)
        login = self.authorize(next(pick), flow)
        after_password = self.password(next(pick), login, person.username)
        factor = self.to_factor_page(next(pick), after_password)
        csrf = self.factor_csrf(next(pick), factor)
        base = next(pick)
        answer = self.submit_code(base, factor, csrf, person.code(steps_ahead=steps_ahead))
        if answer.status_code != 303:
            raise SignInFailed("second factor", answer)
        params = self.finish(base, answer)
        if "code" not in params or params.get("state") != flow.state:
            raise AssertionError(f"the client received {params}")
        return params["code"]

    def sign_in(self, bases: list[str], flow: Flow, person: Person, *, steps_ahead: int = 0) -> dict[str, Any]:
        """A whole sign-in, then the code exchange (at the server after the last one used); returns the token
        response."""
        code = self.authorization_code(bases, flow, person, steps_ahead=steps_ahead)
        token = self.exchange(bases[-1], flow, code)
        if token.status_code != 200:
            raise SignInFailed("token", token)
        body: dict[str, Any] = token.json()
        return body


@pytest.fixture
def browsers() -> Iterator[Callable[..., Browser]]:
    """Makes browsers; closes them all after the test, however it ended."""
    made: list[Browser] = []

    def make(**kwargs: Any) -> Browser:
        made.append(Browser(**kwargs))
        return made[-1]

    yield make
    for browser in made:
        browser.close()


@dataclass
class Attempt:
    """One person's sign-in under load: what they got, or where it failed."""

    person: Person
    browser: Browser
    flow: Flow
    tokens: dict[str, Any] | None = None
    failure: BaseException | None = None
    started: float = 0.0
    ended: float = 0.0


def sign_in_all(bases: list[str], rp: RegisteredClient, people: list[Person], *, concurrency: int,
                steps_ahead: int = 0, reload_when_unavailable: bool = False,
                after_each: Callable[[Attempt], None] | None = None, timeout: float = 120.0) -> list[Attempt]:
    """Everyone in ``people`` signs in (password, authenticator app, code exchange), ``concurrency`` at a time,
    all of the first ``concurrency`` starting together. Failures are kept per person, never raised."""
    attempts = [Attempt(person, Browser(reload_when_unavailable=reload_when_unavailable), Flow(rp))
                for person in people]
    barrier = threading.Barrier(min(concurrency, len(people)))
    pending = iter(attempts)
    lock = threading.Lock()

    def worker(index: int) -> None:
        if index < barrier.parties:
            barrier.wait(timeout=60)
        while True:
            with lock:
                attempt = next(pending, None)
            if attempt is None:
                return
            attempt.started = time.monotonic()
            try:
                attempt.tokens = attempt.browser.sign_in(bases, attempt.flow, attempt.person,
                                                         steps_ahead=steps_ahead)
            except (httpx.HTTPError, AssertionError) as exc:
                attempt.failure = exc
            attempt.ended = time.monotonic()
            if after_each is not None:
                after_each(attempt)

    threads = [threading.Thread(target=worker, args=(index,), daemon=True) for index in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), f"the sign-ins did not end within {timeout:.0f}s"
    return attempts


def close_all(attempts: list[Attempt]) -> None:
    for attempt in attempts:
        attempt.browser.close()


@dataclass
class Written:
    """What the database holds for a set of accounts after a run."""

    sessions: int
    codes: int
    consumed_codes: int
    tokens: int
    token_jtis: set[str]


def assert_nothing_half_written(services: Services, usernames: list[str]) -> Written:
    """Every code belongs to a session of its user that passed the second factor; every consumed code has
    exactly one token row issued from it and every token row a consumed code of its family; none revoked.
    A code is consumed and its token written in one transaction: a crash must never leave one without the
    other."""
    with unit_of_work(services.sessions) as db:
        users = {user.id: user for user in db.scalars(select(User).where(User.username.in_(usernames)))}
        assert len(users) == len(set(usernames))
        sessions = {row.id: row for row in db.scalars(select(SsoSession).where(SsoSession.user_id.in_(users)))}
        codes = db.scalars(select(AuthorizationCode).where(AuthorizationCode.user_id.in_(users))).all()
        tokens = db.scalars(select(Token).where(Token.user_id.in_(users))).all()
        for code in codes:
            assert code.session_id in sessions, f"code {code.id} has no session"
            session = sessions[code.session_id]
            assert session.user_id == code.user_id and "otp" in session.amr, (session.id, session.amr)
        consumed = [code.family_id for code in codes if code.consumed_at is not None]
        from_codes = [token.family_id for token in tokens if token.grant_type == "authorization_code"]
        assert sorted(from_codes) == sorted(consumed), "a consumed code without its token, or a token without code"
        assert {token.family_id for token in tokens} <= set(consumed), "a refreshed token of no known family"
        assert all(token.revoked_at is None for token in tokens)
        return Written(len(sessions), len(codes), len(consumed), len(tokens), {token.jti for token in tokens})


class IdTokenChecker:
    """Checks ID tokens against the server's published keys, as a relying party does."""

    def __init__(self, base: str, issuer: str) -> None:
        self.keys = KeySet.import_key_set(httpx.get(f"{base}/jwks", timeout=10).json())
        self.issuer = issuer

    def check(self, id_token: str, flow: Flow, person: Person) -> dict[str, Any]:
        claims: dict[str, Any] = dict(jwt.decode(id_token, self.keys, algorithms=["ES256", "RS256"]).claims)
        now = time.time()
        assert claims["iss"] == self.issuer, claims
        assert claims["aud"] in (flow.client.client_id, [flow.client.client_id]), claims
        assert claims["sub"] == person.sub and claims["nonce"] == flow.nonce, claims
        assert claims["exp"] > now and claims["iat"] <= now + 5, claims
        assert "mfa" in claims["amr"] and "otp" in claims["amr"], claims
        return claims


# --- an SMS gateway on loopback ------------------------------------------------------------------------------

class SmsInbox:
    """A JSON SMS gateway (``[sms] gateway = "http"``) on a loopback port that keeps every message."""

    def __init__(self) -> None:
        inbox = self
        self.messages: list[dict[str, str]] = []
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with inbox.lock:
                    inbox.messages.append(json.loads(body))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "queued"}')

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def last_code(self, to: str) -> str:
        with self.lock:
            texts = [message["text"] for message in self.messages if message["to"] == to]
        assert texts, f"no text message to {to}"
        match = re.search(r"\b(\d{6})\b", texts[-1])
        assert match, texts[-1]
        return match.group(1)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def sms_inbox() -> Iterator[SmsInbox]:
    inbox = SmsInbox()
    yield inbox
    inbox.close()


def race(*calls: Any, timeout: float = 60.0) -> list[Any]:
    """Run ``calls`` in threads released together by a barrier; returns their results (or exceptions) in
    order. The requests reach the servers within a millisecond or so of each other."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Any) -> None:
        barrier.wait(timeout=timeout)
        try:
            results[index] = call()
        except Exception as exc:  # the test looks at each outcome, errors included
            results[index] = exc

    threads = [threading.Thread(target=run, args=(index, call)) for index, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a racing request did not come back"
    return results

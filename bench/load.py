"""The load: wrk (Debian's, LuaJIT scripts in bench/lua) for single requests, and a small asyncio driver for the
multi-step browser-less sign-ins, which no generic load generator can follow (cookies, CSRF tokens taken from
the HTML, a TOTP code per user and time step, the code from the last redirect); its virtual users speak
HTTP/1.1 through ``bench.browser``."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import resource
import secrets
import shutil
import subprocess
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pyotp

from bench.browser import Answer, Browser
from bench.servers import PASSWORD, BenchUser, cpu_seconds

LUA = Path(__file__).resolve().parent / "lua"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Result:
    """One measurement: completed operations per second, their errors and who used how much CPU."""

    operations: int
    seconds: float
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    server_cpu: float
    """CPU seconds the server's processes used during the measurement."""
    load_cpu: float
    """CPU seconds the load generator used during the measurement."""
    error_kinds: dict[str, int | str] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is missing: apt-get install wrk (Debian's package)")
    return path


@dataclass(frozen=True)
class Shape:
    """How one figure is measured: simultaneous clients, measured and warm-up seconds, the server's processes."""

    concurrency: int
    seconds: float
    warmup: float
    server_pids: Callable[[], list[int]]


def run_wrk(base: str, script: str, args: list[str], shape: Shape, warmup_args: list[str] | None = None) -> Result:
    """wrk with one thread (the machine has two cores to share with the server) and ``concurrency``
    connections; a short warm-up run first (connections, caches, JIT) with ``warmup_args`` if given (refresh
    tokens are spent: the warm-up needs its own), then the measured run."""
    wrk = ensure_wrk()
    concurrency, seconds, warmup = shape.concurrency, shape.seconds, shape.warmup

    def command(duration: float, arguments: list[str]) -> list[str]:
        return [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "-s",
                str(LUA / script), base, "--", *arguments]

    if warmup > 0:
        subprocess.run(command(warmup, warmup_args or args), capture_output=True, check=True)
    pids = shape.server_pids()
    before = cpu_seconds(pids)
    process = subprocess.Popen(command(seconds, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    out = process.stdout.read().decode() if process.stdout else ""
    err = process.stderr.read().decode() if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    server_cpu = cpu_seconds(pids) - before
    line = next((line for line in out.splitlines() if line.startswith("BENCH ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {out}\n{err}")
    data = json.loads(line[6:])
    kinds: dict[str, int | str] = {kind: data[kind] for kind in ("connect", "read", "write", "status", "timeout")
                                   if data[kind]}
    if err.strip():
        kinds["wrk says"] = err.strip()[:300]
    return Result(operations=data["requests"] - data["status"], seconds=data["duration_us"] / 1e6,
                  errors=sum(value for value in kinds.values() if isinstance(value, int)),
                  p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000,
                  server_cpu=server_cpu, load_cpu=usage.ru_utime + usage.ru_stime, error_kinds=kinds)


# --- browser-less sign-ins -----------------------------------------------------------------------------------

class FlowError(Exception):
    pass


def _browser(base: str) -> Browser:
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    return Browser(parts.hostname, parts.port)


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _csrf(html: str) -> str:
    match = CSRF.search(html)
    if not match:
        raise FlowError("page without CSRF token")
    return match.group(1)


def _expect(what: str, answer: Answer, *statuses: int) -> Answer:
    if answer.status not in statuses:
        raise FlowError(f"{what} -> {answer.status}")
    return answer


async def sign_in(http: Browser, client: tuple[str, str, str], user: BenchUser, *, totp_step: int | None,
                  scope: str = "openid profile email", one_address: bool = False) -> tuple[str, str]:
    """One browser sign-in without a browser: authorize, the sign-in page and its password, the authenticator
    app's code when asked, then the redirects inside the IdP until the client's redirect URI; returns the code
    and the PKCE verifier. ``http`` keeps the cookies like a browser. Each user comes from an address of its
    own through the (trusted) reverse proxy this driver plays, unless ``one_address`` (everyone behind one NAT)."""
    client_id, _, redirect_uri = client
    http.forwarded_for = "10.255.255.254" if one_address else user.address
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(8)
    query = urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                       "scope": scope, "state": state, "nonce": secrets.token_urlsafe(8),
                       "code_challenge": challenge, "code_challenge_method": "S256"})
    response = _expect("authorize", await http.get(f"/authorize?{query}"), 302, 303)
    for _ in range(10):
        location = response.headers["location"]
        if not location.startswith("/"):
            params = {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}
            if params.get("state") != state or "code" not in params:
                raise FlowError(f"redirect without code: {params.get('error', '?')}")
            return params["code"], verifier
        page = _expect(f"GET {urlsplit(location).path}", await http.get(location), 200, 302, 303)
        if page.status != 200:
            response = page
            continue
        path = urlsplit(location).path
        if path.endswith("/factor"):
            if user.totp_secret is None or totp_step is None:
                raise FlowError("a second factor was asked")
            code = pyotp.TOTP(user.totp_secret).at(totp_step * 30)
            response = _expect("second factor", await http.post(location, {"method": "totp", "code": code,
                                                                            "csrf_token": _csrf(page.text)}), 303)
        elif path.startswith("/login/"):
            response = _expect("password", await http.post(location, {"username": user.username,
                                                                       "password": PASSWORD,
                                                                       "csrf_token": _csrf(page.text)}), 303)
        else:
            raise FlowError(f"unexpected page {path}")
    raise FlowError("too many redirects")


async def exchange(http: Browser, client: tuple[str, str, str], code: str, verifier: str) -> dict[str, str]:
    client_id, secret, redirect_uri = client
    answer = _expect("token", await http.post("/token", {"grant_type": "authorization_code", "code": code,
                                                         "redirect_uri": redirect_uri, "code_verifier": verifier},
                                              headers={"Authorization": basic(client_id, secret)}), 200)
    body: dict[str, str] = json.loads(answer.body)
    if "access_token" not in body or "id_token" not in body:
        raise FlowError("token response without access or ID token")
    return body


class UserPool:
    """Hands out users; with TOTP, only a user whose next unspent time step is the current or the next one
    (the server accepts one step either side and each step once: a replay is refused)."""

    def __init__(self, users: list[BenchUser]) -> None:
        self.users = deque(users)

    def take(self, with_totp: bool) -> tuple[BenchUser, int | None] | None:
        if not with_totp:
            self.users.rotate(-1)
            return self.users[0], None
        now_step = int(time.time()) // 30
        for _ in range(len(self.users)):
            user = self.users.popleft()
            self.users.append(user)
            step = max(user.last_step + 1, now_step)
            if step <= now_step + 1:
                user.last_step = step
                return user, step
        return None


async def _signin_load(base: str, client: tuple[str, str, str], pool: UserPool, *, with_totp: bool,
                       with_exchange: bool, concurrency: int, seconds: float, warmup: float, one_address: bool
                       ) -> tuple[int, float, Counter[str], list[float]]:
    start = time.monotonic()
    begin, end = start + warmup, start + warmup + seconds
    done, errors, latencies = 0, Counter[str](), []

    async def virtual_user() -> None:
        nonlocal done
        http = _browser(base)
        try:
            while time.monotonic() < end:
                taken = pool.take(with_totp)
                if taken is None:
                    errors["no TOTP user free in this time step (seed more)"] += 1
                    await asyncio.sleep(0.2)
                    continue
                user, step = taken
                http.cookies.clear()  # a new browser for every sign-in: no SSO session to reuse
                t0 = time.monotonic()
                try:
                    code, verifier = await sign_in(http, client, user, totp_step=step, one_address=one_address)
                    if with_exchange:
                        await exchange(http, client, code, verifier)
                except (FlowError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    if begin <= time.monotonic() <= end:
                        errors[str(exc)[:120] or type(exc).__name__] += 1
                    continue
                finished = time.monotonic()
                if begin <= finished <= end:
                    done += 1
                    latencies.append(finished - t0)
        finally:
            await http.close()

    await asyncio.gather(*(virtual_user() for _ in range(concurrency)))
    return done, seconds, errors, latencies


def run_signins(base: str, client: tuple[str, str, str], pool: UserPool, shape: Shape, *, with_totp: bool,
                with_exchange: bool, one_address: bool = False) -> Result:
    """Complete sign-ins of ``concurrency`` simultaneous users, each a fresh browser; counted are the sign-ins
    that ended within the measured window (after the warm-up)."""
    concurrency, seconds, warmup = shape.concurrency, shape.seconds, shape.warmup
    pids = shape.server_pids()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    before = cpu_seconds(pids)
    done, measured, errors, latencies = asyncio.run(_signin_load(
        base, client, pool, with_totp=with_totp, with_exchange=with_exchange, concurrency=concurrency,
        seconds=seconds, warmup=warmup, one_address=one_address))
    server_cpu = cpu_seconds(pids) - before
    after = resource.getrusage(resource.RUSAGE_SELF)
    # The driver's CPU over the whole run, warm-up included: scaled to the measured window.
    share = measured / (measured + warmup)
    load_cpu = (after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime) * share
    latencies.sort()

    def percentile(p: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000 if latencies else None

    return Result(operations=done, seconds=measured, errors=sum(errors.values()), p50_ms=percentile(0.5),
                  p99_ms=percentile(0.99), server_cpu=server_cpu * share, load_cpu=load_cpu,
                  error_kinds={**errors})


async def _mint(base: str, client: tuple[str, str, str], user: BenchUser, count: int) -> list[dict[str, str]]:
    """Sign in once, then run ``count`` authorizations on that sign-in session (no password asked again) and
    exchange each code: real refresh and access tokens, as many as needed, cheaply."""
    http = _browser(base)
    try:
        code, verifier = await sign_in(http, client, user, totp_step=None)
        tokens = [await exchange(http, client, code, verifier)]
        semaphore = asyncio.Semaphore(8)

        async def one() -> dict[str, str]:
            async with semaphore:
                # Its own connection (one request at a time each), with the cookies of the signed-in one.
                other = _browser(base)
                other.cookies = dict(http.cookies)
                try:
                    more_code, more_verifier = await sign_in(other, client, user, totp_step=None)
                    return await exchange(other, client, more_code, more_verifier)
                finally:
                    await other.close()

        tokens += await asyncio.gather(*(one() for _ in range(count - 1)))
        return tokens
    finally:
        await http.close()


def mint_tokens(base: str, client: tuple[str, str, str], user: BenchUser, count: int) -> list[dict[str, str]]:
    return asyncio.run(_mint(base, client, user, count))


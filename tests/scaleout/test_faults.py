"""Faults under load (issue 7, Tests): a worker killed, PostgreSQL restarted, and nothing lost.

Both tests run ``idp serve --workers 2`` at the shipped argon2id cost with people signing in (password,
authenticator app, code exchange) while the fault happens, and then check three things: what the people saw,
that the server recovered by itself, and what the database holds (nothing lost, nothing half-written).

The PostgreSQL test runs a private cluster that it starts itself (``initdb`` and ``pg_ctl`` from the Debian
packages, in a temporary folder, on a free loopback port, as the ``postgres`` user when the test runs as
root): the shared server on 5432 is never restarted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from joserfc import jwt

from tests.helpers import Flow
from tests.scaleout.conftest import (
    ACCESS_STATUS,
    Attempt,
    IdTokenChecker,
    SignInFailed,
    add_people,
    add_rp,
    assert_nothing_half_written,
    close_all,
    deploy,
    free_port,
    needs_postgresql,
    server_errors,
    sign_in_all,
    undeploy,
    wait_for,
)

pytestmark = [needs_postgresql, pytest.mark.e2e]

CONCURRENCY = 40


def _failures(attempts: list[Attempt]) -> list[Attempt]:
    return [attempt for attempt in attempts if attempt.failure is not None]


def _check_tokens(checker: IdTokenChecker, attempts: list[Attempt]) -> set[str]:
    """The ID tokens of the successful sign-ins are valid; returns the access tokens' ``jti``s."""
    issued: set[str] = set()
    for attempt in attempts:
        if attempt.tokens is not None:
            checker.check(attempt.tokens["id_token"], attempt.flow, attempt.person)
            issued.add(str(jwt.decode(attempt.tokens["access_token"], checker.keys).claims["jti"]))
    return issued


# --- a worker killed -------------------------------------------------------------------------------------------

def _lost_with_the_worker(attempt: Attempt) -> bool:
    """A sign-in that failed because a worker died under one of its requests.

    Either the connection broke (a POST, or a GET whose second try broke too), or the dead worker had
    finished the sign-in (committed the code) before it could answer: the browser sends that GET again,
    and a finished sign-in gives no second code (``test_completed_transaction_cannot_be_resumed_twice``),
    so the person sees "This sign-in has expired" and starts again from the application."""
    failure = attempt.failure
    if isinstance(failure, httpx.TransportError):
        return True
    return (isinstance(failure, SignInFailed) and failure.step == "finish"
            and failure.response.status_code == 400 and "This sign-in has expired" in failure.response.text
            and any("/authorize/resume/" in url for url in attempt.browser.resent))


def test_a_worker_killed_mid_load_costs_only_its_requests_in_flight(tmp_path: Path) -> None:
    """SIGKILL one of two workers while 80 people sign in, 40 at a time: the requests it was serving fail with a
    connection error (nothing else fails, no 5xx), the other worker goes on, uvicorn starts a new worker, the
    people who failed succeed when they try again, everyone after succeeds, and the database holds no code
    without its session and no consumed code without its token."""
    deployment = deploy(tmp_path)
    attempts: list[Attempt] = []
    try:
        server = deployment.start(port=deployment.issuer_port, workers=2)
        workers = server.workers()
        assert len(workers) == 2
        victim = min(workers)
        rp = add_rp(deployment.services)
        first_wave = add_people(deployment.services, "wave", 80)
        later = add_people(deployment.services, "later", 20)
        killed_at: list[float] = []
        done = [0]
        lock = threading.Lock()

        def kill_after_20(attempt: Attempt) -> None:
            with lock:
                done[0] += attempt.failure is None
                if done[0] >= 20 and not killed_at:
                    os.kill(victim, signal.SIGKILL)
                    killed_at.append(time.monotonic())

        attempts = sign_in_all([server.base], rp, first_wave, concurrency=CONCURRENCY, after_each=kill_after_20)
        assert killed_at, "the worker was never killed"
        failed = _failures(attempts)
        print(f"\nworker killed: {len(failed)} of {len(attempts)} sign-ins lost a connection, "
              f"{sum(len(a.browser.resent) for a in attempts)} GETs sent again")
        # Only the requests in flight at the dead worker fail, as a lost connection or as its consequence.
        assert len(failed) <= CONCURRENCY, len(failed)
        for attempt in failed:
            assert _lost_with_the_worker(attempt), repr(attempt.failure)
            assert attempt.ended >= killed_at[0]
        assert not any(attempt.browser.unavailable for attempt in attempts)

        # uvicorn's supervisor notices the dead worker and starts another one.
        wait_for(lambda: victim not in server.workers() and len(server.workers()) == 2, 30,
                 "uvicorn did not replace the killed worker")
        assert server.ready()

        # Who failed tries again (a fresh sign-in; the app's next code, as the last one may have been used).
        retried = sign_in_all([server.base], rp, [attempt.person for attempt in failed], concurrency=CONCURRENCY,
                              steps_ahead=1)
        afterwards = sign_in_all([server.base], rp, later, concurrency=CONCURRENCY)
        attempts += retried + afterwards
        assert not _failures(retried + afterwards), [repr(a.failure) for a in _failures(retried + afterwards)]

        issued = _check_tokens(IdTokenChecker(server.base, deployment.issuer), attempts)
        written = assert_nothing_half_written(deployment.services,
                                              [person.username for person in first_wave + later])
        assert len(issued) == len(first_wave) + len(later)
        # Every token response a person got is in the database; a response lost with the worker may have
        # been committed just before (then the person's retry made a second one).
        assert issued <= written.token_jtis
        assert written.tokens - len(issued) <= len(failed)
        log = server.log.read_text()
        assert f"Child process [{victim}] died" in log
        assert "Traceback" not in log and "unhandled error" not in log and not server_errors(log)
    finally:
        close_all(attempts)
        undeploy(deployment)


# --- PostgreSQL restarted ----------------------------------------------------------------------------------

class PrivateCluster:
    """A PostgreSQL cluster of the test's own: initdb in a temporary folder, pg_ctl to stop and start it."""

    def __init__(self) -> None:
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                          key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0)
        if not versions:
            pytest.skip("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (Debian's postgresql)")
        self.bin = versions[-1].parent
        self.root = Path(tempfile.mkdtemp(prefix="idp-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:
            # initdb refuses to run as root: the cluster belongs to the postgres user the package created.
            if shutil.which("runuser") is None:
                pytest.skip("running as root without runuser: cannot run initdb as the postgres user")
            shutil.chown(self.root, "postgres", "postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run([*self.as_postgres, str(self.bin / program), *args], capture_output=True,
                                text=True, timeout=120, check=False)
        assert result.returncode == 0, f"{program} failed: {result.stdout}\n{result.stderr}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        # fsync off: the restart below is PostgreSQL's own crash, not the machine's; the operating system keeps
        # what PostgreSQL wrote, and crash recovery replays the log as it would after any crash.
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
                   "-c fsync=off -c max_connections=100")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "-o", options, "start")

    def crash(self) -> None:
        """``pg_ctl stop -m immediate``: every backend ends at once, open transactions are lost, recovery
        runs at the next start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self.as_postgres, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    cluster = PrivateCluster()
    try:
        cluster.start()
        with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE idp")
        yield cluster
    finally:
        cluster.destroy()


def test_postgresql_restarted_mid_load_answers_503_then_recovers_with_nothing_lost(
        tmp_path: Path, cluster: PrivateCluster) -> None:
    """PostgreSQL crashes and comes back two seconds later while 40 people sign in at a time. During the outage
    the server answers 503 with Retry-After (JSON for the API, the error page for pages) and never a 500 or a
    dropped connection; people who reload get through once the database is back, without a restart of the
    server; afterwards everyone can sign in; sessions and tokens from before the crash still work, and every
    token a person was given is in the database, with no code or token half-written."""
    deployment = deploy(tmp_path, database_url=f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/idp")
    attempts: list[Attempt] = []
    try:
        server = deployment.start(port=deployment.issuer_port, workers=2)
        rp = add_rp(deployment.services)
        before = add_people(deployment.services, "before", 20)
        during = add_people(deployment.services, "during", 80)
        after = add_people(deployment.services, "after", 20)
        deployment.services.engine.dispose()  # the test's own connections must not outlive the crash either

        attempts = sign_in_all([server.base], rp, before, concurrency=CONCURRENCY)
        assert not _failures(attempts), [repr(a.failure) for a in _failures(attempts)]

        outage: dict[str, httpx.Response] = {}
        restarted = threading.Event()
        done = [0]
        lock = threading.Lock()

        def restart_database() -> None:
            cluster.crash()
            try:
                with httpx.Client(base_url=server.base, timeout=30, headers={"accept-language": "en"}) as probe:
                    outage["token"] = probe.post("/token", auth=(rp.client_id, rp.client_secret or ""),
                                                 data={"grant_type": "authorization_code", "code": "x"})
                    outage["page"] = probe.get("/login/no-such-sign-in")
                    outage["ready"] = probe.get("/readyz")
                    outage["alive"] = probe.get("/healthz")
                time.sleep(2)
            finally:
                cluster.start()
                restarted.set()

        def restart_after_15(attempt: Attempt) -> None:
            with lock:
                done[0] += 1
                if done[0] == 15:
                    threading.Thread(target=restart_database, daemon=True).start()

        under_fault = sign_in_all([server.base], rp, during, concurrency=CONCURRENCY, reload_when_unavailable=True,
                                  after_each=restart_after_15)
        attempts += under_fault
        assert restarted.wait(timeout=60), "the database was not restarted"

        # During the outage: 503 with Retry-After, JSON for the token endpoint, the error page for pages.
        assert outage["token"].status_code == 503 and outage["token"].headers["retry-after"] == "5"
        assert outage["token"].json()["error"] == "temporarily_unavailable"
        assert outage["page"].status_code == 503 and outage["page"].headers["retry-after"] == "5"
        assert outage["page"].headers["content-type"].startswith("text/html")
        assert outage["ready"].status_code == 503 and outage["alive"].status_code == 200
        # The people signing in saw the same 503s, reloaded, and got through.
        seen = [response for attempt in under_fault for response in attempt.browser.unavailable]
        met = sum(bool(attempt.browser.unavailable) for attempt in under_fault)
        print(f"\ndatabase restarted: {len(seen)} answers 503 to {met} of {len(under_fault)} people, who reloaded")
        assert seen, "no sign-in met the outage"
        assert all(response.headers.get("retry-after") == "5" for response in seen)
        failed = _failures(under_fault)
        assert not failed, [repr(a.failure) for a in failed]
        assert not any(isinstance(a.failure, SignInFailed) for a in attempts)

        # The server recovered by itself: no restart, every later sign-in succeeds without a 503.
        wait_for(server.ready, 30, "the server did not become ready again")
        later = sign_in_all([server.base], rp, after, concurrency=CONCURRENCY)
        attempts += later
        assert not _failures(later), [repr(a.failure) for a in _failures(later)]
        assert not any(attempt.browser.unavailable for attempt in later)

        # Nothing from before the crash was lost: the sessions sign in again without a password, the access
        # tokens work, and the refresh tokens rotate.
        for attempt in attempts[:len(before)]:
            assert attempt.tokens is not None
            silent = attempt.browser.get(server.base, Flow(rp, extra={"prompt": "none"}).url())
            assert silent.status_code == 302 and "code=" in silent.headers["location"], silent.text
            info = attempt.browser.get(server.base, "/userinfo",
                                       headers={"authorization": f"Bearer {attempt.tokens['access_token']}"})
            assert info.status_code == 200 and info.json()["sub"] == attempt.person.sub
            assert attempt.browser.refresh(server.base, rp, attempt.tokens["refresh_token"]).status_code == 200

        issued = _check_tokens(IdTokenChecker(server.base, deployment.issuer), attempts)
        people = before + during + after
        assert len(issued) == len(people)
        written = assert_nothing_half_written(deployment.services, [person.username for person in people])
        # Every token response a person got is in the database (the refreshes above added one row each).
        assert issued <= written.token_jtis
        assert written.tokens == len(people) + len(before)
        assert server.process.poll() is None and len(server.workers()) == 2
        log = server.log.read_text()
        # Requests during the outage were answered (one warning line each), never an unhandled error.
        assert "database unavailable" in log and "unhandled error" not in log and not server_errors(log)
        assert ACCESS_STATUS.findall(log).count("503") >= len(seen)
    finally:
        close_all(attempts)
        undeploy(deployment)

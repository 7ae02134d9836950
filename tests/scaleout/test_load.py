"""The 7:30 peak: 200 people sign in at once against ``idp serve --workers 2`` on PostgreSQL (issue 7, Tests).

Each person does what a browser and a relying party do, without a browser: the authorization request, the
login form, the authenticator-app form, the redirect with the code, and the code exchange; the relying party
checks the ID token. Passwords are checked at OWASP's argon2id cost (m=19 MiB, t=2, p=1, the shipped default),
so the servers do the real work of a sign-in. Loopback only, bounded in time. Afterwards every person must
hold a working session and working tokens, and the database must hold exactly one session, one consumed code
and one token per person: no error, nothing lost, nothing half-written.

Throughput is not asserted beyond the time bound (the benchmarks under ``bench/`` measure it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from joserfc import jwt

from tests.helpers import Flow, RegisteredClient
from tests.scaleout.conftest import (
    ACCESS_STATUS,
    Attempt,
    Deployment,
    IdTokenChecker,
    Person,
    add_people,
    add_rp,
    assert_nothing_half_written,
    close_all,
    deploy,
    needs_postgresql,
    server_errors,
    sign_in_all,
    undeploy,
)

pytestmark = [needs_postgresql, pytest.mark.e2e]

USERS = 200
BUDGET_SECONDS = 60.0


@pytest.fixture(scope="module")
def peak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, str, RegisteredClient,
                                                                     list[Person]]]:
    """Two workers on a fresh database with 200 accounts (password and authenticator app) and one client."""
    deployment = deploy(tmp_path_factory.mktemp("peak"))
    settings = deployment.services.settings.passwords
    assert (settings.argon2_memory_cost, settings.argon2_time_cost) == (19456, 2), "not the shipped argon2 cost"
    try:
        server = deployment.start(port=deployment.issuer_port, workers=2)
        assert len(server.workers()) == 2
        rp = add_rp(deployment.services)
        yield deployment, server.base, rp, add_people(deployment.services, "peak", USERS)
    finally:
        undeploy(deployment)


def test_200_people_sign_in_at_once_with_two_workers(
        peak: tuple[Deployment, str, RegisteredClient, list[Person]]) -> None:
    """200 concurrent sign-ins with password and authenticator app: all succeed within the time bound, with
    valid ID tokens; then each person's access token works at /userinfo, each browser's session signs in
    again without a password, and the database holds one session, one consumed code and one token each."""
    deployment, base, rp, people = peak
    started = time.monotonic()
    attempts = sign_in_all([base], rp, people, concurrency=USERS, timeout=BUDGET_SECONDS + 30)
    elapsed = time.monotonic() - started
    print(f"\n{USERS} sign-ins in {elapsed:.1f}s ({USERS / elapsed:.1f}/s)")
    try:
        failures = [(a.person.username, repr(a.failure)) for a in attempts if a.failure is not None]
        assert not failures, f"{len(failures)} of {USERS} sign-ins failed, e.g. {failures[:3]}"
        assert elapsed <= BUDGET_SECONDS, f"{USERS} sign-ins took {elapsed:.1f}s"
        assert not any(a.browser.unavailable for a in attempts)

        checker = IdTokenChecker(base, deployment.issuer)
        for attempt in attempts:
            assert attempt.tokens is not None
            checker.check(attempt.tokens["id_token"], attempt.flow, attempt.person)

        written = assert_nothing_half_written(deployment.services, [person.username for person in people])
        assert (written.sessions, written.codes, written.consumed_codes, written.tokens) == (USERS,) * 4
        issued = {str(jwt.decode(a.tokens["access_token"], checker.keys).claims["jti"])
                  for a in attempts if a.tokens is not None}
        assert issued == written.token_jtis

        def still_signed_in(attempt: Attempt) -> None:
            assert attempt.tokens is not None
            info = attempt.browser.get(base, "/userinfo",
                                       headers={"authorization": f"Bearer {attempt.tokens['access_token']}"})
            assert info.status_code == 200 and info.json()["sub"] == attempt.person.sub, info.text
            # The browser's session is alive: a new sign-in at the same client needs neither password nor code.
            answer = attempt.browser.get(base, Flow(rp, extra={"prompt": "none"}).url())
            assert answer.status_code == 302 and "code=" in answer.headers["location"], answer.text

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(still_signed_in, attempts))  # list(): an assertion in any of them is raised here
        log = deployment.servers[0].log.read_text()
        assert "Traceback" not in log and not server_errors(log) and "503" not in ACCESS_STATUS.findall(log)
    finally:
        close_all(attempts)

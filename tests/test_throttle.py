"""Throttling of failed password attempts: growing delays per account and per address, kept in the database.

Issue 2 section 4 and attack case 34: after ``free_attempts_per_account`` failures each further attempt is
refused without checking the password until a delay has passed; the delay doubles and is capped at
``max_delay`` so that nobody is locked out for long (BSI ORP.4.A13; NIST SP 800-63B-4 3.2.2; OWASP ASVS
6.3.1); a success resets the account counter; the counters live in the database so that every server
process sees them.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from idp import audit
from idp.accounts.authenticate import Outcome, PasswordCheck, check_password, verify_ahead
from idp.accounts.passwords import Passwords
from idp.accounts.users import find_user
from idp.app import create_app
from idp.config import PasswordSettings
from idp.db import unit_of_work
from idp.models import AttemptCounter, AuditEvent
from idp.services import Services, build_services
from tests.conftest import ISSUER, FakeClock, make_settings
from tests.helpers import PASSWORD, Flow, add_client, add_user, csrf_of, follow_to_login, submit_login

SESSION_COOKIE = "__Host-idp_session"
WRONG = "wrong password"


class CountingPasswords(Passwords):
    """Passwords that count how often a password was really checked against argon2."""

    def __init__(self, settings: PasswordSettings) -> None:
        super().__init__(settings)
        self.checks = 0

    def verify(self, stored_hash: str | None, password: str) -> bool:
        self.checks += 1
        return super().verify(stored_hash, password)


@pytest.fixture
def counting(services: Services) -> CountingPasswords:
    return CountingPasswords(services.settings.passwords)


def _check(services: Services, username: str, password: str, clock: FakeClock, *, ip: str = "192.0.2.10",
           passwords: Passwords | None = None) -> PasswordCheck:
    with unit_of_work(services.sessions) as db:
        return check_password(db, passwords or services.passwords, services.settings.throttle, username, password,
                              now=clock(), origin=audit.Origin(ip=ip))


def _reasons(services: Services) -> Counter[str]:
    with unit_of_work(services.sessions) as db:
        rows = db.scalars(select(AuditEvent).where(AuditEvent.event == "login.password"))
        return Counter(str(row.details.get("reason", row.outcome)) for row in rows)


def _counters(services: Services, kind: str) -> list[AttemptCounter]:
    with unit_of_work(services.sessions) as db:
        return list(db.scalars(select(AttemptCounter).where(AttemptCounter.key.like(f"password:{kind}:%"))))


def _fail(services: Services, clock: FakeClock, times: int, username: str = "erika", ip: str = "192.0.2.10") -> None:
    for _ in range(times):
        assert _check(services, username, WRONG, clock, ip=ip).outcome is Outcome.INVALID


# --- check_password with the fake clock ---------------------------------------------------------------


def test_defaults_follow_the_documented_policy(services: Services) -> None:
    """Five free attempts per account, 100 per address, 2 s doubling to at most 5 min, forgotten after 1 h."""
    throttle = services.settings.throttle
    assert throttle.free_attempts_per_account == 5 and throttle.free_attempts_per_ip == 100
    assert throttle.first_delay == timedelta(seconds=2) and throttle.max_delay == timedelta(minutes=5)
    assert throttle.forget_after == timedelta(hours=1)


def test_attempt_after_free_failures_is_refused_without_checking(services: Services, clock: FakeClock,
                                                                 counting: CountingPasswords) -> None:
    """After the free failures even the right password is refused, and argon2 is not even run."""
    add_user(services)
    free = services.settings.throttle.free_attempts_per_account
    for _ in range(free):
        assert _check(services, "erika", WRONG, clock, passwords=counting).outcome is Outcome.INVALID
    assert counting.checks == free
    result = _check(services, "erika", PASSWORD, clock, passwords=counting)
    assert result.outcome is Outcome.THROTTLED and result.user is None
    assert result.retry_after == services.settings.throttle.first_delay
    assert counting.checks == free, "a throttled attempt must not check the password"
    assert _reasons(services) == Counter({"wrong_password": free, "throttled": 1})


def _ahead(services: Services, username: str, password: str, clock: FakeClock,
           passwords: Passwords | None = None) -> Any:
    with unit_of_work(services.sessions) as db:
        return verify_ahead(db, passwords or services.passwords, services.settings.throttle, username, password,
                            now=clock(), ip="192.0.2.10")


def test_a_verdict_reached_ahead_is_used_once_the_counters_allow_the_attempt(
        services: Services, clock: FakeClock, counting: CountingPasswords) -> None:
    """The login page checks the password before its transaction locks the counters (verify_ahead): the sign-in
    then runs argon2 no second time, and a wrong password is counted as a failure as before."""
    add_user(services)
    right = _ahead(services, "erika", PASSWORD, clock, counting)
    wrong = _ahead(services, "erika", WRONG, clock, counting)
    assert (right.valid, wrong.valid) == (True, False) and counting.checks == 2
    with unit_of_work(services.sessions) as db:
        refused = check_password(db, counting, services.settings.throttle, "erika", WRONG, now=clock(),
                                 origin=audit.Origin(ip="192.0.2.10"), verdict=wrong)
        accepted = check_password(db, counting, services.settings.throttle, "erika", PASSWORD, now=clock(),
                                  origin=audit.Origin(ip="192.0.2.10"), verdict=right)
    assert (refused.outcome, accepted.outcome) == (Outcome.INVALID, Outcome.OK)
    assert counting.checks == 2, "the verdicts were used, argon2 did not run again"
    assert _reasons(services) == Counter({"wrong_password": 1, "success": 1})


def test_a_verdict_is_not_used_for_a_password_changed_since(services: Services, clock: FakeClock) -> None:
    """A verdict belongs to the hash it was checked against: after a password change the old password's
    verdict does not sign in (argon2 runs again against the new hash)."""
    add_user(services)
    verdict = _ahead(services, "erika", PASSWORD, clock)
    assert verdict.valid
    with unit_of_work(services.sessions) as db:
        user = find_user(db, "erika")
        assert user is not None
        user.password_hash = services.passwords.hash("a completely different passphrase")
    with unit_of_work(services.sessions) as db:
        result = check_password(db, services.passwords, services.settings.throttle, "erika", PASSWORD, now=clock(),
                                origin=audit.Origin(ip="192.0.2.10"), verdict=verdict)
    assert result.outcome is Outcome.INVALID


def test_no_verdict_ahead_while_a_delay_runs(services: Services, clock: FakeClock,
                                             counting: CountingPasswords) -> None:
    """A blocked name costs no argon2 run ahead either; the sign-in is then refused as throttled."""
    add_user(services)
    _fail(services, clock, services.settings.throttle.free_attempts_per_account)
    assert _ahead(services, "erika", PASSWORD, clock, counting) is None
    assert counting.checks == 0
    clock.advance(seconds=2)
    assert _ahead(services, "erika", PASSWORD, clock, counting) is not None


def test_throttled_attempts_do_not_extend_the_delay(services: Services, clock: FakeClock) -> None:
    """Attempts during a delay are refused but not counted: the delay runs down, it does not grow."""
    add_user(services)
    _fail(services, clock, services.settings.throttle.free_attempts_per_account)
    for _ in range(10):
        assert _check(services, "erika", WRONG, clock).retry_after == timedelta(seconds=2)
    clock.advance(seconds=1)
    assert _check(services, "erika", WRONG, clock).retry_after == timedelta(seconds=1)
    clock.advance(seconds=1)
    assert _check(services, "erika", PASSWORD, clock).outcome is Outcome.OK


def test_delays_grow_and_are_capped(services: Services, clock: FakeClock) -> None:
    """Each failure after the free ones doubles the delay, up to ``max_delay`` (5 min) and no further."""
    add_user(services)
    _fail(services, clock, services.settings.throttle.free_attempts_per_account)
    delays = []
    for _ in range(11):
        blocked = _check(services, "erika", WRONG, clock)
        assert blocked.outcome is Outcome.THROTTLED and blocked.retry_after is not None
        delays.append(int(blocked.retry_after.total_seconds()))
        clock.advance(seconds=blocked.retry_after.total_seconds())
        assert _check(services, "erika", WRONG, clock).outcome is Outcome.INVALID
    assert delays == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    # However many failures, waiting max_delay is always enough for the real user.
    clock.advance(minutes=5)
    assert _check(services, "erika", PASSWORD, clock).outcome is Outcome.OK


def test_success_after_the_delay_resets_the_counter(services: Services, clock: FakeClock) -> None:
    """After the delay the right password works and forgets the failures (NIST SP 800-63B-4 3.2.2)."""
    add_user(services)
    free = services.settings.throttle.free_attempts_per_account
    _fail(services, clock, free)
    clock.advance(seconds=2)
    result = _check(services, "erika", PASSWORD, clock)
    assert result.outcome is Outcome.OK and result.user is not None and result.user.username == "erika"
    [account] = _counters(services, "account")
    assert account.failures == 0 and account.blocked_until is None
    # A fresh allowance: free - 1 failures pass, the next one starts a delay again.
    _fail(services, clock, free - 1)
    assert _check(services, "erika", PASSWORD, clock).outcome is Outcome.OK
    _fail(services, clock, free)
    assert _check(services, "erika", PASSWORD, clock).outcome is Outcome.THROTTLED


def test_failures_are_forgotten_after_forget_after(services: Services, clock: FakeClock) -> None:
    """Failures followed by ``forget_after`` without any failure no longer count."""
    add_user(services)
    throttle = services.settings.throttle
    _fail(services, clock, throttle.free_attempts_per_account - 1)
    clock.advance(seconds=throttle.forget_after.total_seconds() + 1)
    _fail(services, clock, throttle.free_attempts_per_account - 1)
    [account] = _counters(services, "account")
    assert account.failures == throttle.free_attempts_per_account - 1
    assert _check(services, "erika", PASSWORD, clock).outcome is Outcome.OK


def test_failures_spread_over_time_still_add_up(services: Services, clock: FakeClock) -> None:
    """Slow guessing (one failure every 50 min) is not forgotten: ``forget_after`` counts from the last failure."""
    add_user(services)
    for _ in range(services.settings.throttle.free_attempts_per_account):
        _fail(services, clock, 1)
        clock.advance(minutes=50)
    clock.advance(minutes=-50)
    assert _check(services, "erika", PASSWORD, clock).outcome is Outcome.THROTTLED


def test_rotating_addresses_do_not_escape_the_account_counter(services: Services, clock: FakeClock,
                                                             counting: CountingPasswords) -> None:
    """100 guesses at one account from 100 addresses: only the free ones and one per elapsed delay are checked."""
    add_user(services)
    throttle = services.settings.throttle
    outcomes: Counter[Outcome] = Counter()
    for number in range(100):
        outcomes[_check(services, "erika", WRONG, clock, ip=f"198.51.100.{number}", passwords=counting).outcome] += 1
        clock.advance(seconds=1)
    # 5 free, then one each time a delay (2, 4, 8, 16, 32 s ...) has run out within the 100 s.
    assert counting.checks == outcomes[Outcome.INVALID] == throttle.free_attempts_per_account + 5
    assert outcomes[Outcome.THROTTLED] == 100 - counting.checks
    clock.advance(minutes=5)
    assert _check(services, "erika", PASSWORD, clock, ip="192.0.2.99").outcome is Outcome.OK


def test_unknown_and_case_varied_names_are_throttled_alike(services: Services, clock: FakeClock) -> None:
    """The account counter keys on the normalised typed name: unknown names and case variants share it."""
    add_user(services)
    for name in ("Erika", "ERIKA", " erika", "erika", "ｅｒｉｋａ"):
        assert _check(services, name, WRONG, clock).outcome is Outcome.INVALID
    assert _check(services, "erika", PASSWORD, clock).outcome is Outcome.THROTTLED
    _fail(services, clock, 5, username="nobody")
    assert _check(services, "nobody", PASSWORD, clock).outcome is Outcome.THROTTLED
    assert len(_counters(services, "account")) == 2


def test_address_counter_blocks_many_accounts_from_one_address(backend: tuple[str, Engine], tmp_path: Path,
                                                               services: Services, clock: FakeClock) -> None:
    """One address trying many accounts is slowed down by its own counter; other addresses are not."""
    few = build_services(make_settings(tmp_path / "few", backend[0], IDP_THROTTLE_FREE_ATTEMPTS_PER_IP="3"),
                         engine=backend[1])
    add_user(services)
    for name in ("anna", "bernd", "carla"):
        assert _check(few, name, WRONG, clock, ip="203.0.113.7").outcome is Outcome.INVALID
    blocked = _check(few, "erika", PASSWORD, clock, ip="203.0.113.7")
    assert blocked.outcome is Outcome.THROTTLED and blocked.retry_after == timedelta(seconds=2)
    assert _check(few, "erika", PASSWORD, clock, ip="198.51.100.4").outcome is Outcome.OK
    [address] = [row for row in _counters(services, "ip") if row.key.endswith("203.0.113.7")]
    assert address.failures == 3


def test_success_gives_back_only_its_own_reservation_at_the_address(services: Services, clock: FakeClock) -> None:
    """A success does not wipe the address counter: failures on other accounts from there still count."""
    add_user(services)
    _fail(services, clock, 3, username="anna", ip="203.0.113.7")
    assert _check(services, "erika", PASSWORD, clock, ip="203.0.113.7").outcome is Outcome.OK
    [address] = [row for row in _counters(services, "ip") if row.key.endswith("203.0.113.7")]
    assert address.failures == 3


# --- Through HTTP ---------------------------------------------------------------------------------------


@pytest.fixture
def login_url(client: TestClient, services: Services) -> str:
    add_user(services)
    return follow_to_login(client, Flow(add_client(services, trusted=True)))


def test_throttled_login_page_says_to_wait(client: TestClient, services: Services, clock: FakeClock,
                                           login_url: str) -> None:
    """After the free failures the login page answers 429 and says how long to wait; the password is not checked."""
    free = services.settings.throttle.free_attempts_per_account
    for _ in range(free):
        response = submit_login(client, login_url, password=WRONG)
        assert response.status_code == 200 and "Username or password is incorrect." in response.text
    blocked = submit_login(client, login_url)
    assert blocked.status_code == 429
    assert "Too many failed attempts. Please wait 2 seconds and try again." in blocked.text
    assert SESSION_COOKIE not in blocked.headers.get("set-cookie", "")
    assert blocked.headers["cache-control"] == "no-store"
    assert 'name="password"' in blocked.text, "the page stays a login form to try again from"
    assert _reasons(services) == Counter({"wrong_password": free, "throttled": 1})
    clock.advance(seconds=2)
    response = submit_login(client, login_url)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/authorize/resume/")


def test_throttled_page_is_the_same_for_unknown_users(client: TestClient, services: Services,
                                                      login_url: str) -> None:
    """An unknown name is throttled after as many failures as a real one, with the same answer (no enumeration)."""
    free = services.settings.throttle.free_attempts_per_account
    answers = {}
    for name in ("erika", "nobody"):
        for _ in range(free):
            submit_login(client, login_url, username=name, password=WRONG)
        blocked = submit_login(client, login_url, username=name, password=WRONG)
        answers[name] = (blocked.status_code, blocked.text.count("Please wait 2 seconds"))
    assert answers["erika"] == answers["nobody"] == (429, 1)


@pytest.fixture
def few_per_address(backend: tuple[str, Engine], tmp_path: Path, clock: FakeClock,
                    services: Services) -> Services:
    few = build_services(make_settings(tmp_path / "few", backend[0], IDP_THROTTLE_FREE_ATTEMPTS_PER_IP="3"),
                         engine=backend[1])
    few.clock = clock
    return few


def test_address_counter_through_http(few_per_address: Services, services: Services, clock: FakeClock) -> None:
    """From one address, failures on three accounts block a fourth account; another address signs in."""
    add_user(services)
    app = add_client(services, trusted=True)
    with TestClient(create_app(services=few_per_address), base_url=ISSUER, follow_redirects=False,
                    client=("203.0.113.7", 40000)) as attacker:
        login_url = follow_to_login(attacker, Flow(app))
        for name in ("anna", "bernd", "carla"):
            assert submit_login(attacker, login_url, username=name, password=WRONG).status_code == 200
        blocked = submit_login(attacker, login_url)
        assert blocked.status_code == 429 and "Please wait" in blocked.text
    with TestClient(create_app(services=few_per_address), base_url=ISSUER, follow_redirects=False,
                    client=("198.51.100.4", 40000)) as colleague:
        response = submit_login(colleague, follow_to_login(colleague, Flow(app)))
        assert response.status_code == 303
    with unit_of_work(services.sessions) as db:
        ips = {row.ip for row in db.scalars(select(AuditEvent).where(AuditEvent.event == "login.password"))}
    assert ips == {"203.0.113.7", "198.51.100.4"}


def test_parallel_guesses_get_no_more_than_the_free_attempts(client: TestClient, services: Services,
                                                             login_url: str) -> None:
    """Twenty simultaneous wrong passwords: only the free attempts reach the password check, the rest are refused."""
    free = services.settings.throttle.free_attempts_per_account
    token = csrf_of(client.get(login_url).text)
    start = threading.Barrier(20)

    def guess(number: int) -> int:
        start.wait()
        response = client.post(login_url, data={"username": "erika", "password": f"guess {number}",
                                                "csrf_token": token})
        return response.status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = Counter(pool.map(guess, range(20)))
    assert statuses == Counter({200: free, 429: 20 - free})
    assert _reasons(services) == Counter({"wrong_password": free, "throttled": 20 - free})
    [account] = _counters(services, "account")
    assert account.failures == free


def test_counters_are_shared_through_the_database(client: TestClient, services: Services, clock: FakeClock,
                                                  login_url: str) -> None:
    """A second server process (its own services, engine and app) on the same database sees the delay."""
    for _ in range(services.settings.throttle.free_attempts_per_account):
        submit_login(client, login_url, password=WRONG)
    second = build_services(services.settings)  # its own engine and connection pool
    second.clock = clock
    try:
        assert second.engine is not services.engine
        app = add_client(services, name="Zweite Instanz", trusted=True)
        with TestClient(create_app(services=second), base_url=ISSUER, follow_redirects=False) as browser:
            blocked = submit_login(browser, follow_to_login(browser, Flow(app)))
            assert blocked.status_code == 429
            clock.advance(seconds=2)
            assert submit_login(browser, follow_to_login(browser, Flow(app))).status_code == 303
    finally:
        second.engine.dispose()
    # The success through the second instance reset the counter the first one reads.
    assert submit_login(client, login_url, password=WRONG).status_code == 200

"""Two server processes race for every invariant that must hold across processes (issue 7, section 1).

Two independent ``idp serve`` processes (A and B, each its own Python process with its own connection pool)
share one PostgreSQL database. One browser (one cookie jar) sends the competing requests to both at once,
released together by a barrier, and each test asserts the invariant twice: from the answers the processes
gave, and from the rows in the database. Each race runs ``ROUNDS`` times with fresh accounts, so that a race
that is lost only now and then would show.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import func, select

from idp.accounts.users import find_user, normalize_username
from idp.db import unit_of_work
from idp.factors import sms
from idp.factors import webauthn as wa
from idp.models import (
    AttemptCounter,
    AuditEvent,
    AuthorizationCode,
    DirectorySyncRun,
    SigningKey,
    SmsChallenge,
    Token,
    TotpFactor,
    User,
    WebAuthnChallenge,
    WebAuthnCredential,
)
from tests.directory.slapd import Directory, Slapd
from tests.helpers import PASSWORD, Flow
from tests.scaleout.conftest import (
    CHEAP_ARGON2,
    Browser,
    Deployment,
    Person,
    SmsInbox,
    add_people,
    add_rp,
    deploy,
    needs_postgresql,
    race,
    undeploy,
    wait_for,
)
from tests.soft_authenticator import SoftAuthenticator

pytestmark = [needs_postgresql, pytest.mark.e2e]

ROUNDS = 3
FREE_ATTEMPTS = 5
"""``[throttle] free_attempts_per_account`` (the default), the SMS code's attempts and its per-user limit."""


@dataclass
class Pair:
    deployment: Deployment
    a: str
    b: str

    @property
    def both(self) -> list[str]:
        return [self.a, self.b]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, sms_inbox: SmsInbox) -> Iterator[Pair]:
    """Servers A and B, one process each, on one fresh database. Throttling delays start at a minute, so that
    a block set during a race still holds when the test looks at it."""
    deployment = deploy(tmp_path_factory.mktemp("races"), **CHEAP_ARGON2, IDP_THROTTLE_FIRST_DELAY="60s",
                        IDP_SMS_GATEWAY="http", IDP_SMS_URL=sms_inbox.url)
    try:
        a, b = deployment.start_together(2)
        yield Pair(deployment, a.base, b.base)
    finally:
        undeploy(deployment)


def _user_id(pair: Pair, person: Person) -> int:
    with unit_of_work(pair.deployment.services.sessions) as db:
        user = find_user(db, person.username)
        assert user is not None
        return user.id


def _events(pair: Pair, event: str, subject: str) -> list[AuditEvent]:
    with unit_of_work(pair.deployment.services.sessions) as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.event == event, AuditEvent.subject == subject)
                               .order_by(AuditEvent.id)))


def _oauth_error(response: Any) -> str:
    assert isinstance(response, httpx.Response), response
    assert response.headers["content-type"].startswith("application/json"), response.text
    return str(response.json()["error"])


def _at_factor_page(pair: Pair, browser: Browser, person: Person, rp: Any) -> tuple[Flow, str, str]:
    """Authorize and give the password at A; returns the flow, the second-factor page's path and CSRF token."""
    flow = Flow(rp)
    login = browser.authorize(pair.a, flow)
    factor = browser.to_factor_page(pair.a, browser.password(pair.a, login, person.username))
    return flow, factor, browser.factor_csrf(pair.b, factor)


# --- single-use authorization codes ---------------------------------------------------------------------------

def test_an_authorization_code_is_redeemed_once_across_processes(pair: Pair, browsers: Callable[..., Browser]) -> None:
    """One code redeemed three times at A and three times at B at once: one token response, five invalid_grant;
    in the database the code is consumed, one token row was issued from it, and the replay revoked it
    (RFC 6749 4.1.2, RFC 9700 4.5)."""
    rp = add_rp(pair.deployment.services, "Codes")
    for person in add_people(pair.deployment.services, "code", ROUNDS):
        browser = browsers()
        flow = Flow(rp)
        code = browser.authorization_code(pair.both, flow, person)
        results = race(*[partial(browser.exchange, base, flow, code) for base in pair.both * 3])
        winners = [r for r in results if isinstance(r, httpx.Response) and r.status_code == 200]
        assert len(winners) == 1, [getattr(r, "text", r) for r in results]
        assert sorted(_oauth_error(r) for r in results if r is not winners[0]) == ["invalid_grant"] * 5
        user_id = _user_id(pair, person)
        with unit_of_work(pair.deployment.services.sessions) as db:
            codes = db.scalars(select(AuthorizationCode).where(AuthorizationCode.user_id == user_id)).all()
            tokens = db.scalars(select(Token).where(Token.user_id == user_id)).all()
            assert len(codes) == 1 and codes[0].consumed_at is not None
            assert len(tokens) == 1 and tokens[0].family_id == codes[0].family_id
            assert tokens[0].revoked_at is not None and tokens[0].revoked_reason == "code_reuse"


# --- refresh-token rotation and reuse detection ------------------------------------------------------------

def test_a_refresh_token_rotates_once_across_processes_and_reuse_revokes_the_family(
        pair: Pair, browsers: Callable[..., Browser]) -> None:
    """One refresh token presented three times at A and three times at B at once: one rotation, five
    invalid_grant; the family (the new refresh token included) is revoked at both processes, because the
    token was used again after its rotation (RFC 9700 4.14.2)."""
    rp = add_rp(pair.deployment.services, "Refresh")
    for person in add_people(pair.deployment.services, "refresh", ROUNDS):
        browser = browsers()
        first = browser.sign_in(pair.both, Flow(rp), person)
        results = race(*[partial(browser.refresh, base, rp, first["refresh_token"])
                         for base in pair.both * 3])
        winners = [r for r in results if isinstance(r, httpx.Response) and r.status_code == 200]
        assert len(winners) == 1, [getattr(r, "text", r) for r in results]
        assert sorted(_oauth_error(r) for r in results if r is not winners[0]) == ["invalid_grant"] * 5
        rotated = winners[0].json()["refresh_token"]
        assert rotated != first["refresh_token"]
        for base in pair.both:
            assert _oauth_error(browser.refresh(base, rp, rotated)) == "invalid_grant"
        user_id = _user_id(pair, person)
        with unit_of_work(pair.deployment.services.sessions) as db:
            tokens = db.scalars(select(Token).where(Token.user_id == user_id).order_by(Token.id)).all()
            assert len(tokens) == 2 and len({token.family_id for token in tokens}) == 1
            assert tokens[0].rotated_at is not None
            assert all(token.revoked_at is not None for token in tokens)
            assert {token.revoked_reason for token in tokens} == {"refresh_reuse"}


# --- TOTP replay --------------------------------------------------------------------------------------------

def test_a_totp_code_is_accepted_by_only_one_process(pair: Pair, browsers: Callable[..., Browser]) -> None:
    """The same authenticator-app code sent to A and B at once: exactly one accepts it (and the sign-in goes
    on), the other says the code is not valid; the factor's last used step moved once (RFC 6238 5.2)."""
    rp = add_rp(pair.deployment.services, "Totp")
    for person in add_people(pair.deployment.services, "totp", ROUNDS):
        browser = browsers()
        flow, factor, csrf = _at_factor_page(pair, browser, person, rp)
        now = time.time()
        code, step = pyotp.TOTP(person.totp_secret).at(now), int(now // 30)
        results = race(*[partial(browser.submit_code, base, factor, csrf, code) for base in pair.both])
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200, 303], [getattr(r, "text", r) for r in results]
        winner = next(r for r in results if r.status_code == 303)
        loser = next(r for r in results if r.status_code == 200)
        assert "The code is not valid" in loser.text
        params = browser.finish(pair.a, winner)
        token = browser.exchange(pair.b, flow, params["code"])
        assert token.status_code == 200, token.text
        user_id = _user_id(pair, person)
        with unit_of_work(pair.deployment.services.sessions) as db:
            factor_row = db.scalars(select(TotpFactor).where(TotpFactor.user_id == user_id)).one()
            assert factor_row.last_step == step
        outcomes = sorted((e.outcome, e.details.get("reason", "")) for e in
                          _events(pair, "login.second_factor", person.username))
        assert outcomes == [("failure", "wrong_code"), ("success", "")], outcomes


# --- SMS code attempts --------------------------------------------------------------------------------------

def test_an_sms_code_is_tried_at_most_five_times_across_processes(pair: Pair, sms_inbox: SmsInbox,
                                                                   browsers: Callable[..., Browser]) -> None:
    """Twelve wrong guesses at one SMS code, six at A and six at B at once: exactly five are evaluated (the
    page says "not valid"), seven are refused with 429 before any comparison; the code row shows five
    attempts, and afterwards even the right code is refused at both processes (NIST SP 800-63B-4 3.1.3.2).

    Three limits stand at five here and all are rows locked or updated atomically in the database: the
    code's own attempts, the user's SMS failures and the user's second-factor failures. Whichever stops a
    guess, no process can evaluate a sixth."""
    services = pair.deployment.services
    rp = add_rp(services, "Sms")
    people = add_people(services, "sms", ROUNDS)
    for number, person in enumerate(people):
        phone = f"+4915123456{number:03d}"
        with unit_of_work(services.sessions) as db:
            user = find_user(db, person.username)
            assert user is not None
            factor_row = sms.add_phone(db, user, phone, "Handy", services.settings.sms, services.now())
            sms.confirm(db, factor_row, services.now())
        browser = browsers()
        _, factor, csrf = _at_factor_page(pair, browser, person, rp)
        sent = browser.post(pair.b, factor.removesuffix("/factor") + "/sms/send", data={"csrf_token": csrf})
        assert sent.status_code == 200 and "We sent a code" in sent.text, sent.text
        right = sms_inbox.last_code(phone)
        wrong = f"{(int(right) + 1) % 1_000_000:06d}"

        results = race(*[partial(browser.submit_code, base, factor, csrf, wrong, "sms")
                         for base in pair.both * 6])
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200] * FREE_ATTEMPTS + [429] * (12 - FREE_ATTEMPTS), statuses
        assert all("The code is not valid" in r.text for r in results if r.status_code == 200)
        late = race(*[partial(browser.submit_code, base, factor, csrf, right, "sms") for base in pair.both])
        assert [r.status_code for r in late] == [429, 429], [r.text for r in late]

        with unit_of_work(services.sessions) as db:
            challenge = db.scalars(select(SmsChallenge).where(SmsChallenge.factor_id == factor_row.id)).one()
            assert challenge.attempts == FREE_ATTEMPTS and challenge.consumed_at is None
            counters = {row.key: row.failures for row in db.scalars(
                select(AttemptCounter).where(AttemptCounter.key.in_(
                    [f"factor:user:{factor_row.user_id}", f"sms:user:{factor_row.user_id}"])))}
            assert counters == {f"factor:user:{factor_row.user_id}": FREE_ATTEMPTS,
                                f"sms:user:{factor_row.user_id}": FREE_ATTEMPTS}
        reasons = [e.details.get("reason") for e in _events(pair, "login.second_factor", person.username)]
        assert reasons.count("wrong_code") == FREE_ATTEMPTS, reasons
        assert "success" not in {e.outcome for e in _events(pair, "login.second_factor", person.username)}


# --- WebAuthn challenges --------------------------------------------------------------------------------------

def test_a_webauthn_answer_is_accepted_by_only_one_process(pair: Pair, browsers: Callable[..., Browser]) -> None:
    """A security key's signed answer to one challenge, posted to A and B at once: one process accepts it, the
    other refuses it as already used; the challenge row is consumed once and the key's sign count moved once
    (WebAuthn L3 7.2 step 23; the challenge is single-use)."""
    services = pair.deployment.services
    issuer = pair.deployment.issuer
    rp = add_rp(services, "Keys")
    for person in add_people(services, "key", ROUNDS):
        key = SoftAuthenticator()
        with unit_of_work(services.sessions) as db:
            user = find_user(db, person.username)
            assert user is not None
            challenge_id, options = wa.registration_options(db, services.settings.webauthn, issuer, user,
                                                            services.now(), purpose="enroll:scaleout",
                                                            discoverable=False)
            created = wa.register(db, services.settings.webauthn, issuer, user, challenge_id,
                                  key.create(options, origin=issuer), "Blue key", services.now(),
                                  purpose="enroll:scaleout")
            assert isinstance(created, WebAuthnCredential)
        browser = browsers()
        flow, factor, csrf = _at_factor_page(pair, browser, person, rp)
        tx = factor.removesuffix("/factor")
        started = browser.post(pair.a, tx + "/webauthn/options", json={"csrf_token": csrf})
        assert started.status_code == 200, started.text
        body = {"credential": key.get(started.json()["publicKey"], origin=issuer), "csrf_token": csrf,
                "challenge_id": started.json()["challenge_id"]}
        results = race(*[partial(browser.post, base, tx + "/webauthn/verify", json=body)
                         for base in pair.both])
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200, 400], [r.text for r in results]
        winner = next(r for r in results if r.status_code == 200)
        loser = next(r for r in results if r.status_code == 400)
        assert "expired or was already used" in loser.json()["error"]
        resume = winner.json()["redirect"]
        params = browser.finish(pair.b, browser.get(pair.b, resume))
        assert browser.exchange(pair.a, flow, params["code"]).status_code == 200
        with unit_of_work(services.sessions) as db:
            user = find_user(db, person.username)
            assert user is not None
            challenges = db.scalars(select(WebAuthnChallenge).where(
                WebAuthnChallenge.user_id == user.id, WebAuthnChallenge.purpose.like("login:%"))).all()
            assert len(challenges) == 1 and challenges[0].consumed_at is not None
            credential = db.scalars(select(WebAuthnCredential).where(WebAuthnCredential.user_id == user.id)).one()
            assert credential.sign_count == 1
        reasons = sorted((e.outcome, e.details.get("reason", "")) for e in
                         _events(pair, "login.second_factor", person.username))
        assert reasons == [("failure", "replayed_challenge"), ("success", "")], reasons


# --- password throttling ------------------------------------------------------------------------------------

def test_parallel_wrong_passwords_at_both_processes_are_all_counted(pair: Pair,
                                                                    browsers: Callable[..., Browser]) -> None:
    """Twelve wrong passwords for one account, six at A and six at B at once: five are checked (the fifth
    starts the delay), seven are refused with 429 unchecked, and the account's counter in the database says
    five; then the right password is refused at both processes while the delay runs (NIST SP 800-63B-4
    3.2.2; ASVS 6.3.1: counting happens before checking, so parallel guesses cannot slip past)."""
    services = pair.deployment.services
    rp = add_rp(services, "Throttle")
    for person in add_people(services, "guess", ROUNDS):
        browser = browsers()
        login = browser.authorize(pair.a, Flow(rp))
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', browser.get(pair.b, login).text)
        assert csrf is not None
        form = {"username": person.username, "password": "wrong password", "csrf_token": csrf.group(1)}
        results = race(*[partial(browser.post, base, login, data=form) for base in pair.both * 6])
        statuses = sorted(r.status_code for r in results)
        assert statuses == [200] * FREE_ATTEMPTS + [429] * (12 - FREE_ATTEMPTS), statuses
        assert all("Username or password is incorrect" in r.text for r in results if r.status_code == 200)
        right = {**form, "password": PASSWORD}
        late = race(*[partial(browser.post, base, login, data=right) for base in pair.both])
        assert [r.status_code for r in late] == [429, 429], [r.text[:200] for r in late]
        key = "password:account:" + hashlib.sha256(normalize_username(person.username).encode()).hexdigest()[:32]
        with unit_of_work(services.sessions) as db:
            counter = db.get(AttemptCounter, key)
            assert counter is not None and counter.failures == FREE_ATTEMPTS
            assert counter.blocked_until is not None and counter.blocked_until > datetime.now(UTC)
        reasons = [e.details.get("reason") for e in _events(pair, "login.password", person.username)]
        assert sorted(reasons) == ["throttled"] * (12 - FREE_ATTEMPTS + 2) + ["wrong_password"] * FREE_ATTEMPTS


# --- the first start -----------------------------------------------------------------------------------------

def test_servers_starting_together_on_a_fresh_database_make_one_set_of_keys_and_one_admin(tmp_path: Path) -> None:
    """Two servers started at once on a database that was only migrated (several machines after ``idp db
    upgrade``): one signing key per algorithm and one administrator, whichever process made them; both
    publish the same keys. (Without the lock in ``idp.oauth.keys.ensure_keys`` each made its own keys.)"""
    deployment = deploy(tmp_path, prepared=False, **CHEAP_ARGON2)
    try:
        servers = deployment.start_together(2)
        with unit_of_work(deployment.services.sessions) as db:
            keys = db.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))).all()
            admins = db.scalars(select(User.username)).all()
        assert sorted(key.alg for key in keys) == ["ES256", "RS256"]
        assert admins == ["admin"]
        published = [sorted(key["kid"] for key in httpx.get(f"{server.base}/jwks", timeout=10).json()["keys"])
                     for server in servers]
        assert published[0] == published[1] == sorted(key.kid for key in keys)
        logs = "".join(server.log.read_text() for server in servers)
        assert logs.count("Created the administrator account") == 1
    finally:
        undeploy(deployment)


# --- the scheduled directory sync lock ---------------------------------------------------------------------

@pytest.fixture
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directory]:
    """A real slapd of this test's own, with a municipal directory in it."""
    slapd = Slapd(tmp_path_factory.mktemp("slapd"))
    slapd.start()
    try:
        slapd.prepare()
        built = Directory(slapd, "openldap").build()
        yield built
        built.close()
    finally:
        slapd.kill()


def test_two_processes_starting_together_sync_a_due_source_once(tmp_path: Path, directory: Directory) -> None:
    """Two server processes start together on one database: both schedulers find the directory source due at
    once, one of them takes the lease in the database and syncs, the other finds it busy or just done; one run
    in the history, every account created once (issue 4 section 5, issue 7 section 1)."""
    deployment = deploy(tmp_path, **CHEAP_ARGON2, IDP_DIRECTORY_SCHEDULE="true",
                        IDP_DIRECTORY_SOURCES=json.dumps([directory.source(interval="1h")], ensure_ascii=False))
    try:
        deployment.start_together(2)
        services = deployment.services

        def finished() -> bool:
            with unit_of_work(services.sessions) as db:
                return bool(db.scalar(select(func.count()).select_from(DirectorySyncRun)))

        wait_for(finished, 60, "no scheduled sync ran")
        time.sleep(3)  # the other schedulers have long decided by now (they tick at start, then every 15 s)
        with unit_of_work(services.sessions) as db:
            runs = db.scalars(select(DirectorySyncRun)).all()
            assert [(run.trigger, run.status) for run in runs] == [("schedule", "success")]
            synced = db.scalars(select(User.username).where(User.source == "rathaus")).all()
        assert sorted(synced) == sorted(normalize_username(name) for name in directory.users)
        logs = "".join(server.log.read_text() for server in deployment.servers)
        assert logs.count("directory sync rathaus (full): success") == 1, logs
        assert "Traceback" not in logs
    finally:
        undeploy(deployment)

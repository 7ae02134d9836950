"""Purging expired rows: exactly what can no longer be accepted goes, on a schedule and with ``idp db purge``."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from idp import cli
from idp.cli import main
from idp.db import unit_of_work
from idp.maintenance import Purger, purge_expired, run_purge
from idp.models import (
    AuditEvent,
    AuthorizationCode,
    BackchannelDelivery,
    Client,
    LoginTransaction,
    SmsChallenge,
    SsoSession,
    Token,
    UsedAssertion,
    User,
    WebAuthnChallenge,
)
from idp.services import Services, build_services
from tests.conftest import FakeClock
from tests.helpers import add_client, add_user

SECOND = timedelta(seconds=1)


def _ids(db: Session, model: Any, column: Any) -> set[str]:
    return {str(value) for value in db.scalars(select(column))}


def seed(services: Services, now: datetime) -> None:
    """Two rows of each kind: ``gone-*`` one second past its keeping time, ``kept-*`` one second short of it."""
    add_user(services)
    add_client(services)
    with unit_of_work(services.sessions) as db:
        user = db.scalars(select(User)).one()
        client = db.scalars(select(Client)).one()
        for label, shift in (("gone", -SECOND), ("kept", SECOND)):
            code_expiry = now - timedelta(hours=1) + shift
            db.add(AuthorizationCode(code_hash=f"{label}-code", family_id=f"{label}-code-family", client_id=client.id,
                                     user_id=user.id, scope="openid", auth_time=now, expires_at=code_expiry,
                                     consumed_at=code_expiry - timedelta(seconds=30)))
            db.add(LoginTransaction(id=f"{label}-tx", browser_hash=f"{label}-browser", client_id=client.id, params={},
                                    expires_at=now + shift))
            db.add(UsedAssertion(key=f"{label}-jti", expires_at=now + shift))
            db.add(WebAuthnChallenge(id=f"{label}-challenge", purpose="login", challenge=b"x", expires_at=now + shift))
            db.add(SmsChallenge(user_id=user.id, phone="+4915100000000", purpose=f"{label}-sms", code_hash="h",
                                created_at=now - timedelta(days=1) + shift,
                                expires_at=now - timedelta(days=1) + shift + timedelta(minutes=5)))
            # One session ended 30 days ago, one expired 30 days ago without being ended.
            db.add(SsoSession(cookie_hash=f"{label}-ended", sid=f"{label}-ended", user_id=user.id,
                              authenticated_at=now - timedelta(days=31), last_active_at=now - timedelta(days=31),
                              expires_at=now + timedelta(days=1), ended_at=now - timedelta(days=30) + shift))
            db.add(SsoSession(cookie_hash=f"{label}-expired", sid=f"{label}-expired", user_id=user.id,
                              authenticated_at=now - timedelta(days=31), last_active_at=now - timedelta(days=31),
                              expires_at=now - timedelta(days=30) + shift))
            # A refresh token judged by its refresh expiry (even revoked), an access-only one by its access expiry.
            db.add(Token(family_id=f"{label}-family", jti=f"{label}-refresh", refresh_hash=f"{label}-refresh-hash",
                         client_id=client.id, user_id=user.id, grant_type="authorization_code", scope="openid",
                         access_expires_at=now - timedelta(days=30),
                         refresh_expires_at=now - timedelta(days=1) + shift, revoked_at=now - timedelta(days=20)))
            db.add(Token(family_id=f"{label}-cc", jti=f"{label}-access", client_id=client.id,
                         grant_type="client_credentials", scope="", access_expires_at=now - timedelta(days=1) + shift))
            db.add(BackchannelDelivery(client_id=client.id, uri=f"https://rp.example/{label}-delivered",
                                       logout_token="t", next_attempt_at=now,
                                       delivered_at=now - timedelta(days=7) + shift))
            db.add(BackchannelDelivery(client_id=client.id, uri=f"https://rp.example/{label}-failed",
                                       logout_token="t", next_attempt_at=now,
                                       failed_at=now - timedelta(days=7) + shift))
        # Not expired at all: a consumed code still inside its lifetime (its replay must still be recognised),
        # a live session, a pending delivery and a live refresh token whose access token expired long ago.
        db.add(AuthorizationCode(code_hash="live-code", family_id="live-family", client_id=client.id, user_id=user.id,
                                 scope="openid", auth_time=now, expires_at=now + timedelta(seconds=30),
                                 consumed_at=now))
        db.add(SsoSession(cookie_hash="live-session", sid="live-session", user_id=user.id, authenticated_at=now,
                          last_active_at=now, expires_at=now + timedelta(hours=8)))
        db.add(BackchannelDelivery(client_id=client.id, uri="https://rp.example/live-pending", logout_token="t",
                                   next_attempt_at=now))
        db.add(Token(family_id="live-family", jti="live-refresh", refresh_hash="live-refresh-hash", client_id=client.id,
                     user_id=user.id, grant_type="refresh_token", scope="openid offline_access",
                     access_expires_at=now - timedelta(days=60), refresh_expires_at=now + timedelta(days=10)))


def remaining(services: Services) -> dict[str, set[str]]:
    with unit_of_work(services.sessions) as db:
        return {
            "authorization_codes": _ids(db, AuthorizationCode, AuthorizationCode.code_hash),
            "login_transactions": _ids(db, LoginTransaction, LoginTransaction.id),
            "used_assertions": _ids(db, UsedAssertion, UsedAssertion.key),
            "webauthn_challenges": _ids(db, WebAuthnChallenge, WebAuthnChallenge.id),
            "sms_challenges": _ids(db, SmsChallenge, SmsChallenge.purpose),
            "sso_sessions": _ids(db, SsoSession, SsoSession.sid),
            "issued_tokens": _ids(db, Token, Token.jti),
            "backchannel_deliveries": {uri.rsplit("/", 1)[1] for uri in _ids(db, BackchannelDelivery,
                                                                              BackchannelDelivery.uri)},
        }


EXPECTED_COUNTS = {"authorization_codes": 1, "login_transactions": 1, "used_assertions": 1, "webauthn_challenges": 1,
                   "sms_challenges": 1, "sso_sessions": 2, "issued_tokens": 2, "backchannel_deliveries": 2}


def test_purge_deletes_exactly_the_expired_rows(services: Services, clock: FakeClock) -> None:
    """Each kind loses the row past its keeping time and keeps the row one second short of it, and live rows."""
    seed(services, clock())
    with unit_of_work(services.sessions) as db:
        counts = purge_expired(db, clock())
    assert counts == EXPECTED_COUNTS
    left = remaining(services)
    for kind, names in left.items():
        assert not any(name.startswith("gone") for name in names), (kind, names)
    assert left["authorization_codes"] == {"kept-code", "live-code"}
    assert left["sso_sessions"] == {"kept-ended", "kept-expired", "live-session"}
    assert left["issued_tokens"] == {"kept-refresh", "kept-access", "live-refresh"}
    assert left["backchannel_deliveries"] == {"kept-delivered", "kept-failed", "live-pending"}
    assert left["login_transactions"] == {"kept-tx"}
    assert left["sms_challenges"] == {"kept-sms"}


def test_purge_is_idempotent_and_follows_the_clock(services: Services, clock: FakeClock) -> None:
    """A second run deletes nothing; two seconds later the kept rows are past their time and go as well."""
    seed(services, clock())
    with unit_of_work(services.sessions) as db:
        assert purge_expired(db, clock()) == EXPECTED_COUNTS
    with unit_of_work(services.sessions) as db:
        assert not any(purge_expired(db, clock()).values())
    clock.advance(seconds=2)
    with unit_of_work(services.sessions) as db:
        assert purge_expired(db, clock()) == EXPECTED_COUNTS
    left = remaining(services)
    assert left["sso_sessions"] == {"live-session"}
    assert left["issued_tokens"] == {"live-refresh"}
    assert left["authorization_codes"] == {"live-code"}
    with unit_of_work(services.sessions) as db:
        # What a purged session or token pointed at stays: accounts and clients are not maintenance's business.
        assert db.scalar(select(func.count()).select_from(User)) == 1
        assert db.scalar(select(func.count()).select_from(Client)) == 1


def test_run_purge_audits_one_event_with_the_counts(services: Services, clock: FakeClock) -> None:
    """A scheduled run that deleted rows records one maintenance.purged event; an empty one records none."""
    seed(services, clock())
    assert run_purge(services) == EXPECTED_COUNTS
    assert not any(run_purge(services).values())
    with unit_of_work(services.sessions) as db:
        events = list(db.scalars(select(AuditEvent).where(AuditEvent.event == "maintenance.purged")))
    assert len(events) == 1
    assert {key: events[0].details[key] for key in EXPECTED_COUNTS} == EXPECTED_COUNTS


def test_purger_runs_on_its_interval(services: Services, clock: FakeClock) -> None:
    """The background purger of a server process deletes expired rows on its own, in a worker thread."""
    seed(services, clock())

    async def scenario() -> int:
        purger = Purger(services, interval=timedelta(milliseconds=20))
        purger.start()
        try:
            for _ in range(250):  # at most 5 s
                await asyncio.sleep(0.02)
                with unit_of_work(services.sessions) as db:
                    found = db.scalar(select(func.count()).where(AuditEvent.event == "maintenance.purged"))
                if found:
                    return int(found)
            return 0
        finally:
            await purger.stop()

    assert asyncio.run(scenario()) >= 1
    assert "gone-tx" not in remaining(services)["login_transactions"]


def test_cli_purge_prints_the_counts_and_audits(services: Services, clock: FakeClock, backend: tuple[str, Engine],
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`idp db purge --json` deletes the expired rows, prints the counts and audits the run, even an empty one."""
    seed(services, datetime.now(clock().tzinfo))
    # The command's own services, on the test's engine (a second engine would leave pooled connections behind)
    # and with the real clock, as `idp db purge` has.
    monkeypatch.setattr(cli.common, "services", lambda: build_services(services.settings, engine=backend[1]))
    assert main(["db", "purge", "--json"]) == 0
    # The real clock ran on since the seed: a "kept" row may have become due meanwhile, never the other way.
    counts = json.loads(capsys.readouterr().out)
    assert set(counts) == set(EXPECTED_COUNTS)
    assert all(counts[kind] >= EXPECTED_COUNTS[kind] for kind in counts)
    assert main(["db", "purge"]) == 0
    text = capsys.readouterr().out
    assert "login_transactions" in text
    with unit_of_work(services.sessions) as db:
        events = list(db.scalars(select(AuditEvent).where(AuditEvent.event == "maintenance.purged")))
    assert len(events) == 2
    assert not any(name.startswith("gone") for names in remaining(services).values() for name in names)

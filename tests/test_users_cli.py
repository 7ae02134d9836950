"""``idp users disable/enable/unlock`` (issue 5, section 7: CLI parity with the console), audited like the
console's actions with the CLI as origin."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from idp.accounts.throttle import Limit, Policy, reserve_attempt
from idp.accounts.users import throttle_keys
from idp.db import unit_of_work
from idp.models import AttemptCounter, DirectoryAccount, SsoSession
from idp.services import Services
from tests.admin.people import is_active, open_session
from tests.console_cli import Cli, audit_events
from tests.helpers import add_console_user, add_user, user_row


@pytest.fixture
def run(services: Services, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(services, capsys, monkeypatch)


def test_disable_and_enable(run: Cli, services: Services) -> None:
    add_user(services, "erika")
    session_id, _ = open_session(services, "erika")
    assert run.json("users", "disable", "Erika") == {"username": "erika", "active": False, "sessions_ended": 1,
                                                     "tokens_revoked": 0}
    assert not is_active(services, "erika")
    with unit_of_work(services.sessions) as db:
        session = db.get(SsoSession, session_id)
        assert session is not None and session.end_reason == "account_disabled"
    [row] = audit_events(services, "user.disabled")
    assert row.user_agent == "idp-cli" and row.details["before"] == {"active": True}
    again = run("users", "disable", "erika")
    assert again.code != 0 and "already disabled" in again.err
    result = run("users", "enable", "erika")
    assert result.code == 0 and result.out.strip() == "enabled erika"
    assert is_active(services, "erika") and audit_events(services, "user.enabled")


def test_unlock_forgets_the_account_counters(run: Cli, services: Services) -> None:
    add_user(services, "erika")
    with unit_of_work(services.sessions) as db:
        keys = throttle_keys(user_row(db, "erika"))
        policy = Policy(services.settings.throttle.first_delay, services.settings.throttle.max_delay,
                        services.settings.throttle.forget_after)
        for _ in range(8):
            reserve_attempt(db, [Limit(keys[0], 2), Limit(keys[1], 2)], services.now(), policy)
    assert run.json("users", "unlock", "erika") == {"username": "erika", "counters_cleared": 2}
    with unit_of_work(services.sessions) as db:
        rows = db.scalars(select(AttemptCounter).where(AttemptCounter.key.in_(keys))).all()
        assert rows and all(row.failures == 0 and row.blocked_until is None for row in rows)
    assert audit_events(services, "user.unlocked")[0].details["counters_cleared"] == 2


def test_unknown_users_and_the_last_admin(run: Cli, services: Services) -> None:
    for command in ("disable", "enable", "unlock"):
        result = run("users", command, "nobody")
        assert result.code != 0 and "no user 'nobody'" in result.err
    add_console_user(services, "chefin", "admin")
    refused = run("users", "disable", "chefin")
    assert refused.code != 0 and "last enabled administrator" in refused.err
    assert is_active(services, "chefin")


def test_an_account_its_directory_disabled_is_enabled_there(run: Cli, services: Services) -> None:
    add_user(services, "dirk", password=None)
    with unit_of_work(services.sessions) as db:
        user = user_row(db, "dirk")
        user.source, user.disabled_at = "rathaus", services.now()
        db.add(DirectoryAccount(user_id=user.id, source="rathaus", external_id="g", dn="uid=dirk",
                                disabled_reason="removed_from_directory"))
    result = run("users", "enable", "dirk")
    assert result.code != 0 and "enable it there" in result.err
    assert not is_active(services, "dirk")


def test_unlock_clears_the_counters_the_sign_in_keeps(services: Services) -> None:
    """The account's password counter is keyed by its typed name exactly as the sign-in keys it; a change on one
    side that the other missed would make unlock clear nothing."""
    from idp.accounts.authenticate import _limits

    add_user(services, "Erika.Ä")
    with unit_of_work(services.sessions) as db:
        keys = throttle_keys(user_row(db, "erika.ä"))
    assert _limits(services.settings.throttle, " ERIKA.Ä ", "192.0.2.1")[0].key == keys[0]

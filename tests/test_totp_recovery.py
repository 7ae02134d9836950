"""TOTP (RFC 6238) at the window edges and against replay, and recovery codes (NIST SP 800-63B-4 4.2.1.1)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pyotp
from sqlalchemy import select

from idp.accounts.users import find_user
from idp.db import read_only, unit_of_work
from idp.factors import recovery, totp
from idp.models import RecoveryCode, TotpFactor
from idp.services import Services
from tests.helpers import add_user


def _factor(services: Services) -> tuple[int, str]:
    add_user(services)
    with unit_of_work(services.sessions) as db:
        user = find_user(db, "erika")
        assert user is not None
        factor, secret = totp.begin_enrollment(db, services.sealer, user, "App", services.now())
        factor.confirmed_at = services.now()
        return factor.id, secret


def _verify(services: Services, factor_id: int, code: str, offset: timedelta = timedelta(0)) -> bool:
    with unit_of_work(services.sessions) as db:
        factor = db.get(TotpFactor, factor_id)
        assert factor is not None
        return totp.verify(db, services.sealer, factor, code, services.now() + offset)


def test_seed_is_sealed_and_long_enough(services: Services) -> None:
    """The seed has 160 bits and is stored only sealed under the key-encryption key."""
    factor_id, secret = _factor(services)
    assert len(secret) == 32
    with read_only(services.sessions) as db:
        factor = db.get(TotpFactor, factor_id)
        assert factor is not None
        assert secret.encode() not in factor.secret_sealed
        assert totp.secret_of(services.sealer, factor) == secret


def test_window_is_one_step_either_side(services: Services) -> None:
    """A code of the previous or next 30-second step is accepted; two steps away it is not."""
    factor_id, secret = _factor(services)
    app = pyotp.TOTP(secret)
    now = services.now()
    assert not _verify(services, factor_id, app.at(now - timedelta(seconds=60)))
    assert _verify(services, factor_id, app.at(now - timedelta(seconds=30)))
    assert _verify(services, factor_id, app.at(now))
    assert _verify(services, factor_id, app.at(now + timedelta(seconds=30)))
    assert not _verify(services, factor_id, app.at(now + timedelta(seconds=60)))


def test_code_accepted_once_and_never_an_older_one(services: Services) -> None:
    """The same code twice is refused, and so is a code older than the last accepted step (RFC 6238 5.2)."""
    factor_id, secret = _factor(services)
    app = pyotp.TOTP(secret)
    now = services.now()
    current = app.at(now)
    assert _verify(services, factor_id, current)
    assert not _verify(services, factor_id, current)
    assert not _verify(services, factor_id, app.at(now - timedelta(seconds=30)))
    assert _verify(services, factor_id, app.at(now + timedelta(seconds=30)), offset=timedelta(seconds=30))


def test_parallel_use_of_one_code_has_one_winner(services: Services) -> None:
    """Eight threads (each its own connection) present the same code: the atomic update lets exactly one pass."""
    factor_id, secret = _factor(services)
    code = pyotp.TOTP(secret).at(services.now())
    results: list[bool] = []
    lock = threading.Lock()

    def attempt() -> None:
        outcome = _verify(services, factor_id, code)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False] * 7 + [True]


def test_malformed_codes_are_refused(services: Services) -> None:
    factor_id, _ = _factor(services)
    for code in ("", "12345", "1234567", "abcdef", "١٢٣٤٥٦", "12 34 5"):
        assert not _verify(services, factor_id, code)


def test_recovery_codes_are_long_hashed_single_use_and_replaced(services: Services) -> None:
    """Ten codes of 80 bits, stored as argon2id hashes; each works once; a new set invalidates the old one."""
    add_user(services)
    with unit_of_work(services.sessions) as db:
        user = find_user(db, "erika")
        assert user is not None
        codes = recovery.regenerate(db, services.passwords, user, services.now())
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(len(code.replace("-", "")) == 16 for code in codes)  # 16 base32 characters = 80 bits
    with read_only(services.sessions) as db:
        stored = [row.code_hash for row in db.scalars(select(RecoveryCode))]
    assert all(h.startswith("$argon2id$") for h in stored) and not set(codes) & set(stored)
    with unit_of_work(services.sessions) as db:
        user = find_user(db, "erika")
        assert user is not None
        assert recovery.use(db, services.passwords, user, codes[0].lower().replace("-", " "), services.now())
        assert not recovery.use(db, services.passwords, user, codes[0], services.now())
        assert recovery.remaining(db, user) == 9
        fresh = recovery.regenerate(db, services.passwords, user, services.now())
        assert not recovery.use(db, services.passwords, user, codes[1], services.now())
        assert recovery.use(db, services.passwords, user, fresh[0], services.now())

"""Throttling of failed attempts at guessable secrets, with growing delays stored in the database.

    failures: 0 .. free-1        → no delay
    failure  free, free+1, ...   → blocked for first_delay · 2^(failures-free), at most max_delay
    success                      → the account counter is reset (NIST SP 800-63B-4, 3.2.2),
                                   the address counter gives back the one attempt it reserved
    no failure for forget_after  → the counter starts again from zero

An attempt first *reserves* itself: it locks the counter row, refuses while ``blocked_until`` lies in the
future, and otherwise counts itself as a failure before the secret is checked. A success then undoes
that. Counting before checking means fifty parallel guesses cannot all slip through before the first
failure is written. The delay is short (``max_delay``), so a stranger cannot lock an employee out for long
(BSI ORP.4.A13; OWASP ASVS 6.3.1); a second counter per client address slows down one source that tries
many accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from idp.models import AttemptCounter


@dataclass(frozen=True)
class Limit:
    key: str
    free_attempts: int


@dataclass(frozen=True)
class Blocked:
    retry_after: timedelta


def _rows_for_update(db: Session, keys: list[str]) -> dict[str, AttemptCounter]:
    """The counters of ``keys``, created where missing, locked in key order (two requests that lock the same
    rows in one order cannot deadlock)."""
    # Parallel first attempts on one key would each INSERT, and all but one fail on the primary key
    # (PostgreSQL, READ COMMITTED). ON CONFLICT DO NOTHING waits for the winner; then the rows are locked.
    # Inserting first, always, costs one statement for every key together instead of a look-up per key.
    if not keys:
        return {}
    insert = postgresql_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    db.execute(insert(AttemptCounter).values([{"key": key, "failures": 0} for key in sorted(keys)])
               .on_conflict_do_nothing(index_elements=["key"]))
    locked = (select(AttemptCounter).where(AttemptCounter.key.in_(keys)).order_by(AttemptCounter.key)
              .with_for_update().execution_options(populate_existing=True))
    return {row.key: row for row in db.scalars(locked)}


def delay_after(failures: int, free_attempts: int, first_delay: timedelta, max_delay: timedelta) -> timedelta:
    if failures < free_attempts:
        return timedelta(0)
    exponent = min(failures - free_attempts, 30)
    delay: timedelta = first_delay * (2**exponent)
    return min(delay, max_delay)


@dataclass(frozen=True)
class Policy:
    first_delay: timedelta
    max_delay: timedelta
    forget_after: timedelta


def reserve_attempt(db: Session, limits: list[Limit], now: datetime, policy: Policy) -> Blocked | None:
    """Count an attempt as failed in advance; return ``Blocked`` (counting nothing) while a delay runs."""
    locked = _rows_for_update(db, [limit.key for limit in limits])
    rows = [(limit, locked[limit.key]) for limit in limits]
    waits = [row.blocked_until - now for _, row in rows if row.blocked_until and row.blocked_until > now]
    if waits:
        return Blocked(retry_after=max(waits))
    for limit, row in rows:
        if row.last_failure_at is not None and now - row.last_failure_at > policy.forget_after:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        delay = delay_after(row.failures, limit.free_attempts, policy.first_delay, policy.max_delay)
        row.blocked_until = now + delay if delay else None
    db.flush()
    return None


def record_success(db: Session, limits: list[Limit], reset: set[str]) -> None:
    """After a success: forget the failures of the keys in ``reset``, give back the reservation elsewhere."""
    for limit in limits:
        row = db.get(AttemptCounter, limit.key)
        if row is None:
            continue
        row.failures = 0 if limit.key in reset else max(0, row.failures - 1)
        if row.failures < limit.free_attempts:
            row.blocked_until = None


def counters(db: Session, keys: list[str]) -> list[AttemptCounter]:
    """The stored counters among ``keys`` (a key that never failed has no row)."""
    return list(db.scalars(select(AttemptCounter).where(AttemptCounter.key.in_(keys)).order_by(AttemptCounter.key)))


def clear(db: Session, keys: list[str]) -> int:
    """Forget the failures of ``keys`` (the service desk's unlock); returns how many counters held any."""
    cleared = 0
    for row in counters(db, keys):
        if row.failures or row.blocked_until is not None:
            cleared += 1
        row.failures = 0
        row.last_failure_at = None
        row.blocked_until = None
    db.flush()
    return cleared

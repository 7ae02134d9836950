"""Per-source state in the database: the lease, the high-water mark, and the history of runs.

The lease makes one process at a time sync a source, however many ``idp serve`` processes (and CLI runs)
share the database:

    free ──take (UPDATE ... WHERE lease_until IS NULL OR lease_until < now)──▶ held by one owner
    held ──release (owner only)──▶ free          held ──lease_until passes──▶ free (a crashed holder)

Taking it is a conditional UPDATE whose row count says who won, as for back-channel deliveries. The apply
transaction checks the lease again, so that a holder that stalled past its lease cannot write over the
run of the process that took over.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from idp.db import rowcount, unit_of_work
from idp.models import DirectorySyncState

LEASE = timedelta(minutes=30)
"""Longest a run may hold a source; far above the benchmark's full run of 10,000 accounts."""


def new_owner() -> str:
    """An identity for the lease: host, process and a random part (process ids are reused)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def ensure_state(db: Session, source: str) -> None:
    insert = postgresql_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    db.execute(insert(DirectorySyncState).values(source=source, skipped={})
               .on_conflict_do_nothing(index_elements=["source"]))


def take_lease(sessions: sessionmaker[Session], source: str, owner: str, now: datetime) -> bool:
    with unit_of_work(sessions) as db:
        ensure_state(db, source)
        won = rowcount(db.execute(
            update(DirectorySyncState)
            .where(DirectorySyncState.source == source,
                   or_(DirectorySyncState.lease_until.is_(None), DirectorySyncState.lease_until < now))
            .values(lease_owner=owner, lease_until=now + LEASE)
        ))
    return won == 1


def holds_lease(db: Session, source: str, owner: str, now: datetime) -> bool:
    """Inside the apply transaction: still ours? (Locks the row until commit, so no one takes it meanwhile.)"""
    return rowcount(db.execute(
        update(DirectorySyncState)
        .where(DirectorySyncState.source == source, DirectorySyncState.lease_owner == owner,
               DirectorySyncState.lease_until >= now)
        .values(lease_until=now + LEASE)
    )) == 1


def release_lease(sessions: sessionmaker[Session], source: str, owner: str) -> None:
    with unit_of_work(sessions) as db:
        db.execute(update(DirectorySyncState)
                   .where(DirectorySyncState.source == source, DirectorySyncState.lease_owner == owner)
                   .values(lease_owner=None, lease_until=None))


def read_state(db: Session, source: str) -> DirectorySyncState | None:
    return db.get(DirectorySyncState, source)

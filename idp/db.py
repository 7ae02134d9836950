"""Database plumbing: the declarative base, the engine and one unit of work per request.

All state lives here so that several server processes can serve the same users. Invariants that must
hold across processes (single-use codes, refresh rotation, attempt counters) are enforced with atomic
``UPDATE ... WHERE`` statements or row locks inside the unit of work, never in process memory.

SQLite is the embedded default. Its transactions are started with ``BEGIN IMMEDIATE`` so that two writers
never both read a row and then fail to upgrade their lock; PostgreSQL runs at READ COMMITTED, where the
row lock taken by an ``UPDATE`` makes a concurrent ``UPDATE ... WHERE consumed_at IS NULL`` see the
committed value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, TypeDecorator, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no zone, so it is added back on load)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def rowcount(result: Any) -> int:
    """Rows changed by an UPDATE/DELETE: how an atomic ``UPDATE ... WHERE`` tells who won."""
    return int(result.rowcount)


def utcnow() -> datetime:
    return datetime.now(UTC)


CONNECT_TIMEOUT_SECONDS = 5

UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,  # connection refused or lost, server shutting down, lock or statement timeouts
    sa_exc.InterfaceError,  # the DBAPI connection was already closed
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no pooled connection became free in time
)
"""Errors that say "the database is not there right now", not "this request is wrong"."""


def log_background_failure(logger: logging.Logger, what: str, exc: Exception) -> None:
    """A background round (back-channel sender, purger, directory schedule) failed and will be tried again: one
    warning line while the database is away (every round of every process would fail alike), a stack trace for
    anything else."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        logger.warning("%s: the database is unavailable (%s); trying again later", what,
                       type(getattr(exc, "orig", None) or exc).__name__)
    else:
        logger.error("%s", what, exc_info=exc)


def create_db_engine(url: str, pool_size: int = 10) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        return engine
    # A database that does not answer must fail a request within seconds (503, see idp.web.outage), not hang it
    # for the operating system's TCP timeout of minutes.
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                         connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy issue BEGIN itself (pysqlite's implicit transactions defer the write lock).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Readers (see ``read_only``) take no write lock: in WAL mode they never wait for a writer.
        read_only = connection.get_execution_options().get("idp_read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


_HELD = "idp_held_rows"


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    factory = sessionmaker(engine, expire_on_commit=False)
    event.listen(factory, "loaded_as_persistent", _hold_until_transaction_ends)
    event.listen(factory, "after_commit", _let_go)
    event.listen(factory, "after_rollback", _let_go)
    return factory


def _hold_until_transaction_ends(session: Session, instance: object) -> None:
    # The identity map holds rows weakly: a row that one function read and dropped (the sign-in's client, an
    # attempt counter) is gone before the next ``db.get`` of the same transaction, which then reads it again.
    # Holding what a transaction loaded until it ends saves those round trips (a sign-in made about a fifth
    # of its queries twice); the rows are released at commit or rollback, as before.
    session.info.setdefault(_HELD, []).append(instance)


def _let_go(session: Session) -> None:
    session.info.pop(_HELD, None)


@contextmanager
def read_only(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reads only, which on SQLite takes no write lock (used by caches that refresh
    themselves while a request in the same process may hold the write lock)."""
    engine = factory.kw["bind"]
    session = factory(bind=engine.execution_options(idp_read_only=True))
    try:
        yield session
    finally:
        session.rollback()
        session.close()


@contextmanager
def unit_of_work(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends normally, rolled back when it raises.

    Protocol errors (an OAuth error response, a wrong password) are ordinary results, not exceptions
    that leave this block, so what they record (a consumed code, a failure count) is committed too.
    """
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()

"""Fixtures: every test that uses the app runs on SQLite and on PostgreSQL (``IDP_TEST_BACKENDS``).

Each backend gets one migrated database per test run (PostgreSQL: a database created for the run and
dropped after it); between tests every table but the signing keys is emptied, so tests never see each
other's rows while the slow RSA key generation happens once per run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, delete
from starlette.testclient import TestClient

from idp import migrate
from idp.app import create_app
from idp.config import Settings, load_settings
from idp.db import Base, create_db_engine, unit_of_work
from idp.models import SigningKey
from idp.oauth.keys import ensure_keys
from idp.services import Services, build_services
from idp.web import i18n

ISSUER = "https://idp.test"
PG_ADMIN_URL = os.environ.get("IDP_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = [b.strip() for b in os.environ.get("IDP_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]


class FakeClock:
    """A clock the test moves by hand; starts at the real time so JWT libraries agree with it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def _create_pg_database() -> tuple[str, str]:
    name = f"idp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return name, f"{base}/{name}"


def _drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Engine]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'idp.sqlite3'}"
        engine = create_db_engine(url)
        migrate.upgrade(engine)
        yield url, engine
        engine.dispose()
    elif request.param == "postgresql":
        name, url = _create_pg_database()
        engine = create_db_engine(url, pool_size=5)
        migrate.upgrade(engine)
        yield url, engine
        engine.dispose()
        _drop_pg_database(name)
    else:
        raise ValueError(f"unknown backend {request.param}")


def make_settings(data_dir: Path, database_url: str, **overrides: str) -> Settings:
    environ = {
        "IDP_ISSUER": ISSUER,
        "IDP_DATA_DIR": str(data_dir),
        "IDP_DATABASE_URL": database_url,
        "IDP_SECRET_KEY": "dGVzdC1zZWNyZXQta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMTIzNDU2Nzg5MA==",
        "IDP_KEYS_ENCRYPTION_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        # Cheap argon2 in tests; the production cost is measured by the benchmarks, not here.
        "IDP_PASSWORDS_ARGON2_TIME_COST": "1",
        "IDP_PASSWORDS_ARGON2_MEMORY_COST": "1024",
        # The protocol tests sign in with a password only; the second-factor tests set "required".
        "IDP_MFA_DEFAULT": "optional",
        **overrides,
    }
    return load_settings(environ=environ)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def english_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Most tests read the pages' English texts: they run with English as the fallback language (a browser
    that asks for nothing). tests/test_i18n.py checks the real default, German, with the ``german_default``
    fixture."""
    monkeypatch.setattr(i18n, "DEFAULT_LOCALE", "en")


@pytest.fixture
def german_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(i18n, "DEFAULT_LOCALE", "de")


@pytest.fixture
def settings(backend: tuple[str, Engine], tmp_path: Path) -> Settings:
    return make_settings(tmp_path, backend[0])


@pytest.fixture
def services(backend: tuple[str, Engine], settings: Settings, clock: FakeClock) -> Iterator[Services]:
    _, engine = backend
    services = build_services(settings, engine=engine)
    services.clock = clock
    with unit_of_work(services.sessions) as db:
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != SigningKey.__tablename__:
                db.execute(delete(table))
        ensure_keys(db, services.sealer, settings.keys.rsa_bits, clock())
    yield services


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    app = create_app(services=services)
    with TestClient(app, base_url=ISSUER, follow_redirects=False) as test_client:
        yield test_client

"""Health checks: ``/healthz`` (the process lives) and ``/readyz`` (database, migrations, signing keys)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, select, text, update
from starlette.testclient import TestClient

from idp.app import create_app
from idp.db import unit_of_work
from idp.models import SigningKey
from idp.services import Services, build_services
from idp.web import health
from tests.conftest import ISSUER, make_settings


def test_healthz_answers_ok_as_plain_text(client: TestClient) -> None:
    """/healthz answers 200 text/plain "ok" and is never cached."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "ok"
    assert response.headers["cache-control"] == "no-store"


def test_healthz_does_not_touch_the_database(services: Services, tmp_path: Path) -> None:
    """/healthz answers even when the database cannot be opened at all (a supervisor must not restart us)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings = make_settings(tmp_path, f"sqlite:///{blocker / 'idp.sqlite3'}")
    broken = build_services(settings, engine=create_engine(f"sqlite:///{blocker / 'idp.sqlite3'}"))
    with TestClient(create_app(services=broken), base_url=ISSUER) as browser:
        assert browser.get("/healthz").text == "ok"
        ready = browser.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["failed"] == "database"
    assert ready.headers["retry-after"] == "5"
    broken.engine.dispose()


def test_readyz_reports_every_check(client: TestClient) -> None:
    """/readyz answers 200 JSON with status "ready" when the database, schema and signing keys are fine."""
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ready",
                               "checks": {"database": "ok", "migrations": "ok", "signing_keys": "ok"}}


def test_readyz_fails_on_pending_migrations(services: Services, backend: tuple[str, Engine]) -> None:
    """/readyz answers 503 naming "migrations" when the schema is not the one this code expects."""
    _, engine = backend
    with engine.begin() as conn:
        versions = [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
        conn.execute(text("DELETE FROM alembic_version"))
    try:
        with TestClient(create_app(services=services), base_url=ISSUER) as browser:
            response = browser.get("/readyz")
    finally:
        with engine.begin() as conn:
            for version in versions:
                conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": version})
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failed"] == "migrations"
    assert body["checks"]["database"] == "ok"


def test_readyz_caches_the_migration_answer(services: Services, backend: tuple[str, Engine],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The migration check is asked once per cache period, not on every probe."""
    calls: list[object] = []
    real = health.migrate.is_current

    def counting(engine: Engine) -> bool:
        calls.append(engine)
        return real(engine)

    monkeypatch.setattr(health.migrate, "is_current", counting)
    readiness = health.Readiness(services, cache_seconds=60)
    assert readiness.check()[0] and readiness.check()[0]
    assert len(calls) == 1
    expired = health.Readiness(services, cache_seconds=0)
    assert expired.check()[0] and expired.check()[0]
    assert len(calls) == 3


def test_readyz_fails_when_signing_keys_do_not_open(services: Services, backend: tuple[str, Engine],
                                                     tmp_path: Path) -> None:
    """/readyz answers 503 naming "signing_keys" when the key-encryption key does not open the stored keys."""
    wrong = make_settings(tmp_path, backend[0],
                          IDP_KEYS_ENCRYPTION_KEY="ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=")
    other = build_services(wrong, engine=backend[1])
    with TestClient(create_app(services=other), base_url=ISSUER) as browser:
        response = browser.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == "signing_keys"
    assert response.json()["checks"]["migrations"] == "ok"


def test_readyz_fails_without_signing_keys(services: Services, backend: tuple[str, Engine]) -> None:
    """/readyz answers 503 naming "signing_keys" when no key is active; the probe creates none."""
    fresh = build_services(services.settings, engine=backend[1])
    with unit_of_work(fresh.sessions) as db:
        active = list(db.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))))
        for row in active:
            row.retired_at = fresh.now()
        kids = [row.kid for row in active]
    try:
        with TestClient(create_app(services=fresh), base_url=ISSUER) as browser:
            response = browser.get("/readyz")
        with unit_of_work(fresh.sessions) as db:
            assert db.scalar(select(SigningKey).where(SigningKey.retired_at.is_(None))) is None
    finally:
        with unit_of_work(fresh.sessions) as db:
            db.execute(update(SigningKey).where(SigningKey.kid.in_(kids)).values(retired_at=None))
    assert response.status_code == 503
    assert response.json()["failed"] == "signing_keys"

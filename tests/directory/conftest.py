"""Fixtures for the directory tests: one real slapd per test session (killed and restarted by the outage
tests), a fresh municipal directory subtree per test, and settings whose ``[[directory.sources]]`` point at it.

The ``settings`` fixture here replaces the suite's, so ``services`` and ``client`` from ``tests/conftest.py``
carry the directory source. The scheduler is off (``[directory] schedule = false``) except where a test turns
it on: a background run would race the test's own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from idp.config import Settings
from tests.conftest import make_settings
from tests.directory.slapd import Directory, Slapd


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    server = Slapd(tmp_path_factory.mktemp("slapd"))
    server.start()
    server.prepare()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def running_slapd(slapd: Slapd) -> Slapd:
    """The session's slapd, started again if an earlier test killed it."""
    if not slapd.running:
        slapd.process = None
        slapd.start()
    return slapd


@pytest.fixture
def source_overrides() -> dict[str, Any]:
    """Per-test changes to the source table (override this fixture, or use ``make_directory_settings``)."""
    return {}


@pytest.fixture
def directory(running_slapd: Slapd) -> Iterator[Directory]:
    built = Directory(running_slapd, "openldap").build()
    yield built
    built.close()


def directory_settings(tmp_path: Path, url: str, sources: list[dict[str, Any]], **env: str) -> Settings:
    return make_settings(tmp_path, url, IDP_DIRECTORY_SOURCES=json.dumps(sources, ensure_ascii=False),
                         IDP_DIRECTORY_SCHEDULE=env.pop("schedule", "false"), **env)


@pytest.fixture
def settings(backend: tuple[str, Engine], tmp_path: Path, directory: Directory,
             source_overrides: dict[str, Any]) -> Settings:
    return directory_settings(tmp_path, backend[0], [directory.source(**source_overrides)])

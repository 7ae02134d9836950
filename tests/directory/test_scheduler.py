"""Scheduled runs inside ``idp serve``: each source on its interval, full runs on their own interval, and one
process syncing at a time however many share the database (issue 4, §5)."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from sqlalchemy import Engine
from starlette.testclient import TestClient

from directory_sync.engine import SyncReport
from directory_sync.scheduler import run_due
from idp.app import create_app
from idp.config import DirectorySettings
from idp.services import Services, build_services
from tests.conftest import FakeClock
from tests.directory.slapd import Directory
from tests.directory.support import runs, source_of


def test_runs_when_due_and_fully_when_the_full_interval_passed(services: Services, directory: Directory,
                                                                clock: FakeClock) -> None:
    """First run full; within ``interval`` nothing; after it incremental; after ``full_interval`` full again."""
    source = source_of(services)
    first = run_due(services, source)
    assert first is not None and (first.mode, first.status) == ("full", "success")
    assert run_due(services, source) is None
    clock.advance(minutes=5)
    second = run_due(services, source)
    assert second is not None and second.mode == "incremental"
    clock.advance(hours=24)
    third = run_due(services, source)
    assert third is not None and third.mode == "full"
    assert [run.trigger for run in runs(services)] == ["schedule"] * 3


def test_several_processes_run_a_due_source_once(services: Services, directory: Directory,
                                                 backend: tuple[str, Engine], tmp_path: Path) -> None:
    """Four server processes (here: four service containers on one database) find the source due at once:
    one runs it, the others find it busy or already done."""
    others = [build_services(services.settings, engine=backend[1]) for _ in range(3)]
    for other in others:
        other.clock = services.clock
    start = threading.Barrier(4)
    reports: list[SyncReport | None] = []
    lock = threading.Lock()

    def process(container: Services) -> None:
        start.wait()
        report = run_due(container, source_of(container))
        with lock:
            reports.append(report)

    threads = [threading.Thread(target=process, args=(c,)) for c in [services, *others]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = sorted(report.status if report else "not due" for report in reports)
    assert statuses.count("success") == 1, statuses
    assert set(statuses) <= {"success", "busy", "skipped", "not due"}
    assert len(runs(services)) == 1


def test_serve_runs_the_sources_on_schedule(services: Services, directory: Directory) -> None:
    """With ``[directory] schedule`` on, the server's lifespan starts the loop, which syncs a due source."""
    services.settings = dataclasses.replace(
        services.settings, directory=DirectorySettings(sources=services.settings.directory.sources, schedule=True))
    app = create_app(services=services)
    with TestClient(app, base_url="https://idp.test"):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not runs(services):
            time.sleep(0.1)
    [run] = runs(services)
    assert (run.trigger, run.status, run.created) == ("schedule", "success", 13)


def test_scheduler_is_off_without_sources_or_when_disabled(services: Services, directory: Directory) -> None:
    """No sources, or ``schedule = false``: the server starts no sync loop at all."""
    app = create_app(services=services)
    with TestClient(app, base_url="https://idp.test"):
        time.sleep(0.3)
    assert runs(services) == []

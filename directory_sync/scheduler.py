"""Scheduled syncs inside ``idp serve``: each source on its ``interval``, a full run every ``full_interval``.

Every server process runs this loop; the lease in the database (``state``) lets one of them sync a source at
a time, and a process that wins the lease right after another finished skips the run (``unless_ran_within``),
so that N processes do not make N runs. The sync itself runs in a worker thread: ldap3 and the database
calls block, and the event loop must keep serving sign-ins meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from directory_sync.engine import SyncReport, run_sync
from directory_sync.state import read_state
from idp.config import DirectorySource
from idp.db import log_background_failure, read_only

log = logging.getLogger("idp.directory_sync")

TICK = timedelta(seconds=15)
"""How often the loop looks for due sources; a source's interval is honoured to within this."""


def due(services: Any, source: DirectorySource) -> tuple[bool, bool]:
    """Whether ``source`` is due for a run, and whether that run should be full."""
    with read_only(services.sessions) as db:
        state = read_state(db, source.name)
        last_run = state.last_run_at if state else None
        last_full = state.last_full_at if state else None
    now = services.now()
    if last_run is not None and now - last_run < source.interval:
        return False, False
    return True, last_full is None or now - last_full >= source.full_interval


def run_due(services: Any, source: DirectorySource) -> SyncReport | None:
    """Run ``source`` if it is due; returns the report, or None if nothing was due."""
    is_due, full = due(services, source)
    if not is_due:
        return None
    # Skip if another process finished a run within (most of) the interval while we waited for the lease.
    report = run_sync(services, source, full=full, trigger="schedule", unless_ran_within=source.interval * 0.9)
    if report.status in {"busy", "skipped"}:
        return report
    level = logging.INFO if report.status == "success" else logging.WARNING
    log.log(level, "directory sync %s (%s): %s, %d created, %d updated, %d disabled, %d enabled, %d deleted, "
            "%d errors, %.1f s%s", source.name, report.mode, report.status, report.created, report.updated,
            report.disabled, report.enabled, report.deleted, len(report.errors), report.duration,
            f": {report.message}" if report.message else "")
    return report


class DirectoryScheduler:
    """The background loop of one server process."""

    def __init__(self, services: Any, tick: timedelta = TICK, after_run: Callable[[], None] | None = None) -> None:
        """``after_run``: called on the event loop after a run (the app wakes its back-channel sender, so that
        the relying parties of disabled accounts hear of it at once rather than at the sender's next poll)."""
        self.services = services
        self.tick = tick
        self.after_run = after_run
        self._task: asyncio.Task[None] | None = None

    @property
    def sources(self) -> tuple[DirectorySource, ...]:
        directory = self.services.settings.directory
        return directory.sources if directory.schedule else ()

    def start(self) -> None:
        if self.sources and self._task is None:
            self._task = asyncio.create_task(self._run(), name="directory-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            for source in self.sources:
                try:
                    report = await asyncio.to_thread(run_due, self.services, source)
                except Exception as exc:  # a broken run must not stop the schedule of this or other sources
                    log_background_failure(log, f"scheduled directory sync of {source.name} failed", exc)
                    continue
                if report is not None and report.status == "success" and self.after_run is not None:
                    self.after_run()
            await asyncio.sleep(self.tick.total_seconds())

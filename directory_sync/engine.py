"""One sync run of one source, from start to end.

    take the lease ──▶ read the directory ──▶ open one transaction: plan ──▶ guard ──▶ apply ──▶ commit
          │ held elsewhere: "busy"      │ unreachable / error            │ refused: history only
          ▼                             ▼                                ▼
       nothing                    history "failed"                 history "refused"

The directory is read completely *before* the database transaction opens, so a directory that breaks off
mid-search (or a slapd killed mid-sync) leaves the database exactly as it was, and the embedded SQLite
database is not locked while the network is slow. Everything the run changes (accounts, groups, ended
sessions, revoked tokens, queued logout tokens, the high-water mark, the history row and the audit events)
commits together or not at all. ``--dry-run`` plans in a read-only session and writes nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from directory_sync import safety
from directory_sync.apply import apply_plan
from directory_sync.ldap import DirectoryClient, DirectoryError
from directory_sync.plan import REMOVED, Plan, build_plan
from directory_sync.presets import mapping_for
from directory_sync.snapshot import NoProgress, Progress, Snapshot, read_full, read_incremental
from directory_sync.state import holds_lease, new_owner, read_state, release_lease, take_lease
from idp import audit
from idp.config import DirectorySource
from idp.db import read_only, unit_of_work
from idp.models import DirectoryAccount, DirectoryGroup, DirectorySyncRun

log = logging.getLogger("idp.directory_sync")

MAX_STORED_ERRORS = 50


@dataclass
class SyncReport:
    """What a run did, for the CLI summary, the scheduler's log and the tests."""

    source: str
    mode: str
    status: str
    """``success``, ``refused``, ``failed``, ``busy`` (another process holds the source), ``skipped`` (synced
    recently by another process) or ``dry_run``."""
    dry_run: bool = False
    forced: bool = False
    server: str | None = None
    created: int = 0
    updated: int = 0
    disabled: int = 0
    enabled: int = 0
    deleted: int = 0
    unchanged: int = 0
    read: int = 0
    """Accounts read with every attribute (an incremental run reads only the changed ones)."""
    groups_changed: int = 0
    memberships_changed: int = 0
    sms_factors_changed: int = 0
    """Directory-managed SMS factors created, changed or removed (``sms_from_directory``)."""
    errors: list[str] = field(default_factory=list)
    duration: float = 0.0
    message: str | None = None
    plan: Plan | None = None
    run_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in {"success", "dry_run", "skipped"}


class LeaseLost(Exception):
    """The run held the source too long and another process took it over; this run writes nothing."""


def run_sync(services: Any, source: DirectorySource, *, full: bool = False, dry_run: bool = False,
             force: bool = False, trigger: str = "cli", progress: Progress | None = None,
             unless_ran_within: timedelta | None = None) -> SyncReport:
    """Run one sync of ``source``. Never raises for directory or guard problems: the report says what happened.

    ``unless_ran_within``: skip (status ``skipped``) if a run of this source finished that recently; checked
    after taking the lease, so that of several schedulers that found the source due, only the first runs it.
    """
    progress = progress or NoProgress()
    owner = new_owner()
    mode = "full" if full else "incremental"
    if not dry_run and not take_lease(services.sessions, source.name, owner, services.now()):
        return SyncReport(source.name, mode, "busy", message="another process is syncing this source right now")
    try:
        if unless_ran_within is not None:
            with read_only(services.sessions) as db:
                state = read_state(db, source.name)
                last = state.last_run_at if state else None
            if last is not None and services.now() - last < unless_ran_within:
                return SyncReport(source.name, mode, "skipped", message="synced recently by another process")
        return _run(services, source, owner, full=full, dry_run=dry_run, force=force, trigger=trigger,
                    progress=progress)
    finally:
        if not dry_run:
            release_lease(services.sessions, source.name, owner)


def _run(services: Any, source: DirectorySource, owner: str, *, full: bool, dry_run: bool, force: bool,
         trigger: str, progress: Progress) -> SyncReport:
    started = time.perf_counter()
    started_at = services.now()
    mapping = mapping_for(source)
    with read_only(services.sessions) as db:
        state = read_state(db, source.name)
        mark = state.high_water_mark if state else None
        mark_server = state.high_water_server if state else None
        incremental = (not full and mark is not None and mapping.marker_attribute is not None
                       and state is not None and state.config_fingerprint == mapping.fingerprint())
        known = _known_markers(db, source.name, state.skipped if state else None) if incremental else {}
        known_groups = _known_group_markers(db, source.name) if incremental else {}
    report = SyncReport(source.name, "incremental" if incremental else "full", "failed", dry_run=dry_run,
                        forced=force)
    try:
        with DirectoryClient(source, prefer=mark_server if incremental else None) as client:
            report.server = client.url
            if incremental and client.url != mark_server:
                # USNs count per domain controller: a mark from another server means nothing here.
                incremental = False
                report.mode = "full"
            snapshot = (read_incremental(client, mapping, mark or "", known, known_groups, progress) if incremental
                        else read_full(client, mapping, progress))
    except DirectoryError as exc:
        report.message = str(exc)
        return _finish_failed(services, report, started, started_at, trigger)

    try:
        if dry_run:
            with read_only(services.sessions) as db:
                plan = build_plan(db, source.name, source.retention, snapshot, services.now(),
                                  **_phone_options(services, source))
            verdict = safety.check(plan, source.max_disable_share)
            _fill(report, plan)
            report.status = "dry_run"
            report.message = None if verdict.allowed else f"the guard would refuse this run: {verdict.reason}"
            report.duration = time.perf_counter() - started
            return report
        with unit_of_work(services.sessions) as db:
            now = services.now()
            if not holds_lease(db, source.name, owner, now):
                raise LeaseLost("the lease on this source expired and another process took it over")
            plan = build_plan(db, source.name, source.retention, snapshot, now,
                              **_phone_options(services, source))
            _fill(report, plan)
            verdict = safety.check(plan, source.max_disable_share)
            if not verdict.allowed and not force:
                report.status = "refused"
                report.message = f"nothing was changed: {verdict.reason} (use --force after checking --dry-run)"
                report.duration = time.perf_counter() - started
                _store(db, report, started_at, now, trigger, verdict.details)
                _touch_state(db, source.name, now)
                return report
            if not verdict.allowed:
                report.message = f"forced past the safety guard: {verdict.reason}"
            apply_plan(db, services, plan, now=now, progress=progress)
            _refresh_statistics(db, plan)
            _advance_state(db, source.name, snapshot, plan, mapping.fingerprint(), now)
            report.status = "success"
            report.duration = time.perf_counter() - started
            _store(db, report, started_at, now, trigger, verdict.details)
        return report
    except Exception as exc:  # the transaction was rolled back: nothing of this run is in the database
        log.exception("directory sync of %s failed while writing", source.name)
        report.message = f"nothing was changed: {type(exc).__name__}: {str(exc)[:300]}"
        report.plan = None
        return _finish_failed(services, report, started, started_at, trigger)


def _phone_options(services: Any, source: DirectorySource) -> dict[str, Any]:
    return {"sms_from_directory": source.sms_from_directory, "sms_region": services.settings.sms.default_region}


def _known_markers(db: Session, source: str, skipped: dict[str, Any] | None) -> dict[str, str | None]:
    """The stored marker of every entry the last runs saw, by id: the source's accounts, and the entries seen but
    not mirrored (so that they are re-read only when they change)."""
    known: dict[str, str | None] = {external_id: entry[1] for external_id, entry in (skipped or {}).items()}
    rows = db.execute(select(DirectoryAccount.external_id, DirectoryAccount.marker, DirectoryAccount.disabled_reason)
                      .where(DirectoryAccount.source == source))
    for external_id, marker, reason in rows:
        # An account the directory did not list last time is re-read in full as soon as it is listed again.
        known[external_id] = None if reason == REMOVED else marker
    return known


def _known_group_markers(db: Session, source: str) -> dict[str, str | None]:
    rows = db.execute(select(DirectoryGroup.external_id, DirectoryGroup.marker)
                      .where(DirectoryGroup.source == source))
    return {external_id: marker for external_id, marker in rows}


def _fill(report: SyncReport, plan: Plan) -> None:
    report.plan = plan
    report.mode = plan.mode
    report.created = len(plan.creates)
    report.updated = len(plan.updates)
    report.disabled = len(plan.disables)
    report.enabled = len(plan.enables)
    report.deleted = len(plan.deletes)
    report.unchanged = plan.unchanged
    report.read = plan.read
    report.groups_changed = plan.groups_changed
    report.memberships_changed = plan.memberships_changed
    report.sms_factors_changed = plan.sms_changed
    report.errors = list(plan.errors)


BULK_CHANGE = 1000
"""Rows a run must change before it refreshes PostgreSQL's planner statistics itself."""


def _refresh_statistics(db: Session, plan: Plan) -> None:
    """After a bulk change (a first sync creates thousands of rows), ANALYZE the tables the next runs query.

    Autovacuum would do it within minutes, but a run in between would be planned on "the table is empty"
    statistics. ANALYZE takes no lock that blocks reads or writes; without the right to run it, PostgreSQL
    skips the table with a warning.
    """
    if db.get_bind().dialect.name != "postgresql":
        return
    if len(plan.creates) + len(plan.deletes) + plan.memberships_changed + plan.groups_changed < BULK_CHANGE:
        return
    db.execute(text("ANALYZE users, directory_accounts, directory_groups, groups, group_members"))


def _touch_state(db: Session, source: str, now: datetime) -> None:
    state = read_state(db, source)
    if state is not None:
        state.last_run_at = now


def _advance_state(db: Session, source: str, snapshot: Snapshot, plan: Plan, fingerprint: str,
                   now: datetime) -> None:
    state = read_state(db, source)
    assert state is not None, "the lease row exists while the run holds the lease"
    if state.skipped != plan.skipped:
        state.skipped = plan.skipped
    if snapshot.high_water_mark is not None:
        state.high_water_mark = snapshot.high_water_mark
        state.high_water_server = snapshot.server
    state.config_fingerprint = fingerprint
    state.last_run_at = now
    if snapshot.mode == "full":
        state.last_full_at = now


def _store(db: Session, report: SyncReport, started_at: datetime, now: datetime, trigger: str,
           guard: dict[str, Any]) -> None:
    run = DirectorySyncRun(
        source=report.source, mode=report.mode, trigger=trigger, forced=report.forced, status=report.status,
        started_at=started_at, finished_at=now, duration_ms=int(report.duration * 1000), server=report.server,
        created=report.created, updated=report.updated, disabled=report.disabled, enabled=report.enabled,
        deleted=report.deleted, unchanged=report.unchanged, errors=len(report.errors),
        groups_changed=report.groups_changed, memberships_changed=report.memberships_changed,
        message=report.message, details={"errors": report.errors[:MAX_STORED_ERRORS], "guard": guard},
    )
    db.add(run)
    db.flush()
    report.run_id = run.id
    audit.record(
        db, "directory.sync", outcome="success" if report.status == "success" else "failure", source=report.source,
        mode=report.mode, status=report.status, trigger=trigger, forced=report.forced, created=report.created,
        updated=report.updated, disabled=report.disabled, enabled=report.enabled, deleted=report.deleted,
        sms_factors_changed=report.sms_factors_changed, errors=len(report.errors), message=report.message, at=now,
    )


def _finish_failed(services: Any, report: SyncReport, started: float, started_at: datetime,
                   trigger: str) -> SyncReport:
    report.status = "failed"
    report.duration = time.perf_counter() - started
    for name in ("created", "updated", "disabled", "enabled", "deleted", "unchanged", "groups_changed",
                 "memberships_changed", "sms_factors_changed"):
        setattr(report, name, 0)
    if report.dry_run:
        return report
    with unit_of_work(services.sessions) as db:
        now = services.now()
        _store(db, report, started_at, now, trigger, {})
        _touch_state(db, report.source, now)
    return report

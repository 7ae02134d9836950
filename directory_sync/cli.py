"""``idp sync ldap``: run the sources now, with a progress bar, the dry-run difference and a summary.

Exit status: 0 when every selected source synced (or a dry run could be computed), 1 when a source failed
(unreachable, directory error) or another process was syncing it, 3 when the safety guard refused a run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from sqlalchemy import select

from directory_sync.engine import SyncReport, run_sync
from directory_sync.plan import REMOVED, Plan
from idp.db import read_only
from idp.factors.sms import masked
from idp.models import DirectorySyncRun

EXIT_FAILED = 1
EXIT_REFUSED = 3


class ProgressBar:
    """A one-line progress display on a terminal, drawn only once a run has taken longer than half a second."""

    WIDTH = 30

    def __init__(self, stream: TextIO, enabled: bool, delay: float = 0.5) -> None:
        self.stream = stream
        self.enabled = enabled
        self.started = time.monotonic()
        self.delay = delay
        self.name = ""
        self.total: int | None = None
        self.count = 0
        self._drawn_at = 0.0
        self._drawn = False

    def phase(self, name: str, total: int | None = None) -> None:
        self.name, self.total, self.count = name, total, 0
        self._draw(force=True)

    def advance(self, count: int = 1) -> None:
        self.count += count
        self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.started < self.delay or (not force and now - self._drawn_at < 0.1):
            return
        self._drawn_at = now
        if self.total:
            done = min(self.count / self.total, 1.0)
            filled = int(done * self.WIDTH)
            line = f"{self.name:<34} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done:4.0%}"
        else:
            line = f"{self.name:<34} {self.count:>8}"
        self.stream.write("\r" + line.ljust(79))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r" + " " * 79 + "\r")
            self.stream.flush()


def describe_plan(plan: Plan) -> list[str]:
    """The difference a run would apply, one line per change (``--dry-run``)."""
    lines = []
    for entry in sorted(plan.creates, key=lambda e: e.username):
        who = " ".join(part for part in (entry.display_name, f"<{entry.email}>" if entry.email else None) if part)
        lines.append(f"+ create   {entry.username}  {who}".rstrip())
    for update in sorted(plan.updates, key=lambda u: u.account.username):
        changes = "; ".join(f"{name}: {old or '-'} -> {new or '-'}" for name, (old, new) in update.changes.items())
        lines.append(f"~ update   {update.account.username}  {changes}")
    for account in sorted(plan.enables, key=lambda a: a.username):
        lines.append(f"+ enable   {account.username}")
    for disable in sorted(plan.disables, key=lambda d: d.account.username):
        why = "removed from the directory" if disable.reason == REMOVED else "disabled in the directory"
        lines.append(f"- disable  {disable.account.username}  ({why})")
    for account in sorted(plan.deletes, key=lambda a: a.username):
        since = account.disabled_at.date().isoformat() if account.disabled_at else "?"
        lines.append(f"x delete   {account.username}  (disabled since {since}, retention over)")
    for account in plan.releases:
        lines.append(f"> release  {account.username}  (no longer in the directory; its username is taken over)")
    for group in sorted(plan.group_creates, key=lambda g: g.name):
        lines.append(f"+ group    {group.name}")
    for state, name in plan.group_renames:
        lines.append(f"~ group    {state.name} -> {name}")
    for state in plan.group_deletes:
        lines.append(f"- group    {state.name}")
    for state in plan.group_empties:
        lines.append(f"- group    {state.name}  (emptied, kept: a role is granted to it)")
    for sign, pairs in (("+", plan.member_adds), ("-", plan.member_removes)):
        for group_name, username in sorted((plan.group_names.get(g, g), plan.user_names.get(u, u)) for g, u in pairs):
            lines.append(f"{sign} member   {group_name}: {username}")
    for change in sorted(plan.sms_creates, key=lambda c: c.username):
        lines.append(f"+ sms      {change.username}  {masked(change.phone or '')}")
    for change in sorted(plan.sms_updates, key=lambda c: c.username):
        lines.append(f"~ sms      {change.username}  {masked(change.previous or '')} -> {masked(change.phone or '')}")
    for change in sorted(plan.sms_removes, key=lambda c: c.username):
        lines.append(f"- sms      {change.username}  {masked(change.previous or '')}  ({change.reason})")
    return lines


def summary(report: SyncReport) -> str:
    where = f", {report.server}" if report.server else ""
    counts = (f"{report.created} created, {report.updated} updated, {report.disabled} disabled, "
              f"{report.enabled} enabled, {report.deleted} deleted, {report.unchanged} unchanged, "
              f"{len(report.errors)} errors; groups {report.groups_changed} changed, memberships "
              f"{report.memberships_changed} changed"
              + (f"; SMS factors {report.sms_factors_changed} changed" if report.sms_factors_changed else "")
              + f"; {report.duration:.2f} s")
    label = {"dry_run": "dry run, nothing written", "success": "done"}.get(report.status, report.status.upper())
    return f"{report.source} ({report.mode}{where}): {label}: {counts}"


def as_json(report: SyncReport) -> dict[str, Any]:
    return {
        "source": report.source, "mode": report.mode, "status": report.status, "forced": report.forced,
        "server": report.server, "created": report.created, "updated": report.updated, "disabled": report.disabled,
        "enabled": report.enabled, "deleted": report.deleted, "unchanged": report.unchanged, "read": report.read,
        "groups_changed": report.groups_changed, "memberships_changed": report.memberships_changed,
        "sms_factors_changed": report.sms_factors_changed, "errors": report.errors,
        "duration": round(report.duration, 3), "message": report.message,
        "changes": describe_plan(report.plan) if report.dry_run and report.plan else None,
    }


def sync_ldap(services: Any, *, source: str | None, full: bool, dry_run: bool, force: bool, json_output: bool,
              out: Callable[[str], None] = print, err: TextIO | None = None) -> int:
    err = err or sys.stderr
    sources = services.settings.directory.sources
    if not sources:
        print("idp: no directory source is configured ([[directory.sources]])", file=err)
        return EXIT_FAILED
    selected = [s for s in sources if source is None or s.name == source]
    if not selected:
        print(f"idp: no directory source named {source!r} (configured: {', '.join(s.name for s in sources)})",
              file=err)
        return EXIT_FAILED
    status = 0
    results = []
    for item in selected:
        bar = ProgressBar(err, enabled=err.isatty() and not json_output)
        try:
            report = run_sync(services, item, full=full, dry_run=dry_run, force=force, trigger="cli", progress=bar)
        finally:
            bar.close()
        results.append(as_json(report))
        if not json_output:
            if report.dry_run and report.plan is not None:
                for line in describe_plan(report.plan):
                    out(line)
            out(summary(report))
            for error in report.errors[:20]:
                out(f"  error: {error}")
            if len(report.errors) > 20:
                out(f"  ... and {len(report.errors) - 20} more errors (see the sync history)")
            if report.message:
                print(f"idp: {report.source}: {report.message}", file=err)
        if report.status == "refused":
            status = max(status, EXIT_REFUSED)
        elif not report.ok:
            status = max(status, EXIT_FAILED)
    if json_output:
        out(json.dumps(results if len(results) > 1 else results[0], ensure_ascii=False))
    return status


def history(services: Any, *, source: str | None, limit: int, json_output: bool,
            out: Callable[[str], None] = print) -> int:
    """``idp sync history``: the latest runs, newest first (what the scheduler did, and why a run changed nothing)."""
    with read_only(services.sessions) as db:
        query = select(DirectorySyncRun).order_by(DirectorySyncRun.id.desc()).limit(limit)
        if source is not None:
            query = query.where(DirectorySyncRun.source == source)
        rows: list[dict[str, Any]] = [
            {"source": run.source, "started_at": run.started_at.isoformat(), "mode": run.mode, "trigger": run.trigger,
             "status": run.status, "forced": run.forced, "created": run.created, "updated": run.updated,
             "disabled": run.disabled, "enabled": run.enabled, "deleted": run.deleted, "unchanged": run.unchanged,
             "errors": run.errors, "duration_ms": run.duration_ms, "message": run.message}
            for run in db.scalars(query)
        ]
    if json_output:
        out(json.dumps(rows, ensure_ascii=False))
        return 0
    for row in rows:
        out(f"{row['started_at'][:19]}  {row['source']:<12} {row['mode']:<11} {row['trigger']:<8} "
            f"{row['status']:<8} +{row['created']} ~{row['updated']} -{row['disabled']} "
            f"e{row['enabled']} x{row['deleted']} !{row['errors']}  {row['duration_ms']} ms"
            + (f"  {row['message']}" if row["message"] else ""))
    return 0

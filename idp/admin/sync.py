"""``/admin/sync``: the directory sources, the history of sync runs, and "sync now" for administrators.

"Sync now" never runs inside the request: the form's transaction only checks and audits the request
(``directory.sync_requested``); the run starts after the response, in a worker thread
(``directory_sync.engine.run_sync``, the same function the scheduler and ``idp sync ldap`` use), so the event
loop keeps serving sign-ins while ldap3 and the database work. The database lease of each source still lets
only one run at a time: if the scheduler or another process is syncing that source, this run ends as
``busy`` without touching anything. Its outcome appears in the history like any other run (trigger
``console``).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import func, select
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from directory_sync.engine import run_sync
from idp import audit
from idp.admin import access, listing
from idp.admin.access import Console
from idp.admin.roles import Action
from idp.config import DirectorySource
from idp.models import DirectorySyncRun, DirectorySyncState
from idp.oauth.requests import RequestScope
from idp.web.context import AppContext
from idp.web.i18n import N_

log = logging.getLogger("idp.directory_sync")

TRIGGER = "console"


def _list(ctx: AppContext, scope: RequestScope, request: Request, console: Console) -> Response:
    query = listing.query_of(request)
    sources = ctx.services.settings.directory.sources
    states = {row.source: row for row in scope.db.scalars(select(DirectorySyncState))}
    running = {name for name, row in states.items() if row.lease_until is not None and row.lease_until > scope.now}
    total = scope.db.scalar(select(func.count()).select_from(DirectorySyncRun)) or 0
    page = listing.paging(listing.requested_page(query.get("page")), total)
    runs = scope.db.scalars(select(DirectorySyncRun).order_by(DirectorySyncRun.started_at.desc(),
                                                              DirectorySyncRun.id.desc())
                            .offset(page.offset).limit(page.size)).all()
    return access.render(ctx, console, "admin/sync.html", section="sync", sources=sources, states=states,
                         running=running, runs=runs, page=page, page_query="", may_run=console.can(Action.RUN_SYNC),
                         schedule=ctx.services.settings.directory.schedule,
                         requested=query.get("done") == "requested")


async def sync_page(request: Request) -> Response:
    return await access.page(request, Action.VIEW_SYNC, _list)


async def _run_in_background(ctx: AppContext, sources: tuple[DirectorySource, ...]) -> None:
    """After the response: each source in a worker thread, one after the other, through the source's lease."""
    changed = False
    for source in sources:
        try:
            report = await asyncio.to_thread(run_sync, ctx.services, source, trigger=TRIGGER)
        except Exception:  # the run reports directory and guard problems itself; anything else is logged
            log.exception("directory sync of %s asked for in the console failed", source.name)
            continue
        log.info("directory sync of %s asked for in the console: %s%s", source.name, report.status,
                 f": {report.message}" if report.message else "")
        changed = changed or report.status == "success"
    if changed:
        ctx.sender.wake()  # disabled accounts' relying parties hear of it now


def _request(ctx: AppContext, scope: RequestScope, request: Request, console: Console, fields: dict[str, str]
             ) -> Response:
    configured = ctx.services.settings.directory.sources
    if not configured:
        return ctx.pages.error(409, N_("No directory is configured"),
                               N_("Directory sync needs a source in [[directory.sources]] of the configuration."))
    name = fields.get("source", "")
    selected = tuple(source for source in configured if not name or source.name == name)
    if not selected:
        return access.not_found(ctx)
    audit.record(scope.db, "directory.sync_requested", origin=scope.origin, actor=console.actor,
                 sources=[source.name for source in selected], at=scope.now)
    return RedirectResponse("/admin/sync?done=requested", status_code=303,
                            background=BackgroundTask(_run_in_background, ctx, selected))


async def request_sync(request: Request) -> Response:
    return await access.form(request, Action.RUN_SYNC, _request, return_to="/admin/sync")


routes = [
    Route("/admin/sync", sync_page, methods=["GET"]),
    Route("/admin/sync/run", request_sync, methods=["POST"]),
]

"""``/admin/audit``: the audit trail with filters and paging, and the same rows as CSV (``/admin/audit.csv``).

Filters (query parameters, all optional): ``event`` (a name, or a prefix such as ``user`` for every
``user.*``), ``who`` (actor or subject: a username or a ``sub``), ``client`` (a ``client_id``), ``outcome``
(``success``, ``failure``), ``from`` and ``to`` (days ``YYYY-MM-DD`` in the console's time zone, both
inclusive). A filter that cannot be read is named on the page (400) and nothing is guessed.

The export is bounded (the newest ``MAX_EXPORT`` rows that match; the page says so when there are more) and
is itself audited (``audit.exported``). Cells that a spreadsheet would read as a formula (starting with
``= + - @``, tab or carriage return) are prefixed with ``'`` (OWASP "CSV injection"): usernames, user agents
and client names come from outside.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from idp import audit
from idp.accounts.users import find_user
from idp.admin import access, listing
from idp.admin.access import Console
from idp.admin.roles import Action
from idp.models import AuditEvent, User
from idp.oauth.requests import RequestScope
from idp.web.context import AppContext
from idp.web.i18n import N_

MAX_EXPORT = 10_000
OUTCOMES = ("success", "failure")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = ("at", "event", "outcome", "actor", "actor_username", "subject", "client_id", "ip", "user_agent",
               "details")


@dataclass(frozen=True)
class AuditFilter:
    event: str = ""
    who: str = ""
    client: str = ""
    outcome: str = ""
    since: datetime | None = None
    until: datetime | None = None
    form: dict[str, str] = field(default_factory=dict)
    """The values as typed, for the form and the links to other pages and to the export."""


def parse_filter(query: dict[str, str], timezone: str) -> tuple[AuditFilter, list[str]]:
    """The filter of a query string, and the names of the fields that could not be read (then left out)."""
    form = {name: query.get(name, "").strip()[:255] for name in ("event", "who", "client", "outcome", "from", "to")}
    bad: list[str] = []
    days = {}
    for name in ("from", "to"):
        try:
            days[name] = listing.parse_day(form[name], name)
        except listing.BadFilter:
            bad.append(name)
            days[name] = None
    since, until = listing.day_range(days["from"], days["to"], timezone)
    outcome = form["outcome"]
    if outcome and outcome not in OUTCOMES:
        bad.append("outcome")
        outcome = ""
    return AuditFilter(event=form["event"][:64], who=form["who"], client=form["client"][:64], outcome=outcome,
                       since=since, until=until, form={k: v for k, v in form.items() if v}), bad


def _query(db: Session, wanted: AuditFilter) -> Select[Any]:
    query = select(AuditEvent)
    if wanted.event:
        query = query.where(or_(AuditEvent.event == wanted.event,
                                AuditEvent.event.startswith(wanted.event + ".", autoescape=True)))
    if wanted.who:
        names = {wanted.who}
        user = find_user(db, wanted.who)
        if user is not None:
            names |= {user.sub, user.username}  # the trail names actors by sub and subjects by username
        query = query.where(or_(AuditEvent.actor.in_(names), AuditEvent.subject.in_(names)))
    if wanted.client:
        query = query.where(AuditEvent.client_id == wanted.client)
    if wanted.outcome:
        query = query.where(AuditEvent.outcome == wanted.outcome)
    if wanted.since is not None:
        query = query.where(AuditEvent.at >= wanted.since)
    if wanted.until is not None:
        query = query.where(AuditEvent.at < wanted.until)
    return query


def count_events(db: Session, wanted: AuditFilter) -> int:
    return db.scalar(select(func.count()).select_from(_query(db, wanted).subquery())) or 0


def events(db: Session, wanted: AuditFilter, *, offset: int, limit: int) -> list[AuditEvent]:
    """Matching rows, newest first."""
    return list(db.scalars(_query(db, wanted).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
                           .offset(offset).limit(limit)))


def usernames_of(db: Session, rows: list[AuditEvent]) -> dict[str, str]:
    """The usernames of the rows' actors (the trail stores a ``sub``), for people to read."""
    subs = {row.actor for row in rows if row.actor}
    if not subs:
        return {}
    return {sub: username for sub, username in db.execute(select(User.sub, User.username).where(User.sub.in_(subs)))}


def safe_cell(value: object) -> str:
    """A CSV cell that no spreadsheet runs as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_text(rows: list[AuditEvent], names: dict[str, str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([safe_cell(value) for value in (
            row.at.isoformat(), row.event, row.outcome, row.actor, names.get(row.actor or "", ""), row.subject,
            row.client_id, row.ip, row.user_agent, json.dumps(row.details, ensure_ascii=False, sort_keys=True,
                                                              default=str))])
    return out.getvalue()


def _bad_filter_page(ctx: AppContext, bad: list[str]) -> Response:
    return ctx.pages.error(400, N_("The filter could not be read"),
                           N_("Check these fields: {fields}.", fields=", ".join(bad)))


def _list(ctx: AppContext, scope: RequestScope, request: Request, console: Console) -> Response:
    query = listing.query_of(request)
    wanted, bad = parse_filter(query, console.timezone)
    total = count_events(scope.db, wanted)
    page = listing.paging(listing.requested_page(query.get("page")), total)
    rows = events(scope.db, wanted, offset=page.offset, limit=page.size)
    return access.render(ctx, console, "admin/audit.html", section="audit", status=400 if bad else 200,
                         rows=rows, names=usernames_of(scope.db, rows), page=page, form=wanted.form, bad=bad,
                         outcomes=OUTCOMES, page_query=urlencode(wanted.form), max_export=MAX_EXPORT,
                         details_text=_details_text)


def _details_text(details: dict[str, Any]) -> str:
    return json.dumps(details, ensure_ascii=False, sort_keys=True, default=str)


async def audit_page(request: Request) -> Response:
    return await access.page(request, Action.VIEW_AUDIT, _list)


def _export(ctx: AppContext, scope: RequestScope, request: Request, console: Console) -> Response:
    wanted, bad = parse_filter(listing.query_of(request), console.timezone)
    if bad:
        return _bad_filter_page(ctx, bad)
    rows = events(scope.db, wanted, offset=0, limit=MAX_EXPORT + 1)
    truncated = len(rows) > MAX_EXPORT
    rows = rows[:MAX_EXPORT]
    audit.record(scope.db, "audit.exported", origin=scope.origin, actor=console.actor, filters=wanted.form,
                 rows=len(rows), truncated=truncated, at=scope.now)
    # A byte-order mark, so that spreadsheet programs read the file as UTF-8 (umlauts in names).
    body = "\ufeff" + csv_text(rows, usernames_of(scope.db, rows))
    stamp = scope.now.strftime("%Y%m%d-%H%M%S")
    return Response(body, media_type="text/csv; charset=utf-8", headers={
        "content-disposition": f'attachment; filename="audit-{stamp}.csv"', "cache-control": "no-store",
        "x-content-type-options": "nosniff", "x-audit-rows-truncated": "true" if truncated else "false"})


async def audit_export(request: Request) -> Response:
    return await access.page(request, Action.VIEW_AUDIT, _export)


routes = [
    Route("/admin/audit", audit_page, methods=["GET"]),
    Route("/admin/audit.csv", audit_export, methods=["GET"]),
]

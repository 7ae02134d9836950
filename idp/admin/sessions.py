"""``/admin/sessions``: every active sign-in session, newest activity first, and ending one.

Ending a session is a service-desk action (``Action.MANAGE_USERS``) under the same limit as on the user's
page: an administrator's session is ended by an administrator only (``users.may_act_on``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from idp.accounts import users as accounts
from idp.admin import access, listing
from idp.admin.access import Console
from idp.admin.role_grants import active_admins
from idp.admin.roles import ADMIN, Action
from idp.admin.users import may_act_on
from idp.login.second_factor import METHOD_LABELS
from idp.models import SsoSession
from idp.oauth.requests import RequestScope
from idp.web.context import AppContext, context_of
from idp.web.i18n import N_

METHOD_NAMES = {"password": N_("Password"), "passkey": N_("Passkey"), **METHOD_LABELS,
                "trusted_device": N_("Trusted browser")}
"""What a session's stored methods are called on the page."""


def _active(now: datetime) -> ColumnElement[bool]:
    return and_(SsoSession.ended_at.is_(None), SsoSession.expires_at > now)


def _list(ctx: AppContext, scope: RequestScope, request: Request, console: Console) -> Response:
    query = listing.query_of(request)
    total = scope.db.scalar(select(func.count()).select_from(SsoSession).where(_active(scope.now))) or 0
    page = listing.paging(listing.requested_page(query.get("page")), total)
    rows = scope.db.scalars(select(SsoSession).where(_active(scope.now))
                            .order_by(SsoSession.last_active_at.desc(), SsoSession.id.desc())
                            .offset(page.offset).limit(page.size)).all()
    # The end button only where the form would be accepted (an administrator's session: administrators only).
    admins = set() if ADMIN in console.roles else active_admins(scope.db)
    may_manage = console.can(Action.MANAGE_USERS)
    return access.render(ctx, console, "admin/sessions.html", section="sessions", sessions=rows, page=page,
                         page_query="", may_manage=may_manage,
                         actable={row.id for row in rows if may_manage and row.user_id not in admins},
                         ended=query.get("done") == "ended", method_labels=METHOD_NAMES)


async def session_list(request: Request) -> Response:
    return await access.page(request, Action.VIEW_SESSIONS, _list)


def _end(ctx: AppContext, scope: RequestScope, request: Request, console: Console, fields: dict[str, str]
         ) -> Response:
    session_id = access.row_id(request.path_params["session_id"])
    row = scope.db.get(SsoSession, session_id) if session_id is not None else None
    if row is None or row.ended_at is not None:
        return access.not_found(ctx)
    if not may_act_on(console.roles, accounts.roles_of(scope.db, row.user)):
        return access.forbidden(ctx)
    accounts.end_sessions(scope.db, ctx.services, row.user, now=scope.now, origin=scope.origin, actor=console.actor,
                          session_id=row.id)
    return RedirectResponse("/admin/sessions?done=ended", status_code=303)


async def end_session(request: Request) -> Response:
    response = await access.form(request, Action.MANAGE_USERS, _end, return_to="/admin/sessions")
    context_of(request).sender.wake()
    return response


routes = [
    Route("/admin/sessions", session_list, methods=["GET"]),
    Route("/admin/sessions/{session_id}/end", end_session, methods=["POST"]),
]

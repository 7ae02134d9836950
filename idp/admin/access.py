"""What every ``/admin`` request checks first, on the server:

    request ──► ACTIVE session with a second factor proved in it? ── no ──► sign-in (password + second factor,
                     │ yes                                                 enrollment first if there is none),
                     │                                                     then back here
                     ├─ no console role ─────────────────────────────► 403 page
                     ├─ the page's action not allowed to these roles ──► 403 page
                     └─ POST: CSRF token bound to this session? ── no ─► 403 page

A browser trusted for the workday never counts as the second factor here (``mfa.console_requirement``).
Pages that act on one row (a client, a user) check that row themselves with ``roles.can_manage_client`` and
answer a row the user may not see exactly like one that does not exist (404), so ids cannot be probed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from idp.accounts import sessions
from idp.accounts.users import roles_of
from idp.admin.roles import ROLES, Action, can
from idp.login import mfa
from idp.login.routes import begin_internal_sign_in
from idp.login.transactions import current_session
from idp.models import SsoSession, User
from idp.oauth.requests import RequestScope
from idp.web import cookies, csrf, i18n
from idp.web.context import AppContext, MalformedRequest, context_of, read_fields, row_id
from idp.web.errors import csrf_refused, not_found

__all__ = ["Console", "console_user", "csrf_ok", "forbidden", "form", "not_found", "page", "render", "row_id"]
from idp.web.i18n import N_

CSRF_PURPOSE = "admin"


@dataclass(frozen=True)
class Console:
    """The signed-in user of a console page, their console roles and the session they use."""

    session: SsoSession
    user: User
    roles: frozenset[str]
    binding: str
    """What this session's CSRF tokens are bound to."""
    csrf_key: bytes = field(repr=False)
    timezone: str = "Europe/Berlin"

    def can(self, action: Action) -> bool:
        return can(self.roles, action)

    @property
    def actor(self) -> str:
        """The audit trail's ``actor``: the user's ``sub``."""
        return self.user.sub

    @property
    def csrf_token(self) -> str:
        return csrf.make_token(self.csrf_key, CSRF_PURPOSE, self.binding)

    def when(self, value: datetime | None) -> str:
        return i18n.format_when(value, self.timezone)


def _binding(ctx: AppContext, request: Request) -> str:
    value = request.cookies.get(cookies.cookie_name(ctx.services.settings, cookies.SESSION), "")
    return "session:" + ctx.services.hasher.hash(value)


def console_user(ctx: AppContext, scope: RequestScope, request: Request, *, return_to: str) -> Console | Response:
    """The console user of this browser's session; else the redirect through sign-in (with a second factor) back
    to ``return_to``, or a 403 page for a user without a console role."""
    current = current_session(ctx, scope, request)
    if current is None or current.state is not sessions.SessionState.ACTIVE:
        return begin_internal_sign_in(ctx, scope, request, return_to=return_to, fresh=False, second_factor=True)
    user = current.row.user
    need = mfa.console_requirement(mfa.requirement_for(ctx.services, user, None, None, scope.now))
    if mfa.second_factor_needed(scope.db, current.row, need, skipped=False, now=scope.now) is not None:
        return begin_internal_sign_in(ctx, scope, request, return_to=return_to, fresh=False, second_factor=True)
    roles = frozenset(roles_of(scope.db, user) & set(ROLES))
    if not roles or not user.is_active:
        return forbidden(ctx)
    sessions.touch(current.row, scope.now)
    return Console(session=current.row, user=user, roles=roles, binding=_binding(ctx, request),
                   csrf_key=ctx.services.csrf_key, timezone=ctx.services.settings.timezone)


PageBody = Callable[[AppContext, RequestScope, Request, Console], Response]
FormBody = Callable[[AppContext, RequestScope, Request, Console, dict[str, str]], Response]


async def page(request: Request, action: Action | None, body: PageBody) -> Response:
    """A GET of a console page: the console user checked (and ``action`` allowed, when given), then ``body`` in
    one transaction."""
    ctx = context_of(request)

    def work(scope: RequestScope) -> Response:
        console = console_user(ctx, scope, request, return_to=_return_to(request))
        if isinstance(console, Response):
            return console
        if action is not None and not console.can(action):
            return forbidden(ctx)
        return body(ctx, scope, request, console)

    return await ctx.transaction(ctx.origin(request), work)


async def form(request: Request, action: Action | None, body: FormBody, *, return_to: str | None = None) -> Response:
    """A POST of a console form: the form read, the console user, ``action`` and the CSRF token checked, then
    ``body`` in one transaction (a signed-out browser goes through sign-in and back to ``return_to``, the page
    the form was on: a POST cannot be replayed after a redirect)."""
    ctx = context_of(request)
    try:
        fields = await read_fields(request)
    except MalformedRequest as exc:
        return ctx.pages.error(400, N_("The form could not be read"), str(exc))

    def work(scope: RequestScope) -> Response:
        console = console_user(ctx, scope, request, return_to=return_to or "/admin")
        if isinstance(console, Response):
            return console
        if not csrf_ok(console, fields.get("csrf_token")):
            return csrf_refused(ctx)
        if action is not None and not console.can(action):
            return forbidden(ctx)
        return body(ctx, scope, request, console, fields)

    return await ctx.transaction(ctx.origin(request), work)


@dataclass(frozen=True)
class NavItem:
    id: str
    href: str
    label: i18n.Text
    action: Action | None


NAVIGATION = (
    NavItem("dashboard", "/admin", N_("Overview"), Action.VIEW_DASHBOARD),
    NavItem("clients", "/admin/clients", N_("Applications"), None),
    NavItem("users", "/admin/users", N_("Users"), Action.VIEW_USERS),
    NavItem("groups", "/admin/groups", N_("Groups and roles"), Action.VIEW_GROUPS),
    NavItem("sessions", "/admin/sessions", N_("Sessions"), Action.VIEW_SESSIONS),
    NavItem("audit", "/admin/audit", N_("Audit log"), Action.VIEW_AUDIT),
    NavItem("sync", "/admin/sync", N_("Directory sync"), Action.VIEW_SYNC),
)
"""The console's sections; each is shown only to roles that may open it (app owners see their applications)."""


def render(ctx: AppContext, console: Console, template: str, *, section: str, status: int = 200,
           **context: Any) -> Response:
    """A console page (a template extending ``admin/base.html``) with the navigation this user may use."""
    nav = [item for item in NAVIGATION if item.action is None or console.can(item.action)]
    return ctx.pages.render(template, status=status, console=console, nav=nav, section=section,
                            csrf_token=console.csrf_token, **context)


def _return_to(request: Request) -> str:
    path = request.url.path
    query = request.url.query
    target = f"{path}?{query}" if query else path
    return target if target.startswith("/admin") and len(target) <= 2000 else "/admin"


def csrf_ok(console: Console, token: object) -> bool:
    return isinstance(token, str) and csrf.check_token(console.csrf_key, token, CSRF_PURPOSE, console.binding)


def forbidden(ctx: AppContext) -> Response:
    return ctx.pages.error(403, N_("Not allowed"), N_("Your role does not allow this."))

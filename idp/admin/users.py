"""``/admin/users``: search accounts, look at one, and the service desk's actions on it.

    GET  /admin/users?q=&page=                 search (username, name, email), 50 a page
    GET  /admin/users/{id}                     groups, roles, factors (names, never secrets), sessions, lock state
    POST /admin/users/{id}/disable             sessions ended, tokens revoked, back-channel logout queued
    POST /admin/users/{id}/enable
    POST /admin/users/{id}/unlock              the account's failure counters forgotten
    POST /admin/users/{id}/reset-mfa           ``idp.helpdesk.reset_mfa``
    POST /admin/users/{id}/end-sessions        all, or one (field ``session``)

Administrators and the service desk may act (``Action.MANAGE_USERS``), with one limit that keeps the service
desk from reaching the administrators' power: an account that holds ``admin`` is acted on by an administrator
only (``may_act_on``). Resetting an administrator's factors would let whoever knows that password enroll a new
factor; disabling or ending the sessions of one would let the service desk lock out the people above it. No
one disables their own account here (they would lock themselves out mid-task), nor the last administrator.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from idp.accounts import users as accounts
from idp.accounts.users import UserError
from idp.admin import access, listing
from idp.admin.access import Console
from idp.admin.role_grants import leaves_an_admin
from idp.admin.roles import ADMIN, Action
from idp.factors import enrolled, recovery, trusted_devices
from idp.helpdesk import active_sessions, reset_mfa
from idp.models import User
from idp.oauth.requests import RequestScope
from idp.web.context import AppContext, context_of
from idp.web.i18n import N_

ACTIONS = ("disable", "enable", "unlock", "reset-mfa", "end-sessions")

DONE = {
    "disable": N_("The account is disabled; its sessions were ended and its tokens revoked."),
    "enable": N_("The account is enabled again."),
    "unlock": N_("The account's failed attempts were forgotten; it can sign in again at once."),
    "reset-mfa": N_("Every second factor was removed; a new one is set up at the next sign-in."),
    "end-sessions": N_("The sessions were ended."),
}
"""The notice after an action, chosen by a fixed key (``?done=``), never text from the URL."""


def may_act_on(console_roles: Iterable[str], target_roles: Iterable[str]) -> bool:
    """Whether a console user may disable, enable, unlock, reset or end the sessions of an account with
    ``target_roles``: an administrator's account only by an administrator."""
    return ADMIN not in set(target_roles) or ADMIN in set(console_roles)


@dataclass(frozen=True)
class Target:
    user: User
    roles: frozenset[str]


def _target(scope: RequestScope, request: Request) -> Target | None:
    user_id = access.row_id(request.path_params["user_id"])
    user = scope.db.get(User, user_id) if user_id is not None else None
    if user is None:
        return None
    return Target(user, frozenset(accounts.roles_of(scope.db, user)))


def _list(ctx: AppContext, scope: RequestScope, request: Request, console: Console) -> Response:
    query = listing.query_of(request)
    search = query.get("q", "").strip()[:255]
    requested = listing.requested_page(query.get("page"))
    page = listing.paging(requested, accounts.count_users(scope.db, search))
    rows = accounts.search_users(scope.db, search, offset=page.offset, limit=page.size)
    return access.render(ctx, console, "admin/users.html", section="users", users=rows, search=search, page=page,
                         page_query=urlencode({"q": search}) if search else "")


async def user_list(request: Request) -> Response:
    return await access.page(request, Action.VIEW_USERS, _list)


def _detail(ctx: AppContext, scope: RequestScope, request: Request, console: Console) -> Response:
    target = _target(scope, request)
    if target is None:
        return access.not_found(ctx)
    user = target.user
    done = listing.query_of(request).get("done", "")
    locks = accounts.lock_state(scope.db, user, scope.now)
    return access.render(
        ctx, console, "admin/user.html", section="users", user=user, roles=sorted(target.roles),
        groups=sorted(group.name for group in user.groups), factors=enrolled.factors_of(scope.db, user),
        recovery_codes=recovery.remaining(scope.db, user),
        trusted_devices=len(trusted_devices.active(scope.db, user, scope.now)),
        sessions=active_sessions(scope.db, user, scope.now), locks=locks,
        locked=any(lock.blocked_until is not None and lock.blocked_until > scope.now for lock in locks),
        directory_reason=accounts.directory_disabled(scope.db, user),
        may_act=console.can(Action.MANAGE_USERS) and may_act_on(console.roles, target.roles),
        notice=DONE.get(done), now=scope.now,
    )


async def user_detail(request: Request) -> Response:
    return await access.page(request, Action.VIEW_USERS, _detail)


def _act(ctx: AppContext, scope: RequestScope, request: Request, console: Console, fields: dict[str, str]
         ) -> Response:
    action = request.path_params["action"]
    target = _target(scope, request)
    if target is None or action not in ACTIONS:
        return access.not_found(ctx)
    if not may_act_on(console.roles, target.roles):
        return access.forbidden(ctx)
    user, origin, actor = target.user, scope.origin, console.actor
    try:
        if action == "disable":
            if user.id == console.user.id:
                return _refused(ctx, N_("You cannot disable your own account."))
            if ADMIN in target.roles and not leaves_an_admin(scope.db, user):
                return _refused(ctx, N_("This is the last enabled administrator."))
            accounts.disable_user(scope.db, ctx.services, user, now=scope.now, origin=origin, actor=actor)
        elif action == "enable":
            accounts.enable_user(scope.db, user, now=scope.now, origin=origin, actor=actor)
        elif action == "unlock":
            accounts.unlock_user(scope.db, user, now=scope.now, origin=origin, actor=actor)
        elif action == "reset-mfa":
            reset_mfa(scope.db, ctx.services, user, now=scope.now, origin=origin, actor=actor)
        else:
            session_id = access.row_id(fields["session"]) if fields.get("session") else None
            if fields.get("session") and session_id is None:
                return access.not_found(ctx)
            ended = accounts.end_sessions(scope.db, ctx.services, user, now=scope.now, origin=origin, actor=actor,
                                          session_id=session_id)
            if session_id is not None and not ended:
                return access.not_found(ctx)  # another user's session, an ended or unknown one
    except UserError as exc:
        return _refused(ctx, str(exc))
    return RedirectResponse(f"/admin/users/{user.id}?done={action}", status_code=303)


def _refused(ctx: AppContext, message: str) -> Response:
    return ctx.pages.error(409, N_("This cannot be done"), message)


async def user_action(request: Request) -> Response:
    response = await access.form(request, Action.MANAGE_USERS, _act, return_to=_detail_path(request))
    context_of(request).sender.wake()  # ended sessions may have queued back-channel logout tokens
    return response


def _detail_path(request: Request) -> str:
    user_id = access.row_id(request.path_params["user_id"])
    return f"/admin/users/{user_id}" if user_id is not None else "/admin/users"


routes = [
    Route("/admin/users", user_list, methods=["GET"]),
    Route("/admin/users/{user_id}", user_detail, methods=["GET"]),
    Route("/admin/users/{user_id}/{action}", user_action, methods=["POST"]),
]

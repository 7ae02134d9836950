"""``/admin/groups``: the groups with their member counts, and the console roles granted to users and groups.

    GET  /admin/groups                    everyone who may view groups (admin, helpdesk)
    POST /admin/roles/grant               role + username or group name      (admin only: Action.MANAGE_ROLES)
    POST /admin/roles/{grant_id}/revoke                                      (admin only; never the last admin)

The service desk sees who holds which role but never changes it: granting is how one would escalate.
"""

from __future__ import annotations

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from idp.accounts.users import find_user
from idp.admin import access, listing, role_grants
from idp.admin.access import Console
from idp.admin.role_grants import RoleError
from idp.admin.roles import ROLES, Action
from idp.models import Group, RoleGrant
from idp.oauth.requests import RequestScope
from idp.web.context import AppContext
from idp.web.i18n import N_

DONE = {"granted": N_("The role was granted."), "revoked": N_("The role was revoked.")}


def _list(ctx: AppContext, scope: RequestScope, request: Request, console: Console) -> Response:
    done = listing.query_of(request).get("done", "")
    return access.render(ctx, console, "admin/groups.html", section="groups",
                         groups=role_grants.groups_with_counts(scope.db), grants=role_grants.list_grants(scope.db),
                         roles=ROLES, may_manage=console.can(Action.MANAGE_ROLES), notice=DONE.get(done))


async def group_list(request: Request) -> Response:
    return await access.page(request, Action.VIEW_GROUPS, _list)


def _bad(ctx: AppContext, message: str) -> Response:
    return ctx.pages.error(400, N_("The role could not be granted"), message)


def _grant(ctx: AppContext, scope: RequestScope, request: Request, console: Console, fields: dict[str, str]
           ) -> Response:
    role = fields.get("role", "")
    username = fields.get("username", "").strip()
    group_name = fields.get("group", "").strip()
    if role not in ROLES:
        return _bad(ctx, N_("Choose one of the roles."))
    if bool(username) == bool(group_name):
        return _bad(ctx, N_("Name either a user or a group."))
    user = find_user(scope.db, username) if username else None
    group = scope.db.scalar(select(Group).where(Group.name == group_name[:255])) if group_name else None
    if user is None and group is None:
        return _bad(ctx, N_("There is no such user or group."))
    try:
        role_grants.grant(scope.db, role, user=user, group=group, now=scope.now, origin=scope.origin,
                          actor=console.actor)
    except RoleError as exc:
        return _bad(ctx, str(exc))
    return RedirectResponse("/admin/groups?done=granted", status_code=303)


async def grant_role(request: Request) -> Response:
    return await access.form(request, Action.MANAGE_ROLES, _grant, return_to="/admin/groups")


def _revoke(ctx: AppContext, scope: RequestScope, request: Request, console: Console, fields: dict[str, str]
            ) -> Response:
    grant_id = access.row_id(request.path_params["grant_id"])
    row = scope.db.get(RoleGrant, grant_id) if grant_id is not None else None
    if row is None:
        return access.not_found(ctx)
    try:
        role_grants.revoke(scope.db, row, now=scope.now, origin=scope.origin, actor=console.actor)
    except RoleError as exc:
        return ctx.pages.error(409, N_("The role could not be revoked"), str(exc))
    return RedirectResponse("/admin/groups?done=revoked", status_code=303)


async def revoke_role(request: Request) -> Response:
    return await access.form(request, Action.MANAGE_ROLES, _revoke, return_to="/admin/groups")


routes = [
    Route("/admin/groups", group_list, methods=["GET"]),
    Route("/admin/roles/grant", grant_role, methods=["POST"]),
    Route("/admin/roles/{grant_id}/revoke", revoke_role, methods=["POST"]),
]

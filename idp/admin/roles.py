"""Console roles and what each may do, in one table.

    admin       everything
    helpdesk    users: look, disable/enable, unlock, reset second factors, end sessions; read-only elsewhere
    app-owner   register clients, and manage only the clients they own (a client can have several owners)

Roles are granted to users or to groups (a directory group such as "IT-Administration" mapped to ``admin``);
a user's roles are the union of both (``idp.accounts.users.roles_of``). Every console page and every form
asks ``can`` (or ``can_manage_client``) on the server; hiding a button is never the check.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import Client, ClientOwner, User

ADMIN = "admin"
HELPDESK = "helpdesk"
APP_OWNER = "app-owner"
ROLES = (ADMIN, HELPDESK, APP_OWNER)


class Action(StrEnum):
    VIEW_DASHBOARD = "view-dashboard"
    VIEW_USERS = "view-users"
    MANAGE_USERS = "manage-users"
    """Disable/enable, unlock, reset second factors, end sessions."""
    MANAGE_ROLES = "manage-roles"
    """Grant and revoke roles (to users and groups): only administrators, so nobody raises their own role."""
    VIEW_GROUPS = "view-groups"
    VIEW_SESSIONS = "view-sessions"
    VIEW_AUDIT = "view-audit"
    VIEW_SYNC = "view-sync"
    RUN_SYNC = "run-sync"
    VIEW_ALL_CLIENTS = "view-all-clients"
    CREATE_CLIENT = "create-client"
    MANAGE_ALL_CLIENTS = "manage-all-clients"
    """Change, rotate, disable and delete any client; approve or decline requested clients."""
    MANAGE_OWNER_DOMAINS = "manage-owner-domains"
    """The redirect domains under which an owner's new clients are approved without review."""


PERMISSIONS: dict[str, frozenset[Action]] = {
    ADMIN: frozenset(Action),
    HELPDESK: frozenset({
        Action.VIEW_DASHBOARD, Action.VIEW_USERS, Action.MANAGE_USERS, Action.VIEW_GROUPS, Action.VIEW_SESSIONS,
        Action.VIEW_AUDIT, Action.VIEW_SYNC, Action.VIEW_ALL_CLIENTS,
    }),
    APP_OWNER: frozenset({Action.CREATE_CLIENT}),
}


def can(roles: Iterable[str], action: Action) -> bool:
    return any(action in PERMISSIONS.get(role, frozenset()) for role in roles)


def is_owner(db: Session, user: User, client: Client) -> bool:
    return db.scalar(select(ClientOwner.user_id).where(ClientOwner.client_id == client.id,
                                                       ClientOwner.user_id == user.id)) is not None


def can_manage_client(db: Session, user: User, roles: Iterable[str], client: Client) -> bool:
    """Administrators manage every client; an app owner only the clients they own."""
    roles = set(roles)
    if can(roles, Action.MANAGE_ALL_CLIENTS):
        return True
    return APP_OWNER in roles and is_owner(db, user, client)


def can_view_client(db: Session, user: User, roles: Iterable[str], client: Client) -> bool:
    roles = set(roles)
    return can(roles, Action.VIEW_ALL_CLIENTS) or can_manage_client(db, user, roles, client)

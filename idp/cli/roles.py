"""``idp roles``: console roles granted to users and groups (``idp.admin.role_grants``, the same functions as
``/admin/groups``; audited as ``role.granted`` / ``role.revoked`` with the CLI as origin).

    idp roles grant USERNAME ROLE        idp roles grant --group NAME ROLE
    idp roles revoke USERNAME ROLE       idp roles revoke --group NAME ROLE
    idp roles list
"""

from __future__ import annotations

import argparse
import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.admin import role_grants
from idp.admin.role_grants import RoleError
from idp.admin.roles import ROLES
from idp.cli import common
from idp.cli.common import CommandError
from idp.db import unit_of_work
from idp.models import Group, User


def _target(db: Session, args: argparse.Namespace) -> tuple[User | None, Group | None, str]:
    """The user or group named on the command line, and the role: ``USERNAME ROLE`` or ``--group NAME ROLE``."""
    names: list[str] = args.names
    if args.group is not None:
        if len(names) != 1:
            raise CommandError("with --group, name only the role: idp roles grant --group NAME ROLE")
        group = db.scalar(select(Group).where(Group.name == args.group))
        if group is None:
            raise CommandError(f"no group {args.group!r}")
        return None, group, names[0]
    if len(names) != 2:
        raise CommandError("name a user and a role (USERNAME ROLE), or a group with --group NAME ROLE")
    return common.user_or_fail(db, names[0]), None, names[1]


def _change(args: argparse.Namespace) -> dict[str, object]:
    services = common.services()
    with unit_of_work(services.sessions) as db:
        user, group, role = _target(db, args)
        try:
            if args.roles_command == "grant":
                role_grants.grant(db, role, user=user, group=group, now=services.now())
            else:
                row = role_grants.find_grant(db, role, user=user, group=group)
                role_grants.revoke(db, row, now=services.now())
        except RoleError as exc:
            raise CommandError(str(exc)) from exc
    return {"role": role, "username": user.username if user else None, "group": group.name if group else None,
            "granted": args.roles_command == "grant"}


def cmd_roles_grant(args: argparse.Namespace) -> int:
    result = _change(args)
    target = f"group {result['group']}" if result["group"] else f"user {result['username']}"
    print(json.dumps(result) if args.json else f"granted {result['role']} to {target}")
    return 0


def cmd_roles_revoke(args: argparse.Namespace) -> int:
    result = _change(args)
    target = f"group {result['group']}" if result["group"] else f"user {result['username']}"
    print(json.dumps(result) if args.json else f"revoked {result['role']} from {target}")
    return 0


def cmd_roles_list(args: argparse.Namespace) -> int:
    services = common.services()
    with unit_of_work(services.sessions) as db:
        grants = [grant.as_json() for grant in role_grants.list_grants(db)]
    if args.json:
        print(json.dumps({"grants": grants}))
        return 0
    for grant in grants:
        target = f"group {grant['group']}" if grant["group"] else f"user {grant['username']}"
        print(f"{grant['role']:<10} {target}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``idp roles`` subcommands."""
    roles = sub.add_parser("roles", help="console roles of users and groups").add_subparsers(
        dest="roles_command", required=True)
    for name, func, verb in (("grant", cmd_roles_grant, "grant a console role"),
                             ("revoke", cmd_roles_revoke, "revoke a console role (never the last admin)")):
        command = roles.add_parser(name, help=f"{verb} to a user or, with --group, to a group",
                                   description=f"{verb}. Roles: {', '.join(ROLES)}.")
        command.add_argument("names", nargs="+", metavar="USERNAME ROLE",
                             help="the user and the role; with --group only the role")
        command.add_argument("--group", metavar="NAME", help="a group instead of a user")
        command.add_argument("--json", action="store_true", help="print the result as JSON")
        command.set_defaults(func=func)
    ls = roles.add_parser("list", help="every role grant")
    ls.add_argument("--json", action="store_true", help="print the result as JSON")
    ls.set_defaults(func=cmd_roles_list)

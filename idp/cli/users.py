"""``idp users``: create, list and look at accounts; the service desk's reset of second factors, disable,
enable and unlock (the same functions as the console's ``/admin/users``, audited alike with the CLI as
origin)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from idp import audit
from idp.accounts import users as accounts
from idp.accounts.passwords import PasswordRejected
from idp.accounts.users import UserError, create_user
from idp.admin.role_grants import leaves_an_admin
from idp.admin.roles import ADMIN
from idp.cli import common
from idp.cli.common import CommandError
from idp.db import unit_of_work
from idp.helpdesk import reset_mfa, user_overview
from idp.models import User


def _read_password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat password: "):
            raise CommandError("the passwords differ")
        return first
    return None


def cmd_users_add(args: argparse.Namespace) -> int:
    services = common.services()
    password = _read_password(args)
    if password is not None:
        try:
            services.passwords.check_new(password)
        except PasswordRejected as exc:
            raise CommandError(str(exc)) from exc
    with unit_of_work(services.sessions) as db:
        try:
            user = create_user(db, args.username, email=args.email, display_name=args.name, groups=args.group,
                               password_hash=services.passwords.hash(password) if password else None)
        except UserError as exc:
            raise CommandError(str(exc)) from exc
        audit.record(db, "user.created", subject=user.username, groups=args.group)
        result = {"username": user.username, "sub": user.sub, "groups": args.group}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"created user {result['username']} (sub {result['sub']})"
              + ("" if password else "; it has no password and cannot sign in with one"))
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    services = common.services()
    with unit_of_work(services.sessions) as db:
        users: list[dict[str, Any]] = [
            {"username": u.username, "sub": u.sub, "email": u.email, "name": u.display_name,
             "groups": sorted(g.name for g in u.groups), "active": u.is_active, "source": u.source}
            for u in db.scalars(select(User).options(selectinload(User.groups)).order_by(User.username))
        ]
    if args.json:
        print(json.dumps(users))
    else:
        for u in users:
            state = "" if u["active"] else " (disabled)"
            print(f"{u['username']:<24} {u['email'] or '-':<32} {','.join(u['groups']) or '-'}{state}")
    return 0


def cmd_users_show(args: argparse.Namespace) -> int:
    """The account as the service desk sees it: groups, roles, factors, sessions, trusted browsers."""
    services = common.services()
    with unit_of_work(services.sessions) as db:
        info = user_overview(db, common.user_or_fail(db, args.username), services.now())
    if args.json:
        print(json.dumps(info))
        return 0
    state = "active" if info["active"] else "disabled"
    print(f"{info['username']} ({info['name'] or '-'}, {info['email'] or '-'}), {state}, source {info['source']}")
    print(f"  sub:            {info['sub']}")
    print(f"  groups:         {', '.join(info['groups']) or '-'}")
    print(f"  roles:          {', '.join(info['roles']) or '-'}")
    print(f"  last sign-in:   {info['last_login_at'] or '-'}; second factors reset: {info['mfa_reset_at'] or 'never'}")
    print(f"  factors:        {len(info['factors'])}; recovery codes left: {info['recovery_codes_remaining']}")
    for f in info["factors"]:
        detail = f" ({f['detail']})" if f["detail"] else ""
        if f["managed_by"]:
            detail += f", from directory {f['managed_by']}"
        print(f"    {f['kind']:<9} {f['name']}{detail}, added {f['created_at']}, last used {f['last_used_at'] or '-'}")
    print(f"  sessions:       {len(info['sessions'])}")
    for sess in info["sessions"]:
        print(f"    {sess['sid']}  since {sess['created_at']}, active {sess['last_active_at']}, "
              f"{sess['ip'] or '-'}, {sess['user_agent'] or '-'}")
    print(f"  trusted browsers: {len(info['trusted_devices'])}")
    for d in info["trusted_devices"]:
        print(f"    {d['name'] or '-'}, until {d['expires_at']}")
    return 0


def cmd_users_reset_mfa(args: argparse.Namespace) -> int:
    """Remove all second factors, recovery codes and trusted browsers; end the sessions (audited)."""
    services = common.services()
    with unit_of_work(services.sessions) as db:
        user = common.user_or_fail(db, args.username)
        result = reset_mfa(db, services, user, now=services.now())
        summary = {"username": user.username, "removed": result.removed,
                   "trusted_devices_revoked": result.trusted_devices, "sessions_ended": result.sessions,
                   "tokens_revoked": result.tokens, "mfa_reset_at": services.now().isoformat()}
    if args.json:
        print(json.dumps(summary))
    else:
        factors = sum(count for kind, count in result.removed.items() if kind != "recovery_codes")
        print(f"reset the second factors of {summary['username']}: {factors} factors, "
              f"{result.removed['recovery_codes']} recovery codes and {result.trusted_devices} trusted browsers "
              f"removed, {result.sessions} sessions ended; a new factor is set up at the next sign-in")
    return 0


def _account_command(args: argparse.Namespace) -> dict[str, Any]:
    """``disable``, ``enable`` or ``unlock`` one account; the result as JSON-ready data."""
    services = common.services()
    now = services.now()
    with unit_of_work(services.sessions) as db:
        user = common.user_or_fail(db, args.username)
        result: dict[str, Any] = {"username": user.username}
        try:
            if args.users_command == "disable":
                if ADMIN in accounts.roles_of(db, user) and not leaves_an_admin(db, user):
                    raise CommandError(f"{user.username} is the last enabled administrator; grant 'admin' to "
                                       "someone else first")
                done = accounts.disable_user(db, services, user, now=now)
                result.update(active=False, sessions_ended=done.sessions, tokens_revoked=done.tokens)
            elif args.users_command == "enable":
                accounts.enable_user(db, user, now=now)
                result.update(active=True)
            else:
                result.update(counters_cleared=accounts.unlock_user(db, user, now=now))
        except UserError as exc:
            raise CommandError(str(exc)) from exc
    return result


def cmd_users_disable(args: argparse.Namespace) -> int:
    """Disable an account: no sign-in; its sessions end, its tokens are revoked (back-channel logout is queued
    and sent by the running server)."""
    result = _account_command(args)
    print(json.dumps(result) if args.json else
          f"disabled {result['username']}: {result['sessions_ended']} sessions ended, "
          f"{result['tokens_revoked']} further tokens revoked")
    return 0


def cmd_users_enable(args: argparse.Namespace) -> int:
    result = _account_command(args)
    print(json.dumps(result) if args.json else f"enabled {result['username']}")
    return 0


def cmd_users_unlock(args: argparse.Namespace) -> int:
    """Forget the account's failed password and second-factor attempts, so that it can sign in at once."""
    result = _account_command(args)
    print(json.dumps(result) if args.json else
          f"unlocked {result['username']} ({result['counters_cleared']} counters held failures)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``idp users`` subcommands."""
    users = sub.add_parser("users", help="user accounts").add_subparsers(dest="users_command", required=True)
    add = users.add_parser("add", help="create a local user")
    add.add_argument("username")
    add.add_argument("--email")
    add.add_argument("--name", help="display name")
    add.add_argument("--group", action="append", default=[], help="group membership (repeatable)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add.add_argument("--json", action="store_true", help="print the result as JSON")
    add.set_defaults(func=cmd_users_add)
    ls = users.add_parser("list", help="list users")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_users_list)
    show = users.add_parser("show", help="a user's groups, roles, second factors, sessions and trusted browsers")
    show.add_argument("username")
    show.add_argument("--json", action="store_true", help="print the result as JSON")
    show.set_defaults(func=cmd_users_show)
    reset = users.add_parser("reset-mfa", help="remove all second factors, recovery codes and trusted browsers and "
                                               "end the sessions; a new factor is set up at the next sign-in")
    reset.add_argument("username")
    reset.add_argument("--json", action="store_true", help="print the result as JSON")
    reset.set_defaults(func=cmd_users_reset_mfa)
    for name, func, text in (
        ("disable", cmd_users_disable, "disable an account: no sign-in, sessions ended, tokens revoked"),
        ("enable", cmd_users_enable, "enable a disabled account (one its directory disabled is enabled there)"),
        ("unlock", cmd_users_unlock, "forget the account's failed sign-in attempts (password and second factor)"),
    ):
        command = users.add_parser(name, help=text, description=text)
        command.add_argument("username")
        command.add_argument("--json", action="store_true", help="print the result as JSON")
        command.set_defaults(func=func)

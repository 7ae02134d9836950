"""``idp clients token``: an initial access token for RFC 7591 Dynamic Client Registration.

See docs/client-registration.md.

The token is printed once and stored only as a keyed hash; it expires, allows a number of registrations (one by
default), and the clients registered with it belong to ``--owner`` when given.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from idp import audit
from idp.cli import common
from idp.cli.common import CommandError
from idp.config import parse_duration
from idp.db import unit_of_work
from idp.oauth.client_registry import owner_by_username
from idp.oauth.clients import ClientError
from idp.oauth.registration import INITIAL_TOKEN_MAX_LIFETIME, INITIAL_TOKEN_MAX_USES, issue_initial_token


def cmd_clients_token(args: argparse.Namespace) -> int:
    try:
        lifetime = parse_duration(args.expires)
    except ValueError as exc:
        raise CommandError(f"--expires: {exc}") from exc
    if lifetime > INITIAL_TOKEN_MAX_LIFETIME:
        raise CommandError(f"--expires: an initial access token lives at most {INITIAL_TOKEN_MAX_LIFETIME.days}d")
    if not 1 <= args.uses <= INITIAL_TOKEN_MAX_USES:
        raise CommandError(f"--uses must be between 1 and {INITIAL_TOKEN_MAX_USES}")
    services = common.services()
    now = services.now()
    with unit_of_work(services.sessions) as db:
        try:
            # An owner of clients is an active app owner, as in the console (client_registry.owner_by_username).
            owner = owner_by_username(db, args.owner) if args.owner else None
        except ClientError as exc:
            raise CommandError(str(exc)) from exc
        row, token = issue_initial_token(db, services.hasher, now=now, lifetime=lifetime, uses=args.uses,
                                         owner=owner)
        audit.record(db, "initial_access_token.created", subject=owner.username if owner else None, at=now,
                     initial_token_id=row.id, uses=row.uses_left, expires_at=row.expires_at.isoformat())
        result: dict[str, Any] = {
            "initial_access_token": token,
            "expires_at": row.expires_at.isoformat(),
            "expires_in": int(lifetime.total_seconds()),
            "uses": row.uses_left,
            "owner": owner.username if owner else None,
            "registration_endpoint": f"{services.settings.issuer}/register",
        }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"initial access token: {token}\n\n"
              f"Valid until {result['expires_at']} for {result['uses']} registration(s) at "
              f"{result['registration_endpoint']}\n(send it as `Authorization: Bearer ...`). "
              "It is shown only this once; it is stored hashed.")
    return 0


def register(clients: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``idp clients token``, added to the ``idp clients`` subcommands."""
    ctoken = clients.add_parser("token", help="make an initial access token for RFC 7591 client registration",
                                description="Prints the token once; it is stored only as a keyed hash.")
    ctoken.add_argument("--expires", default="7d",
                        help="lifetime such as 7d, 12h or 30m (default 7d, at most 90d)")
    ctoken.add_argument("--owner", metavar="USERNAME", help="the clients registered with it belong to this app owner")
    ctoken.add_argument("--uses", type=int, default=1, help="how many clients it may register (default 1)")
    ctoken.add_argument("--json", action="store_true",
                        help="print one JSON object with initial_access_token and its expiry")
    ctoken.set_defaults(func=cmd_clients_token)

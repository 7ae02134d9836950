"""``idp clients``: register, list and change OAuth clients."""

from __future__ import annotations

import argparse
import json
from typing import Any

from sqlalchemy import select

from idp import audit
from idp.cli import common
from idp.cli.common import CommandError
from idp.config import MFA_METHODS, load_settings
from idp.db import unit_of_work
from idp.models import Client
from idp.oauth.clients import SUPPORTED_SCOPES, ClientError, NewClient, create_client, find_client, update_policy


def cmd_clients_add(args: argparse.Namespace) -> int:
    services = common.services()
    jwks = None
    if args.jwks:
        try:
            with open(args.jwks, encoding="utf-8") as handle:
                jwks = json.load(handle)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read the JWK set {args.jwks}: {exc}") from exc
    new = NewClient(
        name=args.name,
        redirect_uris=args.redirect_uri,
        post_logout_redirect_uris=args.post_logout_redirect_uri,
        backchannel_logout_uri=args.backchannel_logout_uri,
        public=args.public,
        grant_types=args.grant_type or (["authorization_code", "refresh_token"]),
        token_endpoint_auth_method=args.auth_method,
        trusted=args.trusted,
        id_token_signed_response_alg=args.id_token_alg,
        jwks=jwks,
        jwks_uri=args.jwks_uri,
        scope=" ".join(args.scope or SUPPORTED_SCOPES),
        require_mfa=args.require_mfa,
        mfa_methods=args.mfa_method,
        allow_trusted_device=False if args.no_trusted_device else None,
        theme=_checked_theme(args.theme),
    )
    with unit_of_work(services.sessions) as db:
        try:
            row, secret = create_client(db, services.hasher, new)
        except ClientError as exc:
            raise CommandError(str(exc)) from exc
        audit.record(db, "client.created", client_id=row.client_id, name=row.name,
                     redirect_uris=row.redirect_uris, grant_types=row.grant_types,
                     auth_method=row.token_endpoint_auth_method, **_client_policy(row))
        result: dict[str, Any] = {"client_id": row.client_id, "client_secret": secret, "name": row.name,
                                  "token_endpoint_auth_method": row.token_endpoint_auth_method,
                                  "redirect_uris": row.redirect_uris, "grant_types": row.grant_types,
                                  **_client_policy(row)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"client_id:     {result['client_id']}")
        if secret:
            print(f"client_secret: {secret}\n\nThe secret is shown only this once; it is stored hashed.")
    return 0


def _client_policy(row: Client) -> dict[str, Any]:
    return {"trusted": row.trusted, "require_mfa": row.require_mfa, "mfa_methods": row.mfa_methods,
            "allow_trusted_device": row.allow_trusted_device, "theme": row.theme}


def _checked_theme(name: str | None) -> str | None:
    """A client's theme must load now (with its parents and templates), not fail at the first sign-in."""
    if not name:
        return None
    from idp.web.templates import Pages

    Pages(name, load_settings().issuer)  # raises ThemeError naming the problem
    return name


def cmd_clients_update(args: argparse.Namespace) -> int:
    """Change a client's consent and second-factor settings; audited as ``client.updated`` with before/after."""
    changes: dict[str, Any] = {}
    if args.require_mfa is not None:
        changes["require_mfa"] = args.require_mfa
    if args.mfa_method:
        changes["mfa_methods"] = args.mfa_method
    elif args.any_mfa_method:
        changes["mfa_methods"] = None
    if args.trusted is not None:
        changes["trusted"] = args.trusted
    if args.trusted_device is not None:
        changes["allow_trusted_device"] = args.trusted_device
    if args.theme is not None:
        changes["theme"] = _checked_theme(args.theme)
    services = common.services()
    with unit_of_work(services.sessions) as db:
        row = find_client(db, args.client_id)
        if row is None:
            raise CommandError(f"no client {args.client_id!r}")
        try:
            before, after = update_policy(row, changes)
        except ClientError as exc:
            raise CommandError(str(exc)) from exc
        if after:
            audit.record(db, "client.updated", client_id=row.client_id, before=before, after=after,
                         at=services.now())
        result = {"client_id": row.client_id, "name": row.name, **_client_policy(row), "changed": sorted(after)}
    if args.json:
        print(json.dumps(result))
    else:
        changed = ", ".join(f"{key} {before[key]!r} -> {after[key]!r}" for key in sorted(after))
        print(f"updated client {result['client_id']}: {changed}" if after else
              f"client {result['client_id']} unchanged")
    return 0


def cmd_clients_list(args: argparse.Namespace) -> int:
    services = common.services()
    with unit_of_work(services.sessions) as db:
        clients: list[dict[str, Any]] = [
            {"client_id": c.client_id, "name": c.name, "auth_method": c.token_endpoint_auth_method,
             "redirect_uris": c.redirect_uris, "grant_types": c.grant_types, "trusted": c.trusted,
             "active": c.disabled_at is None}
            for c in db.scalars(select(Client).order_by(Client.name))
        ]
    if args.json:
        print(json.dumps(clients))
    else:
        for c in clients:
            print(f"{c['client_id']:<26} {c['name']:<30} {c['auth_method']:<20} {' '.join(c['redirect_uris'])}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The ``idp clients`` subcommands."""
    clients = sub.add_parser("clients", help="OAuth clients").add_subparsers(dest="clients_command", required=True)
    cadd = clients.add_parser("add", help="register a client; prints client_id and, once, client_secret")
    cadd.add_argument("--name", required=True)
    cadd.add_argument("--redirect-uri", action="append", default=[], help="registered redirect URI (repeatable)")
    cadd.add_argument("--post-logout-redirect-uri", action="append", default=[], help="(repeatable)")
    cadd.add_argument("--backchannel-logout-uri")
    cadd.add_argument("--public", action="store_true", help="public client (no secret, PKCE required)")
    cadd.add_argument("--grant-type", action="append", choices=["authorization_code", "refresh_token",
                                                                 "client_credentials"],
                      help="allowed grant type (repeatable; default authorization_code and refresh_token)")
    cadd.add_argument("--auth-method", choices=["client_secret_basic", "client_secret_post", "private_key_jwt",
                                                "none"], help="token endpoint authentication method")
    cadd.add_argument("--jwks", help="file with the client's public JWK set (private_key_jwt)")
    cadd.add_argument("--jwks-uri", help="URL of the client's public JWK set (private_key_jwt)")
    cadd.add_argument("--scope", action="append", help="allowed scope (repeatable; default all user scopes)")
    cadd.add_argument("--trusted", action="store_true", help="skip the consent page (first-party tools)")
    cadd.add_argument("--id-token-alg", choices=["ES256", "RS256"], default="ES256",
                      help="ID token signing algorithm (default ES256)")
    cadd.add_argument("--require-mfa", action="store_true", default=None,
                      help="every sign-in to this client needs a second factor")
    cadd.add_argument("--mfa-method", action="append", choices=MFA_METHODS,
                      help="second factor the client accepts (repeatable; default every allowed one)")
    cadd.add_argument("--no-trusted-device", action="store_true",
                      help="a browser trusted for the workday never replaces the second factor here")
    cadd.add_argument("--theme", help="theme of this client's sign-in pages (a folder under themes/)")
    cadd.add_argument("--json", action="store_true", help="print one JSON object with client_id and client_secret")
    cadd.set_defaults(func=cmd_clients_add)
    cupd = clients.add_parser("update", help="change a client's consent, second-factor and theme settings")
    cupd.add_argument("client_id", help="the client's id (after the options and `--` if it starts with -)")
    mfa_flag = cupd.add_mutually_exclusive_group()
    mfa_flag.add_argument("--require-mfa", dest="require_mfa", action="store_const", const=True,
                          help="every sign-in to this client needs a second factor")
    mfa_flag.add_argument("--no-require-mfa", dest="require_mfa", action="store_const", const=False,
                          help="the groups' and the global policy decide")
    methods = cupd.add_mutually_exclusive_group()
    methods.add_argument("--mfa-method", action="append", choices=MFA_METHODS,
                         help="second factor the client accepts (repeatable; replaces the list)")
    methods.add_argument("--any-mfa-method", action="store_true", help="accept every second factor the policy allows")
    trusted = cupd.add_mutually_exclusive_group()
    trusted.add_argument("--trusted", dest="trusted", action="store_const", const=True,
                         help="skip the consent page (first-party tools)")
    trusted.add_argument("--no-trusted", dest="trusted", action="store_const", const=False,
                         help="ask for consent")
    device = cupd.add_mutually_exclusive_group()
    device.add_argument("--trusted-device", dest="trusted_device", action="store_const", const=True,
                        help="a trusted browser may replace the second factor where the policy allows it")
    device.add_argument("--no-trusted-device", dest="trusted_device", action="store_const", const=False,
                        help="a trusted browser never replaces the second factor here")
    cupd.add_argument("--theme", help="theme of this client's sign-in pages; an empty value: the configured one")
    cupd.add_argument("--json", action="store_true", help="print the client's settings as JSON")
    cupd.set_defaults(func=cmd_clients_update)
    cls = clients.add_parser("list", help="list clients")
    cls.add_argument("--json", action="store_true")
    cls.set_defaults(func=cmd_clients_list)

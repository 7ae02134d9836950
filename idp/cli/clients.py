"""``idp clients``: register, list, show, change, rotate the secret of, disable, enable, review and delete OAuth
clients; thin over ``idp.oauth.clients`` and ``idp.oauth.client_registry``, which the console uses too."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp import audit
from idp.cli import common
from idp.cli.common import CommandError
from idp.config import MFA_METHODS, load_settings, parse_duration
from idp.db import unit_of_work
from idp.models import Client, User
from idp.oauth import client_registry as registry
from idp.oauth.clients import (
    SUPPORTED_SCOPES,
    ClientError,
    NewClient,
    create_client,
    find_client,
    needs_secret,
    update_client,
)
from idp.services import Services


def cmd_clients_add(args: argparse.Namespace) -> int:
    services = common.services()
    jwks = _read_jwks(args.jwks) if args.jwks else None
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
        logo_uri=args.logo_uri,
        access_token_lifetime=_lifetime_seconds(args.access_token_lifetime, "--access-token-lifetime"),
        refresh_token_lifetime=_lifetime_seconds(args.refresh_token_lifetime, "--refresh-token-lifetime"),
    )
    with unit_of_work(services.sessions) as db:
        try:
            row, secret = create_client(db, services.hasher, new)
        except ClientError as exc:
            raise CommandError(str(exc)) from exc
        if secret is not None and args.secret_expires:
            row.secret_expires_at = services.now() + _duration(args.secret_expires, "--secret-expires")
        for owner in _owners(db, args.owner or []):
            registry.add_owner(db, row, owner)
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


def _duration(value: str, what: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise CommandError(f"{what}: {exc}") from exc


def _lifetime_seconds(value: str | None, what: str) -> int | None:
    """A token lifetime flag: a duration (``1h``, ``3600``) or an empty value for the configured default."""
    if value is None or value == "":
        return None
    return int(_duration(value, what).total_seconds())


def _read_jwks(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read the JWK set {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CommandError(f"{path} does not hold a JWK set (a JSON object with keys)")
    return data


def _changed(args: argparse.Namespace, new: NewClient) -> NewClient:
    """``new`` (the client as stored) with the flags given on the command line."""
    if args.name is not None:
        new.name = args.name
    if args.redirect_uri:
        new.redirect_uris = args.redirect_uri
    if args.post_logout_redirect_uri:
        new.post_logout_redirect_uris = args.post_logout_redirect_uri
    elif args.no_post_logout_redirect_uri:
        new.post_logout_redirect_uris = []
    if args.backchannel_logout_uri is not None:
        new.backchannel_logout_uri = args.backchannel_logout_uri or None
    if args.grant_type:
        new.grant_types = args.grant_type
    if args.auth_method is not None:
        new.token_endpoint_auth_method = args.auth_method
        new.public = args.auth_method == "none"
    if args.jwks is not None:
        new.jwks, new.jwks_uri = _read_jwks(args.jwks), None
    if args.jwks_uri is not None:
        new.jwks_uri = args.jwks_uri or None
        if new.jwks_uri:
            new.jwks = None
    if args.scope:
        new.scope = " ".join(args.scope)
    if args.id_token_alg is not None:
        new.id_token_signed_response_alg = args.id_token_alg
    if args.logo_uri is not None:
        new.logo_uri = args.logo_uri or None
    if args.access_token_lifetime is not None:
        new.access_token_lifetime = _lifetime_seconds(args.access_token_lifetime, "--access-token-lifetime")
    if args.refresh_token_lifetime is not None:
        new.refresh_token_lifetime = _lifetime_seconds(args.refresh_token_lifetime, "--refresh-token-lifetime")
    if args.require_mfa is not None:
        new.require_mfa = True if args.require_mfa else None
    if args.mfa_method:
        new.mfa_methods = args.mfa_method
    elif args.any_mfa_method:
        new.mfa_methods = None
    if args.trusted is not None:
        new.trusted = args.trusted
    if args.trusted_device is not None:
        new.allow_trusted_device = False if args.trusted_device is False else None
    if args.theme is not None:
        new.theme = _checked_theme(args.theme)
    return new


def _client_or_fail(db: Session, client_id: str) -> Client:
    row = find_client(db, client_id)
    if row is None:
        raise CommandError(f"no client {client_id!r}")
    return row


@contextmanager
def _one_client(client_id: str) -> Iterator[tuple[Services, Session, Client]]:
    """What a command on one client works with: the services, a transaction (committed when the block ends
    normally, rolled back on an error) and the client ``client_id`` in it; ``CommandError`` if there is none."""
    services = common.services()
    with unit_of_work(services.sessions) as db:
        yield services, db, _client_or_fail(db, client_id)


def _owners(db: Session, usernames: list[str]) -> list[User]:
    try:
        return [registry.owner_by_username(db, name) for name in dict.fromkeys(usernames)]
    except ClientError as exc:
        raise CommandError(str(exc)) from exc


def cmd_clients_update(args: argparse.Namespace) -> int:
    """Change any registered property of a client (the flags given; the rest stays), and its owners; audited as
    ``client.updated`` with before/after (never a secret)."""
    with _one_client(args.client_id) as (services, db, row):
        try:
            new = _changed(args, registry.new_client_of(row))
            added = _owners(db, args.owner or [])
            removed = _owners(db, args.remove_owner or [])
            before, after = update_client(db, services.hasher, row, new)
            for user in added:
                if registry.add_owner(db, row, user):
                    registry.audit_client(db, "client.owner_added", row, actor=None, at=services.now(),
                                          owner=user.username)
            for user in removed:
                if registry.remove_owner(db, row, user):
                    registry.audit_client(db, "client.owner_removed", row, actor=None, at=services.now(),
                                          owner=user.username)
        except ClientError as exc:
            raise CommandError(str(exc)) from exc
        if after:
            audit.record(db, "client.updated", client_id=row.client_id, before=before, after=after,
                         at=services.now())
        result = {**_shown(db, row), "changed": sorted(after)}
        missing_secret = needs_secret(row)
    if args.json:
        print(json.dumps(result))
    else:
        changed = ", ".join(f"{key} {before[key]!r} -> {after[key]!r}" for key in sorted(after))
        print(f"updated client {result['client_id']}: {changed}" if after else
              f"client {result['client_id']} unchanged")
        if missing_secret:
            print(f"The client has no secret yet: idp clients rotate-secret {result['client_id']}")
    return 0


def _shown(db: Session, row: Client) -> dict[str, Any]:
    return {**registry.summary(row), "owners": [u.username for u in registry.owners_of(db, row)]}


def cmd_clients_show(args: argparse.Namespace) -> int:
    """Every registered property and state of a client (never its secret)."""
    with _one_client(args.client_id) as (_, db, row):
        result = _shown(db, row)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(key) for key in result)
        for key, value in result.items():
            shown = " ".join(value) if isinstance(value, list) and all(isinstance(v, str) for v in value) else value
            print(f"{key + ':':<{width + 1}} {'' if shown is None else shown}")
    return 0


def cmd_clients_rotate_secret(args: argparse.Namespace) -> int:
    """A new secret, printed once; with ``--grace`` the old one works for that long."""
    grace = _duration(args.grace, "--grace") if args.grace else None
    lifetime = _duration(args.expires, "--expires") if args.expires else None
    with _one_client(args.client_id) as (services, db, row):
        now = services.now()
        try:
            secret = registry.rotate_secret(row, services.hasher, now, grace, lifetime=lifetime)
        except ClientError as exc:
            raise CommandError(str(exc)) from exc
        registry.audit_client(db, "client.secret_rotated", row, actor=None, at=now,
                              grace_seconds=int(grace.total_seconds()) if grace else 0,
                              secret_expires_at=row.secret_expires_at.isoformat() if row.secret_expires_at else None)
        result = {"client_id": row.client_id, "client_secret": secret,
                  "secret_expires_at": row.secret_expires_at.isoformat() if row.secret_expires_at else None,
                  "previous_secret_expires_at": (row.previous_secret_expires_at.isoformat()
                                                 if row.previous_secret_hash and row.previous_secret_expires_at
                                                 else None)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"client_secret: {secret}\n\nThe secret is shown only this once; it is stored hashed.")
        if result["previous_secret_expires_at"]:
            print(f"The previous secret works until {result['previous_secret_expires_at']}.")
    return 0


def cmd_clients_disable(args: argparse.Namespace) -> int:
    """Disable a client as an administrator (an owner cannot enable it again); its tokens are revoked."""
    with _one_client(args.client_id) as (services, db, row):
        was = row.disabled_at is not None
        revoked = registry.disable_client(db, row, services.now(), "admin")
        if not was:
            registry.audit_client(db, "client.disabled", row, actor=None, at=services.now(), by="admin",
                                  tokens_revoked=revoked)
        result = {"client_id": row.client_id, "disabled": True, "changed": not was, "tokens_revoked": revoked}
    _print_state(args, result, "disabled" if not was else "was disabled already")
    return 0


def cmd_clients_enable(args: argparse.Namespace) -> int:
    with _one_client(args.client_id) as (services, db, row):
        previously = row.disabled_by
        changed = registry.enable_client(row, "admin")
        if changed:
            registry.audit_client(db, "client.enabled", row, actor=None, at=services.now(), disabled_by=previously)
        result = {"client_id": row.client_id, "disabled": False, "changed": changed}
    _print_state(args, result, "enabled" if changed else "was enabled already")
    return 0


def cmd_clients_delete(args: argparse.Namespace) -> int:
    """Delete a client with its codes, tokens and consents."""
    with _one_client(args.client_id) as (services, db, row):
        client_id = row.client_id
        removed = registry.delete_and_audit(db, row, actor=None, at=services.now())
    _print_state(args, {"client_id": client_id, "deleted": True, "removed": removed}, "deleted")
    return 0


def _review(args: argparse.Namespace, approve: bool) -> int:
    with _one_client(args.client_id) as (services, db, row):
        before = row.status
        try:
            if approve:
                registry.approve_client(row, args.reviewer, args.comment, services.now())
            else:
                registry.decline_client(row, args.reviewer, args.comment, services.now())
        except ClientError as exc:
            raise CommandError(str(exc)) from exc
        registry.audit_client(db, "client.approved" if approve else "client.declined", row, actor=None,
                              at=services.now(), before={"status": before}, after={"status": row.status},
                              comment=row.review_comment)
        result = {"client_id": row.client_id, "status": row.status, "review_comment": row.review_comment}
    _print_state(args, result, "approved" if approve else "declined")
    return 0


def cmd_clients_approve(args: argparse.Namespace) -> int:
    return _review(args, True)


def cmd_clients_decline(args: argparse.Namespace) -> int:
    return _review(args, False)


def _print_state(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(result))
    else:
        print(f"client {result['client_id']} {text}")


def cmd_clients_list(args: argparse.Namespace) -> int:
    services = common.services()
    with unit_of_work(services.sessions) as db:
        clients: list[dict[str, Any]] = [
            {"client_id": c.client_id, "name": c.name, "auth_method": c.token_endpoint_auth_method,
             "redirect_uris": c.redirect_uris, "grant_types": c.grant_types, "trusted": c.trusted,
             "active": c.disabled_at is None, "status": c.status,
             "secret_expires_at": c.secret_expires_at.isoformat() if c.secret_expires_at else None}
            for c in db.scalars(select(Client).order_by(Client.name))
            if args.status is None or c.status == args.status
        ]
    if args.json:
        print(json.dumps(clients))
    else:
        for c in clients:
            print(f"{c['client_id']:<26} {c['name']:<30} {c['auth_method']:<20} {' '.join(c['redirect_uris'])}")
    return 0


def _switch(parser: argparse.ArgumentParser, dest: str, on: str, on_help: str, off: str, off_help: str) -> None:
    """A setting ``update`` turns on (``on``: ``dest`` True) or off (``off``: False); neither flag leaves it
    unchanged (None), both together are a usage error."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(on, dest=dest, action="store_const", const=True, help=on_help)
    group.add_argument(off, dest=dest, action="store_const", const=False, help=off_help)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             ) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The ``idp clients`` subcommands; returns them, so that other modules can add theirs."""
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
    cadd.add_argument("--logo-uri", help="https URL of the application's logo")
    cadd.add_argument("--access-token-lifetime", help="this client's access token lifetime (e.g. 15m; default: "
                                                      "[tokens] access_token_lifetime)")
    cadd.add_argument("--refresh-token-lifetime", help="this client's refresh token lifetime (e.g. 8h; default: "
                                                       "[tokens] refresh/offline_token_lifetime)")
    cadd.add_argument("--secret-expires", help="the secret expires after this long (e.g. 365d; default: never)")
    cadd.add_argument("--owner", action="append", help="username of an app owner who manages it (repeatable)")
    cadd.add_argument("--json", action="store_true", help="print one JSON object with client_id and client_secret")
    cadd.set_defaults(func=cmd_clients_add)
    cupd = clients.add_parser("update", help="change any registered property of a client, and its owners")
    cupd.add_argument("client_id", help="the client's id (after the options and `--` if it starts with -)")
    cupd.add_argument("--name")
    cupd.add_argument("--redirect-uri", action="append", help="redirect URI (repeatable; replaces the list)")
    logout_uris = cupd.add_mutually_exclusive_group()
    logout_uris.add_argument("--post-logout-redirect-uri", action="append", help="(repeatable; replaces the list)")
    logout_uris.add_argument("--no-post-logout-redirect-uri", action="store_true", help="remove them all")
    cupd.add_argument("--backchannel-logout-uri", help="an empty value removes it")
    cupd.add_argument("--grant-type", action="append", choices=["authorization_code", "refresh_token",
                                                                 "client_credentials"],
                      help="allowed grant type (repeatable; replaces the list)")
    cupd.add_argument("--auth-method", choices=["client_secret_basic", "client_secret_post", "private_key_jwt",
                                                "none"],
                      help="token endpoint authentication method (none: a public client); a client that comes to "
                           "client_secret_* needs `rotate-secret` for its secret")
    keys = cupd.add_mutually_exclusive_group()
    keys.add_argument("--jwks", help="file with the client's public JWK set (private_key_jwt)")
    keys.add_argument("--jwks-uri", help="URL of the client's public JWK set (private_key_jwt)")
    cupd.add_argument("--scope", action="append", help="allowed scope (repeatable; replaces the list)")
    cupd.add_argument("--id-token-alg", choices=["ES256", "RS256"])
    cupd.add_argument("--logo-uri", help="https URL of the application's logo; an empty value removes it")
    cupd.add_argument("--access-token-lifetime", help="e.g. 15m; an empty value: the configured default")
    cupd.add_argument("--refresh-token-lifetime", help="e.g. 8h; an empty value: the configured default")
    cupd.add_argument("--owner", action="append", help="add this app owner (username; repeatable)")
    cupd.add_argument("--remove-owner", action="append", help="remove this owner (username; repeatable)")
    _switch(cupd, "require_mfa", "--require-mfa", "every sign-in to this client needs a second factor",
            "--no-require-mfa", "the groups' and the global policy decide")
    methods = cupd.add_mutually_exclusive_group()
    methods.add_argument("--mfa-method", action="append", choices=MFA_METHODS,
                         help="second factor the client accepts (repeatable; replaces the list)")
    methods.add_argument("--any-mfa-method", action="store_true", help="accept every second factor the policy allows")
    _switch(cupd, "trusted", "--trusted", "skip the consent page (first-party tools)", "--no-trusted",
            "ask for consent")
    _switch(cupd, "trusted_device", "--trusted-device",
            "a trusted browser may replace the second factor where the policy allows it",
            "--no-trusted-device", "a trusted browser never replaces the second factor here")
    cupd.add_argument("--theme", help="theme of this client's sign-in pages; an empty value: the configured one")
    cupd.add_argument("--json", action="store_true", help="print the client's settings as JSON")
    cupd.set_defaults(func=cmd_clients_update)
    cls = clients.add_parser("list", help="list clients")
    cls.add_argument("--status", choices=["active", "requested", "declined"], help="only clients in this state")
    cls.add_argument("--json", action="store_true")
    cls.set_defaults(func=cmd_clients_list)
    for name, func, text in (
        ("show", cmd_clients_show, "every registered property and the state of a client (never its secret)"),
        ("disable", cmd_clients_disable, "disable a client (its tokens are revoked; owners cannot enable it)"),
        ("enable", cmd_clients_enable, "enable a disabled client"),
        ("delete", cmd_clients_delete, "delete a client with its tokens, codes and consents"),
    ):
        command = clients.add_parser(name, help=text)
        command.add_argument("client_id", help="the client's id (after `--` if it starts with -)")
        command.add_argument("--json", action="store_true", help="print one JSON object")
        command.set_defaults(func=func)
    rotate = clients.add_parser("rotate-secret", help="give a client a new secret, printed once")
    rotate.add_argument("client_id", help="the client's id (after `--` if it starts with -)")
    rotate.add_argument("--grace", help="the old secret keeps working this long (e.g. 1h, 7d; at most 30d)")
    rotate.add_argument("--expires", help="the new secret expires after this long (e.g. 365d; default: never)")
    rotate.add_argument("--json", action="store_true", help="print one JSON object with client_secret")
    rotate.set_defaults(func=cmd_clients_rotate_secret)
    for name, func, text in (("approve", cmd_clients_approve, "approve a client an app owner requested"),
                             ("decline", cmd_clients_decline, "decline a requested client, saying why")):
        command = clients.add_parser(name, help=text)
        command.add_argument("client_id", help="the client's id (after `--` if it starts with -)")
        command.add_argument("--comment", required=not func == cmd_clients_approve,
                             help="what the owner reads (required to decline)")
        command.add_argument("--reviewer", default="cli", help="who reviewed it, for the record (default: cli)")
        command.add_argument("--json", action="store_true", help="print one JSON object")
        command.set_defaults(func=func)
    return clients

"""The ``idp`` command: serving, migrations, users, clients and keys, all scriptable.

Each subcommand calls the same plain functions as the web pages; ``--json`` prints one JSON object (or
list) for scripts. Errors are printed as one line on stderr with exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import select

from idp import audit
from idp.accounts.passwords import PasswordRejected
from idp.accounts.users import UserError, create_user, find_user, grant_role
from idp.config import MFA_METHODS, ConfigError, load_settings, reference_markdown
from idp.crypto import random_token
from idp.db import unit_of_work
from idp.helpdesk import reset_mfa, user_overview
from idp.models import Client, SigningKey, User
from idp.oauth.clients import SUPPORTED_SCOPES, ClientError, NewClient, create_client, find_client, update_policy
from idp.oauth.keys import ensure_keys, rotate_keys
from idp.services import Services, build_services
from idp.web.templates import ThemeError


class CommandError(Exception):
    """A command cannot do what was asked; the message is shown to the operator."""


def _services() -> Services:
    return build_services(load_settings())


def prepare(services: Services, out: Callable[[str], None] = print) -> None:
    """Make the database ready to serve: migrations (embedded default only), signing keys, first admin."""
    from idp import migrate

    if services.settings.is_embedded_database:
        migrate.upgrade(services.engine)
    elif not migrate.is_current(services.engine):
        raise CommandError("the database schema is not current: run `idp db upgrade` first")
    now = services.now()
    with unit_of_work(services.sessions) as db:
        for key in ensure_keys(db, services.sealer, services.settings.keys.rsa_bits, now):
            audit.record(db, "key.created", kid=key.kid, alg=key.alg)
        if db.scalar(select(User.id).limit(1)) is None:
            bootstrap = services.settings.bootstrap
            password = bootstrap.admin_password or random_token(15)
            user = create_user(db, bootstrap.admin_username, password_hash=services.passwords.hash(password),
                               display_name="Administrator")
            grant_role(db, user, "admin")
            audit.record(db, "user.created", subject=user.username, bootstrap=True, roles=["admin"])
            if bootstrap.admin_password is None:
                out(f"Created the administrator account {user.username!r} with the password:\n\n"
                    f"    {password}\n\nIt is shown only this once. Store it safely.")
            else:
                out(f"Created the administrator account {user.username!r} with the configured password.")
    try:
        services.keys.refresh(force=True)
    except InvalidTag as exc:
        raise CommandError("the key-encryption key does not open the stored signing keys: "
                           "check [keys] encryption_key (IDP_KEYS_ENCRYPTION_KEY)") from exc


def configure_logging() -> None:
    """Audit events as one JSON line each on stderr; other messages of ours with level and logger name."""
    audit_handler = logging.StreamHandler(sys.stderr)
    audit_handler.setFormatter(logging.Formatter("%(message)s"))
    audit_logger = logging.getLogger("idp.audit")
    audit_logger.handlers[:] = [audit_handler]
    audit_logger.setLevel(logging.INFO)
    audit_logger.propagate = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    app_logger = logging.getLogger("idp")
    app_logger.handlers[:] = [handler]
    app_logger.setLevel(logging.INFO)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from idp.app import create_app

    overrides = {"host": args.host, "port": args.port, "workers": args.workers}
    settings = load_settings(overrides={"server": overrides})
    configure_logging()
    services = build_services(settings)
    prepare(services)
    host, port, workers = settings.server.host, settings.server.port, settings.server.workers
    print(f"Serving {settings.issuer} on http://{host}:{port} with {workers} worker(s)", flush=True)
    # uvicorn applies X-Forwarded-For/-Proto only from these peers; idp.web.origin checks the same list again.
    proxy: dict[str, Any] = {"proxy_headers": bool(settings.server.trusted_proxies),
                             "forwarded_allow_ips": ",".join(settings.server.trusted_proxies) or None}
    if workers == 1:
        uvicorn.run(create_app(services=services), host=host, port=port, log_level="info", server_header=False,
                    **proxy)
        return 0
    # Each worker is a new process that builds the app from the environment: pass on what the command line
    # changed, so that the workers (and an issuer derived from host and port) agree with this process.
    for name, value in overrides.items():
        if value is not None:
            os.environ[f"IDP_SERVER_{name.upper()}"] = str(value)
    services.engine.dispose()  # the workers open their own connections
    uvicorn.run("idp.app:app_from_environment", factory=True, workers=workers, host=host, port=port,
                log_level="info", server_header=False, **proxy)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from idp import migrate

    services = _services()
    try:
        migrate.upgrade(services.engine)
    finally:
        services.engine.dispose()  # a one-shot command leaves no pooled connection behind
    print("database schema is current")
    return 0


def cmd_db_purge(args: argparse.Namespace) -> int:
    """Delete expired rows now (``idp serve`` does it every few minutes too); prints the counts."""
    from idp.maintenance import run_purge

    counts = run_purge(_services(), origin=audit.CLI, always_audit=True)
    if args.json:
        print(json.dumps(counts))
    else:
        for kind, count in counts.items():
            print(f"{kind:<24} {count}")
    return 0


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
    services = _services()
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
    services = _services()
    with unit_of_work(services.sessions) as db:
        users: list[dict[str, Any]] = [
            {"username": u.username, "sub": u.sub, "email": u.email, "name": u.display_name,
             "groups": sorted(g.name for g in u.groups), "active": u.is_active, "source": u.source}
            for u in db.scalars(select(User).order_by(User.username))
        ]
    if args.json:
        print(json.dumps(users))
    else:
        for u in users:
            state = "" if u["active"] else " (disabled)"
            print(f"{u['username']:<24} {u['email'] or '-':<32} {','.join(u['groups']) or '-'}{state}")
    return 0


def _user_or_fail(db: Any, username: str) -> User:
    user = find_user(db, username)
    if user is None:
        raise CommandError(f"no user {username!r}")
    return user


def cmd_users_show(args: argparse.Namespace) -> int:
    """The account as the service desk sees it: groups, roles, factors, sessions, trusted browsers."""
    services = _services()
    with unit_of_work(services.sessions) as db:
        info = user_overview(db, _user_or_fail(db, args.username), services.now())
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
    services = _services()
    with unit_of_work(services.sessions) as db:
        user = _user_or_fail(db, args.username)
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


def cmd_clients_add(args: argparse.Namespace) -> int:
    services = _services()
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
    services = _services()
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
    services = _services()
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


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    services = _services()
    with unit_of_work(services.sessions) as db:
        rows = rotate_keys(db, services.sealer, services.settings.keys.rsa_bits, services.now())
        for row in rows:
            audit.record(db, "key.rotated", kid=row.kid, alg=row.alg)
        created = [(row.kid, row.alg) for row in rows]
    for kid, alg in created:
        print(f"new {alg} signing key {kid}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    services = _services()
    with unit_of_work(services.sessions) as db:
        rows = [
            {"kid": k.kid, "alg": k.alg, "created_at": k.created_at.isoformat(),
             "retired_at": k.retired_at.isoformat() if k.retired_at else None}
            for k in db.scalars(select(SigningKey).order_by(SigningKey.created_at.desc()))
        ]
    if args.json:
        print(json.dumps(rows))
    else:
        for k in rows:
            state = "signing" if k["retired_at"] is None else f"retired {k['retired_at']}"
            print(f"{k['kid']}  {k['alg']:<6} created {k['created_at']}  {state}")
    return 0


def cmd_sync_ldap(args: argparse.Namespace) -> int:
    from directory_sync.cli import sync_ldap
    from idp import migrate

    services = _services()
    try:
        if services.settings.is_embedded_database:
            migrate.upgrade(services.engine)
        elif not migrate.is_current(services.engine):
            raise CommandError("the database schema is not current: run `idp db upgrade` first")
        return sync_ldap(services, source=args.source, full=args.full, dry_run=args.dry_run, force=args.force,
                         json_output=args.json)
    finally:
        # Close the pool's connections now: a cron job should not leave them to the garbage collector.
        services.engine.dispose()


def cmd_sync_history(args: argparse.Namespace) -> int:
    from directory_sync.cli import history

    services = _services()
    try:
        return history(services, source=args.source, limit=args.limit, json_output=args.json)
    finally:
        services.engine.dispose()


def cmd_config_reference(args: argparse.Namespace) -> int:
    print(reference_markdown())
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = load_settings()
    from idp.web.templates import Pages

    Pages(settings.theme, settings.issuer)
    print(f"configuration is valid (issuer {settings.issuer}, database {settings.database_url.split('@')[-1]})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idp", description="OpenID Connect identity provider for municipalities.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the identity provider over HTTP")
    serve.add_argument("--host", help="address to listen on (default: [server] host)")
    serve.add_argument("--port", type=int, help="port to listen on (default: [server] port)")
    serve.add_argument("--workers", type=int, help="server processes to start (default: [server] workers)")
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply all database migrations").set_defaults(func=cmd_db_upgrade)
    purge = db.add_parser("purge", help="delete expired codes, challenges, sessions and tokens now")
    purge.add_argument("--json", action="store_true", help="print the counts as JSON")
    purge.set_defaults(func=cmd_db_purge)

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

    keys = sub.add_parser("keys", help="signing keys").add_subparsers(dest="keys_command", required=True)
    keys.add_parser("rotate", help="publish new signing keys and sign with them").set_defaults(func=cmd_keys_rotate)
    kls = keys.add_parser("list", help="list signing keys")
    kls.add_argument("--json", action="store_true")
    kls.set_defaults(func=cmd_keys_list)

    sync = sub.add_parser("sync", help="mirror accounts from directories").add_subparsers(dest="sync_command",
                                                                                       required=True)
    ldap = sync.add_parser("ldap", help="sync accounts and groups from the [[directory.sources]] now",
                           description="Exit status: 0 done, 1 failed or busy, 3 refused by the safety guard.")
    ldap.add_argument("--source", help="only this source (default: all)")
    ldap.add_argument("--full", action="store_true", help="read every account, not only the changed ones")
    ldap.add_argument("--dry-run", action="store_true", help="print the changes a run would make; change nothing")
    ldap.add_argument("--force", action="store_true", help="apply a run the safety guard refuses")
    ldap.add_argument("--json", action="store_true", help="print the result as JSON")
    ldap.set_defaults(func=cmd_sync_ldap)
    shistory = sync.add_parser("history", help="list the latest sync runs, newest first")
    shistory.add_argument("--source", help="only this source")
    shistory.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    shistory.add_argument("--json", action="store_true", help="print the runs as JSON")
    shistory.set_defaults(func=cmd_sync_history)

    config = sub.add_parser("config", help="configuration").add_subparsers(dest="config_command", required=True)
    config.add_parser("reference", help="print the configuration reference (Markdown)").set_defaults(
        func=cmd_config_reference)
    config.add_parser("check", help="load and check the configuration").set_defaults(func=cmd_config_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (CommandError, ConfigError, ThemeError) as exc:
        print(f"idp: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``idp`` command: serving, migrations, users, clients and keys, all scriptable.

Each subcommand calls the same plain functions as the web pages; ``--json`` prints one JSON object (or
list) for scripts. Errors are printed as one line on stderr with exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import select

from idp import allocator, audit, metrics
from idp.accounts.users import create_user, grant_role
from idp.cli import clients, common, registration, roles, users
from idp.cli.common import CommandError
from idp.config import ConfigError, Settings, load_settings, reference_markdown
from idp.crypto import random_token
from idp.db import unit_of_work
from idp.models import SigningKey, User
from idp.oauth.keys import ensure_keys, rotate_keys
from idp.services import Services, build_services
from idp.web.templates import ThemeError

__all__ = ["CommandError", "build_parser", "configure_logging", "main", "prepare"]


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


def configure_logging(settings: Settings | None = None) -> None:
    """Every log line (ours, audit events, uvicorn's access log) to stderr, as JSON or text (``[logging]``),
    each carrying its request id; see ``idp.logs``."""
    from idp import logs

    logs.configure(settings)


def _stopped(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as uvicorn raises it again after its graceful shutdown (requests in flight answered or, after
    ``shutdown_timeout``, given up; background tasks stopped): end now, as SIGTERM's default action would, but
    with status 0, and without waiting for a worker thread still blocked in a given-up request (its database
    transaction is rolled back when the connection closes)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


WORKER_HEALTHCHECK_SECONDS = 30


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    allocator.return_large_blocks()
    overrides = {"host": args.host, "port": args.port, "workers": args.workers}
    settings = load_settings(overrides={"server": overrides})
    configure_logging(settings)
    services = build_services(settings)
    prepare(services)
    host, port, workers = settings.server.host, settings.server.port, settings.server.workers
    print(f"Serving {settings.issuer} on http://{host}:{port} with {workers} worker(s)", flush=True)
    # X-Forwarded-For/-Proto are applied by the app (idp.app), only from [server] trusted_proxies: uvicorn's own
    # handling would hide the connecting peer from the request id middleware. log_config=None: idp.logs owns
    # uvicorn's loggers. On SIGTERM uvicorn stops accepting, lets requests in flight finish (at most
    # shutdown_timeout), then runs the lifespan shutdown (back-channel sender, directory scheduler, purger).
    options: dict[str, Any] = {"host": host, "port": port, "log_level": settings.logging.level,
                               "log_config": None, "server_header": False, "proxy_headers": False,
                               "timeout_graceful_shutdown": int(settings.server.shutdown_timeout.total_seconds())}
    multiproc_dir = metrics.prepare_multiprocess(settings) if workers > 1 and settings.metrics.enabled else None
    stop_listener = None
    if settings.metrics.enabled and settings.metrics.port is not None:
        stop_listener = metrics.start_listener(settings.metrics.port)
    try:
        if workers == 1:
            # uvicorn raises the SIGTERM it stopped on again once the requests in flight are done; that was the
            # stop asked for, so end with status 0 (as the parent of several workers does).
            signal.signal(signal.SIGTERM, _stopped)
            from idp.app import create_app  # only here: with several workers, each imports it, not the parent

            uvicorn.run(create_app(services=services), **options)
            return 0
        # Each worker is a new process that builds the app from the environment: pass on what the command line
        # changed, so that the workers (and an issuer derived from host and port) agree with this process.
        for name, value in overrides.items():
            if value is not None:
                os.environ[f"IDP_SERVER_{name.upper()}"] = str(value)
        services.engine.dispose()  # the workers open their own connections
        # uvicorn kills a worker that does not answer its supervisor's ping within 5 s; a worker still importing
        # and compiling templates on a busy machine needs longer, and killing it only restarts the same work.
        uvicorn.run("idp.app:app_from_environment", factory=True, workers=workers,
                    timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS, **options)
        return 0
    finally:
        if stop_listener is not None:
            stop_listener()
        if multiproc_dir is not None:
            metrics.remove_multiprocess(multiproc_dir)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from idp import migrate

    services = common.services()
    try:
        migrate.upgrade(services.engine)
    finally:
        services.engine.dispose()  # a one-shot command leaves no pooled connection behind
    print("database schema is current")
    return 0


def cmd_db_purge(args: argparse.Namespace) -> int:
    """Delete expired rows now (``idp serve`` does it every few minutes too); prints the counts."""
    from idp.maintenance import run_purge

    counts = run_purge(common.services(), origin=audit.CLI, always_audit=True)
    if args.json:
        print(json.dumps(counts))
    else:
        for kind, count in counts.items():
            print(f"{kind:<24} {count}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    services = common.services()
    with unit_of_work(services.sessions) as db:
        rows = rotate_keys(db, services.sealer, services.settings.keys.rsa_bits, services.now())
        for row in rows:
            audit.record(db, "key.rotated", kid=row.kid, alg=row.alg)
        created = [(row.kid, row.alg) for row in rows]
    for kid, alg in created:
        print(f"new {alg} signing key {kid}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    services = common.services()
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

    services = common.services()
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

    services = common.services()
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

    users.register(sub)
    roles.register(sub)
    registration.register(clients.register(sub))

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

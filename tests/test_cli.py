"""The ``idp`` command, run in-process: migrations, users, clients, keys, configuration and first start."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from idp import migrate
from idp.accounts.users import find_user, roles_of
from idp.cli import CommandError, build_parser, prepare
from idp.config import load_settings
from idp.db import read_only
from idp.models import Client, SigningKey, User
from idp.services import Services, build_services
from tests.conftest import _create_pg_database, _drop_pg_database
from tests.console_cli import Cli
from tests.helpers import PASSWORD

ROOT = Path(__file__).resolve().parents[1]
# Every command the issue promises, each documented by --help.
COMMANDS = [
    ("serve",), ("db",), ("db", "upgrade"), ("db", "purge"), ("users",), ("users", "add"), ("users", "list"),
    ("users", "show"),
    ("users", "disable"), ("users", "enable"), ("users", "unlock"), ("roles",), ("roles", "grant"),
    ("roles", "revoke"), ("roles", "list"),
    ("users", "reset-mfa"), ("clients",), ("clients", "add"), ("clients", "list"), ("clients", "update"),
    ("clients", "show"), ("clients", "rotate-secret"), ("clients", "disable"), ("clients", "enable"),
    ("clients", "delete"), ("clients", "approve"), ("clients", "decline"), ("clients", "token"),
    ("keys",), ("keys", "rotate"), ("keys", "list"), ("config",), ("config", "reference"), ("config", "check"),
    ("sync",), ("sync", "ldap"), ("sync", "history"),
]


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Only this test's IDP_* variables: a data folder, an SQLite database in it and fixed secrets."""
    for name in list(os.environ):
        if name.startswith("IDP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("IDP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("IDP_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    monkeypatch.setenv("IDP_SECRET_KEY", "dGVzdC1zZWNyZXQta2V5LXRoYXQtaXMtbG9uZy1lbm91Z2gtMTIzNDU2Nzg5MA==")
    monkeypatch.setenv("IDP_KEYS_ENCRYPTION_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
    monkeypatch.setenv("IDP_PASSWORDS_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("IDP_PASSWORDS_ARGON2_MEMORY_COST", "1024")
    return tmp_path


@pytest.fixture
def cli(environment: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(None, capsys, monkeypatch)


@pytest.fixture
def migrated(cli: Cli) -> Cli:
    result = cli("db", "upgrade")
    assert result.code == 0, result.err
    return cli


@contextmanager
def current_services() -> Iterator[Services]:
    """Services built from the environment, as the command builds them."""
    services = build_services(load_settings())
    try:
        yield services
    finally:
        services.engine.dispose()


def test_db_upgrade_migrates_to_the_newest_schema(cli: Cli, environment: Path) -> None:
    """``idp db upgrade`` applies every migration and says so; running it again changes nothing."""
    first = cli("db", "upgrade")
    assert (first.code, first.out) == (0, "database schema is current\n")
    with current_services() as services:
        assert migrate.is_current(services.engine)
    assert cli("db", "upgrade").code == 0


def test_users_add_reads_the_password_from_stdin(migrated: Cli) -> None:
    """``users add --password-stdin --group G --group H`` stores an argon2id hash and both memberships."""
    created = migrated.json("users", "add", "Erika", "--email", "erika@musterstadt.de", "--name", "Erika M",
                            "--group", "Bauamt", "--group", "Ordnungsamt", "--password-stdin", stdin=PASSWORD + "\n")
    assert isinstance(created, dict)
    assert created["username"] == "erika" and created["groups"] == ["Bauamt", "Ordnungsamt"]
    with current_services() as services, read_only(services.sessions) as db:
        user = find_user(db, "erika")
        assert user is not None and user.sub == created["sub"]
        assert sorted(g.name for g in user.groups) == ["Bauamt", "Ordnungsamt"]
        assert user.password_hash and user.password_hash.startswith("$argon2id$")
        assert services.passwords.verify(user.password_hash, PASSWORD)
        assert not services.passwords.verify(user.password_hash, PASSWORD + "\n")


def test_users_add_without_password_says_so(migrated: Cli) -> None:
    """Without a password (stdin is no terminal, no --password-stdin) the account is made without one."""
    result = migrated("users", "add", "kiosk")
    assert result.code == 0, result.err
    assert "has no password" in result.out
    with current_services() as services, read_only(services.sessions) as db:
        user = find_user(db, "kiosk")
        assert user is not None and user.password_hash is None


def test_users_add_refuses_a_taken_username(migrated: Cli) -> None:
    """A second account with the same name, in any case, fails with exit status 1 and a message naming it."""
    assert migrated("users", "add", "erika", "--password-stdin", stdin=PASSWORD + "\n").code == 0
    result = migrated("users", "add", "ERIKA", "--password-stdin", stdin=PASSWORD + "\n")
    assert result.code == 1
    assert result.err == "idp: The username 'erika' is taken.\n"
    with current_services() as services, read_only(services.sessions) as db:
        assert len(db.scalars(select(User)).all()) == 1


def test_users_add_refuses_a_short_password(migrated: Cli) -> None:
    """The password policy applies to the CLI too: too short gives exit status 1 and no account."""
    result = migrated("users", "add", "erika", "--password-stdin", stdin="short\n")
    assert result.code == 1
    assert "at least 8 characters" in result.err
    with current_services() as services, read_only(services.sessions) as db:
        assert find_user(db, "erika") is None


def test_users_list_json(migrated: Cli) -> None:
    """``users list --json`` prints every account with its groups and state, never a password hash."""
    migrated("users", "add", "erika", "--group", "Ordnungsamt", "--group", "Bauamt", "--email", "e@musterstadt.de",
             "--password-stdin", stdin=PASSWORD + "\n")
    migrated("users", "add", "anna")
    result = migrated("users", "list", "--json")
    assert result.code == 0 and "argon2" not in result.out
    users = json.loads(result.out)
    assert [u["username"] for u in users] == ["anna", "erika"]
    erika = users[1]
    assert erika["groups"] == ["Bauamt", "Ordnungsamt"] and erika["email"] == "e@musterstadt.de"
    assert erika["active"] is True and erika["source"] == "local" and erika["sub"]
    table = migrated("users", "list")
    assert table.code == 0 and re.search(r"^erika\s+e@musterstadt\.de\s+Bauamt,Ordnungsamt$", table.out, re.M)


def test_clients_add_json_prints_a_secret_that_verifies(migrated: Cli) -> None:
    """``clients add --json`` prints one JSON object with client_id and the secret, which is stored hashed."""
    result = migrated("clients", "add", "--name", "Fachverfahren", "--redirect-uri", "https://app.example/cb",
                      "--redirect-uri", "http://127.0.0.1:8080/cb",
                      "--post-logout-redirect-uri", "https://app.example/bye", "--json")
    assert result.code == 0, result.err
    assert result.out.count("\n") == 1
    created = json.loads(result.out)
    assert created["client_id"] and created["client_secret"]
    assert created["token_endpoint_auth_method"] == "client_secret_basic"
    assert created["grant_types"] == ["authorization_code", "refresh_token"]
    with current_services() as services, read_only(services.sessions) as db:
        row = db.scalar(select(Client).where(Client.client_id == created["client_id"]))
        assert row is not None and row.secret_hash is not None
        assert created["client_secret"] not in row.secret_hash
        assert services.hasher.matches(created["client_secret"], row.secret_hash)
        assert not services.hasher.matches(created["client_secret"] + "x", row.secret_hash)
        assert row.redirect_uris == ["https://app.example/cb", "http://127.0.0.1:8080/cb"]
        assert row.post_logout_redirect_uris == ["https://app.example/bye"]
        assert row.id_token_signed_response_alg == "ES256" and row.trusted is False


def test_clients_add_text_shows_the_secret_once(migrated: Cli) -> None:
    """Without --json the command prints client_id and client_secret with a note that it is shown once."""
    result = migrated("clients", "add", "--name", "Intranet", "--redirect-uri", "https://intranet.example/cb")
    assert result.code == 0, result.err
    assert re.search(r"^client_id: +\S+$", result.out, re.M)
    assert re.search(r"^client_secret: +\S+$", result.out, re.M)
    assert "shown only this once" in result.out


def test_clients_add_refuses_http_outside_loopback(migrated: Cli) -> None:
    """An http redirect URI on a real host is refused with exit status 1 and a message naming the URI."""
    result = migrated("clients", "add", "--name", "Alt", "--redirect-uri", "http://app.example/cb", "--json")
    assert result.code == 1 and result.out == ""
    assert "http://app.example/cb" in result.err and "must use https" in result.err
    with current_services() as services, read_only(services.sessions) as db:
        assert db.scalar(select(Client)) is None


def test_clients_add_public_has_no_secret(migrated: Cli) -> None:
    """``--public`` makes a client that authenticates with 'none' and gets no secret."""
    created = migrated.json("clients", "add", "--name", "Mobile", "--public", "--redirect-uri",
                            "de.musterstadt.app:/cb")
    assert isinstance(created, dict)
    assert created["client_secret"] is None and created["token_endpoint_auth_method"] == "none"
    with current_services() as services, read_only(services.sessions) as db:
        row = db.scalar(select(Client).where(Client.client_id == created["client_id"]))
        assert row is not None and row.secret_hash is None


def test_clients_list_json(migrated: Cli) -> None:
    """``clients list --json`` prints every client with its metadata and never a secret."""
    first = migrated.json("clients", "add", "--name", "Bauportal", "--redirect-uri", "https://bau.example/cb",
                          "--trusted", "--grant-type", "authorization_code", "--grant-type", "client_credentials")
    second = migrated.json("clients", "add", "--name", "Archiv", "--public", "--redirect-uri",
                           "http://127.0.0.1/cb")
    assert isinstance(first, dict) and isinstance(second, dict)
    result = migrated("clients", "list", "--json")
    assert result.code == 0 and first["client_secret"] not in result.out
    clients = json.loads(result.out)
    assert [c["name"] for c in clients] == ["Archiv", "Bauportal"]
    archiv, bauportal = clients
    assert archiv["client_id"] == second["client_id"] and archiv["auth_method"] == "none"
    assert bauportal["client_id"] == first["client_id"] and bauportal["trusted"] is True
    assert bauportal["grant_types"] == ["authorization_code", "client_credentials"]
    assert bauportal["redirect_uris"] == ["https://bau.example/cb"] and bauportal["active"] is True


def test_keys_rotate_publishes_new_keys_and_retires_old_ones(migrated: Cli) -> None:
    """``keys rotate`` makes a new ES256 and RS256 key; the previous ones stay listed as retired."""
    assert migrated.json("keys", "list") == []
    first = migrated("keys", "rotate")
    assert first.code == 0, first.err
    old = dict(re.findall(r"^new (ES256|RS256) signing key (\S+)$", first.out, re.M))
    assert set(old) == {"ES256", "RS256"}
    second = migrated("keys", "rotate")
    new = dict(re.findall(r"^new (ES256|RS256) signing key (\S+)$", second.out, re.M))
    assert set(new) == {"ES256", "RS256"} and not set(new.values()) & set(old.values())

    listed = migrated.json("keys", "list")
    assert isinstance(listed, list)
    state = {k["kid"]: (k["alg"], k["retired_at"]) for k in listed}
    assert len(state) == 4
    for alg, kid in old.items():
        assert state[kid][0] == alg and state[kid][1] is not None
    for alg, kid in new.items():
        assert state[kid] == (alg, None)
    with current_services() as services, read_only(services.sessions) as db:
        rsa = db.scalar(select(SigningKey).where(SigningKey.kid == new["RS256"]))
        assert rsa is not None and b"PRIVATE KEY" not in rsa.private_key_encrypted
    table = migrated("keys", "list")
    assert re.search(rf"^{re.escape(new['ES256'])}  ES256 .* signing$", table.out, re.M)
    assert re.search(rf"^{re.escape(old['ES256'])}  ES256 .* retired ", table.out, re.M)


def test_config_reference_prints_the_markdown_table(cli: Cli) -> None:
    """``config reference`` prints the generated table, and docs/configuration.md is exactly that output."""
    result = cli("config", "reference")
    assert result.code == 0
    assert result.out.startswith("# Configuration reference\n")
    assert "| key | environment | default | meaning |" in result.out
    assert "| `issuer` | `IDP_ISSUER` | `http://127.0.0.1:8000` |" in result.out
    assert "| `url` | `IDP_DATABASE_URL` |" in result.out
    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == result.out


def test_config_check_accepts_a_valid_configuration(cli: Cli) -> None:
    """``config check`` loads the settings and the theme and names the issuer."""
    result = cli("config", "check")
    assert result.code == 0, result.err
    assert "configuration is valid (issuer http://127.0.0.1:8000" in result.out


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("IDP_ISSUR", "https://idp.example", "unknown environment variable IDP_ISSUR"),
    ("IDP_SERVER_PORT", "eighty", "invalid value for [server] port (IDP_SERVER_PORT)"),
])
def test_bad_environment_stops_every_command(cli: Cli, monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                             expected: str) -> None:
    """An unknown IDP_ variable or an invalid value gives exit status 1 and a message naming it."""
    monkeypatch.setenv(name, value)
    result = cli("users", "list")
    assert result.code == 1 and result.out == ""
    assert result.err.startswith("idp: ") and expected in result.err


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _command_paths(sub, (*prefix, name))


def test_every_command_is_listed_here() -> None:
    """The --help test below covers every subcommand the parser has, and every command the issue names."""
    assert sorted(_command_paths(build_parser())) == sorted(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_of_every_command(cli: Cli, path: tuple[str, ...]) -> None:
    """``idp ... --help`` prints the usage and exits with status 0."""
    with pytest.raises(SystemExit) as exited:
        cli(*path, "--help")
    assert exited.value.code == 0
    out = cli.capsys.readouterr().out
    assert out.startswith(f"usage: idp {' '.join(path)}")
    assert "-h, --help" in out


def test_usage_error_exits_with_2(cli: Cli) -> None:
    """A missing required option is a usage error: exit status 2 and the usage on stderr."""
    with pytest.raises(SystemExit) as exited:
        cli("clients", "add", "--redirect-uri", "https://app.example/cb")
    assert exited.value.code == 2
    assert "the following arguments are required: --name" in cli.capsys.readouterr().err


@pytest.fixture
def embedded(environment: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default set-up: no database URL, so the embedded SQLite database in the data folder."""
    monkeypatch.delenv("IDP_DATABASE_URL")
    return environment


def _admin_state(services: Services) -> tuple[str | None, set[str], list[tuple[str, bool]]]:
    """The administrator's password hash and roles, and the signing keys (algorithm, still signing)."""
    with read_only(services.sessions) as db:
        admin = find_user(db, "admin")
        assert admin is not None
        keys = [(k.alg, k.retired_at is None) for k in db.scalars(select(SigningKey).order_by(SigningKey.alg))]
        return admin.password_hash, roles_of(db, admin), keys


def test_prepare_creates_the_administrator_once(embedded: Path) -> None:
    """First start on an empty embedded database: migrated, ES256 and RS256 keys, an admin with a one-time
    password that is printed once and works; a second start prints nothing and changes nothing."""
    printed: list[str] = []
    with current_services() as services:
        assert services.settings.is_embedded_database
        prepare(services, out=printed.append)
        assert migrate.is_current(services.engine)
        assert (embedded / "idp.sqlite3").exists()
        assert len(printed) == 1
        match = re.search(r"with the password:\n\n    (\S+)\n\nIt is shown only this once", printed[0])
        assert match, printed
        password_hash, roles, keys = _admin_state(services)
        assert roles == {"admin"}
        assert services.passwords.verify(password_hash, match.group(1))
        assert keys == [("ES256", True), ("RS256", True)]
        assert {k["alg"] for k in json.loads(services.keys.jwks_bytes())["keys"]} == {"ES256", "RS256"}

        again: list[str] = []
        prepare(services, out=again.append)
        assert again == []
        assert _admin_state(services) == (password_hash, roles, keys)


def test_prepare_takes_the_configured_admin_password(embedded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With IDP_BOOTSTRAP_ADMIN_PASSWORD the administrator gets that password, which is never printed."""
    monkeypatch.setenv("IDP_BOOTSTRAP_ADMIN_PASSWORD", "the configured admin password")
    monkeypatch.setenv("IDP_BOOTSTRAP_ADMIN_USERNAME", "root")
    printed: list[str] = []
    with current_services() as services:
        prepare(services, out=printed.append)
        assert printed == ["Created the administrator account 'root' with the configured password."]
        with read_only(services.sessions) as db:
            admin = find_user(db, "root")
            assert admin is not None and roles_of(db, admin) == {"admin"}
            assert services.passwords.verify(admin.password_hash, "the configured admin password")


def test_prepare_needs_db_upgrade_outside_the_embedded_database(cli: Cli) -> None:
    """On PostgreSQL the server does not migrate by itself; it asks for ``idp db upgrade`` (an operator step
    done once, not by each of several server processes)."""
    name, url = _create_pg_database()
    try:
        cli.monkeypatch.setenv("IDP_DATABASE_URL", url)
        with current_services() as services:
            assert not services.settings.is_embedded_database
            with pytest.raises(CommandError, match="run `idp db upgrade` first"):
                prepare(services, out=lambda line: None)
        assert cli("db", "upgrade").code == 0
        printed: list[str] = []
        with current_services() as services:
            prepare(services, out=printed.append)
            assert len(printed) == 1 and "Created the administrator account 'admin' with the password" in printed[0]
    finally:
        _drop_pg_database(name)


def test_prepare_migrates_an_explicit_sqlite_file(cli: Cli) -> None:
    """Any SQLite file is embedded: the server migrates it at start, as the default one."""
    with current_services() as services:
        assert services.settings.is_embedded_database
        prepare(services, out=lambda line: None)
        assert migrate.is_current(services.engine)


def test_prepare_refuses_a_wrong_key_encryption_key(embedded: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started with another key-encryption key, the server stops at once with a message naming the setting,
    instead of starting and failing at every signature."""
    with current_services() as services:
        prepare(services, out=lambda line: None)
    monkeypatch.setenv("IDP_KEYS_ENCRYPTION_KEY", "Zm9yZWlnbi1rZXktZW5jcnlwdGlvbi1rZXktMzJieXRlcw==")
    with current_services() as services:
        with pytest.raises(CommandError, match="IDP_KEYS_ENCRYPTION_KEY"):
            prepare(services, out=lambda line: None)

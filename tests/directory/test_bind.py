"""Sign-in of directory accounts by LDAP bind: no password stored, failures counted, an unreachable or
insecure directory failing closed and not counted (issue 4, §4; security cases 31, 36 and 53)."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from directory_sync.bind import BindOutcome, verify_password
from idp.accounts.users import normalize_username
from idp.config import ConfigError, DirectorySettings, DirectorySource
from idp.db import unit_of_work
from idp.models import AttemptCounter
from idp.services import Services
from tests.directory.conftest import directory_settings
from tests.directory.slapd import USER_PASSWORD, Directory, Slapd, free_port, make_tls_files
from tests.directory.support import audit_events, get, source_of, synced
from tests.helpers import Flow, add_client, add_user, authorize, exchange, follow_to_login, submit_login

UNAVAILABLE_TEXT = "directory service does not answer"


def use_source(services: Services, **changes: object) -> DirectorySource:
    """Point the running app at a changed source (the app reads the settings at every request)."""
    source = source_of(services, **changes)
    services.settings = dataclasses.replace(services.settings, directory=DirectorySettings(sources=(source,)))
    return source


def failures(services: Services, username: str) -> int:
    key = "password:account:" + hashlib.sha256(normalize_username(username).encode()).hexdigest()[:32]
    with unit_of_work(services.sessions) as db:
        row = db.get(AttemptCounter, key)
        return row.failures if row else 0


def login(client: TestClient, services: Services, username: str, password: str) -> Any:
    app = add_client(services, name=f"Fachverfahren {time.monotonic_ns()}")
    return submit_login(client, follow_to_login(client, Flow(app)), username, password)


def test_directory_account_signs_in_by_bind(client: TestClient, services: Services, directory: Directory) -> None:
    """The password is checked by binding as the entry; the IdP stores none, and tokens follow."""
    synced(services)
    app = add_client(services)
    flow = Flow(app)
    params = authorize(client, flow, username="Jürgen.Groß", password=USER_PASSWORD)
    response = exchange(client, flow, params["code"])
    assert response.status_code == 200, response.text
    assert get(services, "jürgen.gross").password_hash is None
    event = audit_events(services, "login.password")[-1]
    assert event.outcome == "success" and event.subject == "jürgen.gross" and event.details["source"] == "rathaus"


def test_wrong_password_is_refused_and_counted(client: TestClient, services: Services, directory: Directory) -> None:
    """A refused bind reads like any wrong password and counts as a failed attempt."""
    synced(services)
    response = login(client, services, "hans.meier", "Winter2026!")
    assert response.status_code == 200 and "Username or password is incorrect." in response.text
    assert failures(services, "hans.meier") == 1
    assert audit_events(services, "login.password")[-1].details["reason"] == "wrong_password"


@pytest.mark.parametrize("password", ["", " ", " \t "])
def test_blank_password_is_refused_before_any_bind(client: TestClient, services: Services, directory: Directory,
                                                   password: str) -> None:
    """An empty or whitespace-only password would be an unauthenticated bind that succeeds (RFC 4513 5.1.2):
    it is refused without contacting the directory (here: unreachable) and counted (security case 36)."""
    synced(services)
    use_source(services, url=(f"ldap://127.0.0.1:{free_port()}",))
    response = login(client, services, "anna.weiß", password)
    assert response.status_code == 200 and "Username or password is incorrect." in response.text
    assert UNAVAILABLE_TEXT not in response.text
    assert failures(services, "anna.weiss") == 1
    assert audit_events(services, "login.password")[-1].details["reason"] == "empty_password"


def test_directory_down_is_said_plainly_and_not_counted(client: TestClient, services: Services,
                                                       directory: Directory, slapd: Slapd) -> None:
    """slapd down at sign-in: a clear message (503), no failed attempt counted; back up, the sign-in works
    (security case 53)."""
    synced(services)
    slapd.kill()
    response = login(client, services, "lena.fuß", USER_PASSWORD)
    assert response.status_code == 503 and UNAVAILABLE_TEXT in response.text
    assert "Traceback" not in response.text
    assert failures(services, "lena.fuss") == 0
    event = audit_events(services, "login.password")[-1]
    assert event.outcome == "failure" and event.details["reason"] == "directory_unavailable"
    slapd.start()
    directory.connect()
    response = login(client, services, "lena.fuß", USER_PASSWORD)
    assert response.status_code == 303


def test_failover_to_the_next_url(client: TestClient, services: Services, directory: Directory,
                                  slapd: Slapd) -> None:
    """With the first URL dead, sync and sign-in use the next one."""
    use_source(services, url=(f"ldap://127.0.0.1:{free_port()}", slapd.url))
    assert synced(services).server == slapd.url
    assert login(client, services, "tobias.koch", USER_PASSWORD).status_code == 303


def test_disabled_since_last_sync_cannot_sign_in(client: TestClient, services: Services,
                                                 directory: Directory) -> None:
    """The bind looks the entry up again: locked in the directory after the last sync means refused now."""
    synced(services)
    directory.disable("stefan.bäcker")
    response = login(client, services, "stefan.bäcker", USER_PASSWORD)
    assert "Username or password is incorrect." in response.text
    assert audit_events(services, "login.password")[-1].details["reason"] == "disabled_in_directory"


def test_disabled_account_is_refused_without_bind(client: TestClient, services: Services,
                                                  directory: Directory) -> None:
    """An account the sync disabled cannot sign in, even with the right password."""
    synced(services)
    directory.disable("björn.öhler")
    synced(services)
    response = login(client, services, "björn.öhler", USER_PASSWORD)
    assert "Username or password is incorrect." in response.text
    assert audit_events(services, "login.password")[-1].details["reason"] == "disabled"


@pytest.mark.parametrize("source_overrides", [{"authentication": "none"}])
def test_passkey_only_source_takes_no_password(client: TestClient, services: Services,
                                               directory: Directory) -> None:
    """With ``authentication = "none"`` the accounts sign in with passkeys only; a password is refused."""
    synced(services)
    response = login(client, services, "maria.müller", USER_PASSWORD)
    assert "Username or password is incorrect." in response.text
    assert audit_events(services, "login.password")[-1].details["reason"] == "no_password"


def test_local_accounts_sign_in_while_the_directory_is_down(client: TestClient, services: Services,
                                                            directory: Directory, slapd: Slapd) -> None:
    """Local accounts are checked with argon2 as before, whatever the directory's state."""
    add_user(services, "notfall.admin", password="ein sehr langes Notfallpasswort")
    slapd.kill()
    assert login(client, services, "notfall.admin", "ein sehr langes Notfallpasswort").status_code == 303


def test_silent_directory_is_bounded_by_the_timeout(services: Services, directory: Directory) -> None:
    """A server that accepts connections but never answers is given up after the timeout, as unavailable."""
    synced(services)
    account = get(services, "hans.meier")
    with silent_server() as port:
        source = source_of(services, url=(f"ldap://127.0.0.1:{port}",), timeout=timedelta(seconds=1))
        started = time.monotonic()
        result = verify_password(source, external_id_of(services, account.id), USER_PASSWORD)
    assert result.outcome is BindOutcome.UNAVAILABLE
    assert time.monotonic() - started < 5


def test_start_tls_refused_by_the_server_fails_closed(services: Services, directory: Directory) -> None:
    """StartTLS that the server refuses (or that is stripped on the way) ends the attempt: no plain-text bind,
    although the password is right."""
    synced(services)
    source = source_of(services, start_tls=True, allow_plaintext_bind=False)
    result = verify_password(source, external_id_of(services, get(services, "hans.meier").id), USER_PASSWORD)
    assert result.outcome is BindOutcome.UNAVAILABLE and "StartTLS" in (result.detail or "")


def test_plaintext_bind_is_refused_unless_allowed(services: Services, directory: Directory) -> None:
    """Over ldap:// without StartTLS no password is sent unless the source says so: the configuration is
    refused, and so is a source built around that check."""
    synced(services)
    with pytest.raises(ConfigError, match="clear text"):
        directory_settings(Path("/tmp"), "sqlite://", [directory.source(allow_plaintext_bind=None)])
    source = source_of(services, allow_plaintext_bind=False)
    result = verify_password(source, external_id_of(services, get(services, "hans.meier").id), USER_PASSWORD)
    assert result.outcome is BindOutcome.UNAVAILABLE and "unencrypted" in (result.detail or "")


@pytest.fixture(scope="module")
def tls_slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Slapd, Path, Path]]:
    folder = tmp_path_factory.mktemp("tls-slapd")
    files = make_tls_files(folder / "pki", "directory")
    other = make_tls_files(folder / "pki", "other")
    server = Slapd(folder / "slapd", tls=files)
    server.start()
    server.prepare()
    try:
        yield server, files.ca_cert, other.ca_cert
    finally:
        server.kill()


def test_ldaps_and_start_tls_verify_the_certificate(services: Services, tls_slapd: tuple[Slapd, Path, Path]) -> None:
    """ldaps:// and StartTLS with the directory's CA work; with another CA the certificate is refused and the
    attempt fails closed (security case 53)."""
    server, ca, wrong_ca = tls_slapd
    directory = Directory(server, "openldap").build()
    try:
        good = dataclasses.replace(source_of(services), url=(server.ldaps_url,), base_dn=directory.base,
                                   ca_file=str(ca), allow_plaintext_bind=False)
        assert synced(services, source=good).created == 13
        external_id = external_id_of(services, get(services, "petra.schäfer").id)
        assert verify_password(good, external_id, USER_PASSWORD).outcome is BindOutcome.OK
        assert verify_password(good, external_id, "falsch").outcome is BindOutcome.WRONG_PASSWORD
        start_tls = dataclasses.replace(good, url=(server.url,), start_tls=True)
        assert verify_password(start_tls, external_id, USER_PASSWORD).outcome is BindOutcome.OK
        for bad in (dataclasses.replace(good, ca_file=str(wrong_ca)),
                    dataclasses.replace(start_tls, ca_file=str(wrong_ca))):
            result = verify_password(bad, external_id, USER_PASSWORD)
            assert result.outcome is BindOutcome.UNAVAILABLE and "certificate" in (result.detail or "").lower()
    finally:
        directory.close()


def external_id_of(services: Services, user_id: int) -> str:
    from idp.models import DirectoryAccount

    with unit_of_work(services.sessions) as db:
        link = db.get(DirectoryAccount, user_id)
        assert link is not None
        return link.external_id


class silent_server:
    """A TCP server on loopback that accepts connections and never answers (a hung directory)."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return int(self.sock.getsockname()[1])

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                connection, _ = self.sock.accept()
                self.accepted.append(connection)
            except OSError:
                continue

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        for connection in self.accepted:
            connection.close()
        self.sock.close()

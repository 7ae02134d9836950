"""The service desk's commands (issue 3 section 6): ``idp users show``, ``idp users reset-mfa`` and the clients'
second-factor settings in ``idp clients add`` / ``idp clients update``; run in-process against the test database
of each backend, with the test's clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from idp import cli
from idp.accounts.sessions import create_session
from idp.accounts.users import find_user, grant_role
from idp.app import create_app
from idp.audit import Origin
from idp.db import unit_of_work
from idp.factors import enrolled, recovery, sms, totp, trusted_devices
from idp.models import AuditEvent, Client, RecoveryCode, SsoSession, TrustedDevice, User, WebAuthnCredential
from idp.services import Services, build_services
from tests.conftest import ISSUER, FakeClock, make_settings
from tests.console_cli import Cli
from tests.helpers import Flow, add_client, add_user, authorize, exchange, submit_login

PHONE = "+4915112345678"


@pytest.fixture
def run(services: Services, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(services, capsys, monkeypatch)


def _user(db: Any, username: str = "erika") -> User:
    user = find_user(db, username)
    assert user is not None
    return user


def _events(services: Services, name: str) -> list[AuditEvent]:
    with unit_of_work(services.sessions) as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.event == name).order_by(AuditEvent.id)))


@dataclass
class Seeded:
    totp_secret: str
    codes: list[str]
    trusted_cookie: str


def _seed(services: Services, username: str = "erika") -> Seeded:
    """A user with an app, a phone, a security key, recovery codes, a trusted browser and a session."""
    now = services.now()
    with unit_of_work(services.sessions) as db:
        user = _user(db, username)
        grant_role(db, user, "helpdesk")
        factor, secret = totp.begin_enrollment(db, services.sealer, user, "Diensthandy App", now)
        factor.confirmed_at = now
        totp.begin_enrollment(db, services.sealer, user, "Half done", now)  # unconfirmed: removed by a reset too
        phone = sms.add_phone(db, user, PHONE, "Diensthandy", services.settings.sms, now)
        sms.confirm(db, phone, now)
        db.add(WebAuthnCredential(user_id=user.id, name="YubiKey", credential_id=b"cred-" + username.encode(),
                                  public_key=b"cose", created_at=now))
        cookie, _ = trusted_devices.trust(db, services.hasher, user, lifetime=timedelta(hours=12),
                                          user_agent="Firefox/128.0", now=now)
        create_session(db, services.hasher, services.settings.session, user, amr=["pwd", "otp", "mfa"], acr=None,
                       now=now, origin=Origin(ip="198.51.100.7", user_agent="Firefox/128.0"))
        codes = recovery.regenerate(db, services.passwords, user, now)
    return Seeded(secret, codes, cookie)


# --- users show ------------------------------------------------------------------------------------------------


def test_users_show_lists_groups_roles_factors_sessions_and_trusted_browsers(run: Cli, services: Services) -> None:
    """`idp users show --json` gives the service desk the whole picture, and no secret: no seed, no code, the
    phone masked."""
    add_user(services, groups=["Bauamt", "Sozialamt"])
    seeded = _seed(services)
    info = run.json("users", "show", "Erika")
    assert info["username"] == "erika" and info["active"] is True
    assert info["groups"] == ["Bauamt", "Sozialamt"] and info["roles"] == ["helpdesk"]
    assert sorted((f["kind"], f["name"]) for f in info["factors"]) == [
        ("sms", "Diensthandy"), ("totp", "Diensthandy App"), ("webauthn", "YubiKey")]
    assert info["recovery_codes_remaining"] == 10
    [session] = info["sessions"]
    assert session["ip"] == "198.51.100.7" and session["amr"] == ["pwd", "otp", "mfa"]
    [device] = info["trusted_devices"]
    assert device["name"] == "Firefox/128.0"
    dumped = json.dumps(info, ensure_ascii=False)
    assert seeded.totp_secret not in dumped and PHONE not in dumped and sms.masked(PHONE) in dumped
    assert not any(code in dumped for code in seeded.codes) and seeded.trusted_cookie not in dumped

    text = run("users", "show", "erika")
    assert text.code == 0
    assert "Bauamt, Sozialamt" in text.out and "Diensthandy App" in text.out and "198.51.100.7" in text.out
    assert "recovery codes left: 10" in text.out and "trusted browsers: 1" in text.out


def test_users_show_unknown_user(run: Cli, services: Services) -> None:
    """An unknown username is an error on stderr with exit status 1."""
    result = run("users", "show", "nobody")
    assert result.code == 1 and "no user 'nobody'" in result.err and result.out == ""


# --- users reset-mfa -------------------------------------------------------------------------------------------


def test_reset_mfa_removes_everything_and_ends_the_sessions(run: Cli, services: Services, client: TestClient,
                                                            clock: FakeClock) -> None:
    """Factors (unconfirmed ones too), recovery codes and trusted browsers go; sessions end, tokens are revoked
    (offline ones too), mfa_reset_at is set, and the reset is audited; another user is untouched."""
    add_user(services)
    add_user(services, "bob")
    _seed(services)
    bob = _seed(services, "bob")
    app = add_client(services, trusted=True)
    flow = Flow(app, scope="openid offline_access")
    tokens = exchange(client, flow, authorize(client, flow)["code"]).json()
    clock.advance(minutes=5)

    result = run.json("users", "reset-mfa", "erika")
    assert result["removed"] == {"totp": 2, "sms": 1, "webauthn": 1, "recovery_codes": 10}
    assert result["trusted_devices_revoked"] == 1 and result["sessions_ended"] == 2 and result["tokens_revoked"] >= 1

    with unit_of_work(services.sessions) as db:
        user = _user(db)
        assert user.mfa_reset_at == clock()
        assert enrolled.factors_of(db, user) == [] and recovery.remaining(db, user) == 0
        assert db.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id)).all() == []
        assert all(d.revoked_at is not None
                   for d in db.scalars(select(TrustedDevice).where(TrustedDevice.user_id == user.id)))
        assert {s.end_reason for s in db.scalars(select(SsoSession).where(SsoSession.user_id == user.id))} == {
            "mfa_reset"}
        other = _user(db, "bob")
        assert len(enrolled.factors_of(db, other)) == 3 and recovery.remaining(db, other) == 10
        assert trusted_devices.is_trusted(db, services.hasher, other, bob.trusted_cookie, clock())
    assert app.client_secret is not None
    refused = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                          auth=(app.client_id, app.client_secret))
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    [event] = _events(services, "user.mfa_reset")
    assert event.subject == "erika" and event.user_agent == "idp-cli"
    assert event.details["removed"]["totp"] == 2 and event.details["sessions_ended"] == 2
    assert {e.details["reason"] for e in _events(services, "logout")} == {"mfa_reset"}

    text = run("users", "reset-mfa", "bob")
    assert text.code == 0 and "4 factors, 10 recovery codes and 1 trusted browsers removed" in text.out
    assert run("users", "reset-mfa", "nobody").code == 1


@pytest.fixture
def grace_services(backend: tuple[str, Engine], services: Services, tmp_path: Path, clock: FakeClock) -> Services:
    """MFA required, with a grace period of a week for users without a factor."""
    strict = build_services(make_settings(tmp_path, backend[0], IDP_MFA_DEFAULT="required", IDP_MFA_GRACE_DAYS="7"),
                            engine=backend[1])
    strict.clock = clock
    return strict


def _enroll_page_after_password(browser: TestClient, app: Any) -> Any:
    response = browser.get(Flow(app).url())
    response = submit_login(browser, response.headers["location"])
    response = browser.get(response.headers["location"])
    assert response.status_code == 303 and response.headers["location"].endswith("/enroll"), response.headers
    return browser.get(response.headers["location"])


def test_reset_mfa_requires_enrollment_and_restarts_the_grace_period(
        grace_services: Services, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        clock: FakeClock) -> None:
    """After a reset the next sign-in leads to enrollment; the grace period counts from the reset, so an account
    older than the grace period may skip once more (until a week after the reset)."""
    add_user(grace_services)
    _seed(grace_services)
    with unit_of_work(grace_services.sessions) as db:
        _user(db).created_at = clock() - timedelta(days=30)
    app = add_client(grace_services, trusted=True)
    run = Cli(grace_services, capsys, monkeypatch)
    assert run("users", "reset-mfa", "erika").code == 0
    with TestClient(create_app(services=grace_services), base_url=ISSUER, follow_redirects=False) as browser:
        page = _enroll_page_after_password(browser, app)
        assert page.status_code == 200 and 'id="enroll-skip-form"' in page.text
        assert (clock() + timedelta(days=7)).date().isoformat() in page.text
        clock.advance(days=8)
        browser.cookies.clear()
        page = _enroll_page_after_password(browser, app)
        assert page.status_code == 200 and 'id="enroll-skip-form"' not in page.text


# --- clients ---------------------------------------------------------------------------------------------------


def _client_row(services: Services, client_id: str) -> Client:
    with unit_of_work(services.sessions) as db:
        row = db.scalar(select(Client).where(Client.client_id == client_id))
        assert row is not None
        return row


def test_clients_add_with_second_factor_settings(run: Cli, services: Services) -> None:
    """`--require-mfa`, `--mfa-method` (repeatable) and `--no-trusted-device` are stored and audited."""
    created = run.json("clients", "add", "--name", "Sozialhilfe", "--redirect-uri", "https://sozial.example/cb",
                       "--require-mfa", "--mfa-method", "webauthn", "--mfa-method", "totp", "--no-trusted-device")
    assert created["require_mfa"] is True and created["mfa_methods"] == ["webauthn", "totp"]
    assert created["allow_trusted_device"] is False
    row = _client_row(services, created["client_id"])
    assert (row.require_mfa, row.mfa_methods, row.allow_trusted_device) == (True, ["webauthn", "totp"], False)
    [event] = _events(services, "client.created")
    assert event.details["require_mfa"] is True and event.details["mfa_methods"] == ["webauthn", "totp"]
    assert created["client_secret"] not in json.dumps(event.details)

    plain = run.json("clients", "add", "--name", "Intranet", "--redirect-uri", "https://intranet.example/cb")
    row = _client_row(services, plain["client_id"])
    assert (row.require_mfa, row.mfa_methods, row.allow_trusted_device) == (None, None, None)
    with pytest.raises(SystemExit) as usage:
        cli.main(["clients", "add", "--name", "X", "--redirect-uri", "https://x.example/cb", "--mfa-method", "pwd"])
    assert usage.value.code == 2


def test_clients_update_changes_and_audits_before_and_after(run: Cli, services: Services) -> None:
    """`idp clients update` sets and clears require_mfa, the method list, consent skipping and trusted browsers;
    each change is audited as client.updated with before/after and nothing secret; no change, no event."""
    registered = add_client(services)
    client_id = registered.client_id
    result = run.json("clients", "update", client_id, "--require-mfa", "--mfa-method", "webauthn",
                      "--mfa-method", "totp", "--trusted", "--no-trusted-device")
    assert result["changed"] == ["allow_trusted_device", "mfa_methods", "require_mfa", "trusted"]
    row = _client_row(services, client_id)
    assert (row.require_mfa, row.mfa_methods, row.trusted, row.allow_trusted_device) == (
        True, ["webauthn", "totp"], True, False)
    [event] = _events(services, "client.updated")
    assert event.client_id == client_id
    assert event.details == {
        "before": {"require_mfa": None, "mfa_methods": None, "trusted": False, "allow_trusted_device": None},
        "after": {"require_mfa": True, "mfa_methods": ["webauthn", "totp"], "trusted": True,
                  "allow_trusted_device": False}}
    assert registered.client_secret and registered.client_secret not in json.dumps(event.details)

    text = run("clients", "update", client_id, "--no-require-mfa", "--any-mfa-method", "--no-trusted",
               "--trusted-device")
    assert text.code == 0 and "require_mfa True -> None" in text.out
    row = _client_row(services, client_id)
    assert (row.require_mfa, row.mfa_methods, row.trusted, row.allow_trusted_device) == (None, None, False, None)

    unchanged = run("clients", "update", client_id, "--no-trusted")
    assert unchanged.code == 0 and "unchanged" in unchanged.out
    assert len(_events(services, "client.updated")) == 2
    missing = run("clients", "update", "no-such-client", "--require-mfa")
    assert missing.code == 1 and "no client" in missing.err
    with pytest.raises(SystemExit) as usage:
        cli.main(["clients", "update", client_id, "--require-mfa", "--no-require-mfa"])
    assert usage.value.code == 2


def test_a_client_updated_to_require_mfa_asks_for_a_second_factor(run: Cli, services: Services,
                                                                  client: TestClient) -> None:
    """With MFA optional, `clients update --require-mfa` makes the next sign-in to that client go through the
    second factor (here: its enrollment)."""
    add_user(services)
    app = add_client(services, trusted=True)
    login = client.get(Flow(app).url()).headers["location"]
    first = submit_login(client, login)
    assert client.get(first.headers["location"]).headers["location"].startswith(app.redirect_uri)
    assert run("clients", "update", app.client_id, "--require-mfa").code == 0
    response = client.get(Flow(app).url())
    assert response.status_code == 303 and response.headers["location"].endswith("/enroll")


@pytest.mark.parametrize("command", [("users", "show"), ("users", "reset-mfa"), ("clients", "update")])
def test_helpdesk_commands_have_help(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """Each new command documents itself with --help."""
    with pytest.raises(SystemExit) as done:
        cli.main([*command, "--help"])
    assert done.value.code == 0
    assert "usage: idp " + " ".join(command) in capsys.readouterr().out


def test_cli_json_output_is_one_object(run: Cli, services: Services) -> None:
    """--json prints exactly one JSON object, for scripts."""
    add_user(services)
    result = run("users", "show", "erika", "--json")
    assert result.code == 0 and isinstance(json.loads(result.out), dict) and result.out.count("\n") == 1

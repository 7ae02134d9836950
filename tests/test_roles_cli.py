"""``idp roles grant/revoke/list`` (issue 5, section 7): roles to users and, with ``--group``, to groups;
unknown roles, users and groups refused; the last administrator's grant kept."""

from __future__ import annotations

import pytest

from idp.accounts.users import roles_of
from idp.db import unit_of_work
from idp.services import Services
from tests.console_cli import Cli, audit_events
from tests.helpers import add_console_user, add_user, user_row


@pytest.fixture
def run(services: Services, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(services, capsys, monkeypatch)


def roles(services: Services, username: str) -> set[str]:
    with unit_of_work(services.sessions) as db:
        return roles_of(db, user_row(db, username))


def test_grant_and_revoke_to_a_user(run: Cli, services: Services) -> None:
    add_user(services, "erika")
    assert run.json("roles", "grant", "erika", "helpdesk") == {"role": "helpdesk", "username": "erika",
                                                                "group": None, "granted": True}
    assert roles(services, "erika") == {"helpdesk"}
    assert run("roles", "revoke", "erika", "helpdesk").out.strip() == "revoked helpdesk from user erika"
    assert roles(services, "erika") == set()
    granted, revoked = audit_events(services, "role.granted")[0], audit_events(services, "role.revoked")[0]
    assert granted.user_agent == "idp-cli" and granted.details["after"] == ["helpdesk"]
    assert revoked.details["before"] == ["helpdesk"] and revoked.details["after"] == []


def test_grant_to_a_group_and_list(run: Cli, services: Services) -> None:
    add_user(services, "max", groups=["IT-Administration"])
    assert run("roles", "grant", "--group", "IT-Administration", "admin").code == 0
    assert roles(services, "max") == {"admin"}
    listed = run.json("roles", "list")["grants"]
    assert [(g["role"], g["group"], g["username"]) for g in listed] == [("admin", "IT-Administration", None)]
    assert "admin      group IT-Administration" in run("roles", "list").out


@pytest.mark.parametrize(("args", "message"), [
    (("grant", "erika", "root"), "Unknown role 'root'"),
    (("grant", "nobody", "admin"), "no user 'nobody'"),
    (("grant", "--group", "Nope", "admin"), "no group 'Nope'"),
    (("grant", "erika"), "name a user and a role"),
    (("grant", "--group", "Bauamt", "erika", "admin"), "with --group, name only the role"),
    (("revoke", "erika", "helpdesk"), "does not hold the role"),
    (("revoke", "erika", "root"), "Unknown role"),
])
def test_bad_requests_are_refused(run: Cli, services: Services, args: tuple[str, ...], message: str) -> None:
    add_user(services, "erika", groups=["Bauamt"])
    result = run("roles", *args)
    assert result.code != 0 and message in result.err, result.err
    assert not audit_events(services, "role.granted") and not audit_events(services, "role.revoked")


def test_a_role_is_not_granted_twice(run: Cli, services: Services) -> None:
    add_console_user(services, "chefin", "admin")
    result = run("roles", "grant", "chefin", "admin")
    assert result.code != 0 and "already holds" in result.err


def test_the_last_admin_grant_stays(run: Cli, services: Services) -> None:
    add_console_user(services, "chefin", "admin")
    result = run("roles", "revoke", "chefin", "admin")
    assert result.code != 0 and "last grant" in result.err
    assert roles(services, "chefin") == {"admin"}
    add_console_user(services, "vertretung", "admin")
    assert run("roles", "revoke", "chefin", "admin").code == 0

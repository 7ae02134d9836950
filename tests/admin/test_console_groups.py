"""Groups and role mappings in the console (issue 5, sections 1 and 2): roles granted to users and to groups
(a directory group such as "IT-Administration" mapped to ``admin``), by administrators only, audited with
before and after, and never the last administrator's grant revoked (lockout protection).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.accounts.users import roles_of
from idp.db import unit_of_work
from idp.models import RoleGrant
from idp.services import Services
from tests.admin.people import events, grant_id, grant_to_group, new_browser, post, sign_in_console, user_id
from tests.conftest import FakeClock
from tests.helpers import add_console_user, add_user, open_page, user_row


def roles(services: Services, username: str) -> set[str]:
    with unit_of_work(services.sessions) as db:
        return roles_of(db, user_row(db, username))


def test_groups_list_with_member_counts_and_grants(client: TestClient, services: Services, clock: FakeClock) -> None:
    add_user(services, "erika", groups=["Bauamt", "Alle"])
    add_user(services, "max", groups=["Alle"])
    add_user(services, "eva", groups=["Alle"])
    grant_to_group(services, "Bauamt", "app-owner")
    sign_in_console(client, services, clock, "desk", "helpdesk")
    page = open_page(client, "/admin/groups", clock)
    assert 'data-members="3"' in page.text and 'data-members="1"' in page.text
    assert "group Bauamt" in page.text and "user desk" in page.text


def test_an_admin_grants_a_role_to_a_user_and_to_a_group(client: TestClient, services: Services,
                                                         clock: FakeClock) -> None:
    """Granting is audited with the actor and the target's roles before and after."""
    add_user(services, "erika")
    add_user(services, "max", groups=["IT-Administration"])
    token = sign_in_console(client, services, clock, "admina", "admin")
    assert post(client, "/admin/roles/grant", token, role="helpdesk", username="Erika").status_code == 303
    assert post(client, "/admin/roles/grant", token, role="admin", group="IT-Administration").status_code == 303
    assert roles(services, "erika") == {"helpdesk"} and roles(services, "max") == {"admin"}
    user_grant, group_grant = events(services, "role.granted")
    assert user_grant.subject == "erika" and user_grant.details["before"] == []
    assert user_grant.details["after"] == ["helpdesk"] and user_grant.details["target"] == "user"
    assert group_grant.subject == "IT-Administration" and group_grant.details["target"] == "group"
    with unit_of_work(services.sessions) as db:
        assert user_grant.actor == user_row(db, "admina").sub
    assert "granted" in client.get("/admin/groups?done=granted").text


@pytest.mark.parametrize("fields", [
    {"role": "superuser", "username": "erika"},
    {"role": "", "username": "erika"},
    {"role": "helpdesk"},
    {"role": "helpdesk", "username": "erika", "group": "Bauamt"},
    {"role": "helpdesk", "username": "nobody"},
    {"role": "helpdesk", "group": "no such group"},
    {"role": "helpdesk", "username": "x" * 5000},
])
def test_bad_grants_are_refused_with_a_clear_page(client: TestClient, services: Services, clock: FakeClock,
                                                  fields: dict[str, str]) -> None:
    add_user(services, "erika", groups=["Bauamt"])
    token = sign_in_console(client, services, clock, "admina", "admin")
    response = post(client, "/admin/roles/grant", token, **fields)
    assert response.status_code == 400 and 'id="error-message"' in response.text
    assert not events(services, "role.granted")


def test_a_role_held_already_is_not_granted_twice(client: TestClient, services: Services, clock: FakeClock) -> None:
    token = sign_in_console(client, services, clock, "admina", "admin")
    assert post(client, "/admin/roles/grant", token, role="admin", username="admina").status_code == 400
    with unit_of_work(services.sessions) as db:
        assert len(db.scalars(select(RoleGrant)).all()) == 1


def test_the_last_admin_grant_cannot_be_revoked(client: TestClient, services: Services, clock: FakeClock) -> None:
    """Lockout protection: the only grant that gives an enabled account ``admin`` stays; once a group grant
    gives another enabled member ``admin``, it may go. A disabled administrator does not count."""
    token = sign_in_console(client, services, clock, "admina", "admin")
    own = grant_id(services, "admina", "admin")
    refused = post(client, f"/admin/roles/{own}/revoke", token)
    assert refused.status_code == 409 and "last" in refused.text
    add_console_user(services, "ruhend", "admin")
    with unit_of_work(services.sessions) as db:
        user_row(db, "ruhend").disabled_at = services.now()
    assert post(client, f"/admin/roles/{own}/revoke", token).status_code == 409, "a disabled admin does not count"

    add_user(services, "max", groups=["IT-Administration"])
    group_grant = grant_to_group(services, "IT-Administration", "admin")
    assert post(client, f"/admin/roles/{own}/revoke", token).status_code == 303
    assert roles(services, "admina") == set()
    [revoked] = events(services, "role.revoked")
    assert revoked.details["before"] == ["admin"] and revoked.details["after"] == []
    # admina is no administrator any more: the console refuses the next revocation outright.
    assert post(client, f"/admin/roles/{group_grant}/revoke", token).status_code == 403


def test_an_admin_can_revoke_another_admins_grant(client: TestClient, services: Services, clock: FakeClock) -> None:
    add_console_user(services, "adminb", "admin")
    token = sign_in_console(client, services, clock, "admina", "admin")
    assert post(client, f"/admin/roles/{grant_id(services, 'adminb', 'admin')}/revoke", token).status_code == 303
    assert roles(services, "adminb") == set()
    assert user_id(services, "adminb")


def test_a_revoked_role_no_longer_opens_the_console(client: TestClient, services: Services, clock: FakeClock) -> None:
    """The grant is checked at every request: the desk's open console closes with the revocation."""
    token = sign_in_console(client, services, clock, "admina", "admin")
    desk = new_browser(client)
    sign_in_console(desk, services, clock, "desk", "helpdesk")
    assert desk.get("/admin/users").status_code == 200
    assert post(client, f"/admin/roles/{grant_id(services, 'desk', 'helpdesk')}/revoke", token).status_code == 303
    assert desk.get("/admin/users").status_code == 403

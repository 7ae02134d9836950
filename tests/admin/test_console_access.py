"""Who may open the console (issue 5, section 1): a session with a second factor proved in it, and a role.

Sign-in runs through the real pages (password, then the authenticator app); roles come from a direct grant
or from a group; a browser trusted for the workday never stands in for the second factor here.
"""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from idp.services import Services
from tests.conftest import FakeClock
from tests.helpers import LOGIN_PAGE, add_console_user, add_user, open_page, through_sign_in


def test_signed_out_browser_goes_through_sign_in_with_a_second_factor(client: TestClient, services: Services,
                                                                      clock: FakeClock) -> None:
    secret = add_console_user(services, "admina", "admin")
    visited: list[str] = []
    page = open_page(client, "/admin", clock, username="admina", secret=secret, visited=visited)
    assert 'id="admin-nav"' in page.text
    # The policy of these tests asks only for a password; the console asked for the app's code anyway.
    assert any(LOGIN_PAGE.fullmatch(v) for v in visited) and any(v.endswith("/factor") for v in visited)


def test_a_user_without_a_second_factor_enrolls_one_before_the_console(client: TestClient, services: Services,
                                                                       clock: FakeClock) -> None:
    add_user(services, "neu")
    response = through_sign_in(client, client.get("/admin"), clock, username="neu")
    assert response.status_code == 200
    assert response.url.path.endswith("/enroll"), response.url


def test_a_user_without_a_console_role_is_refused(client: TestClient, services: Services, clock: FakeClock) -> None:
    secret = add_console_user(services, "erika")
    page = through_sign_in(client, client.get("/admin"), clock, username="erika", secret=secret)
    assert page.status_code == 403
    assert 'id="admin-nav"' not in page.text


@pytest.mark.parametrize("role", ["admin", "helpdesk"])
def test_the_navigation_shows_what_the_role_may_open(client: TestClient, services: Services, clock: FakeClock,
                                                     role: str) -> None:
    secret = add_console_user(services, "someone", role)
    page = open_page(client, "/admin", clock, username="someone", secret=secret)
    for section in ("dashboard", "clients", "users", "groups", "sessions", "audit", "sync"):
        assert f'id="admin-nav-{section}"' in page.text


def test_app_owners_start_at_their_applications(client: TestClient, services: Services, clock: FakeClock) -> None:
    secret = add_console_user(services, "owner", "app-owner")
    visited: list[str] = []
    through_sign_in(client, client.get("/admin"), clock, username="owner", secret=secret, visited=visited)
    assert visited[-1] == "/admin/clients"


def test_a_role_granted_to_a_group_opens_the_console(client: TestClient, services: Services,
                                                     clock: FakeClock) -> None:
    secret = add_console_user(services, "gruppe", "helpdesk", group="IT-Servicedesk")
    page = open_page(client, "/admin", clock, username="gruppe", secret=secret)
    assert "helpdesk" in page.text


def test_password_only_session_is_asked_for_the_second_factor(client: TestClient, services: Services,
                                                              clock: FakeClock) -> None:
    """A session that signed in elsewhere with the password alone (the policy allowed it) must prove the second
    factor before the console opens."""
    secret = add_console_user(services, "admina", "admin")
    page = open_page(client, "/account", clock, username="admina")  # no second factor asked: policy optional
    assert page.status_code == 200
    visited: list[str] = []
    console = open_page(client, "/admin", clock, username="admina", secret=secret, visited=visited)
    assert 'id="admin-nav"' in console.text
    assert any(v.endswith("/factor") for v in visited)
    assert not any(LOGIN_PAGE.fullmatch(v) for v in visited), "the password was not asked again"

"""The console's people pages (issue 5, sections 1, 2 and 6): who may look at and act on accounts, sessions,
groups, the audit log and the directory sync; what disable, enable, unlock, reset and end sessions do; and
that no input, guessed id or missing CSRF token gets anything but a clear refusal.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.db import unit_of_work
from idp.helpdesk import user_overview
from idp.models import AttemptCounter, DirectoryAccount, SmsFactor, SsoSession, Token, TotpFactor
from idp.services import Services
from tests.admin.people import (
    events,
    grant_id,
    is_active,
    new_browser,
    open_session,
    post,
    sign_in_console,
    user_id,
)
from tests.conftest import FakeClock
from tests.helpers import (
    PASSWORD,
    Flow,
    add_client,
    add_console_user,
    add_user,
    authorize,
    exchange,
    open_page,
    seed_totp,
    submit_login,
    user_row,
)

# --- the role × action matrix -----------------------------------------------------------------------------------

PAGES = ["/admin/users", "/admin/users/{erika}", "/admin/groups", "/admin/sessions", "/admin/audit",
         "/admin/audit.csv", "/admin/sync"]


@pytest.mark.parametrize("role", ["admin", "helpdesk", "app-owner", None])
def test_role_matrix(client: TestClient, services: Services, clock: FakeClock, role: str | None) -> None:
    """Section 1: admin may do everything here; helpdesk may look everywhere and act on users, but not grant
    roles or start a sync; an app owner and a user without a console role are refused every page and form."""
    add_user(services, "erika", groups=["Bauamt"])
    erika = user_id(services, "erika")
    session_id, _ = open_session(services, "erika")
    add_console_user(services, "other-admin", "admin")
    admin_grant = grant_id(services, "other-admin", "admin")
    token = sign_in_console(client, services, clock, "staff", *([role] if role else []))
    viewer = role in {"admin", "helpdesk"}
    for path in PAGES:
        response = client.get(path.format(erika=erika))
        assert response.status_code == (200 if viewer else 403), (path, response.status_code)
    forms = [
        (f"/admin/users/{erika}/unlock", {}, viewer),
        (f"/admin/users/{erika}/end-sessions", {"session": str(session_id)}, viewer),
        (f"/admin/users/{erika}/reset-mfa", {}, viewer),
        (f"/admin/users/{erika}/disable", {}, viewer),
        (f"/admin/users/{erika}/enable", {}, viewer),
        ("/admin/roles/grant", {"role": "helpdesk", "username": "erika"}, role == "admin"),
        (f"/admin/roles/{admin_grant}/revoke", {}, role == "admin"),
    ]
    for path, fields, allowed in forms:
        response = post(client, path, token, **fields)
        assert response.status_code == (303 if allowed else 403), (path, response.status_code, response.text)
    # "Sync now" is the administrators' (without a configured directory it says so; see test_console_sync).
    assert post(client, "/admin/sync/run", token).status_code == (409 if role == "admin" else 403)
    assert is_active(services, "erika") is True, "disabled and enabled again" if viewer else "untouched"


def test_helpdesk_cannot_act_on_an_administrators_account(client: TestClient, services: Services,
                                                          clock: FakeClock) -> None:
    """Section 6, "a helpdesk user cannot escalate to admin": resetting an administrator's factors (then
    enrolling one's own with a known password), disabling one, unlocking one or ending its sessions is
    refused; the page offers none of it. Roles held through a group count the same."""
    add_console_user(services, "chefin", "admin", group="IT-Administration")
    session_id, _ = open_session(services, "chefin")
    target = user_id(services, "chefin")
    token = sign_in_console(client, services, clock, "desk", "helpdesk")
    page = client.get(f"/admin/users/{target}")
    assert page.status_code == 200 and 'id="user-actions"' not in page.text and 'name="session"' not in page.text
    for action in ("reset-mfa", "disable", "unlock", "end-sessions"):
        assert post(client, f"/admin/users/{target}/{action}", token).status_code == 403, action
    assert f'action="/admin/sessions/{session_id}/end"' not in client.get("/admin/sessions").text
    assert client.post(f"/admin/sessions/{session_id}/end", data={"csrf_token": token}).status_code == 403
    with unit_of_work(services.sessions) as db:
        assert db.scalar(select(TotpFactor).where(TotpFactor.user_id == target)) is not None
        assert db.get(SsoSession, session_id).ended_at is None  # type: ignore[union-attr]
    assert is_active(services, "chefin")
    assert not events(services, "user.mfa_reset") and not events(services, "user.disabled")


def test_helpdesk_cannot_grant_itself_a_role(client: TestClient, services: Services, clock: FakeClock) -> None:
    """The service desk sees the grants but never changes them (Action.MANAGE_ROLES)."""
    token = sign_in_console(client, services, clock, "desk", "helpdesk")
    page = client.get("/admin/groups")
    assert page.status_code == 200 and 'id="grant-form"' not in page.text
    assert post(client, "/admin/roles/grant", token, role="admin", username="desk").status_code == 403
    assert not events(services, "role.granted")


# --- guessed ids, CSRF and bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/admin/users/999999", "/admin/users/abc", "/admin/users/-1",
                                  "/admin/users/99999999999999999999", "/admin/users/%EF%BC%91"])
def test_unknown_user_ids_are_404(client: TestClient, services: Services, clock: FakeClock, path: str) -> None:
    token = sign_in_console(client, services, clock, "admina", "admin")
    assert client.get(path).status_code == 404
    assert post(client, path + "/disable", token).status_code == 404


def test_guessed_session_and_action_are_404(client: TestClient, services: Services, clock: FakeClock) -> None:
    """Ending a session of another user through this user's page, an unknown session or an unknown action is
    answered like a page that does not exist, and ends nothing."""
    add_user(services, "erika")
    add_user(services, "max")
    other_session, _ = open_session(services, "max")
    erika = user_id(services, "erika")
    token = sign_in_console(client, services, clock, "admina", "admin")
    assert post(client, f"/admin/users/{erika}/end-sessions", token, session=str(other_session)).status_code == 404
    assert post(client, f"/admin/users/{erika}/end-sessions", token, session="x1").status_code == 404
    assert post(client, f"/admin/users/{erika}/promote", token).status_code == 404
    assert post(client, "/admin/sessions/999999/end", token).status_code == 404
    assert post(client, "/admin/roles/999999/revoke", token).status_code == 404
    with unit_of_work(services.sessions) as db:
        assert db.get(SsoSession, other_session).ended_at is None  # type: ignore[union-attr]


def test_forms_without_or_with_a_foreign_csrf_token_are_refused(client: TestClient, services: Services,
                                                                clock: FakeClock) -> None:
    """Section 6: every form is bound to the session; a token of another console session does not do."""
    add_user(services, "erika")
    erika = user_id(services, "erika")
    sign_in_console(client, services, clock, "admina", "admin")
    other = new_browser(client)
    foreign = sign_in_console(other, services, clock, "adminb", "admin")
    for path in (f"/admin/users/{erika}/disable", "/admin/roles/grant", "/admin/sync/run"):
        assert post(client, path, None, role="admin", username="erika").status_code == 403, path
        assert post(client, path, foreign, role="admin", username="erika").status_code == 403, path
        assert post(client, path, "garbage", role="admin", username="erika").status_code == 403, path
    assert is_active(services, "erika") and not events(services, "role.granted")


@pytest.mark.parametrize("query", ["page=999999999999", "page=-3", "page=abc", "q=%25", "q=_", "q=%00",
                                   "q=" + "x" * 3000, "page=1e9"])
def test_the_user_search_never_fails(client: TestClient, services: Services, clock: FakeClock, query: str) -> None:
    token = sign_in_console(client, services, clock, "admina", "admin")
    assert token
    response = client.get("/admin/users?" + query)
    assert response.status_code == 200, response.text


def test_the_user_search_finds_by_name_email_and_username(client: TestClient, services: Services,
                                                         clock: FakeClock) -> None:
    add_user(services, "erika", display_name="Erika Mustermann", email="e.mustermann@musterstadt.de")
    add_user(services, "max", display_name="Max Meier", email="max@example.org")
    add_user(services, "under_score", display_name="U S", email="us@example.org")
    sign_in_console(client, services, clock, "admina", "admin")
    for query, found, missing in (("muster", "erika", "max"), ("MEIER", "max", "erika"),
                                  ("example.org", "max", "erika"), ("r_s", "under_score", "erika"),
                                  ("_", "under_score", "max")):
        page = client.get("/admin/users", params={"q": query})
        assert page.status_code == 200
        assert f">{found}</a>" in page.text and f">{missing}</a>" not in page.text, query


def test_the_user_list_pages(client: TestClient, services: Services, clock: FakeClock) -> None:
    for number in range(55):
        add_user(services, f"person{number:02d}", password=None)
    sign_in_console(client, services, clock, "admina", "admin")
    first = client.get("/admin/users", params={"q": "person"})
    assert 'id="page-next"' in first.text and "person49" in first.text and "person50" not in first.text
    second = client.get("/admin/users", params={"q": "person", "page": "2"})
    assert "person50" in second.text and "person49" not in second.text and 'id="page-next"' not in second.text
    far = client.get("/admin/users", params={"q": "person", "page": "99999"})
    assert "person54" in far.text, "a page past the end shows the last one"


# --- what the actions do ----------------------------------------------------------------------------------------

def test_disable_ends_the_session_and_refuses_the_refresh_token(client: TestClient, services: Services,
                                                               clock: FakeClock) -> None:
    """Disabling ends the user's SSO sessions (the cookie no longer signs in), revokes refresh tokens, and is
    audited with actor, before and after; enabling brings the account back without its old sessions."""
    add_user(services, "erika")
    app = add_client(services)
    browser = new_browser(client)
    flow = Flow(app)
    tokens = exchange(browser, flow, authorize(browser, flow)["code"]).json()
    assert tokens["refresh_token"] and browser.get("/account").status_code == 200
    erika = user_id(services, "erika")
    token = sign_in_console(client, services, clock, "admina", "admin")

    response = post(client, f"/admin/users/{erika}/disable", token)
    assert response.status_code == 303 and response.headers["location"] == f"/admin/users/{erika}?done=disable"
    assert not is_active(services, "erika")
    assert browser.get("/account").status_code == 303, "the session cookie no longer works"
    refreshed = browser.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                             auth=(app.client_id, app.client_secret or ""))
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    [row] = events(services, "user.disabled")
    assert row.actor == user_row_sub(services, "admina") and row.subject == "erika"
    assert row.details["before"] == {"active": True} and row.details["after"] == {"active": False}
    assert row.details["sessions_ended"] == 1
    with unit_of_work(services.sessions) as db:
        revoked = [token.revoked_at for token in db.scalars(select(Token).where(Token.user_id == erika))]
        assert revoked and all(revoked), "every token of the account is revoked, offline ones too"
    page = client.get(f"/admin/users/{erika}?done=disable")
    assert 'data-state="disabled"' in page.text and 'id="admin-notice"' in page.text
    # Signing in again is refused while disabled.
    again = new_browser(client)
    location = again.get(Flow(app).url()).headers["location"]
    assert submit_login(again, location, "erika").status_code == 200

    assert post(client, f"/admin/users/{erika}/disable", token).status_code == 409, "already disabled"
    assert post(client, f"/admin/users/{erika}/enable", token).status_code == 303
    assert is_active(services, "erika")
    [enabled] = events(services, "user.enabled")
    assert enabled.details["after"] == {"active": True} and enabled.actor == row.actor
    assert browser.get("/account").status_code == 303, "the ended session stays ended"


def user_row_sub(services: Services, username: str) -> str:
    with unit_of_work(services.sessions) as db:
        return user_row(db, username).sub


def test_nobody_disables_their_own_account_or_the_last_administrator(client: TestClient, services: Services,
                                                                     clock: FakeClock) -> None:
    token = sign_in_console(client, services, clock, "admina", "admin")
    assert post(client, f"/admin/users/{user_id(services, 'admina')}/disable", token).status_code == 409
    assert is_active(services, "admina")


def test_unlock_clears_the_throttle_of_the_account(client: TestClient, services: Services, clock: FakeClock) -> None:
    """Section 1, "unlock": after failed passwords block the account, the service desk's unlock lets the right
    password in at once; the address counter (another concern: one source trying many accounts) stays."""
    add_user(services, "erika")
    app = add_client(services)
    token = sign_in_console(client, services, clock, "desk", "helpdesk")
    victim = new_browser(client)
    for _ in range(services.settings.throttle.free_attempts_per_account + 1):
        location = victim.get(Flow(app).url()).headers["location"]
        submit_login(victim, location, "erika", "wrong password")
    location = victim.get(Flow(app).url()).headers["location"]
    assert submit_login(victim, location, "erika", PASSWORD).status_code == 429, "blocked before the unlock"
    erika = user_id(services, "erika")
    assert 'data-locked="yes"' in client.get(f"/admin/users/{erika}").text
    assert post(client, f"/admin/users/{erika}/unlock", token).status_code == 303
    assert 'data-locked="no"' in client.get(f"/admin/users/{erika}").text
    location = victim.get(Flow(app).url()).headers["location"]
    assert submit_login(victim, location, "erika", PASSWORD).status_code == 303, "signed in after the unlock"
    [row] = events(services, "user.unlocked")
    assert row.details["counters_cleared"] == 1 and row.actor == user_row_sub(services, "desk")
    assert row.details["before"]["failures"]["password"] > 0 and row.details["after"] == {"failures": {}}
    with unit_of_work(services.sessions) as db:
        assert db.scalar(select(AttemptCounter).where(AttemptCounter.key.startswith("password:ip:"))) is not None


def test_reset_second_factors_through_the_page(client: TestClient, services: Services, clock: FakeClock) -> None:
    """Section 1, the phone lost at 7:45: the service desk resets the factors; the page lists factor names
    and kinds before (never a seed) and none after; the reset is audited with the desk as actor."""
    add_user(services, "erika")
    _, seed = seed_totp(services, "erika", name="Diensthandy")
    session_id, _ = open_session(services, "erika")
    erika = user_id(services, "erika")
    token = sign_in_console(client, services, clock, "desk", "helpdesk")
    before = client.get(f"/admin/users/{erika}")
    assert "Diensthandy" in before.text and 'data-kind="totp"' in before.text and seed not in before.text
    assert post(client, f"/admin/users/{erika}/reset-mfa", token).status_code == 303
    after = client.get(f"/admin/users/{erika}?done=reset-mfa")
    assert "Diensthandy" not in after.text and "No second factor." in after.text
    [row] = events(services, "user.mfa_reset")
    assert row.actor == user_row_sub(services, "desk") and row.details["removed"]["totp"] == 1
    with unit_of_work(services.sessions) as db:
        assert db.get(SsoSession, session_id).ended_at is not None  # type: ignore[union-attr]


def test_end_one_session_or_all(client: TestClient, services: Services, clock: FakeClock) -> None:
    add_user(services, "erika")
    first, _ = open_session(services, "erika")
    second, _ = open_session(services, "erika")
    third, _ = open_session(services, "erika")
    erika = user_id(services, "erika")
    token = sign_in_console(client, services, clock, "desk", "helpdesk")
    assert f'action="/admin/sessions/{second}/end"' in client.get("/admin/sessions").text
    assert post(client, f"/admin/users/{erika}/end-sessions", token, session=str(first)).status_code == 303
    assert post(client, f"/admin/sessions/{second}/end", token).status_code == 303
    with unit_of_work(services.sessions) as db:
        ended = {row.id: row.end_reason for row in db.scalars(select(SsoSession).where(SsoSession.user_id == erika))}
    assert ended == {first: "ended_by_admin", second: "ended_by_admin", third: None}
    assert post(client, f"/admin/sessions/{second}/end", token).status_code == 404, "already ended"
    assert post(client, f"/admin/users/{erika}/end-sessions", token).status_code == 303
    assert [row.details["reason"] for row in events(services, "logout")] == ["ended_by_admin"] * 3


def test_the_sessions_page_lists_active_sessions(client: TestClient, services: Services, clock: FakeClock) -> None:
    add_user(services, "erika")
    active, _ = open_session(services, "erika")
    gone, _ = open_session(services, "erika")
    with unit_of_work(services.sessions) as db:
        row = db.get(SsoSession, gone)
        assert row is not None
        row.expires_at = services.now() - timedelta(seconds=1)
    sign_in_console(client, services, clock, "desk", "helpdesk")
    page = client.get("/admin/sessions")
    assert f'id="session-{active}"' in page.text and f'id="session-{gone}"' not in page.text
    assert "192.0.2.7" in page.text


def test_a_directory_account_disabled_in_the_console_is_not_enabled_by_its_directory(
        client: TestClient, services: Services, clock: FakeClock) -> None:
    """Decision (docs/console.md): a console disable leaves ``disabled_reason`` empty, which the sync reads as
    "an administrator disabled it" and never re-enables. An account the directory disabled cannot be enabled
    in the console: the next run would disable it again; it is enabled in the directory."""
    add_user(services, "dirk", password=None)
    dirk = user_id(services, "dirk")
    with unit_of_work(services.sessions) as db:
        user = user_row(db, "dirk")
        user.source = "rathaus"
        db.add(DirectoryAccount(user_id=user.id, source="rathaus", external_id="guid-1", dn="uid=dirk,dc=x"))
    token = sign_in_console(client, services, clock, "admina", "admin")
    assert post(client, f"/admin/users/{dirk}/disable", token).status_code == 303
    with unit_of_work(services.sessions) as db:
        link = db.get(DirectoryAccount, dirk)
        assert link is not None and link.disabled_reason is None
        link.disabled_reason = "disabled_in_directory"  # as a later sync records it
    refused = post(client, f"/admin/users/{dirk}/enable", token)
    assert refused.status_code == 409 and "rathaus" in refused.text
    assert not is_active(services, "dirk")


def test_user_detail_shows_groups_roles_and_source(client: TestClient, services: Services, clock: FakeClock) -> None:
    add_console_user(services, "gruppe", "helpdesk", group="IT-Servicedesk")
    target = user_id(services, "gruppe")
    sign_in_console(client, services, clock, "admina", "admin")
    page = open_page(client, f"/admin/users/{target}", clock)
    assert "IT-Servicedesk" in page.text and ">helpdesk<" in page.text and 'id="user-source">local<' in page.text


def test_sync_page_without_a_directory_says_so(client: TestClient, services: Services, clock: FakeClock) -> None:
    """Without [[directory.sources]] the page says there is nothing to sync, and "sync now" is refused with
    that reason (the runs themselves are tested against slapd in tests/directory/test_console_sync.py)."""
    token = sign_in_console(client, services, clock, "admina", "admin")
    page = client.get("/admin/sync")
    assert 'id="sync-no-sources"' in page.text and 'id="sync-now"' not in page.text
    refused = post(client, "/admin/sync/run", token)
    assert refused.status_code == 409 and "[[directory.sources]]" in refused.text
    assert not events(services, "directory.sync_requested")


@pytest.mark.parametrize("path", ["/admin/sessions", "/admin/sync", "/admin/groups", "/admin"])
def test_other_lists_take_any_page_number(client: TestClient, services: Services, clock: FakeClock,
                                          path: str) -> None:
    sign_in_console(client, services, clock, "desk", "helpdesk")
    for query in ("page=99999999999999", "page=-1", "page=%FF", "done=%3Cscript%3E"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 200 and "<script>" not in response.text, (path, query)


def test_a_phone_from_the_directory_is_marked_on_the_user_page(client: TestClient, services: Services,
                                                               clock: FakeClock) -> None:
    """A phone the directory sync maintains (sms_from_directory) says so next to the user's own one, on the page
    and in the service desk's JSON, so the desk knows a reset brings it back at the next sync."""
    add_user(services, "erika")
    erika = user_id(services, "erika")
    with unit_of_work(services.sessions) as db:
        db.add(SmsFactor(user_id=erika, name="Directory", phone="+4915112345678", managed_by="rathaus",
                         confirmed_at=services.now()))
        db.add(SmsFactor(user_id=erika, name="Privat", phone="+4915187654321", confirmed_at=services.now()))
    sign_in_console(client, services, clock, "desk", "helpdesk")
    page = client.get(f"/admin/users/{erika}")
    assert page.text.count("from the directory rathaus") == 1
    own = re.search(r"Privat[^<]*</li>", page.text)
    assert own is not None and "from the directory" not in own.group(0)
    with unit_of_work(services.sessions) as db:
        overview = user_overview(db, user_row(db, "erika"), services.now())
    assert sorted((f["name"], f["managed_by"]) for f in overview["factors"]) == [("Directory", "rathaus"),
                                                                                 ("Privat", None)]

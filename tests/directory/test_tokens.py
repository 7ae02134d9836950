"""What relying parties see: directory changes in tokens after one sync, and a departed employee losing every
session and token (issue 4, "Done when"; security cases 51 and 52)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.db import unit_of_work
from idp.models import Client, SsoSession, Token
from idp.services import Services
from tests.directory.slapd import USER_PASSWORD, Directory
from tests.directory.support import get, synced
from tests.helpers import Flow, RegisteredClient, add_client, authorize, decode, exchange, follow_to_login, submit_login
from tests.test_logout import Receiver, receiver  # noqa: F401  (the fixture, shared with the logout tests)


def sign_in(client: TestClient, app: RegisteredClient, username: str, scope: str) -> dict[str, Any]:
    flow = Flow(app, scope=scope)
    response = exchange(client, flow, authorize(client, flow, username=username, password=USER_PASSWORD)["code"])
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def refresh(client: TestClient, app: RegisteredClient, token: str) -> Any:
    assert app.client_secret
    return client.post("/token", data={"grant_type": "refresh_token", "refresh_token": token},
                       auth=(app.client_id, app.client_secret))


def userinfo(client: TestClient, access_token: str) -> Any:
    return client.get("/userinfo", headers={"Authorization": f"Bearer {access_token}"})


def test_directory_changes_reach_the_tokens_after_one_sync(client: TestClient, services: Services,
                                                           directory: Directory) -> None:
    """New name and mail, and a group removed (with the nested group it led into), appear in the next ID token,
    userinfo and refresh: no stale groups are cached in the session (security case 52)."""
    synced(services)
    app = add_client(services, trusted=True)
    first = sign_in(client, app, "hans.meier", "openid profile email groups")
    claims = decode(client, first["id_token"]).claims
    assert set(claims["groups"]) == {"Bauamt", "Alle Mitarbeitenden", "VPN-Nutzer"}
    assert claims["name"] == "Hans Meier" and claims["email"] == "hans.meier@stadt.example"

    directory.set_user("hans.meier", displayName="Hans Meier-Schulze", mail="h.meier-schulze@stadt.example")
    directory.remove_member("Bauamt", directory.users["hans.meier"])
    synced(services)

    refreshed = refresh(client, app, first["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    info = userinfo(client, refreshed.json()["access_token"]).json()
    assert info["name"] == "Hans Meier-Schulze" and info["email"] == "h.meier-schulze@stadt.example"
    assert set(info["groups"]) == {"VPN-Nutzer"}
    if "id_token" in refreshed.json():
        assert set(decode(client, refreshed.json()["id_token"]).claims["groups"]) == {"VPN-Nutzer"}
    again = sign_in(client, app, "hans.meier", "openid profile email groups")
    assert set(decode(client, again["id_token"]).claims["groups"]) == {"VPN-Nutzer"}


@pytest.mark.parametrize("leaving", ["disable", "delete"])
def test_departed_employee_loses_every_session_and_token(client: TestClient, services: Services,
                                                         directory: Directory, receiver: Receiver,  # noqa: F811
                                                         leaving: str) -> None:
    """Disabled or removed in the directory: after one sync the SSO session has ended, every refresh token
    (offline ones too) is revoked, the relying party gets a back-channel logout token, and neither refresh,
    userinfo nor a new sign-in works (security case 51)."""
    synced(services)
    app = add_client(services, trusted=True, backchannel_logout_uri=receiver.url("/bc"))
    tokens = sign_in(client, app, "lena.fuß", "openid profile offline_access")
    session_bound = sign_in(client, app, "lena.fuß", "openid profile")
    lena = get(services, "lena.fuss")

    if leaving == "disable":
        directory.disable("lena.fuß")
    else:
        directory.delete("lena.fuß")
    report = synced(services)
    assert report.disabled == 1
    # A CLI run has no event loop of its own; the server's sender polls, or is woken as here.
    assert client.portal is not None
    client.portal.call(client.app.state.ctx.sender.wake)  # type: ignore[attr-defined,call-arg]

    with unit_of_work(services.sessions) as db:
        sessions = db.scalars(select(SsoSession).where(SsoSession.user_id == lena.id)).all()
        assert sessions and all(s.ended_at is not None for s in sessions)
        assert {s.end_reason for s in sessions} == {"disabled_in_directory" if leaving == "disable"
                                                    else "removed_from_directory"}
        rows = db.scalars(select(Token).join(Client).where(Token.user_id == lena.id,
                                                           Client.client_id == app.client_id)).all()
        assert rows and all(row.revoked_at is not None for row in rows)
    [form] = receiver.wait_for("/bc", 1)
    logout = decode(client, form["logout_token"]).claims
    assert logout["sub"] == lena.sub and logout["aud"] == app.client_id

    for token in (tokens["refresh_token"], session_bound["refresh_token"]):
        response = refresh(client, app, token)
        assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert userinfo(client, tokens["access_token"]).status_code == 401
    page = submit_login(client, follow_to_login(client, Flow(app)), "lena.fuß", USER_PASSWORD)
    assert page.status_code == 200 and "Username or password is incorrect." in page.text

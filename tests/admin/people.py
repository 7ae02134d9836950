"""Helpers of the console's people pages tests: a signed-in console user of some role, the CSRF token its
session's forms carry, and rows to act on."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.testclient import TestClient

from idp.accounts.sessions import create_session
from idp.admin.access import CSRF_PURPOSE
from idp.audit import Origin
from idp.db import unit_of_work
from idp.models import AuditEvent, Group, RoleGrant, User
from idp.services import Services
from idp.web import cookies, csrf
from tests.conftest import ISSUER, FakeClock
from tests.helpers import add_console_user, through_sign_in, user_row


def console_csrf(services: Services, browser: TestClient) -> str:
    """The token the console's forms carry for this browser's session (as ``Console.csrf_token`` makes it)."""
    value = browser.cookies.get(cookies.cookie_name(services.settings, cookies.SESSION)) or ""
    return csrf.make_token(services.csrf_key, CSRF_PURPOSE, "session:" + services.hasher.hash(value))


def sign_in_console(browser: TestClient, services: Services, clock: FakeClock, username: str, *roles: str,
                    group: str | None = None) -> str:
    """``username`` with ``roles`` signs in (password and authenticator app) through ``/admin/users``;
    returns the CSRF token of the session, whether the role may open that page or not."""
    secret = add_console_user(services, username, *roles, group=group)
    page = through_sign_in(browser, browser.get("/admin/users"), clock, username=username, secret=secret)
    assert page.status_code in (200, 403), page.text
    return console_csrf(services, browser)


def new_browser(browser: TestClient) -> TestClient:
    return TestClient(browser.app, base_url=ISSUER, follow_redirects=False)


def user_id(services: Services, username: str) -> int:
    with unit_of_work(services.sessions) as db:
        return user_row(db, username).id


def open_session(services: Services, username: str) -> tuple[int, str]:
    """A session of ``username`` as a sign-in would open it; returns its row id and cookie value."""
    with unit_of_work(services.sessions) as db:
        cookie, row = create_session(db, services.hasher, services.settings.session, user_row(db, username),
                                     amr=["pwd"], acr=None, now=services.now(), origin=Origin("192.0.2.7", "test"))
        db.flush()
        return row.id, cookie


def grant_to_group(services: Services, group: str, role: str) -> int:
    with unit_of_work(services.sessions) as db:
        row = db.scalar(select(Group).where(Group.name == group))
        assert row is not None
        grant = RoleGrant(role=role, group_id=row.id)
        db.add(grant)
        db.flush()
        return grant.id


def grant_id(services: Services, username: str, role: str) -> int:
    with unit_of_work(services.sessions) as db:
        found = db.scalar(select(RoleGrant.id).join(User, User.id == RoleGrant.user_id)
                          .where(User.username == username, RoleGrant.role == role))
        assert found is not None
        return found


def events(services: Services, event: str) -> list[AuditEvent]:
    with unit_of_work(services.sessions) as db:
        rows = list(db.scalars(select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)))
        db.expunge_all()
        return rows


def is_active(services: Services, username: str) -> bool:
    with unit_of_work(services.sessions) as db:
        return user_row(db, username).is_active


def post(browser: TestClient, path: str, token: str | None, **fields: Any) -> Any:
    data = {**fields, **({"csrf_token": token} if token is not None else {})}
    return browser.post(path, data=data)

"""Onboarding with governance (issue 5, section 3) and self-service for app owners (section 4) in the console: an
app owner files an application as a request that an administrator approves or declines with a comment; an
allow-list of redirect domains per owner approves automatically; owners manage their own applications only, and
cannot widen what an administrator decided."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.db import unit_of_work
from idp.models import AuditEvent, OwnerRedirectDomain
from idp.oauth import client_registry as registry
from idp.oauth.clients import NewClient, find_client
from idp.services import Services
from tests.admin.console_clients import app_of, client_row, form_of, sign_in, sign_in_as
from tests.conftest import FakeClock
from tests.helpers import add_console_user, add_user

FORM = form_of(grant_type_client_credentials="1")
"""A confidential web application that may also use client_credentials, so its secret can be tried at /token."""


def file_request(browser: TestClient, token: str, **changes: str) -> tuple[int, str, str, Any]:
    """File an application through the console; returns its row id, client id, secret and the page."""
    page = browser.post("/admin/clients/new", data={**FORM, **changes, "csrf_token": token})
    assert page.status_code == 200, page.text
    client_id = re.search(r'id="client-id">([^<]+)<', page.text).group(1)  # type: ignore[union-attr]
    secret = re.search(r'id="client-secret">([^<]+)<', page.text).group(1)  # type: ignore[union-attr]
    key = re.search(r'href="/admin/clients/(\d+)"', page.text).group(1)  # type: ignore[union-attr]
    return int(key), client_id, secret, page


def token_works(browser: TestClient, client_id: str, secret: str) -> bool:
    response = browser.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


def allow(services: Services, username: str, domain: str) -> None:
    with unit_of_work(services.sessions) as db:
        user = registry.owner_by_username(db, username)
        registry.add_owner_domain(db, user, domain, services.now())


def audit_rows(services: Services, event: str) -> list[AuditEvent]:
    with unit_of_work(services.sessions) as db:
        rows = list(db.scalars(select(AuditEvent).where(AuditEvent.event == event)))
        for row in rows:
            db.expunge(row)
        return rows


def test_a_request_is_unusable_until_an_admin_approves_it(client: TestClient, services: Services,
                                                          clock: FakeClock) -> None:
    """Filed → requested (no tokens, no sign-in) → listed for the administrators → approved with a comment →
    the same secret works."""
    token = sign_in(client, services, clock, "owner")
    key, client_id, secret, page = file_request(client, token)
    assert 'id="client-request-filed"' in page.text
    row = client_row(services, client_id)
    assert row is not None and row.status == "requested" and row.created_by == "owner"
    assert not token_works(client, client_id, secret)
    authorize = client.get("/authorize", params={"client_id": client_id, "response_type": "code", "scope": "openid",
                                                 "redirect_uri": "https://fallakte.musterstadt.de/cb"})
    assert authorize.status_code == 400, "an unapproved client is like an unknown one"
    assert client.post(f"/admin/clients/{key}/approve",
                       data={"csrf_token": token, "comment": "selbst"}).status_code == 403

    with TestClient(client.app, base_url=str(client.base_url), follow_redirects=False) as admin:
        admin_token = sign_in(admin, services, clock, "admin")
        listed = admin.get("/admin/clients/requests")
        assert client_id in listed.text and "owner" in listed.text
        assert "(1)" in admin.get("/admin/clients").text
        approved = admin.post(f"/admin/clients/{key}/approve", data={"csrf_token": admin_token,
                                                                     "comment": "Datenschutz geprüft",
                                                                     "from": "requests"})
        assert approved.headers["location"] == "/admin/clients/requests?done=approved"
        assert client_id not in admin.get("/admin/clients/requests").text
        again = admin.post(f"/admin/clients/{key}/approve", data={"csrf_token": admin_token})
        assert again.status_code == 400, "an active client is not approved twice"
    assert token_works(client, client_id, secret)
    assert "Datenschutz geprüft" in client.get(f"/admin/clients/{key}").text
    [event] = audit_rows(services, "client.approved")
    assert event.details["before"] == {"status": "requested"} and event.details["after"] == {"status": "active"}
    assert event.details["comment"] == "Datenschutz geprüft" and secret not in str(event.details)


def test_a_declined_request_says_why_and_goes_back_to_review_when_the_owner_changes_it(
        client: TestClient, services: Services, clock: FakeClock) -> None:
    token = sign_in(client, services, clock, "owner")
    key, client_id, secret, _ = file_request(client, token)
    with TestClient(client.app, base_url=str(client.base_url), follow_redirects=False) as admin:
        admin_token = sign_in(admin, services, clock, "admin")
        silent = admin.post(f"/admin/clients/{key}/decline", data={"csrf_token": admin_token, "comment": "  "})
        assert silent.status_code == 400 and "comment" in silent.text
        declined = admin.post(f"/admin/clients/{key}/decline",
                              data={"csrf_token": admin_token, "comment": "Bitte eine Adresse der Stadt nutzen"})
        assert declined.status_code == 303
    assert not token_works(client, client_id, secret)
    page = client.get(f"/admin/clients/{key}")
    assert 'data-status="declined"' in page.text and "Bitte eine Adresse der Stadt nutzen" in page.text
    saved = client.post(f"/admin/clients/{key}/edit", data={**FORM, "name": "Fallakte 2", "csrf_token": token})
    assert saved.status_code == 303
    row = client_row(services, client_id)
    assert row is not None and row.status == "requested"
    [event] = audit_rows(services, "client.updated")
    assert event.details["after"]["status"] == "requested"


@pytest.mark.parametrize("changes", [
    {"redirect_uris": "https://fallakte.musterstadt.de/cb"},
    {"redirect_uris": "https://musterstadt.de/cb\nhttps://a.b.musterstadt.de/cb",
     "post_logout_redirect_uris": "https://musterstadt.de/bye",
     "backchannel_logout_uri": "https://bc.musterstadt.de/logout", "logo_uri": "https://musterstadt.de/l.png"},
])
def test_an_application_on_allowed_domains_is_approved_automatically(client: TestClient, services: Services,
                                                                     clock: FakeClock,
                                                                     changes: dict[str, str]) -> None:
    token = sign_in(client, services, clock, "owner")
    allow(services, "owner", "musterstadt.de")
    _, client_id, secret, page = file_request(client, token, **changes)
    assert 'id="client-auto-approved"' in page.text
    assert token_works(client, client_id, secret)
    [event] = audit_rows(services, "client.created")
    assert event.details["status"] == "active" and event.details["auto_approved"] is True


@pytest.mark.parametrize("changes", [
    {"redirect_uris": "https://evilmusterstadt.de/cb"},
    {"redirect_uris": "https://musterstadt.de.evil.example/cb"},
    {"redirect_uris": "http://127.0.0.1:8080/cb"},
    {"redirect_uris": "https://musterstadt.de/cb\nhttps://other.example/cb"},
    {"post_logout_redirect_uris": "https://other.example/bye"},
    {"backchannel_logout_uri": "https://other.example/bc"},
    {"logo_uri": "https://other.example/logo.png"},
    {"redirect_uris": "https://musterstadt.de:8443/cb", "logo_uri": "https://x.example/l.png"},
    {"redirect_uris": "", "grant_type_authorization_code": "", "grant_type_refresh_token": ""},
])
def test_an_application_off_the_allowed_domains_waits_for_review(client: TestClient, services: Services,
                                                                 clock: FakeClock, changes: dict[str, str]) -> None:
    """Another host (look-alikes included), loopback http, one URL elsewhere, or no redirect URI at all: a
    request for the administrators."""
    token = sign_in(client, services, clock, "owner")
    allow(services, "owner", "musterstadt.de")
    _, client_id, secret, page = file_request(client, token, **changes)
    assert 'id="client-request-filed"' in page.text
    assert not token_works(client, client_id, secret)


def test_another_owners_domains_do_not_approve(client: TestClient, services: Services, clock: FakeClock) -> None:
    token = sign_in(client, services, clock, "owner")
    add_console_user(services, "stranger", "app-owner")
    allow(services, "stranger", "musterstadt.de")
    _, _, _, page = file_request(client, token)
    assert 'id="client-request-filed"' in page.text


def test_the_domain_allow_list_is_for_administrators(client: TestClient, services: Services,
                                                     clock: FakeClock) -> None:
    token = sign_in(client, services, clock, "admin")
    add_console_user(services, "anna", "app-owner")
    add_user(services, "olaf")
    for domain in ("*.musterstadt.de", "de", "10.0.0.1", "muster stadt.de", "-x.de", "a" * 300 + ".de"):
        refused = client.post("/admin/clients/domains", data={"csrf_token": token, "username": "anna",
                                                               "domain": domain})
        assert refused.status_code == 400 and 'id="domain-error"' in refused.text, domain
    no_role = client.post("/admin/clients/domains", data={"csrf_token": token, "username": "olaf",
                                                          "domain": "musterstadt.de"})
    assert no_role.status_code == 400 and "app-owner" in no_role.text
    added = client.post("/admin/clients/domains", data={"csrf_token": token, "username": "anna",
                                                        "domain": "Fallakte.Musterstadt.DE."})
    assert added.status_code == 303
    page = client.get("/admin/clients/domains")
    assert 'data-domain="fallakte.musterstadt.de"' in page.text
    with unit_of_work(services.sessions) as db:
        row = db.scalar(select(OwnerRedirectDomain))
        assert row is not None
        key = row.id
    assert client.post(f"/admin/clients/domains/{key}/delete", data={"csrf_token": token}).status_code == 303
    assert client.post(f"/admin/clients/domains/{key}/delete", data={"csrf_token": token}).status_code == 404
    assert [e.details["domain"] for e in audit_rows(services, "client.owner_domain_added")] == [
        "fallakte.musterstadt.de"]
    assert [e.subject for e in audit_rows(services, "client.owner_domain_removed")] == ["anna"]


@pytest.mark.parametrize("who", ["owner", "helpdesk"])
def test_only_administrators_open_the_domains_and_requests(client: TestClient, services: Services,
                                                           clock: FakeClock, who: str) -> None:
    token = sign_in(client, services, clock, who)
    assert client.get("/admin/clients/domains").status_code == 403
    assert client.get("/admin/clients/requests").status_code == 403
    assert client.post("/admin/clients/domains", data={"csrf_token": token, "username": who,
                                                       "domain": "musterstadt.de"}).status_code == 403
    with unit_of_work(services.sessions) as db:
        assert db.scalar(select(OwnerRedirectDomain)) is None


def test_an_owner_cannot_skip_consent_lengthen_tokens_or_add_unreviewed_hosts(client: TestClient,
                                                                               services: Services,
                                                                               clock: FakeClock) -> None:
    """What widens an approved application stays an administrator's decision: consent skipping and token
    lifetimes are not taken from an owner's form, and new addresses off the owner's domains are refused."""
    token = sign_in(client, services, clock, "owner")
    key, client_id, _ = app_of(services, owner="owner", redirect_uris=["https://app.example/cb"])
    allow(services, "owner", "musterstadt.de")
    page = client.get(f"/admin/clients/{key}/edit")
    assert 'name="trusted"' not in page.text and 'name="access_token_lifetime"' not in page.text
    widened = client.post(f"/admin/clients/{key}/edit", data={
        **form_of(redirect_uris="https://app.example/cb", trusted="1", access_token_lifetime="86400",
                  refresh_token_lifetime="31536000"), "csrf_token": token})
    assert widened.status_code == 303
    row = client_row(services, client_id)
    assert row is not None and not row.trusted and row.access_token_lifetime is None
    assert row.refresh_token_lifetime is None
    elsewhere = client.post(f"/admin/clients/{key}/edit", data={
        **form_of(redirect_uris="https://app.example/cb\nhttps://evil.example/cb"), "csrf_token": token})
    assert elsewhere.status_code == 400 and "evil.example" in elsewhere.text
    allowed = client.post(f"/admin/clients/{key}/edit", data={
        **form_of(redirect_uris="https://app.example/cb\nhttps://neu.musterstadt.de/cb"), "csrf_token": token})
    assert allowed.status_code == 303
    row = client_row(services, client_id)
    assert row is not None and row.redirect_uris == ["https://app.example/cb", "https://neu.musterstadt.de/cb"]


def test_owners_are_added_by_username_and_a_filed_client_keeps_one(client: TestClient, services: Services,
                                                                   clock: FakeClock) -> None:
    token = sign_in(client, services, clock, "owner")
    anna_seed = add_console_user(services, "anna", "app-owner")
    add_user(services, "olaf")
    key, client_id, _, _ = file_request(client, token)
    for username, reason in (("olaf", "app-owner"), ("nobody-here", "no user")):
        refused = client.post(f"/admin/clients/{key}/owners", data={"csrf_token": token, "username": username})
        assert refused.status_code == 400 and reason in refused.text
    assert client.post(f"/admin/clients/{key}/owners", data={"csrf_token": token, "username": "anna"}).status_code \
        == 303
    page = client.get(f"/admin/clients/{key}")
    assert 'data-username="anna"' in page.text and 'data-username="owner"' in page.text
    removed = client.post(f"/admin/clients/{key}/owners/remove", data={"csrf_token": token, "username": "owner"})
    assert removed.headers["location"] == "/admin/clients?done=owner-removed", "they removed themselves"
    assert client.get(f"/admin/clients/{key}").status_code == 404, "no longer theirs"
    with unit_of_work(services.sessions) as db:
        row = find_client(db, client_id)
        assert row is not None and [u.username for u in registry.owners_of(db, row)] == ["anna"]
    with TestClient(client.app, base_url=str(client.base_url), follow_redirects=False) as anna:
        anna_token = sign_in_as(anna, services, clock, "anna", anna_seed)
        last = anna.post(f"/admin/clients/{key}/owners/remove", data={"csrf_token": anna_token, "username": "anna"})
        assert last.status_code == 400 and "at least one owner" in last.text
    assert [e.details["owner"] for e in audit_rows(services, "client.owner_added")] == ["anna"]
    assert [e.details["owner"] for e in audit_rows(services, "client.owner_removed")] == ["owner"]


def test_an_owner_cannot_enable_what_an_administrator_disabled(client: TestClient, services: Services,
                                                               clock: FakeClock) -> None:
    token = sign_in(client, services, clock, "owner")
    key, client_id, _ = app_of(services, owner="owner")
    assert client.post(f"/admin/clients/{key}/disable", data={"csrf_token": token}).status_code == 303
    assert client.post(f"/admin/clients/{key}/enable", data={"csrf_token": token}).status_code == 303
    with unit_of_work(services.sessions) as db:
        row = find_client(db, client_id)
        assert row is not None
        registry.disable_client(db, row, services.now(), "admin")
    page = client.get(f"/admin/clients/{key}")
    assert 'id="enable-refused"' in page.text and 'id="enable-form"' not in page.text
    refused = client.post(f"/admin/clients/{key}/enable", data={"csrf_token": token})
    assert refused.status_code == 403 and 'id="client-error"' in refused.text
    row = client_row(services, client_id)
    assert row is not None and row.disabled_by == "admin"
    [event] = audit_rows(services, "client.disabled")
    assert event.details["by"] == "owner"


def test_file_client_is_the_same_rule_outside_the_console(services: Services) -> None:
    """``client_registry.file_client`` (used by the console, usable by RFC 7591 registration too) applies the
    allow-list, https only, for the owner who files."""
    add_console_user(services, "owner", "app-owner")
    allow(services, "owner", "musterstadt.de")
    with unit_of_work(services.sessions) as db:
        owner = registry.owner_by_username(db, "owner")
        good = registry.file_client(db, services.hasher, NewClient(
            name="A", redirect_uris=["https://a.musterstadt.de/cb"]), owner, services.now())
        plain = registry.file_client(db, services.hasher, NewClient(
            name="B", redirect_uris=["http://[::1]:9000/cb"], public=True), owner, services.now())
        assert (good.auto_approved, good.row.status) == (True, "active")
        assert (plain.auto_approved, plain.row.status) == (False, "requested")
        assert registry.filed_by_owner(good.row) and registry.filed_by_owner(plain.row)

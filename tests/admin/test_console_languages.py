"""The console in the reader's language (issue 6, "Languages"): a rule about client metadata is shown in German
on a German page, while ``/register`` keeps answering it in English (RFC 7591's ``error_description`` is for
developers); stored codes (an audit outcome, a sync run's status, a factor's kind, a secret's lifetime) are
shown as German labels, the codes themselves kept in ``data-*`` attributes and option values."""

from __future__ import annotations

from datetime import timedelta

import pytest
from starlette.testclient import TestClient

from idp import audit
from idp.db import unit_of_work
from idp.models import DirectorySyncRun
from idp.oauth.clients import ClientError, validate_redirect_uri
from idp.services import Services
from idp.web import i18n
from tests.admin.console_clients import app_of, form_of, sign_in
from tests.admin.people import sign_in_console, user_id
from tests.conftest import FakeClock
from tests.helpers import add_user, seed_totp
from tests.test_registration import METADATA, initial_token, register

pytestmark = pytest.mark.usefixtures("german_default")

PLAIN_HTTP = "http://fallakte.musterstadt.de/cb"


def test_client_form_shows_the_rule_in_german(client: TestClient, services: Services, clock: FakeClock) -> None:
    """A redirect URI without https is refused on the form with the German text, the URI filled in."""
    token = sign_in(client, services, clock, "admin")
    page = client.post("/admin/clients/new", data={**form_of(redirect_uris=PLAIN_HTTP), "csrf_token": token})
    assert page.status_code == 400 and '<html lang="de">' in page.text
    assert (f"Die Weiterleitungs-URI &#39;{PLAIN_HTTP}&#39; muss https verwenden (http nur für 127.0.0.1 oder "
            "[::1]).") in page.text
    assert "must use https" not in page.text


def test_client_page_shows_refusals_in_german(client: TestClient, services: Services, clock: FakeClock) -> None:
    """A refusal on an application's page (an owner who is not an app owner) is German too."""
    key, _, _ = app_of(services)
    token = sign_in(client, services, clock, "admin")
    page = client.post(f"/admin/clients/{key}/owners", data={"username": "niemand", "csrf_token": token})
    assert page.status_code == 400 and "Es gibt kein Konto &#39;niemand&#39;." in page.text


def test_registration_answers_in_english_whatever_the_language(client: TestClient, services: Services) -> None:
    """``/register`` ignores Accept-Language: its ``error_description`` is the English text."""
    response = register(client, initial_token(services), {**METADATA, "redirect_uris": [PLAIN_HTTP]},
                        **{"accept-language": "de"})
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_redirect_uri",
        "error_description": f"redirect URI {PLAIN_HTTP!r} must use https (http only for 127.0.0.1 or [::1])",
    }


def test_client_error_is_english_as_a_string_and_german_when_rendered() -> None:
    """``str()`` of a ``ClientError`` is English in any language (CLI, JSON); its ``text`` is translated."""
    i18n.set_locale("de")
    try:
        with pytest.raises(ClientError) as caught:
            validate_redirect_uri("https://app.example/cb#x", public=False)
        assert str(caught.value) == "redirect URI 'https://app.example/cb#x' has a fragment"
        assert i18n.render(caught.value.text) == "Die Weiterleitungs-URI 'https://app.example/cb#x' hat ein Fragment."
    finally:
        i18n.set_locale("en")


def test_secret_lifetimes_are_offered_in_german(client: TestClient, services: Services, clock: FakeClock) -> None:
    """The lifetime and grace choices read "90 Tage", "1 Stunde"; their values stay the codes."""
    key, _, _ = app_of(services)
    sign_in(client, services, clock, "admin")
    form = client.get("/admin/clients/new").text
    assert '<option value="90d">90 Tage</option>' in form and ">90d<" not in form
    page = client.get(f"/admin/clients/{key}").text
    assert '<option value="1h">1 Stunde</option>' in page and '<option value="1d">1 Tag</option>' in page
    assert '<option value="730d">730 Tage</option>' in page


def test_audit_outcomes_in_german(client: TestClient, services: Services, clock: FakeClock) -> None:
    """The outcome filter and column show German labels; the row keeps the code in ``data-outcome``."""
    with unit_of_work(services.sessions) as db:
        audit.record(db, "login.password", outcome="failure", subject="max", at=services.now())
    sign_in_console(client, services, clock, "revisor", "admin")
    page = client.get("/admin/audit", params={"event": "login.password"}).text
    assert '<option value="failure">Fehlschlag</option>' in page
    assert '<option value="success">Erfolg</option>' in page
    assert 'data-outcome="failure"><td>' in page and "<td>Fehlschlag</td>" in page
    assert ">failure<" not in page


def test_factor_kind_and_source_in_german(client: TestClient, services: Services, clock: FakeClock) -> None:
    """A user's factor is named by its German kind and a local account's source reads "lokal"; ``data-kind`` and
    ``data-source`` keep the codes."""
    add_user(services, "erika")
    seed_totp(services, "erika", name="Diensthandy")
    sign_in_console(client, services, clock, "desk", "helpdesk")
    page = client.get(f"/admin/users/{user_id(services, 'erika')}").text
    assert '<li data-kind="totp">Authenticator-App: Diensthandy' in page
    assert 'data-source="local" id="user-source">lokal<' in page


def test_sync_history_in_german(client: TestClient, services: Services, clock: FakeClock) -> None:
    """A run's mode, trigger and status read German; the codes stay in ``data-*``."""
    now = services.now()
    with unit_of_work(services.sessions) as db:
        db.add(DirectorySyncRun(source="ad", mode="incremental", trigger="schedule", status="refused",
                                started_at=now - timedelta(minutes=1), finished_at=now, details={}))
    sign_in_console(client, services, clock, "admina", "admin")
    page = client.get("/admin/sync").text
    assert 'data-status="refused" data-trigger="schedule" data-mode="incremental"' in page
    assert "<td>inkrementell</td><td>Zeitplan</td><td>von der Sicherheitsprüfung verweigert</td>" in page
    assert ">refused<" not in page and ">incremental<" not in page

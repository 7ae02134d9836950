"""A theme per client (issue 6, "Themes"): ``idp clients add/update --theme``, the migration that adds the column
(and merges the two migration branches), and the sign-in pages of that client in its theme with its name."""

from __future__ import annotations

import json

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from starlette.testclient import TestClient

from idp import migrate
from idp.app import create_app
from idp.db import unit_of_work
from idp.models import Client
from idp.services import Services
from idp.web.templates import ThemeError
from tests.conftest import ISSUER
from tests.helpers import Flow, add_client, follow_to_login
from tests.test_cli import Cli, cli, current_services, environment, migrated  # noqa: F401  (fixtures)


def test_migration_0004_adds_the_theme_and_merges_the_branches(services: Services) -> None:
    """0004 follows both 0002 and 0003, so there is one head again (later revisions build on it); the clients
    table has the theme column."""
    scripts = ScriptDirectory.from_config(migrate._config())
    heads = scripts.get_heads()
    assert len(heads) == 1
    assert "0004" in {revision.revision for revision in scripts.iterate_revisions(heads[0], "base")}
    assert scripts.get_revision("0004").down_revision == ("0002", "0003")
    columns = {column["name"]: column for column in inspect(services.engine).get_columns("clients")}
    assert columns["theme"]["nullable"] is True


def test_clients_add_and_update_set_the_theme(migrated: Cli) -> None:  # noqa: F811
    """``clients add --theme`` stores it; ``clients update --theme`` changes it (audited), an empty value removes
    it."""
    added = json.loads(migrated("clients", "add", "--name", "Bürgerportal", "--redirect-uri",
                                "https://portal.example/cb", "--theme", "musterstadt", "--json").out)
    assert added["theme"] == "musterstadt"
    updated = migrated("clients", "update", added["client_id"], "--theme", "default", "--json")
    assert updated.code == 0 and json.loads(updated.out)["theme"] == "default"
    cleared = migrated("clients", "update", added["client_id"], "--theme", "", "--json")
    assert json.loads(cleared.out)["theme"] is None and json.loads(cleared.out)["changed"] == ["theme"]
    with current_services() as services, unit_of_work(services.sessions) as db:
        row = db.query(Client).filter_by(client_id=added["client_id"]).one()
        assert row.theme is None


@pytest.mark.parametrize("theme", ["gibtsnicht", "../default", "Muster Stadt"])
def test_an_unusable_theme_is_refused_by_the_command(migrated: Cli, theme: str) -> None:  # noqa: F811
    """A theme that does not exist (or is no theme name) is refused with exit status 1, storing nothing."""
    result = migrated("clients", "add", "--name", "X", "--redirect-uri", "https://x.example/cb", "--theme", theme)
    assert result.code == 1 and "theme" in result.err
    assert json.loads(migrated("clients", "list", "--json").out) == []


def test_sign_in_pages_of_a_client_use_its_theme_and_name(client: TestClient, services: Services) -> None:
    """The login page of a client with ``theme = musterstadt`` shows that theme and the client's name; another
    client's and the IdP's own pages keep the configured theme."""
    themed = add_client(services, name="Bürgerportal")
    plain = add_client(services, name="Intranet")
    with unit_of_work(services.sessions) as db:
        db.query(Client).filter_by(client_id=themed.client_id).one().theme = "musterstadt"
    page = client.get(follow_to_login(client, Flow(themed)))
    assert page.status_code == 200
    assert "Stadt Musterstadt" in page.text and 'id="theme-address"' in page.text
    assert '<strong id="client-name">Bürgerportal</strong>' in page.text
    other = client.get(follow_to_login(client, Flow(plain)))
    assert "Stadt Musterstadt" not in other.text and '<strong id="client-name">Intranet</strong>' in other.text
    assert "Stadt Musterstadt" not in client.get("/").text


def test_client_themes_are_checked_at_start(services: Services) -> None:
    """A client's theme is loaded when the app starts: one that cannot be used stops the start with its name."""
    registered = add_client(services)
    with unit_of_work(services.sessions) as db:
        db.query(Client).filter_by(client_id=registered.client_id).one().theme = "gibtsnicht"
    with pytest.raises(ThemeError, match="theme 'gibtsnicht' does not exist"):
        create_app(services=services)


def test_client_theme_static_files_are_served(client: TestClient, services: Services) -> None:
    """The static files of a client's theme (its logo) are served under their fingerprinted names."""
    themed = add_client(services)
    with unit_of_work(services.sessions) as db:
        db.query(Client).filter_by(client_id=themed.client_id).one().theme = "musterstadt"
    with TestClient(create_app(services=services), base_url=ISSUER, follow_redirects=False) as browser:
        page = browser.get(follow_to_login(browser, Flow(themed)))
        logo = page.text.split('<img class="logo" src="', 1)[1].split('"', 1)[0]
        assert logo.endswith("/wappen.svg")
        answer = browser.get(logo)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("image/svg+xml")

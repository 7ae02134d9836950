"""The console's directory sync page (issue 5, section 2) against the real slapd of these tests: the history,
"sync now" for administrators (after the response, in a worker thread, through the source's lease), and an
account an administrator disabled in the console staying disabled through later syncs.
"""

from __future__ import annotations

from sqlalchemy import select
from starlette.testclient import TestClient

from directory_sync.state import take_lease
from idp.db import unit_of_work
from idp.models import DirectorySyncRun
from idp.services import Services
from tests.admin.people import events, post, sign_in_console, user_id
from tests.conftest import FakeClock
from tests.directory.slapd import Directory
from tests.directory.support import get, runs, source_of, synced


def test_sync_now_runs_after_the_response_and_lands_in_the_history(client: TestClient, services: Services,
                                                                   directory: Directory, clock: FakeClock) -> None:
    token = sign_in_console(client, services, clock, "admina", "admin")
    page = client.get("/admin/sync")
    assert page.status_code == 200 and 'id="sync-now"' in page.text and "No sync has run yet." in page.text
    response = post(client, "/admin/sync/run", token)
    assert response.status_code == 303 and response.headers["location"] == "/admin/sync?done=requested"
    [run] = runs(services)
    assert (run.trigger, run.status, run.mode) == ("console", "success", "full") and run.created > 0
    assert get(services, "hans.meier").source == source_of(services).name
    [requested] = events(services, "directory.sync_requested")
    assert requested.details["sources"] == [source_of(services).name] and requested.actor
    history = client.get("/admin/sync?done=requested")
    assert 'data-trigger="console"' in history.text and 'data-status="success"' in history.text


def test_sync_now_respects_the_lease_of_another_process(client: TestClient, services: Services,
                                                        directory: Directory, clock: FakeClock) -> None:
    """While the scheduler (another owner) holds the source's lease, "sync now" starts no second run: the run
    ends busy and writes nothing; the page shows the source as running."""
    token = sign_in_console(client, services, clock, "admina", "admin")
    assert take_lease(services.sessions, source_of(services).name, "scheduler-elsewhere", services.now())
    assert post(client, "/admin/sync/run", token).status_code == 303
    with unit_of_work(services.sessions) as db:
        assert db.scalars(select(DirectorySyncRun)).all() == []
    assert '<span class="badge">running</span>' in client.get("/admin/sync").text


def test_unknown_source_and_other_roles(client: TestClient, services: Services, directory: Directory,
                                        clock: FakeClock) -> None:
    token = sign_in_console(client, services, clock, "admina", "admin")
    assert post(client, "/admin/sync/run", token, source="elsewhere").status_code == 404
    assert runs(services) == []


def test_helpdesk_sees_the_history_but_cannot_start_a_sync(client: TestClient, services: Services,
                                                           directory: Directory, clock: FakeClock) -> None:
    token = sign_in_console(client, services, clock, "desk", "helpdesk")
    page = client.get("/admin/sync")
    assert page.status_code == 200 and 'id="sync-now"' not in page.text
    assert post(client, "/admin/sync/run", token).status_code == 403
    assert runs(services) == [] and not events(services, "directory.sync_requested")


def test_a_console_disable_sticks_across_syncs(client: TestClient, services: Services, directory: Directory,
                                              clock: FakeClock) -> None:
    """The directory still lists the account as enabled; the administrator's disable stays (the sync only
    re-enables accounts it disabled itself), and the console refuses nothing it should not."""
    synced(services)
    token = sign_in_console(client, services, clock, "admina", "admin")
    hans = user_id(services, "hans.meier")
    assert post(client, f"/admin/users/{hans}/disable", token).status_code == 303
    synced(services, full=True)
    clock.advance(minutes=10)
    assert post(client, "/admin/sync/run", token).status_code == 303
    assert get(services, "hans.meier").disabled
    assert post(client, f"/admin/users/{hans}/enable", token).status_code == 303
    assert not get(services, "hans.meier").disabled

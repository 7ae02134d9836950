"""The audit log in the console (issue 5, section 2): filters (event, actor/subject, client, outcome, date
range), paging, and the CSV export with the same filters, safe to open in a spreadsheet.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from starlette.testclient import TestClient

from idp import audit
from idp.admin.audit_log import safe_cell
from idp.db import unit_of_work
from idp.services import Services
from tests.admin.people import events, sign_in_console
from tests.conftest import FakeClock
from tests.helpers import add_user, user_row

DAY = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def seed(services: Services, event: str, *, at: datetime = DAY, **fields: object) -> None:
    with unit_of_work(services.sessions) as db:
        audit.record(db, event, at=at, **fields)  # type: ignore[arg-type]


def rows_of(page_text: str) -> list[str]:
    return [part.split('"', 1)[0] for part in page_text.split('class="audit-row" data-event="')[1:]]


def exported(browser: TestClient, params: dict[str, str]) -> list[dict[str, str]]:
    response = browser.get("/admin/audit.csv", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith("attachment;")
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))


@pytest.fixture
def seeded(services: Services) -> None:
    add_user(services, "erika")
    with unit_of_work(services.sessions) as db:
        erika_sub = user_row(db, "erika").sub
    seed(services, "user.disabled", actor=erika_sub, subject="max", at=DAY)
    seed(services, "user.enabled", actor=erika_sub, subject="max", at=DAY + timedelta(days=1))
    seed(services, "client.created", client_id="fachverfahren", at=DAY + timedelta(days=2))
    seed(services, "login.password", outcome="failure", subject="max", reason="wrong_password",
         at=DAY + timedelta(days=3))
    seed(services, "userx.other", subject="nobody", at=DAY)


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("params", "expected"), [
    ({"event": "user"}, ["user.enabled", "user.disabled"]),
    ({"event": "user.disabled"}, ["user.disabled"]),
    ({"event": "user%"}, []),
    ({"who": "erika", "to": "2026-03-15"}, ["user.enabled", "user.disabled"]),
    ({"who": "max"}, ["login.password", "user.enabled", "user.disabled"]),
    ({"client": "fachverfahren"}, ["client.created"]),
    ({"outcome": "failure", "to": "2026-03-31"}, ["login.password"]),
    ({"from": "2026-03-11", "to": "2026-03-12", "event": "user"}, ["user.enabled"]),
    ({"from": "2026-03-12", "to": "2026-03-12"}, ["client.created"]),
])
def test_filters(client: TestClient, services: Services, clock: FakeClock, params: dict[str, str],
                 expected: list[str]) -> None:
    """Each filter narrows the list (newest first); the event filter takes a name or a prefix before a dot;
    ``who`` finds a username as actor (stored as its sub) and as subject; days are inclusive."""
    sign_in_console(client, services, clock, "desk", "helpdesk")
    page = client.get("/admin/audit", params=params)
    assert page.status_code == 200
    assert rows_of(page.text) == expected
    assert [row["event"] for row in exported(client, params)] == expected, "the export has the same rows"


@pytest.mark.parametrize("params", [{"from": "10.03.2026"}, {"to": "2026-02-30"}, {"from": "yesterday"},
                                    {"outcome": "maybe"}, {"from": "2026-03-10T00:00"}])
def test_unreadable_filters_are_named_not_guessed(client: TestClient, services: Services, clock: FakeClock,
                                                  params: dict[str, str]) -> None:
    sign_in_console(client, services, clock, "desk", "helpdesk")
    page = client.get("/admin/audit", params=params)
    assert page.status_code == 400 and 'id="audit-filter-error"' in page.text
    assert client.get("/admin/audit.csv", params=params).status_code == 400


@pytest.mark.parametrize("query", ["page=99999999999999999999", "page=0", "page=x", "event=%00", "who=" + "a" * 4000,
                                   "event=a&event=b", "client=%FF"])
def test_odd_queries_never_fail(client: TestClient, services: Services, clock: FakeClock, query: str) -> None:
    sign_in_console(client, services, clock, "desk", "helpdesk")
    assert client.get("/admin/audit?" + query).status_code == 200
    assert client.get("/admin/audit.csv?" + query).status_code == 200


def test_the_audit_log_pages(client: TestClient, services: Services, clock: FakeClock) -> None:
    for index in range(60):
        seed(services, "test.event", subject=f"s{index:02d}", at=DAY + timedelta(minutes=index))
    sign_in_console(client, services, clock, "desk", "helpdesk")
    first = client.get("/admin/audit", params={"event": "test"})
    assert len(rows_of(first.text)) == 50 and ">s59<" in first.text and 'href="?event=test&amp;page=2"' in first.text
    second = client.get("/admin/audit", params={"event": "test", "page": "2"})
    assert len(rows_of(second.text)) == 10 and ">s00<" in second.text


def test_csv_export_neutralises_formulas(client: TestClient, services: Services, clock: FakeClock) -> None:
    """A username, user agent or client id from outside that starts like a formula is exported with a leading
    quote, so that a spreadsheet shows it as text (OWASP CSV injection); the export is audited."""
    hostile = {"=HYPERLINK(\"http://evil\")": "subject", "+cmd|' /C calc'!A0": "client_id",
               "-2+3": "user_agent", "@SUM(A1)": "actor"}
    seed(services, "test.hostile", subject="=HYPERLINK(\"http://evil\")", client_id="+cmd|' /C calc'!A0",
         origin=audit.Origin("192.0.2.1", "-2+3"), actor="@SUM(A1)", note="=1+1")
    sign_in_console(client, services, clock, "admina", "admin")
    [row] = exported(client, {"event": "test.hostile"})
    for value, column in hostile.items():
        assert row[column] == "'" + value, column
    assert row["details"] == '{"note": "=1+1"}', "a JSON object cell starts with { and stays as it is"
    assert all(not cell.startswith(("=", "+", "-", "@")) for cell in row.values())
    [export] = events(services, "audit.exported")
    assert export.details["filters"] == {"event": "test.hostile"} and export.details["rows"] == 1


def test_safe_cell() -> None:
    assert [safe_cell(v) for v in ("=1", "+1", "-1", "@a", "\tx", "\rx", "a=b", "", None, 5)] == [
        "'=1", "'+1", "'-1", "'@a", "'\tx", "'\rx", "a=b", "", "", "5"]


def test_csv_columns_and_names(client: TestClient, services: Services, clock: FakeClock) -> None:
    add_user(services, "erika")
    with unit_of_work(services.sessions) as db:
        sub = user_row(db, "erika").sub
    seed(services, "test.named", actor=sub, subject="max", client_id="app", origin=audit.Origin("192.0.2.9", "ua"))
    sign_in_console(client, services, clock, "admina", "admin")
    response = client.get("/admin/audit.csv", params={"event": "test.named"})
    reader = csv.reader(io.StringIO(response.content.decode("utf-8-sig"), newline=""))
    header, row = list(reader)
    assert header == ["at", "event", "outcome", "actor", "actor_username", "subject", "client_id", "ip",
                      "user_agent", "details"]
    assert row[1:9] == ["test.named", "success", sub, "erika", "max", "app", "192.0.2.9", "ua"]
    assert datetime.fromisoformat(row[0]) == DAY

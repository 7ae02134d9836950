"""The console's overview (issue 5, section 2): sign-ins per hour and the share of users with a second factor
per group as server-rendered SVG charts (no script; a title, a description and the numbers as a table for
screen readers), and the client secrets that expire within 30 days (section 3).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timedelta

from sqlalchemy import delete, select
from starlette.testclient import TestClient

from idp import audit
from idp.admin import statistics
from idp.admin.charts import Bar, column_chart, row_chart
from idp.db import unit_of_work
from idp.models import AuditEvent, Client
from idp.services import Services
from tests.admin.people import sign_in_console
from tests.conftest import FakeClock
from tests.helpers import add_client, add_user, open_page, seed_totp, through_sign_in, user_row

SVG = "{http://www.w3.org/2000/svg}"


def svg_of(html: str, chart_id: str) -> ET.Element:
    """The chart as XML: parsing fails unless it is well-formed."""
    match = re.search(rf'<svg [^>]*id="{chart_id}".*?</svg>', html, re.S)
    assert match, f"no chart {chart_id}"
    return ET.fromstring(match.group(0))


def bars_of(svg: ET.Element) -> list[str]:
    """Each bar's own title (label: value)."""
    return [rect.findtext(f"{SVG}title") or "" for rect in svg.iter(f"{SVG}rect") if rect.get("class") == "bar"]


def seed_login(services: Services, hours_ago: float, outcome: str = "success", event: str = "login") -> None:
    with unit_of_work(services.sessions) as db:
        audit.record(db, event, outcome=outcome, subject="erika", at=services.now() - timedelta(hours=hours_ago))


def test_signins_per_hour_counts_successful_logins_in_the_window(services: Services) -> None:
    now = services.now()
    for hours_ago in (1, 1, 1, 5):
        seed_login(services, hours_ago)
    seed_login(services, 1, outcome="failure")
    seed_login(services, 1, event="login.password")
    seed_login(services, statistics.HOURS + 2)
    with unit_of_work(services.sessions) as db:
        hours = statistics.signins_per_hour(db, now)
    assert len(hours) == statistics.HOURS and hours[-1].start <= now < hours[-1].start + timedelta(hours=1)
    by_start = {hour.start: hour.count for hour in hours}
    for hours_ago, expected in ((1, 3), (5, 1)):
        moment = now - timedelta(hours=hours_ago)
        assert by_start[moment.replace(minute=0, second=0, microsecond=0)] == expected
    assert sum(by_start.values()) == 4


def test_factor_shares_per_group(services: Services) -> None:
    """Enabled users only; confirmed factors only; the largest groups first, after "all users"."""
    add_user(services, "anna", groups=["Bauamt"])
    add_user(services, "bert", groups=["Bauamt", "Kasse"])
    add_user(services, "carl", groups=["Kasse"])
    add_user(services, "dora", groups=["Bauamt"])
    for name in ("anna", "carl", "dora"):
        seed_totp(services, name)
    with unit_of_work(services.sessions) as db:
        user_row(db, "dora").disabled_at = services.now()
    with unit_of_work(services.sessions) as db:
        shares = statistics.factor_shares(db)
    assert [(s.group, s.members, s.with_factor) for s in shares] == [("", 3, 2), ("Bauamt", 2, 1), ("Kasse", 2, 1)]
    assert shares[0].percent == 200 / 3


def test_the_overview_draws_both_charts(client: TestClient, services: Services, clock: FakeClock) -> None:
    add_user(services, "anna", groups=["Bauamt"])
    add_user(services, "bert", groups=['<Kasse & "Co">'])
    seed_totp(services, "anna")
    sign_in_console(client, services, clock, "admina", "admin")
    seed_login(services, 2)
    seed_login(services, 2)
    page = open_page(client, "/admin", clock)
    assert "<script" not in page.text.split('id="admin-nav"')[1]
    signins = svg_of(page.text, "chart-signins")
    assert signins.get("role") == "img" and signins.get("aria-labelledby") == "chart-signins-title chart-signins-desc"
    assert signins.findtext(f"{SVG}title") and signins.findtext(f"{SVG}desc")
    bars = bars_of(signins)
    assert len(bars) == statistics.HOURS
    assert any(title.endswith(": 2") for title in bars), "the seeded hour"
    assert page.text.count("<tr><td>") >= statistics.HOURS, "the same numbers as a table"
    factors = svg_of(page.text, "chart-factors")
    assert bars_of(factors) == ["All users: 67 %", '<Kasse & "Co">: 0 %', "Bauamt: 100 %"]  # equal size: by name
    assert 'id="factors-table"' in page.text


def test_charts_escape_labels_and_scale() -> None:
    chart = column_chart([Bar("a<b", 4, "4"), Bar("c", 0, "0"), Bar("d", 2, "2")], chart_id="c1", title="T & U",
                         desc="<d>", axis_labels={0: "01.&"})
    root = ET.fromstring(str(chart))
    heights = [float(r.get("height", "0")) for r in root.iter(f"{SVG}rect")]
    assert heights[1] == 0 and heights[0] == 2 * heights[2] > 0
    assert root.findtext(f"{SVG}title") == "T & U"
    rows = ET.fromstring(str(row_chart([Bar("x" * 40, 150, "150 %"), Bar("y", -5, "-5 %")], chart_id="c2",
                                       title="t", desc="d")))
    widths = [float(r.get("width", "0")) for r in rows.iter(f"{SVG}rect")]
    assert widths[1] == 0 and widths[0] > 0, "values outside 0..100 are clamped"


def test_an_empty_installation_draws_empty_charts(client: TestClient, services: Services, clock: FakeClock) -> None:
    sign_in_console(client, services, clock, "admina", "admin")
    with unit_of_work(services.sessions) as db:
        db.execute(delete(AuditEvent))
    page = open_page(client, "/admin", clock)
    assert len(bars_of(svg_of(page.text, "chart-signins"))) == statistics.HOURS


def test_the_overview_lists_secrets_expiring_within_30_days(client: TestClient, services: Services,
                                                          clock: FakeClock) -> None:
    soon = add_client(services, name="Bald")
    later = add_client(services, name="Später")
    with unit_of_work(services.sessions) as db:
        for client_id, days in ((soon.client_id, 10), (later.client_id, 60)):
            row = db.scalar(select(Client).where(Client.client_id == client_id))
            assert row is not None
            row.secret_expires_at = services.now() + timedelta(days=days)
    sign_in_console(client, services, clock, "desk", "helpdesk")
    page = open_page(client, "/admin", clock)
    listed = page.text.split('id="expiring-secret-list"')[1].split("</section>")[0]
    assert f'data-client-id="{soon.client_id}"' in listed and later.client_id not in listed


def test_app_owners_are_sent_to_their_applications(client: TestClient, services: Services, clock: FakeClock) -> None:
    sign_in_console(client, services, clock, "owner", "app-owner")
    response = client.get("/admin")
    assert response.status_code == 303 and response.headers["location"] == "/admin/clients"
    assert through_sign_in(client, response, clock).status_code == 200

"""``GET /admin``: the overview an IT lead opens first. App owners, who have no overview, go to their
applications.

    sign-ins per hour, last 72 hours        column chart (SVG) + the same numbers in a table
    share of users with a second factor     row chart per group (SVG) + table
    client secrets expiring within 30 days  ``idp.oauth.client_registry.expiring_secrets``
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from idp.admin import access, charts, statistics
from idp.admin.access import Console
from idp.admin.roles import Action
from idp.oauth.client_registry import expiring_secrets
from idp.oauth.requests import RequestScope
from idp.web import i18n
from idp.web.context import AppContext
from idp.web.i18n import N_

SECRET_WARNING = timedelta(days=30)


def _overview(ctx: AppContext, scope: RequestScope, request: Request, console: Console) -> Response:
    if not console.can(Action.VIEW_DASHBOARD):
        return RedirectResponse("/admin/clients", status_code=303)
    zone = ZoneInfo(console.timezone)
    hours = statistics.signins_per_hour(scope.db, scope.now)
    hour_bars = [charts.Bar(hour.start.astimezone(zone).strftime("%d.%m. %H:00"), hour.count, str(hour.count))
                 for hour in hours]
    # A label under each local midnight (and the first bar), so the days can be told apart.
    axis = {index: hour.start.astimezone(zone).strftime("%d.%m.") for index, hour in enumerate(hours)
            if index == 0 or hour.start.astimezone(zone).hour == 0}
    total = sum(hour.count for hour in hours)
    signin_chart = charts.column_chart(
        hour_bars, chart_id="chart-signins", axis_labels=axis,
        title=i18n.render(N_("Sign-ins per hour, last {hours} hours", hours=statistics.HOURS)),
        desc=i18n.render(N_("{total} sign-ins in all; the busiest hour had {peak}.", total=total,
                            peak=max((hour.count for hour in hours), default=0))))
    shares = statistics.factor_shares(scope.db)
    everyone = i18n.render(N_("All users"))
    share_bars = [charts.Bar(share.group or everyone, share.percent, f"{share.percent:.0f} %") for share in shares]
    share_chart = charts.row_chart(
        share_bars, chart_id="chart-factors",
        title=i18n.render(N_("Share of enabled users with a second factor, per group")),
        desc=i18n.render(N_("{covered} of {total} enabled users have a second factor.",
                            covered=shares[0].with_factor, total=shares[0].members)))
    return access.render(ctx, console, "admin/dashboard.html", section="dashboard", signin_chart=signin_chart,
                         hours=hours, hour_bars=hour_bars, share_chart=share_chart, shares=shares, everyone=everyone,
                         secrets=expiring_secrets(scope.db, scope.now, SECRET_WARNING), now=scope.now)


async def overview(request: Request) -> Response:
    return await access.page(request, None, _overview)


routes = [
    Route("/admin", overview, methods=["GET"]),
]

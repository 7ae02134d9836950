"""``GET /admin``: the console's first page. App owners, who have no overview, go to their applications."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from idp.admin import access
from idp.admin.access import Console
from idp.admin.roles import Action
from idp.oauth.requests import RequestScope
from idp.web.context import AppContext


def _overview(ctx: AppContext, scope: RequestScope, request: Request, console: Console) -> Response:
    if not console.can(Action.VIEW_DASHBOARD):
        return RedirectResponse("/admin/clients", status_code=303)
    return access.render(ctx, console, "admin/dashboard.html", section="dashboard")


async def overview(request: Request) -> Response:
    return await access.page(request, None, _overview)


routes = [
    Route("/admin", overview, methods=["GET"]),
]

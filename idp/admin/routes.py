"""Every route of the ``/admin`` console, in one list for ``idp.app.create_app``."""

from __future__ import annotations

from starlette.routing import BaseRoute

from idp.admin import audit_log, clients, dashboard, groups, sessions, sync, users

routes: list[BaseRoute] = [
    *dashboard.routes,
    *clients.routes,
    *users.routes, *groups.routes, *sessions.routes, *audit_log.routes, *sync.routes,
]

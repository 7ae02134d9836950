"""Every route of the ``/admin`` console, in one list for ``idp.app.create_app``."""

from __future__ import annotations

from starlette.routing import BaseRoute

from idp.admin import dashboard

routes: list[BaseRoute] = [
    *dashboard.routes,
]

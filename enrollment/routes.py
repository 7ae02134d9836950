"""Every route of the ``/account`` pages, in one list for ``idp.app.create_app``."""

from __future__ import annotations

from starlette.routing import BaseRoute

from enrollment import factors, overview, phone, recovery, sessions, totp, webauthn

routes: list[BaseRoute] = [
    *overview.routes,
    *totp.routes,
    *webauthn.routes,
    *phone.routes,
    *recovery.routes,
    *factors.routes,
    *sessions.routes,
]

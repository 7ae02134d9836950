"""Error pages that the console (``idp.admin``) and the account pages (``enrollment``) give alike."""

from __future__ import annotations

from starlette.responses import Response

from idp.web.context import AppContext
from idp.web.i18n import N_


def csrf_refused(ctx: AppContext) -> Response:
    """A form whose CSRF token is missing, expired or bound to another session: reloading the page gives a new
    one."""
    return ctx.pages.error(403, N_("The form has expired"), N_("Please reload the page and try again."))


def not_found(ctx: AppContext) -> Response:
    """A row that does not exist and a row this user may not see (another user's factor, session or device, a
    client outside the console user's reach) get the same answer, so ids cannot be probed."""
    return ctx.pages.error(404, N_("Page not found"), N_("The address you opened does not exist."))

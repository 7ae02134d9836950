"""Sign-in transactions: one open authorization request waiting for the user, bound to one browser.

Shared by the pages of every step (password, second factor, enrollment, consent), so that each checks the
transaction, its browser binding and the session the same way.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from idp.accounts import sessions
from idp.crypto import random_token
from idp.models import Client, LoginTransaction
from idp.oauth.requests import RequestScope
from idp.web import cookies, i18n
from idp.web.context import AppContext
from idp.web.i18n import N_
from idp.web.templates import use_client_theme


def current_session(ctx: AppContext, scope: RequestScope, request: Request) -> sessions.CurrentSession | None:
    value = request.cookies.get(cookies.cookie_name(ctx.services.settings, cookies.SESSION))
    return sessions.find_session(scope.db, ctx.services.hasher, ctx.services.settings.session, value, scope.now)


def load_transaction(ctx: AppContext, scope: RequestScope, request: Request, tx_id: str) -> LoginTransaction | None:
    tx = scope.db.get(LoginTransaction, tx_id) if len(tx_id) <= 64 else None
    browser = request.cookies.get(cookies.cookie_name(ctx.services.settings, cookies.BROWSER))
    if tx is None or tx.completed_at is not None or tx.expires_at <= scope.now or browser is None:
        return None
    if not ctx.services.hasher.matches(browser, tx.browser_hash):
        return None
    # Every page of the sign-in speaks the language the application asked for, whatever the browser says.
    i18n.use_ui_locales(dict(tx.params.get("pairs", [])).get("ui_locales"))
    client = client_of(scope, tx)
    use_client_theme(client.theme if client is not None else None)
    return tx


def expired_page(ctx: AppContext) -> Response:
    return ctx.pages.error(400, N_("This sign-in has expired"),
                           N_("Please return to the application and start the sign-in again."))


def csrf_binding(tx: LoginTransaction) -> str:
    return f"tx:{tx.id}:{tx.browser_hash}"


def client_of(scope: RequestScope, tx: LoginTransaction) -> Client | None:
    """The client the sign-in is for; None for the IdP's own pages."""
    return scope.db.get(Client, tx.client_id) if tx.client_id is not None else None


def client_name(scope: RequestScope, tx: LoginTransaction) -> str:
    client = client_of(scope, tx)
    return client.name if client else ""


def client_pub_id(scope: RequestScope, tx: LoginTransaction) -> str | None:
    client = client_of(scope, tx)
    return client.client_id if client else None


def browser_id(ctx: AppContext, request: Request) -> tuple[str, bool]:
    value = request.cookies.get(cookies.cookie_name(ctx.services.settings, cookies.BROWSER))
    if value and 20 <= len(value) <= 64:
        return value, False
    return random_token(24), True

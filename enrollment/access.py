"""What every ``/account`` page checks first: the session, how recently the user proved who they are, the CSRF
token, and the input.

    request ──► ACTIVE session that meets the account policy? ── no ──► sign-in, then back here
                     │ yes
                     ├─ look, sign out, revoke a trusted browser ──► allowed
                     └─ add, rename or remove a factor, new recovery codes
                            └─ proved within the last 5 minutes? ── no ──► sign-in again (fresh), then back here

The account policy is the one of a sign-in without a client (``mfa.requirement_for(..., None, None)``): where
MFA is required, the session must hold a second factor, except for a user who has none yet and may still skip
enrollment (grace period), who comes here to enroll one. "Proved within 5 minutes" is what
``mfa.reauthentication_requirement`` says: the second factor (``factor_at``) for a user who had a usable one
when the session last signed in, else the password (``authenticated_at``); a browser trusted for the workday
never counts (NIST SP 800-63B-4 4.1.2.1: bind a new authenticator only after authenticating at the level it
will be used at). A factor added within the window does not shorten it: right after a first security key the
user still sees its recovery codes, or adds a passkey, without proving the new key.

CSRF tokens are bound to the session cookie (``session:<keyed hash>``), as the logout form's are: a token from
another browser or from before a re-authentication (which issues a new cookie) is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from idp.accounts import sessions
from idp.factors.policy import Requirement, satisfied
from idp.login import mfa
from idp.login.routes import begin_internal_sign_in
from idp.login.transactions import current_session
from idp.models import SsoSession, User
from idp.oauth.requests import RequestScope
from idp.web import cookies, csrf, i18n
from idp.web.context import AppContext, MalformedRequest, context_of, read_fields
from idp.web.errors import csrf_refused as csrf_refused  # the account pages call them as access.*
from idp.web.errors import not_found as not_found
from idp.web.i18n import N_
from idp.web.middleware import BodyTooLarge

REAUTH_WINDOW = timedelta(minutes=5)
CSRF_PURPOSE = "account"
NAME_LENGTH = 64


@dataclass(frozen=True)
class Account:
    """The signed-in user of an account page, the session they use and the policy that applies to them."""

    session: SsoSession
    user: User
    need: Requirement
    binding: str
    """What this session's CSRF tokens are bound to."""
    timezone: str = "Europe/Berlin"
    """The municipality's time zone, in which the page shows dates and times."""

    def when(self, value: datetime | None) -> str:
        return i18n.format_when(value, self.timezone)


FormBody = Callable[[AppContext, RequestScope, Request, "Account", dict[str, str]], Response]


async def handle_form(request: Request, return_to: str, body: FormBody) -> Response:
    """A POST of an account page: the form read, the signed-in account and its CSRF token checked (a missing
    session sends the browser through sign-in and back to ``return_to``), then ``body`` in one transaction."""
    ctx = context_of(request)
    try:
        form = await read_fields(request)
    except MalformedRequest as exc:
        return ctx.pages.error(400, N_("The form could not be read"), str(exc))

    def work(scope: RequestScope) -> Response:
        account = signed_in(ctx, scope, request, return_to=return_to)
        if isinstance(account, Response):
            return account
        if not csrf_ok(ctx, account, form.get("csrf_token")):
            return csrf_refused(ctx)
        return body(ctx, scope, request, account, form)

    return await ctx.transaction(ctx.origin(request), work)


def _binding(ctx: AppContext, request: Request) -> str:
    value = request.cookies.get(cookies.cookie_name(ctx.services.settings, cookies.SESSION), "")
    return "session:" + ctx.services.hasher.hash(value)


def current_account(ctx: AppContext, scope: RequestScope, request: Request) -> Account | None:
    """The account of this browser's session, if it may see the account pages now."""
    current = current_session(ctx, scope, request)
    if current is None or current.state is not sessions.SessionState.ACTIVE:
        return None
    user = current.row.user
    need = mfa.requirement_for(ctx.services, user, None, None, scope.now)
    # skipped=True: within a grace period a user without a factor may come here to enroll one.
    if mfa.second_factor_needed(scope.db, current.row, need, skipped=True, now=scope.now) is not None:
        return None
    sessions.touch(current.row, scope.now)
    return Account(session=current.row, user=user, need=need, binding=_binding(ctx, request),
                   timezone=ctx.services.settings.timezone)


def signed_in(ctx: AppContext, scope: RequestScope, request: Request, *, return_to: str) -> Account | Response:
    """The account, or a redirect through sign-in (password and, where required, second factor) to ``return_to``."""
    account = current_account(ctx, scope, request)
    if account is None:
        return begin_internal_sign_in(ctx, scope, request, return_to=return_to, fresh=False)
    return account


def is_fresh(scope: RequestScope, account: Account) -> bool:
    """Whether the user proved, within the last 5 minutes, what binding or removing a factor requires."""
    session = account.session
    # ``authenticated_at`` moves with every password and every second factor proved in the session.
    need = mfa.reauthentication_requirement(scope.db, account.user, account.need,
                                            enrolled_before=session.authenticated_at)
    if not satisfied(session.methods, need):
        return False
    since = scope.now - REAUTH_WINDOW
    if need.needs_second_factor:
        return session.factor_at is not None and session.factor_at > since
    return session.authenticated_at > since


def fresh(ctx: AppContext, scope: RequestScope, request: Request, account: Account, *,
          return_to: str) -> Response | None:
    """None when the re-authentication is recent enough; else the redirect to sign in again, then ``return_to``."""
    if is_fresh(scope, account):
        return None
    return begin_internal_sign_in(ctx, scope, request, return_to=return_to, fresh=True)


def lock_user(scope: RequestScope, account: Account) -> None:
    """Serialise changes to one user's factors across server processes, so that two parallel removals cannot
    both see the other factor remaining (a row lock on PostgreSQL; SQLite's BEGIN IMMEDIATE already does it)."""
    scope.db.execute(select(User.id).where(User.id == account.user.id).with_for_update())


def csrf_token(ctx: AppContext, account: Account) -> str:
    return csrf.make_token(ctx.services.csrf_key, CSRF_PURPOSE, account.binding)


def csrf_ok(ctx: AppContext, account: Account, token: object) -> bool:
    return isinstance(token, str) and csrf.check_token(ctx.services.csrf_key, token, CSRF_PURPOSE, account.binding)


def not_available(ctx: AppContext) -> Response:
    return ctx.pages.error(403, N_("Not available"), N_("This method cannot be used for your account."))


def clean_name(text: str) -> str:
    """A factor's name as the user typed it: printable characters, white space collapsed, 64 characters."""
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(printable.split())[:NAME_LENGTH]


# --- JSON endpoints (the WebAuthn ceremonies of webauthn.js) --------------------------------------------------


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


async def read_json(request: Request) -> dict[str, Any]:
    """A JSON object body, or ``MalformedRequest`` (no NUL anywhere: PostgreSQL cannot store one in text)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise MalformedRequest("the body must be application/json")
    try:
        body = await request.body()
    except BodyTooLarge:
        raise  # answered 413 by SecurityMiddleware
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise MalformedRequest("the body is not JSON") from exc
    if not isinstance(data, dict) or _has_nul(data):
        raise MalformedRequest("the body must be a JSON object without NUL characters")
    return data


def json_error(message: i18n.Text, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": i18n.render(message)}, status_code=status)


def json_redirect(url: str) -> JSONResponse:
    """What webauthn.js follows: ``{"redirect": url}`` (status 200, as the HTML contract says)."""
    return JSONResponse({"redirect": url})


def json_account(ctx: AppContext, scope: RequestScope, request: Request, body: dict[str, Any], *,
                 page: str) -> Account | JSONResponse:
    """The checks of an account page for a JSON call: signed in, CSRF, fresh; else where to go (``page``)."""
    account = current_account(ctx, scope, request)
    if account is None:
        # The page itself sends the browser through sign-in and back.
        return json_redirect(page)
    if not csrf_ok(ctx, account, body.get("csrf_token")):
        return json_error(N_("The page has expired. Please reload it and try again."), status=403)
    if not is_fresh(scope, account):
        # Likewise through a fresh sign-in.
        return json_redirect(page)
    return account

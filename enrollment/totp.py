"""Adding an authenticator app in ``/account`` (RFC 6238 TOTP).

    GET  /account/totp   a new unconfirmed factor: QR code (inline SVG), otpauth:// link, key in groups of four
    POST /account/totp   the app's first code activates it (throttled like sign-in codes); wrong: same page again

The seed lives sealed in its unconfirmed row, found again by the row's random ``handle`` in the form and
the user: one user's form cannot confirm another user's factor. An unconfirmed factor signs nobody in;
those left behind are deleted after the sign-in timeout.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from enrollment import access
from enrollment.recovery import after_enrollment, record_enrollment
from idp import audit
from idp.accounts import throttle
from idp.factors import totp as totp_factor
from idp.login import mfa
from idp.login.second_factor import factor_limits, throttle_policy, totp_enrollment_context
from idp.models import TotpFactor
from idp.oauth.requests import RequestScope
from idp.web import i18n
from idp.web.context import AppContext, context_of
from idp.web.i18n import N_

PAGE = "/account/totp"
DEFAULT_NAME = "Authenticator app"


def _page(ctx: AppContext, account: access.Account, factor: TotpFactor, *, name: str = "",
          error: i18n.Text | None = None, status: int = 200) -> Response:
    secret = totp_factor.secret_of(ctx.services.sealer, factor)
    return ctx.pages.render(
        "account_totp.html", status=status, action=PAGE, handle=factor.handle, factor_name=name, error=error,
        csrf_token=access.csrf_token(ctx, account),
        **totp_enrollment_context(ctx, secret, account.user.username),
    )


def _allowed(account: access.Account) -> bool:
    return "totp" in account.need.methods


async def totp_page(request: Request) -> Response:
    ctx = context_of(request)

    def work(scope: RequestScope) -> Response:
        account = access.signed_in(ctx, scope, request, return_to=PAGE)
        if isinstance(account, Response):
            return account
        if not _allowed(account):
            return access.not_available(ctx)
        refused = access.fresh(ctx, scope, request, account, return_to=PAGE)
        if refused is not None:
            return refused
        stale = scope.now - ctx.services.settings.session.login_timeout
        scope.db.execute(delete(TotpFactor).where(TotpFactor.user_id == account.user.id,
                                                  TotpFactor.confirmed_at.is_(None), TotpFactor.created_at < stale))
        factor, _ = totp_factor.begin_enrollment(scope.db, ctx.services.sealer, account.user, DEFAULT_NAME,
                                                 scope.now)
        return _page(ctx, account, factor)

    return await ctx.transaction(ctx.origin(request), work)


def _totp_submit_form(ctx: AppContext, scope: RequestScope, request: Request, account: access.Account,
                      form: dict[str, str]) -> Response:
    if not _allowed(account):
        return access.not_available(ctx)
    refused = access.fresh(ctx, scope, request, account, return_to=PAGE)
    if refused is not None:
        return refused
    user = account.user
    handle = form.get("handle", "")[:32]
    factor = scope.db.scalar(select(TotpFactor).where(
        TotpFactor.handle == handle, TotpFactor.user_id == user.id, TotpFactor.confirmed_at.is_(None),
        TotpFactor.created_at > scope.now - ctx.services.settings.session.login_timeout)) if handle else None
    if factor is None:
        return ctx.pages.error(400, N_("This setup has expired"), N_("Please start adding the app again."))
    name = access.clean_name(form.get("name", ""))
    blocked = throttle.reserve_attempt(scope.db, factor_limits(ctx, user.id), scope.now, throttle_policy(ctx))
    if blocked is not None:
        seconds = max(1, int(blocked.retry_after.total_seconds()))
        return _page(ctx, account, factor, name=name, status=429,
                     error=N_("Too many wrong codes. Please wait {seconds} seconds and try again.",
                              seconds=seconds))
    if not totp_factor.verify(scope.db, ctx.services.sealer, factor, form.get("code", "")[:64], scope.now):
        audit.record(scope.db, "factor.enrollment", outcome="failure", origin=scope.origin, actor=user.sub,
                     subject=user.username, kind="totp", reason="wrong_code", via="account", at=scope.now)
        return _page(ctx, account, factor, name=name,
                     error=N_("The code is not valid. Check the time on your phone and try the next code."))
    throttle.record_success(scope.db, factor_limits(ctx, user.id), reset={f"factor:user:{user.id}"})
    factor.name = name or DEFAULT_NAME
    factor.confirmed_at = scope.now
    # The code proved possession of the app in this session, as it does at sign-in.
    mfa.record_method(account.session, "totp", scope.now)
    record_enrollment(scope, account, "totp", factor.id, factor.name)
    return after_enrollment(ctx, scope, account)


async def totp_submit(request: Request) -> Response:
    return await access.handle_form(request, PAGE, _totp_submit_form)


routes = [
    Route(PAGE, totp_page, methods=["GET"]),
    Route(PAGE, totp_submit, methods=["POST"]),
]

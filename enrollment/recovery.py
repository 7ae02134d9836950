"""Recovery codes in ``/account``, and what follows every new factor: the audit row and, for a user's first
factor, ten recovery codes shown once.

    GET  /account/recovery-codes          how many are left; a form for a new set (fresh sign-in required)
    POST /account/recovery-codes          a new set, shown once; the old set stops working
    GET  /account/recovery-codes/first    after a security key was added by JSON (webauthn.js only follows a
                                          redirect): the first set, if the user has a factor and no codes

Codes are stored hashed (``idp.factors.recovery``); the clear text exists only in the response that shows it.
A new set is a new authenticator, so it needs the same fresh sign-in as adding a factor.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from enrollment import access
from idp import audit
from idp.factors import recovery
from idp.login import mfa
from idp.login.second_factor import first_factor_enrolled
from idp.oauth.requests import RequestScope
from idp.web.context import AppContext, context_of
from idp.web.i18n import N_

PAGE = "/account/recovery-codes"


def record_enrollment(scope: RequestScope, account: access.Account, kind: str, factor_id: int, name: str,
                      **details: Any) -> None:
    user = account.user
    audit.record(scope.db, "factor.enrolled", origin=scope.origin, actor=user.sub, subject=user.username, kind=kind,
                 factor=factor_id, name=name, via="account", sid=account.session.sid, at=scope.now, **details)


def codes_page(ctx: AppContext, codes: list[str]) -> Response:
    return ctx.pages.render("recovery_codes.html", codes=codes, continue_url="/account")


def after_enrollment(ctx: AppContext, scope: RequestScope, account: access.Account) -> Response:
    """The first factor's recovery codes (shown once), or back to the account page."""
    codes = first_factor_enrolled(ctx, scope, account.user)
    return RedirectResponse("/account", status_code=303) if codes is None else codes_page(ctx, codes)


def _has_factor(scope: RequestScope, account: access.Account) -> bool:
    # Codes stand in for a second factor only for a user who has one (``mfa.usable_methods``).
    return bool(mfa.usable_methods(scope.db, account.user, account.need))


async def recovery_page(request: Request) -> Response:
    ctx = context_of(request)

    def work(scope: RequestScope) -> Response:
        account = access.signed_in(ctx, scope, request, return_to=PAGE)
        if isinstance(account, Response):
            return account
        refused = access.fresh(ctx, scope, request, account, return_to=PAGE)
        if refused is not None:
            return refused
        return ctx.pages.render("account_recovery.html", remaining=recovery.remaining(scope.db, account.user),
                                has_factor=_has_factor(scope, account), csrf_token=access.csrf_token(ctx, account))

    return await ctx.transaction(ctx.origin(request), work)


def _regenerate_form(ctx: AppContext, scope: RequestScope, request: Request, account: access.Account,
                     form: dict[str, str]) -> Response:
    refused = access.fresh(ctx, scope, request, account, return_to=PAGE)
    if refused is not None:
        return refused
    if not _has_factor(scope, account):
        return ctx.pages.error(409, N_("No second factor yet"),
                               N_("Recovery codes stand in for a second factor. Please set one up first."))
    access.lock_user(scope, account)  # two parallel requests must not leave two sets
    codes = recovery.regenerate(scope.db, ctx.services.passwords, account.user, scope.now)
    user = account.user
    audit.record(scope.db, "recovery_codes.regenerated", origin=scope.origin, actor=user.sub,
                 subject=user.username, count=len(codes), sid=account.session.sid, at=scope.now)
    return codes_page(ctx, codes)


async def regenerate(request: Request) -> Response:
    return await access.handle_form(request, PAGE, _regenerate_form)


async def first_codes(request: Request) -> Response:
    ctx = context_of(request)

    def work(scope: RequestScope) -> Response:
        account = access.signed_in(ctx, scope, request, return_to="/account")
        if isinstance(account, Response):
            return account
        # Fresh, so that a session taken over without the factor cannot mint codes for a user who used all his.
        if not access.is_fresh(scope, account) or not _has_factor(scope, account):
            return RedirectResponse("/account", status_code=303)
        return after_enrollment(ctx, scope, account)

    return await ctx.transaction(ctx.origin(request), work)


routes = [
    Route(PAGE, recovery_page, methods=["GET"]),
    Route(PAGE, regenerate, methods=["POST"]),
    Route(PAGE + "/first", first_codes, methods=["GET"]),
]

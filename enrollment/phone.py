"""Adding a phone for SMS codes in ``/account``: the number, a code sent to it, the code typed back.

    GET  /account/phone                 the number (E.164 or national) and a name
    POST /account/phone                 an unconfirmed factor, a code by SMS ──► /account/phone/{id}
    GET  /account/phone/{id}            the code input
    POST /account/phone/{id}            the code confirms the number (5 minutes, 5 tries, throttled per user)
    POST /account/phone/{id}/resend     another code (at least 30 s apart, at most 5 an hour)

SMS is a restricted authenticator (NIST SP 800-63B-4 3.1.3.3): offered only where the policy allows it. An
unconfirmed number receives only its enrollment code and signs nobody in. A failing gateway gives a message
and the way back to the other methods, never a 500. Numbers appear masked on pages and in the audit trail.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from enrollment import access
from enrollment.recovery import after_enrollment, record_enrollment
from idp import audit
from idp.factors import sms
from idp.login import mfa
from idp.models import SmsFactor
from idp.oauth.requests import RequestScope
from idp.web import i18n
from idp.web.context import AppContext, context_of, row_id
from idp.web.i18n import N_

PAGE = "/account/phone"
GATEWAY_DOWN = ("The text message could not be sent. Please try again later, or add an authenticator app or a "
                "security key instead.")


def _allowed(account: access.Account) -> bool:
    return "sms" in account.need.methods


def _number_page(ctx: AppContext, account: access.Account, *, phone: str = "", name: str = "",
                 error: i18n.Text | None = None, status: int = 200) -> Response:
    return ctx.pages.render("account_phone.html", status=status, action=PAGE, phone=phone, factor_name=name,
                            error=error, csrf_token=access.csrf_token(ctx, account))


def _code_page(ctx: AppContext, account: access.Account, factor: SmsFactor, *, error: i18n.Text | None = None,
               notice: i18n.Text | None = None, status: int = 200) -> Response:
    return ctx.pages.render("account_phone_confirm.html", status=status, action=f"{PAGE}/{factor.id}",
                            resend=f"{PAGE}/{factor.id}/resend", phone=sms.masked(factor.phone), error=error,
                            notice=notice, csrf_token=access.csrf_token(ctx, account))


def _send(ctx: AppContext, scope: RequestScope, account: access.Account,
          factor: SmsFactor) -> tuple[int, i18n.Text] | None:
    """Send the enrollment code; None when sent, else the status and message for the user (the attempt stays
    recorded: it is caught here, inside the unit of work)."""
    user = account.user
    try:
        sms.send_code(scope.db, ctx.services.hasher, sms.gateway_from_settings(ctx.services.settings.sms), factor,
                      sms.enroll_purpose(factor), scope.now, message_template=sms.ENROLL_MESSAGE_TEMPLATE)
    except sms.SmsThrottled as exc:
        seconds = max(1, int(exc.retry_after.total_seconds()))
        return 429, N_("Please wait {seconds} seconds before asking for another code.", seconds=seconds)
    except sms.SmsUnavailable as exc:
        audit.record(scope.db, "factor.enrollment", outcome="failure", origin=scope.origin, actor=user.sub,
                     subject=user.username, kind="sms", reason="gateway_unavailable", detail=exc.reason,
                     phone=sms.masked(factor.phone), via="account", at=scope.now)
        return 503, GATEWAY_DOWN
    return None


def _pending(scope: RequestScope, account: access.Account, text: str) -> SmsFactor | None:
    """The user's unconfirmed phone with this id; None for another user's, a confirmed or an unknown one."""
    factor_id = row_id(text)
    factor = scope.db.get(SmsFactor, factor_id) if factor_id is not None else None
    if factor is None or factor.user_id != account.user.id or factor.confirmed_at is not None:
        return None
    return factor


async def number_page(request: Request) -> Response:
    ctx = context_of(request)

    def work(scope: RequestScope) -> Response:
        account = access.signed_in(ctx, scope, request, return_to=PAGE)
        if isinstance(account, Response):
            return account
        if not _allowed(account):
            return access.not_available(ctx)
        refused = access.fresh(ctx, scope, request, account, return_to=PAGE)
        return refused or _number_page(ctx, account)

    return await ctx.transaction(ctx.origin(request), work)


def _number_submit_form(ctx: AppContext, scope: RequestScope, request: Request, account: access.Account,
                        form: dict[str, str]) -> Response:
    phone, name = form.get("phone", "")[:64], access.clean_name(form.get("name", ""))
    if not _allowed(account):
        return access.not_available(ctx)
    refused = access.fresh(ctx, scope, request, account, return_to=PAGE)
    if refused is not None:
        return refused
    try:
        factor = sms.add_phone(scope.db, account.user, phone, name, ctx.services.settings.sms, scope.now)
    except sms.PhoneNumberInvalid as exc:
        return _number_page(ctx, account, phone=phone, name=name, error=str(exc), status=400)
    problem = _send(ctx, scope, account, factor)
    if problem is not None:
        return _number_page(ctx, account, phone=phone, name=name, error=problem[1], status=problem[0])
    return RedirectResponse(f"{PAGE}/{factor.id}", status_code=303)


async def number_submit(request: Request) -> Response:
    return await access.handle_form(request, PAGE, _number_submit_form)


async def code_page(request: Request) -> Response:
    ctx = context_of(request)
    text = request.path_params["factor"]

    def work(scope: RequestScope) -> Response:
        account = access.signed_in(ctx, scope, request, return_to=PAGE)
        if isinstance(account, Response):
            return account
        factor = _pending(scope, account, text)
        if factor is None:
            return access.not_found(ctx)
        refused = access.fresh(ctx, scope, request, account, return_to=f"{PAGE}/{factor.id}")
        return refused or _code_page(ctx, account, factor, notice=N_("We sent a code to {phone}.",
                                                                     phone=sms.masked(factor.phone)))

    return await ctx.transaction(ctx.origin(request), work)


def _pending_phone(ctx: AppContext, scope: RequestScope, request: Request,
                   account: access.Account) -> SmsFactor | Response:
    """The phone awaiting confirmation named in the path, once the policy and a fresh sign-in allow it."""
    factor = _pending(scope, account, request.path_params["factor"])
    if factor is None:
        return access.not_found(ctx)
    if not _allowed(account):
        return access.not_available(ctx)
    refused = access.fresh(ctx, scope, request, account, return_to=f"{PAGE}/{factor.id}")
    return refused if refused is not None else factor


def _code_submit_form(ctx: AppContext, scope: RequestScope, request: Request, account: access.Account,
                      form: dict[str, str]) -> Response:
    factor = _pending_phone(ctx, scope, request, account)
    if isinstance(factor, Response):
        return factor
    user = account.user
    try:
        valid = sms.verify_code(scope.db, ctx.services.hasher, factor, sms.enroll_purpose(factor),
                                form.get("code", "")[:64], scope.now)
    except sms.SmsThrottled as exc:
        seconds = max(1, int(exc.retry_after.total_seconds()))
        return _code_page(ctx, account, factor, status=429,
                          error=N_("Too many wrong codes. Please wait {seconds} seconds and try again.",
                                   seconds=seconds))
    if not valid:
        audit.record(scope.db, "factor.enrollment", outcome="failure", origin=scope.origin, actor=user.sub,
                     subject=user.username, kind="sms", reason="wrong_code", phone=sms.masked(factor.phone),
                     via="account", at=scope.now)
        return _code_page(ctx, account, factor, error=N_("The code is not valid, or it has expired. Please try "
                                                      "again or ask for a new code."))
    sms.confirm(scope.db, factor, scope.now)
    # The code proved possession of the phone in this session, as it does at sign-in.
    mfa.record_method(account.session, "sms", scope.now)
    record_enrollment(scope, account, "sms", factor.id, factor.name, phone=sms.masked(factor.phone))
    return after_enrollment(ctx, scope, account)


async def code_submit(request: Request) -> Response:
    return await access.handle_form(request, PAGE, _code_submit_form)


def _resend_form(ctx: AppContext, scope: RequestScope, request: Request, account: access.Account,
                 form: dict[str, str]) -> Response:
    factor = _pending_phone(ctx, scope, request, account)
    if isinstance(factor, Response):
        return factor
    problem = _send(ctx, scope, account, factor)
    if problem is not None:
        return _code_page(ctx, account, factor, error=problem[1], status=problem[0])
    return _code_page(ctx, account, factor, notice=N_("We sent a new code to {phone}.",
                                                      phone=sms.masked(factor.phone)))


async def resend(request: Request) -> Response:
    return await access.handle_form(request, PAGE, _resend_form)


routes = [
    Route(PAGE, number_page, methods=["GET"]),
    Route(PAGE, number_submit, methods=["POST"]),
    Route(PAGE + "/{factor}", code_page, methods=["GET"]),
    Route(PAGE + "/{factor}", code_submit, methods=["POST"]),
    Route(PAGE + "/{factor}/resend", resend, methods=["POST"]),
]

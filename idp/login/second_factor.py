"""The pages of the second step: proving a second factor, and enrolling the first one where it is required.

    password ──► need a second factor? ── none enrolled ──► /login/{tx}/enroll ─► TOTP (or a key, a phone)
                      │                                        └─ skip (only within a grace period)
                      └─ /login/{tx}/factor?method=webauthn|totp|sms|recovery ─► /authorize/resume/{tx}

Every page checks the transaction, its browser and that the session is the one that proved the password
in this browser. Wrong codes are throttled per user with growing delays, like passwords; each success and
failure is audited with the method.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from idp import audit
from idp.accounts import sessions, throttle
from idp.factors import enrolled, recovery, sms, totp, trusted_devices
from idp.factors.policy import Requirement
from idp.login import mfa
from idp.login.transactions import (
    client_name,
    client_of,
    client_pub_id,
    csrf_binding,
    current_session,
    expired_page,
    load_transaction,
)
from idp.models import LoginTransaction, SmsFactor, SsoSession, TotpFactor
from idp.oauth.requests import RequestScope
from idp.web import cookies, csrf, i18n
from idp.web.context import AppContext, MalformedRequest, context_of, read_fields, row_id
from idp.web.i18n import N_

METHOD_LABELS = {
    "webauthn": N_("Security key or passkey"),
    "totp": N_("Authenticator app"),
    "sms": N_("Text message (SMS)"),
    "recovery": N_("Recovery code"),
}


class Step:
    """The transaction, session and requirement a second-step page works on."""

    def __init__(self, tx: LoginTransaction, session: SsoSession, need: Requirement, *,
                 may_enroll: bool = True) -> None:
        self.tx = tx
        self.session = session
        self.need = need
        self.may_enroll = may_enroll
        """False while the user has a factor but this session proved only the password: enrolling another one
        then would let a stolen password register the thief's authenticator and pass the second step with it."""


PROVING_METHODS = frozenset({"webauthn", "totp", "sms", "recovery", "passkey"})
"""Methods that prove more than the password."""


def _step(ctx: AppContext, scope: RequestScope, request: Request, tx_id: str) -> Step | Response:
    tx = load_transaction(ctx, scope, request, tx_id)
    if tx is None:
        return expired_page(ctx)
    current = current_session(ctx, scope, request)
    if current is None or current.row.id != tx.session_id or current.state is not sessions.SessionState.ACTIVE:
        # The password comes first, in this browser and this transaction.
        return RedirectResponse(f"/login/{tx.id}", status_code=303)
    client = client_of(scope, tx)
    acr_values = dict(tx.params["pairs"]).get("acr_values")
    need = mfa.requirement_for(ctx.services, current.row.user, client, acr_values, scope.now)
    may_enroll = bool(PROVING_METHODS & set(current.row.methods)) or not enrolled.kinds_of(scope.db, current.row.user)
    return Step(tx, current.row, need, may_enroll=may_enroll)


load_step = _step
"""The checks every second-step page makes (also used by the WebAuthn endpoints in ``webauthn_pages``)."""


StepBody = Callable[[AppContext, RequestScope, Step, Any], Response]


def step_page(body: StepBody) -> Callable[[Request], Awaitable[Response]]:
    """A GET page of the second step: the transaction and session checked, then ``body``."""

    async def endpoint(request: Request) -> Response:
        ctx = context_of(request)

        def work(scope: RequestScope) -> Response:
            step = _step(ctx, scope, request, request.path_params["tx"])
            return step if isinstance(step, Response) else body(ctx, scope, step, request)

        return await ctx.transaction(ctx.origin(request), work)

    return endpoint


def step_form(purpose: str, body: StepBody) -> Callable[[Request], Awaitable[Response]]:
    """A POST of the second step: the form read, the transaction, session and CSRF token checked, then ``body``."""

    async def endpoint(request: Request) -> Response:
        ctx = context_of(request)
        try:
            form = await read_fields(request)
        except MalformedRequest as exc:
            return ctx.pages.error(400, N_("The form could not be read"), str(exc))

        def work(scope: RequestScope) -> Response:
            step = _step(ctx, scope, request, request.path_params["tx"])
            if isinstance(step, Response):
                return step
            if not csrf.check_token(ctx.services.csrf_key, form.get("csrf_token"), purpose, csrf_binding(step.tx)):
                return ctx.pages.error(403, N_("The form has expired"), N_("Please reload the page and try again."))
            return body(ctx, scope, step, form)

        return await ctx.transaction(ctx.origin(request), work)

    return endpoint


def _resume(tx: LoginTransaction) -> Response:
    return RedirectResponse(f"/authorize/resume/{tx.id}", status_code=303)


def offered_methods(scope: RequestScope, step: Step) -> tuple[list[str], bool]:
    """The methods the second-step page offers, and whether they only serve to prove the user before enrolling.

    Normally the user's factors that count for this request. When none counts (a TOTP user facing a request
    for ``phr``, an SMS user facing a client without SMS) and this session proved no factor yet, the user's
    other factors are offered to prove it is them: adding an authenticator needs the strongest
    authentication the account has (NIST SP 800-63B-4 4.1.2), after which enrollment of an accepted one opens.
    """
    usable = mfa.usable_methods(scope.db, step.session.user, step.need)
    if usable or step.may_enroll:
        return usable, False
    kinds = enrolled.kinds_of(scope.db, step.session.user)
    proof: list[str] = [m for m in ("webauthn", "totp", "sms") if m in kinds]
    if proof and enrolled.has_recovery_codes(scope.db, step.session.user):
        proof.append("recovery")
    return proof, True


def _factor_page(ctx: AppContext, scope: RequestScope, step: Step, method: str | None, *,
                 error: i18n.Text | None = None, status: int = 200, notice: i18n.Text | None = None) -> Response:
    methods, proving = offered_methods(scope, step)
    if not methods:
        return RedirectResponse(f"/login/{step.tx.id}/enroll", status_code=303)
    chosen = method if method in methods else methods[0]
    phones: list[dict[str, object]] = []
    if chosen == "sms":
        current = _sms_factor(scope, step)
        phones = [{"id": phone.id, "number": sms.masked(phone.phone), "from_directory": phone.managed_by is not None,
                   "checked": current is not None and phone.id == current.id} for phone in _phones(scope, step)]
    return ctx.pages.render(
        "factor.html", status=status, tx=step.tx.id, method=chosen, label=METHOD_LABELS[chosen],
        phones=phones if len(phones) > 1 else [],
        others=[(m, METHOD_LABELS[m]) for m in methods if m != chosen], client_name=client_name(scope, step.tx),
        csrf_token=csrf.make_token(ctx.services.csrf_key, "factor", csrf_binding(step.tx)),
        offer_trust=ctx.services.settings.mfa.trusted_device and step.need.trusted_device, error=error,
        level=step.need.level, notice=notice, proving=proving,
    )


def _factor_page_shown(ctx: AppContext, scope: RequestScope, step: Step, request: Request) -> Response:
    return _factor_page(ctx, scope, step, request.query_params.get("method"))


factor_page = step_page(_factor_page_shown)


def _verify(ctx: AppContext, scope: RequestScope, step: Step, method: str, code: str) -> bool:
    user = step.session.user
    if method == "totp":
        factors = scope.db.scalars(select(TotpFactor).where(TotpFactor.user_id == user.id,
                                                            TotpFactor.confirmed_at.is_not(None))).all()
        return any(totp.verify(scope.db, ctx.services.sealer, factor, code, scope.now) for factor in factors)
    if method == "recovery":
        return recovery.use(scope.db, ctx.services.passwords, user, code, scope.now)
    if method == "sms":
        factor = _sms_factor(scope, step)
        return factor is not None and sms.verify_code(scope.db, ctx.services.hasher, factor,
                                                      sms.login_purpose(step.tx.id), code, scope.now)
    return False


def _phones(scope: RequestScope, step: Step) -> list[SmsFactor]:
    return list(scope.db.scalars(select(SmsFactor).where(SmsFactor.user_id == step.session.user_id,
                                                         SmsFactor.confirmed_at.is_not(None))
                                 .order_by(SmsFactor.id)))


def _sms_factor(scope: RequestScope, step: Step) -> SmsFactor | None:
    """The confirmed phone a code was sent to in this sign-in (the first one, if none was sent yet)."""
    phones = _phones(scope, step)
    chosen = step.tx.params.get("sms_factor")
    return next((phone for phone in phones if phone.id == chosen), phones[0] if phones else None)


def _sms_send(ctx: AppContext, scope: RequestScope, step: Step, form: dict[str, str]) -> Response:
    """Send a code to the phone the user chose (with one phone, to it); a failing gateway leaves the user on
    the page with another choice."""
    if "phone_id" in form:
        # Someone with a phone from the directory and one of their own picks where the code goes; an id that is
        # not one of their confirmed phones is refused like any other method that cannot be used here.
        wanted = row_id(form["phone_id"])
        factor = next((phone for phone in _phones(scope, step) if phone.id == wanted), None)
    else:
        factor = _sms_factor(scope, step)
    if factor is None or "sms" not in offered_methods(scope, step)[0]:
        return _factor_page(ctx, scope, step, None, error=N_("This method cannot be used here."), status=400)
    user = step.session.user
    try:
        sms.send_code(scope.db, ctx.services.hasher, sms.gateway_from_settings(ctx.services.settings.sms),
                      factor, sms.login_purpose(step.tx.id), scope.now)
    except sms.SmsThrottled as exc:
        seconds = max(1, int(exc.retry_after.total_seconds()))
        return _factor_page(ctx, scope, step, "sms", status=429,
                            error=N_("Please wait {seconds} seconds before asking for another code.", seconds=seconds))
    except sms.SmsUnavailable:
        audit.record(scope.db, "login.second_factor", outcome="failure", origin=scope.origin, actor=user.sub,
                     subject=user.username, client_id=client_pub_id(scope, step.tx), method="sms",
                     reason="gateway_unavailable", at=scope.now)
        return _factor_page(ctx, scope, step, "sms", status=503,
                            error=N_("The text message could not be sent. Please try again later or use "
                                  "another method."))
    step.tx.params = {**step.tx.params, "sms_factor": factor.id}
    return _factor_page(ctx, scope, step, "sms", notice=N_("We sent a code to {phone}.",
                                                           phone=sms.masked(factor.phone)))


sms_send = step_form("factor", _sms_send)


def factor_limits(ctx: AppContext, user_id: int) -> list[throttle.Limit]:
    return [throttle.Limit(f"factor:user:{user_id}", ctx.services.settings.throttle.free_attempts_per_account)]


def throttle_policy(ctx: AppContext) -> throttle.Policy:
    settings = ctx.services.settings.throttle
    return throttle.Policy(settings.first_delay, settings.max_delay, settings.forget_after)


def complete(ctx: AppContext, scope: RequestScope, step: Step, method: str, response: Response, *,
             trust: bool, webauthn_amr: list[str] | None = None) -> Response:
    """A second factor was proved: record it in the session, maybe trust the browser, and go on."""
    user = step.session.user
    throttle.record_success(scope.db, factor_limits(ctx, user.id), reset={f"factor:user:{user.id}"})
    mfa.record_method(step.session, method, scope.now, webauthn_amr=webauthn_amr or [])
    # record_method moves the session's authenticated_at to now; the transaction must follow, or the resume
    # takes the session for an older sign-in and asks for the password again (prompt=login, max_age).
    step.tx.authenticated_at = scope.now
    audit.record(scope.db, "login.second_factor", origin=scope.origin, actor=user.sub, subject=user.username,
                 client_id=client_pub_id(scope, step.tx), method=method, amr=step.session.amr, at=scope.now)
    if trust and ctx.services.settings.mfa.trusted_device and step.need.trusted_device:
        lifetime = ctx.services.settings.mfa.trusted_device_lifetime
        value, _ = trusted_devices.trust(scope.db, ctx.services.hasher, user, lifetime=lifetime,
                                         user_agent=scope.origin.user_agent, now=scope.now)
        cookies.set_cookie(response, ctx.services.settings, trusted_devices.COOKIE, value,
                           max_age=int(lifetime.total_seconds()))
        audit.record(scope.db, "trusted_device.added", origin=scope.origin, actor=user.sub, subject=user.username,
                     at=scope.now)
    return response


def _factor_submit(ctx: AppContext, scope: RequestScope, step: Step, form: dict[str, str]) -> Response:
    method, code = form.get("method", ""), form.get("code", "")[:64]
    user = step.session.user
    if method not in offered_methods(scope, step)[0] or method not in ("totp", "sms", "recovery"):
        # A method the policy does not allow here (say, SMS for a client that forbids it) is refused even
        # when posted directly.
        return _factor_page(ctx, scope, step, None, error=N_("This method cannot be used here."), status=400)
    blocked = throttle.reserve_attempt(scope.db, factor_limits(ctx, user.id), scope.now, throttle_policy(ctx))
    if blocked is not None:
        seconds = max(1, int(blocked.retry_after.total_seconds()))
        audit.record(scope.db, "login.second_factor", outcome="failure", origin=scope.origin, actor=user.sub,
                     subject=user.username, client_id=client_pub_id(scope, step.tx), method=method,
                     reason="throttled", at=scope.now)
        return _factor_page(ctx, scope, step, method, status=429,
                            error=N_("Too many wrong codes. Please wait {seconds} seconds and try again.",
                                     seconds=seconds))
    try:
        valid = _verify(ctx, scope, step, method, code)
    except sms.SmsThrottled as exc:
        seconds = max(1, int(exc.retry_after.total_seconds()))
        return _factor_page(ctx, scope, step, method, status=429,
                            error=N_("Too many wrong codes. Please wait {seconds} seconds and try again.",
                                     seconds=seconds))
    if not valid:
        audit.record(scope.db, "login.second_factor", outcome="failure", origin=scope.origin, actor=user.sub,
                     subject=user.username, client_id=client_pub_id(scope, step.tx), method=method,
                     reason="wrong_code", at=scope.now)
        return _factor_page(ctx, scope, step, method, error=N_("The code is not valid. Please try again."))
    return complete(ctx, scope, step, method, _resume(step.tx), trust=form.get("trust_device") == "yes")


factor_submit = step_form("factor", _factor_submit)


def _enroll_methods(step: Step) -> list[str]:
    if not step.may_enroll:
        return []
    return [m for m in step.need.methods if m in ("totp", "webauthn", "sms")]


enroll_methods = _enroll_methods


def _enroll_page(ctx: AppContext, scope: RequestScope, step: Step, request: Request) -> Response:
    if not step.may_enroll:
        # The user has factors but proved none in this sign-in: first prove one, then enroll.
        return RedirectResponse(f"/login/{step.tx.id}/factor", status_code=303)
    skippable = step.need.skippable_until is not None and scope.now.date() < step.need.skippable_until
    return ctx.pages.render(
        "enroll.html", tx=step.tx.id, methods=[(m, METHOD_LABELS[m]) for m in _enroll_methods(step)],
        client_name=client_name(scope, step.tx), skippable=skippable,
        deadline=step.need.skippable_until.isoformat() if step.need.skippable_until else None,
        csrf_token=csrf.make_token(ctx.services.csrf_key, "enroll", csrf_binding(step.tx)),
    )


enroll_page = step_page(_enroll_page)


def _enroll_skip(ctx: AppContext, scope: RequestScope, step: Step, form: dict[str, str]) -> Response:
    if step.need.skippable_until is None or scope.now.date() >= step.need.skippable_until:
        return ctx.pages.error(403, N_("A second factor is required"),
                               N_("Please set up a second factor to continue."))
    step.tx.params = {**step.tx.params, "mfa_skipped": True}
    user = step.session.user
    audit.record(scope.db, "factor.enrollment_skipped", origin=scope.origin, actor=user.sub,
                 subject=user.username, until=step.need.skippable_until.isoformat(), at=scope.now)
    return _resume(step.tx)


enroll_skip = step_form("enroll", _enroll_skip)


def _pending_totp(ctx: AppContext, scope: RequestScope, step: Step) -> tuple[TotpFactor, str]:
    """The unconfirmed TOTP factor of this transaction: made once, so a reload shows the same QR code."""
    handle = step.tx.params.get("totp_pending")
    factor = scope.db.scalar(select(TotpFactor).where(TotpFactor.handle == handle)) if handle else None
    if factor is None or factor.user_id != step.session.user_id or factor.confirmed_at is not None:
        factor, secret = totp.begin_enrollment(scope.db, ctx.services.sealer, step.session.user,
                                               "Authenticator", scope.now)
        step.tx.params = {**step.tx.params, "totp_pending": factor.handle}
        return factor, secret
    return factor, totp.secret_of(ctx.services.sealer, factor)


def totp_enrollment_context(ctx: AppContext, secret: str, account: str) -> dict[str, Any]:
    """What the TOTP enrollment template shows: QR code, otpauth link and the seed in groups of four."""
    uri = totp.provisioning_uri(secret, account, ctx.services.settings.webauthn.rp_name)
    return {"otpauth_uri": uri, "qr_svg": totp.qr_svg(uri), "secret_grouped": totp.grouped(secret)}


def _totp_page(ctx: AppContext, scope: RequestScope, step: Step, *, error: i18n.Text | None = None,
               status: int = 200) -> Response:
    factor, secret = _pending_totp(ctx, scope, step)
    return ctx.pages.render(
        "enroll_totp.html", status=status, action=f"/login/{step.tx.id}/enroll/totp", error=error,
        csrf_token=csrf.make_token(ctx.services.csrf_key, "enroll", csrf_binding(step.tx)),
        **totp_enrollment_context(ctx, secret, step.session.user.username),
    )


def _enroll_totp_page(ctx: AppContext, scope: RequestScope, step: Step, request: Request) -> Response:
    if "totp" not in _enroll_methods(step):
        return ctx.pages.error(403, N_("Not available"), N_("This method cannot be used here."))
    return _totp_page(ctx, scope, step)


enroll_totp_page = step_page(_enroll_totp_page)


def first_factor_enrolled(ctx: AppContext, scope: RequestScope, user: Any) -> list[str] | None:
    """Recovery codes for a user's first factor (shown once); None when the user already had codes."""
    if enrolled.has_recovery_codes(scope.db, user):
        return None
    codes = recovery.regenerate(scope.db, ctx.services.passwords, user, scope.now)
    audit.record(scope.db, "recovery_codes.generated", origin=scope.origin, actor=user.sub, subject=user.username,
                 at=scope.now)
    return codes


def _enroll_totp_submit(ctx: AppContext, scope: RequestScope, step: Step, form: dict[str, str]) -> Response:
    if "totp" not in _enroll_methods(step):
        return ctx.pages.error(403, N_("Not available"), N_("This method cannot be used here."))
    user = step.session.user
    blocked = throttle.reserve_attempt(scope.db, factor_limits(ctx, user.id), scope.now, throttle_policy(ctx))
    if blocked is not None:
        return _totp_page(ctx, scope, step, status=429, error=N_("Too many wrong codes. Please wait and try again."))
    factor, _ = _pending_totp(ctx, scope, step)
    if not totp.verify(scope.db, ctx.services.sealer, factor, form.get("code", "")[:64], scope.now):
        audit.record(scope.db, "factor.enrollment", outcome="failure", origin=scope.origin, actor=user.sub,
                     subject=user.username, kind="totp", reason="wrong_code", at=scope.now)
        return _totp_page(ctx, scope, step, error=N_("The code is not valid. Check the time on your phone."))
    factor.confirmed_at = scope.now
    step.tx.params = {key: value for key, value in step.tx.params.items() if key != "totp_pending"}
    audit.record(scope.db, "factor.enrolled", origin=scope.origin, actor=user.sub, subject=user.username,
                 kind="totp", name=factor.name, at=scope.now)
    codes = first_factor_enrolled(ctx, scope, user)
    # Setting up the app proved possession of it: this sign-in has its second factor.
    page: Response = _resume(step.tx) if codes is None else ctx.pages.render(
        "recovery_codes.html", codes=codes, continue_url=f"/authorize/resume/{step.tx.id}")
    return complete(ctx, scope, step, "totp", page, trust=False)


enroll_totp_submit = step_form("enroll", _enroll_totp_submit)


def _sms_enroll_page(ctx: AppContext, step: Step, *, phone: str = "", sent_to: str | None = None,
                     error: i18n.Text | None = None, status: int = 200) -> Response:
    return ctx.pages.render(
        "enroll_sms.html", status=status, action=f"/login/{step.tx.id}/enroll/sms", phone=phone, sent_to=sent_to,
        error=error, csrf_token=csrf.make_token(ctx.services.csrf_key, "enroll", csrf_binding(step.tx)),
    )


def _enroll_sms_page(ctx: AppContext, scope: RequestScope, step: Step, request: Request) -> Response:
    if "sms" not in _enroll_methods(step):
        return ctx.pages.error(403, N_("Not available"), N_("This method cannot be used here."))
    return _sms_enroll_page(ctx, step)


enroll_sms_page = step_page(_enroll_sms_page)


def _enroll_sms_submit(ctx: AppContext, scope: RequestScope, step: Step, form: dict[str, str]) -> Response:
    """Two posts on one page: a ``phone`` sends a code to it; a ``code`` confirms the pending phone."""
    if "sms" not in _enroll_methods(step):
        return ctx.pages.error(403, N_("Not available"), N_("This method cannot be used here."))
    user = step.session.user
    settings = ctx.services.settings.sms
    if "code" not in form:
        try:
            factor = sms.add_phone(scope.db, user, form.get("phone", "")[:64], "Phone", settings, scope.now)
            sms.send_code(scope.db, ctx.services.hasher, sms.gateway_from_settings(settings), factor,
                          sms.enroll_purpose(factor), scope.now)
        except sms.PhoneNumberInvalid as exc:
            return _sms_enroll_page(ctx, step, phone=form.get("phone", "")[:64], error=str(exc), status=400)
        except sms.SmsThrottled as exc:
            seconds = max(1, int(exc.retry_after.total_seconds()))
            return _sms_enroll_page(ctx, step, error=N_("Please wait {seconds} seconds before the next code.",
                                                        seconds=seconds),
                                    status=429)
        except sms.SmsUnavailable:
            return _sms_enroll_page(ctx, step, status=503, error=N_("The text message could not be sent. Please "
                                    "try again later or choose another method."))
        step.tx.params = {**step.tx.params, "sms_pending": factor.id}
        return _sms_enroll_page(ctx, step, sent_to=sms.masked(factor.phone))
    pending = scope.db.get(SmsFactor, step.tx.params.get("sms_pending") or 0)
    if pending is None or pending.user_id != user.id:
        return _sms_enroll_page(ctx, step, error=N_("Please enter your phone number first."), status=400)
    try:
        valid = sms.verify_code(scope.db, ctx.services.hasher, pending, sms.enroll_purpose(pending),
                                form.get("code", "")[:64], scope.now)
    except sms.SmsThrottled:
        return _sms_enroll_page(ctx, step, sent_to=sms.masked(pending.phone), status=429,
                                error=N_("Too many wrong codes. Please wait and try again."))
    if not valid:
        audit.record(scope.db, "factor.enrollment", outcome="failure", origin=scope.origin, actor=user.sub,
                     subject=user.username, kind="sms", reason="wrong_code", at=scope.now)
        return _sms_enroll_page(ctx, step, sent_to=sms.masked(pending.phone), error=N_("The code is not valid."))
    sms.confirm(scope.db, pending, scope.now)
    step.tx.params = {key: value for key, value in step.tx.params.items() if key != "sms_pending"}
    audit.record(scope.db, "factor.enrolled", origin=scope.origin, actor=user.sub, subject=user.username,
                 kind="sms", phone=sms.masked(pending.phone), at=scope.now)
    codes = first_factor_enrolled(ctx, scope, user)
    page: Response = _resume(step.tx) if codes is None else ctx.pages.render(
        "recovery_codes.html", codes=codes, continue_url=f"/authorize/resume/{step.tx.id}")
    return complete(ctx, scope, step, "sms", page, trust=False)


enroll_sms_submit = step_form("enroll", _enroll_sms_submit)


routes = [
    Route("/login/{tx}/factor", factor_page, methods=["GET"]),
    Route("/login/{tx}/factor", factor_submit, methods=["POST"]),
    Route("/login/{tx}/sms/send", sms_send, methods=["POST"]),
    Route("/login/{tx}/enroll", enroll_page, methods=["GET"]),
    Route("/login/{tx}/enroll/skip", enroll_skip, methods=["POST"]),
    Route("/login/{tx}/enroll/totp", enroll_totp_page, methods=["GET"]),
    Route("/login/{tx}/enroll/totp", enroll_totp_submit, methods=["POST"]),
    Route("/login/{tx}/enroll/sms", enroll_sms_page, methods=["GET"]),
    Route("/login/{tx}/enroll/sms", enroll_sms_submit, methods=["POST"]),
]

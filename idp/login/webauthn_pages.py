"""WebAuthn during a sign-in: a security key as second step, passkey sign-in, and enrolling a key.

    /login/{tx}  ── "Sign in with a passkey" ──► POST passkey/options, passkey/verify ──► /authorize/resume/{tx}
    /login/{tx}/factor?method=webauthn       ──► POST webauthn/options, webauthn/verify ─► /authorize/resume/{tx}
    /login/{tx}/enroll/webauthn[?kind=passkey] ► POST enroll/webauthn/options, /verify
                                                 ──► /login/{tx}/recovery-codes (shown once) ─► /authorize/resume/{tx}

The POST endpoints speak JSON with ``themes/default/static/webauthn.js``: the options endpoint answers
``{"publicKey": options, "challenge_id": id}``; the verify endpoint receives ``{credential, csrf_token,
challenge_id, name?, trust_device?}``; every answer is ``{"redirect": url}`` or, with a 4xx status,
``{"error": message}`` for the person. The CSRF token comes in the JSON body and is bound, like the forms'
tokens, to the transaction and the browser.

A refused ceremony (``WebAuthnError``) is an ordinary answer inside the unit of work, so that what the
refusal wrote is committed: the consumed challenge (a replay stays refused), a key flagged as possibly
cloned, and the audit rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from idp import audit
from idp.accounts import throttle
from idp.accounts.authenticate import address_key
from idp.config import WebAuthnSettings
from idp.factors import webauthn as wa
from idp.login.routes import sign_in
from idp.login.second_factor import (
    Step,
    complete,
    enroll_methods,
    factor_limits,
    first_factor_enrolled,
    load_step,
    offered_methods,
    throttle_policy,
)
from idp.login.transactions import client_name, client_pub_id, csrf_binding, load_transaction
from idp.models import LoginTransaction, User
from idp.oauth.requests import RequestScope
from idp.web import csrf, i18n
from idp.web.context import AppContext, MalformedRequest, context_of
from idp.web.i18n import N_

_EXPIRED = N_("This sign-in has expired. Please return to the application and start the sign-in again.")
_PAGE_EXPIRED = N_("This page has expired. Please reload it and try again.")
_NOT_HERE = N_("A security key cannot be used here. Please choose another method.")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Challenge ids are ``random_token`` values; anything else never reaches a query (no NUL for PostgreSQL)."""


# --- JSON in and out ----------------------------------------------------------------------------------------

async def _read_json(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise MalformedRequest("the body must be application/json")
    try:
        # BodyTooLarge passes through: SecurityMiddleware answers it with 413.
        data = json.loads(await request.body())
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or nested deeper than the parser goes
        raise MalformedRequest("the body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise MalformedRequest("the body must be a JSON object")
    return data


def _error(message: i18n.Text, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": i18n.render(message)}, status_code=status)


def _redirect(url: str) -> JSONResponse:
    return JSONResponse({"redirect": url})


def _as_json(page: Response) -> JSONResponse:
    """The shared step checks answer with pages; the script understands a redirect or an error."""
    location = page.headers.get("location")
    return _redirect(location) if location else _error(_EXPIRED)


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) else None


def _challenge_id(body: dict[str, Any]) -> str:
    value = _text(body, "challenge_id") or ""
    return value if _TOKEN.fullmatch(value) else ""


def _key_name(body: dict[str, Any]) -> str:
    # Printable characters only: no control characters, NULs or lone surrogates in a name shown on pages.
    return "".join(ch for ch in (_text(body, "name") or "")[:64] if ch.isprintable()).strip()


def _options(challenge_id: str, options: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"publicKey": options, "challenge_id": challenge_id})


def _resume_url(tx: LoginTransaction) -> str:
    return f"/authorize/resume/{tx.id}"


def _retry_text(blocked: throttle.Blocked) -> i18n.Text:
    seconds = max(1, int(blocked.retry_after.total_seconds()))
    return N_("Too many attempts. Please wait {seconds} seconds and try again.", seconds=seconds)


Work = Callable[[AppContext, RequestScope, dict[str, Any]], Response]


async def _json_endpoint(request: Request, work: Work) -> Response:
    """Read the JSON body (400 when malformed), then run ``work(ctx, scope, body)`` in one unit of work."""
    ctx = context_of(request)
    try:
        body = await _read_json(request)
    except MalformedRequest as exc:
        return _error(N_("The request could not be read: {detail}.", detail=str(exc)))
    response: Response = await ctx.transaction(ctx.origin(request), lambda scope: work(ctx, scope, body))
    return response


def _rp(ctx: AppContext) -> tuple[WebAuthnSettings, str]:
    return ctx.services.settings.webauthn, ctx.services.settings.issuer


# --- the second step ----------------------------------------------------------------------------------------

def _login_purpose(tx: LoginTransaction) -> str:
    return f"login:{tx.id}"


def _second_step(ctx: AppContext, scope: RequestScope, request: Request, body: dict[str, Any]) -> Step | Response:
    step = load_step(ctx, scope, request, request.path_params["tx"])
    if isinstance(step, Response):
        return _as_json(step)
    if not csrf.check_token(ctx.services.csrf_key, _text(body, "csrf_token"), "factor", csrf_binding(step.tx)):
        return _error(_PAGE_EXPIRED, 403)
    if "webauthn" not in offered_methods(scope, step)[0]:
        return _error(_NOT_HERE)
    return step


async def factor_options(request: Request) -> Response:
    def work(ctx: AppContext, scope: RequestScope, body: dict[str, Any]) -> Response:
        step = _second_step(ctx, scope, request, body)
        if isinstance(step, Response):
            return step
        settings, issuer = _rp(ctx)
        try:
            challenge_id, options = wa.authentication_options(scope.db, settings, issuer, step.session.user,
                                                              scope.now, purpose=_login_purpose(step.tx))
        except wa.WebAuthnError as error:
            return _error(error.message)
        return _options(challenge_id, options)

    return await _json_endpoint(request, work)


async def factor_verify(request: Request) -> Response:
    def work(ctx: AppContext, scope: RequestScope, body: dict[str, Any]) -> Response:
        step = _second_step(ctx, scope, request, body)
        if isinstance(step, Response):
            return step
        user = step.session.user
        client_id = client_pub_id(scope, step.tx)
        # Counted before the check, like codes, so parallel attempts cannot slip past the delay.
        blocked = throttle.reserve_attempt(scope.db, factor_limits(ctx, user.id), scope.now, throttle_policy(ctx))
        if blocked is not None:
            audit.record(scope.db, "login.second_factor", outcome="failure", origin=scope.origin, actor=user.sub,
                         subject=user.username, client_id=client_id, method="webauthn", reason="throttled",
                         at=scope.now)
            return _error(_retry_text(blocked), 429)
        settings, issuer = _rp(ctx)
        try:
            credential, amr = wa.authenticate(scope.db, settings, issuer, _challenge_id(body), body.get("credential"),
                                              scope.now, purpose=_login_purpose(step.tx), user=user,
                                              origin=scope.origin, client_id=client_id)
        except wa.WebAuthnError as error:
            audit.record(scope.db, "login.second_factor", outcome="failure", origin=scope.origin, actor=user.sub,
                         subject=user.username, client_id=client_id, method="webauthn", reason=error.reason,
                         at=scope.now)
            return _error(error.message)
        return complete(ctx, scope, step, "webauthn", _redirect(_resume_url(step.tx)),
                        trust=body.get("trust_device") is True, webauthn_amr=amr)

    return await _json_endpoint(request, work)


# --- passkey sign-in (no password) --------------------------------------------------------------------------

def _passkey_purpose(tx: LoginTransaction) -> str:
    return f"passkey:{tx.id}"


def _address_limits(ctx: AppContext, scope: RequestScope) -> list[throttle.Limit]:
    """Passkey options need no account, and each one stores a challenge: count them per client address."""
    if not scope.origin.ip:
        return []
    return [throttle.Limit(f"passkey:ip:{address_key(scope.origin.ip)}",
                           ctx.services.settings.throttle.free_attempts_per_ip)]


def _passkey_tx(ctx: AppContext, scope: RequestScope, request: Request,
                body: dict[str, Any]) -> LoginTransaction | Response:
    tx = load_transaction(ctx, scope, request, request.path_params["tx"])
    if tx is None:
        return _error(_EXPIRED)
    if not csrf.check_token(ctx.services.csrf_key, _text(body, "csrf_token"), "login", csrf_binding(tx)):
        return _error(_PAGE_EXPIRED, 403)
    return tx


async def passkey_options(request: Request) -> Response:
    def work(ctx: AppContext, scope: RequestScope, body: dict[str, Any]) -> Response:
        tx = _passkey_tx(ctx, scope, request, body)
        if isinstance(tx, Response):
            return tx
        blocked = throttle.reserve_attempt(scope.db, _address_limits(ctx, scope), scope.now, throttle_policy(ctx))
        if blocked is not None:
            audit.record(scope.db, "login.passkey", outcome="failure", origin=scope.origin,
                         client_id=client_pub_id(scope, tx), reason="throttled", at=scope.now)
            return _error(_retry_text(blocked), 429)
        settings, issuer = _rp(ctx)
        try:
            challenge_id, options = wa.authentication_options(scope.db, settings, issuer, None, scope.now,
                                                              purpose=_passkey_purpose(tx))
        except wa.WebAuthnError as error:
            return _error(error.message)
        return _options(challenge_id, options)

    return await _json_endpoint(request, work)


async def passkey_verify(request: Request) -> Response:
    def work(ctx: AppContext, scope: RequestScope, body: dict[str, Any]) -> Response:
        tx = _passkey_tx(ctx, scope, request, body)
        if isinstance(tx, Response):
            return tx
        client_id = client_pub_id(scope, tx)
        settings, issuer = _rp(ctx)
        try:
            credential, amr = wa.authenticate(scope.db, settings, issuer, _challenge_id(body), body.get("credential"),
                                              scope.now, purpose=_passkey_purpose(tx), user=None,
                                              origin=scope.origin, client_id=client_id)
        except wa.WebAuthnError as error:
            audit.record(scope.db, "login.passkey", outcome="failure", origin=scope.origin, client_id=client_id,
                         reason=error.reason, at=scope.now)
            return _error(error.message)
        user = scope.db.get(User, credential.user_id)
        assert user is not None
        if not user.is_active:
            audit.record(scope.db, "login.passkey", outcome="failure", origin=scope.origin, subject=user.username,
                         client_id=client_id, reason="disabled", credential=credential.id, at=scope.now)
            return _error(N_("This passkey cannot be used to sign in. Please contact the IT service desk."))
        # The challenge this address asked for was used for a sign-in: give back what the options counted.
        throttle.record_success(scope.db, _address_limits(ctx, scope), reset=set())
        user.last_login_at = scope.now
        audit.record(scope.db, "login.passkey", origin=scope.origin, actor=user.sub, subject=user.username,
                     client_id=client_id, credential=credential.id, amr=amr, at=scope.now)
        return sign_in(ctx, scope, request, tx, user, ["passkey"], _redirect(_resume_url(tx)), webauthn_amr=amr)

    response = await _json_endpoint(request, work)
    context_of(request).sender.wake()  # another user's session in this browser may have ended
    return response


# --- enrolling a security key or passkey during the sign-in -------------------------------------------------

def _enroll_purpose(tx: LoginTransaction) -> str:
    return f"enroll:login:{tx.id}"


def _passkey_wanted(request: Request) -> bool:
    return request.query_params.get("kind") == "passkey"


def _enrollment_refusal(step: Step) -> str | None:
    if not step.may_enroll:
        return N_("You already have a second factor. Please confirm it is you with it first.")
    if "webauthn" not in enroll_methods(step):
        return _NOT_HERE
    return None


async def enroll_page(request: Request) -> Response:
    ctx = context_of(request)
    tx_id = request.path_params["tx"]
    passkey = _passkey_wanted(request)

    def work(scope: RequestScope) -> Response:
        step = load_step(ctx, scope, request, tx_id)
        if isinstance(step, Response):
            return step
        refusal = _enrollment_refusal(step)
        if refusal is not None:
            return ctx.pages.error(403, N_("Not available"), refusal)
        base = f"/login/{step.tx.id}/enroll/webauthn"
        query = "?kind=passkey" if passkey else ""
        return ctx.pages.render(
            "enroll_webauthn.html", tx=step.tx.id, passkey=passkey, client_name=client_name(scope, step.tx),
            options_url=f"{base}/options{query}", verify_url=f"{base}/verify{query}",
            other_url=base if passkey else f"{base}?kind=passkey",
            csrf_token=csrf.make_token(ctx.services.csrf_key, "enroll", csrf_binding(step.tx)),
        )

    return await ctx.transaction(ctx.origin(request), work)


def _enrollment_step(ctx: AppContext, scope: RequestScope, request: Request,
                     body: dict[str, Any]) -> Step | Response:
    step = load_step(ctx, scope, request, request.path_params["tx"])
    if isinstance(step, Response):
        return _as_json(step)
    if not csrf.check_token(ctx.services.csrf_key, _text(body, "csrf_token"), "enroll", csrf_binding(step.tx)):
        return _error(_PAGE_EXPIRED, 403)
    refusal = _enrollment_refusal(step)
    return step if refusal is None else _error(refusal, 403)


async def enroll_options(request: Request) -> Response:
    passkey = _passkey_wanted(request)

    def work(ctx: AppContext, scope: RequestScope, body: dict[str, Any]) -> Response:
        step = _enrollment_step(ctx, scope, request, body)
        if isinstance(step, Response):
            return step
        settings, issuer = _rp(ctx)
        try:
            challenge_id, options = wa.registration_options(scope.db, settings, issuer, step.session.user, scope.now,
                                                            purpose=_enroll_purpose(step.tx), discoverable=passkey)
        except wa.WebAuthnError as error:
            return _error(error.message)
        return _options(challenge_id, options)

    return await _json_endpoint(request, work)


async def enroll_verify(request: Request) -> Response:
    def work(ctx: AppContext, scope: RequestScope, body: dict[str, Any]) -> Response:
        step = _enrollment_step(ctx, scope, request, body)
        if isinstance(step, Response):
            return step
        user = step.session.user
        settings, issuer = _rp(ctx)
        try:
            credential = wa.register(scope.db, settings, issuer, user, _challenge_id(body), body.get("credential"),
                                     _key_name(body), scope.now, purpose=_enroll_purpose(step.tx))
        except wa.WebAuthnError as error:
            audit.record(scope.db, "factor.enrollment", outcome="failure", origin=scope.origin, actor=user.sub,
                         subject=user.username, client_id=client_pub_id(scope, step.tx), kind="webauthn",
                         reason=error.reason, at=scope.now)
            return _error(error.message)
        audit.record(scope.db, "factor.enrolled", origin=scope.origin, actor=user.sub, subject=user.username,
                     client_id=client_pub_id(scope, step.tx), kind="webauthn", name=credential.name,
                     credential=credential.id, passkey=credential.discoverable, at=scope.now)
        step.tx.params = {**step.tx.params, "recovery_codes_due": True}
        # Registering the key proved possession of it: this sign-in has its second factor. User verification
        # was enforced where a passkey or the policy asked for it, so only then does the amr say "user".
        verified = credential.discoverable or settings.user_verification == "required"
        return complete(ctx, scope, step, "webauthn", _redirect(f"/login/{step.tx.id}/recovery-codes"),
                        trust=False, webauthn_amr=wa.amr_of(credential, user_verified=verified))

    return await _json_endpoint(request, work)


async def recovery_codes_page(request: Request) -> Response:
    """The recovery codes for the factor just enrolled in this sign-in, shown once, then on to the client."""
    ctx = context_of(request)
    tx_id = request.path_params["tx"]

    def work(scope: RequestScope) -> Response:
        step = load_step(ctx, scope, request, tx_id)
        if isinstance(step, Response):
            return step
        resume = _resume_url(step.tx)
        if not step.tx.params.get("recovery_codes_due"):
            return RedirectResponse(resume, status_code=303)
        step.tx.params = {key: value for key, value in step.tx.params.items() if key != "recovery_codes_due"}
        codes = first_factor_enrolled(ctx, scope, step.session.user)
        if codes is None:  # the user had codes already: nothing new to show
            return RedirectResponse(resume, status_code=303)
        return ctx.pages.render("recovery_codes.html", codes=codes, continue_url=resume)

    return await ctx.transaction(ctx.origin(request), work)


routes = [
    Route("/login/{tx}/webauthn/options", factor_options, methods=["POST"]),
    Route("/login/{tx}/webauthn/verify", factor_verify, methods=["POST"]),
    Route("/login/{tx}/passkey/options", passkey_options, methods=["POST"]),
    Route("/login/{tx}/passkey/verify", passkey_verify, methods=["POST"]),
    Route("/login/{tx}/enroll/webauthn", enroll_page, methods=["GET"]),
    Route("/login/{tx}/enroll/webauthn/options", enroll_options, methods=["POST"]),
    Route("/login/{tx}/enroll/webauthn/verify", enroll_verify, methods=["POST"]),
    Route("/login/{tx}/recovery-codes", recovery_codes_page, methods=["GET"]),
]

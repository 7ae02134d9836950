"""Adding a security key or a passkey in ``/account`` (WebAuthn registration through ``webauthn.js``).

    GET  /account/webauthn[?kind=passkey]           the page with the name input and #webauthn-register
    POST /account/webauthn/options[?kind=passkey]   JSON {"csrf_token"} ──► {"publicKey": options, "challenge_id"}
    POST /account/webauthn/verify                   JSON {credential, csrf_token, challenge_id, name}
                                                    ──► {"redirect": url} or {"error": message}

The challenge is stored in the database for this session (purpose ``account:<session row>``) and the user, and
is used up by the verification, right or wrong. A refusal is a ``WebAuthnError``, caught inside the unit of
work so that the used challenge and the audit row are committed. A passkey is a discoverable credential with
user verification (usable for passkey sign-in); a security key is a second factor after the password.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from enrollment import access
from enrollment.recovery import record_enrollment
from idp import audit
from idp.factors import enrolled
from idp.factors import webauthn as wa
from idp.login import mfa
from idp.oauth.requests import RequestScope
from idp.web.context import MalformedRequest, context_of
from idp.web.i18n import N_

PAGE = "/account/webauthn"
KINDS = {"key": N_("Security key"), "passkey": N_("Passkey")}


def _kind(request: Request) -> str:
    kind = request.query_params.get("kind", "key")
    return kind if kind in KINDS else "key"


def _page_url(kind: str) -> str:
    return PAGE if kind == "key" else f"{PAGE}?kind={kind}"


def _purpose(account: access.Account) -> str:
    return f"account:{account.session.id}"


def _allowed(account: access.Account) -> bool:
    return "webauthn" in account.need.methods


async def register_page(request: Request) -> Response:
    ctx = context_of(request)
    kind = _kind(request)

    def work(scope: RequestScope) -> Response:
        account = access.signed_in(ctx, scope, request, return_to=_page_url(kind))
        if isinstance(account, Response):
            return account
        if not _allowed(account):
            return access.not_available(ctx)
        refused = access.fresh(ctx, scope, request, account, return_to=_page_url(kind))
        if refused is not None:
            return refused
        other = "passkey" if kind == "key" else "key"
        return ctx.pages.render(
            "account_webauthn.html", kind=kind, label=KINDS[kind], other_url=_page_url(other),
            other_label=KINDS[other], options_url=f"{PAGE}/options" + ("?kind=passkey" if kind == "passkey" else ""),
            verify_url=f"{PAGE}/verify", csrf_token=access.csrf_token(ctx, account),
        )

    return await ctx.transaction(ctx.origin(request), work)


async def _json_body(request: Request) -> dict[str, Any] | JSONResponse:
    try:
        return await access.read_json(request)
    except MalformedRequest as exc:
        return access.json_error(N_("The request could not be read: {detail}.", detail=str(exc)))


async def options(request: Request) -> Response:
    ctx = context_of(request)
    kind = _kind(request)
    body = await _json_body(request)
    if isinstance(body, JSONResponse):
        return body

    def work(scope: RequestScope) -> Response:
        account = access.json_account(ctx, scope, request, body, page=_page_url(kind))
        if isinstance(account, Response):
            return account
        if not _allowed(account):
            return access.json_error(N_("Security keys cannot be used for your account."), status=403)
        user = account.user
        try:
            challenge_id, public_key = wa.registration_options(
                scope.db, ctx.services.settings.webauthn, ctx.services.settings.issuer, user, scope.now,
                purpose=_purpose(account), discoverable=kind == "passkey")
        except wa.WebAuthnError as error:
            audit.record(scope.db, "factor.enrollment", outcome="failure", origin=scope.origin, actor=user.sub,
                         subject=user.username, kind="webauthn", reason=error.reason, via="account", at=scope.now)
            return access.json_error(error.message)
        return JSONResponse({"publicKey": public_key, "challenge_id": challenge_id})

    return await ctx.transaction(ctx.origin(request), work)


async def verify(request: Request) -> Response:
    ctx = context_of(request)
    body = await _json_body(request)
    if isinstance(body, JSONResponse):
        return body
    name = access.clean_name(body["name"]) if isinstance(body.get("name"), str) else ""
    challenge_id = body.get("challenge_id")

    def work(scope: RequestScope) -> Response:
        account = access.json_account(ctx, scope, request, body, page=PAGE)
        if isinstance(account, Response):
            return account
        if not _allowed(account):
            return access.json_error(N_("Security keys cannot be used for your account."), status=403)
        user = account.user
        had_codes = enrolled.has_recovery_codes(scope.db, user)
        try:
            credential = wa.register(scope.db, ctx.services.settings.webauthn, ctx.services.settings.issuer, user,
                                     challenge_id if isinstance(challenge_id, str) else "",
                                     body.get("credential"), name, scope.now, purpose=_purpose(account))
        except wa.WebAuthnError as error:
            audit.record(scope.db, "factor.enrollment", outcome="failure", origin=scope.origin, actor=user.sub,
                         subject=user.username, kind="webauthn", reason=error.reason, via="account", at=scope.now)
            return access.json_error(error.message)
        record_enrollment(scope, account, "webauthn", credential.id, credential.name, credential=credential.id,
                          passkey=credential.discoverable, aaguid=credential.aaguid)
        # As at sign-in: the ceremony was done with the key in hand, so this session has proved it; "user" only
        # where user verification was enforced.
        verified = credential.discoverable or ctx.services.settings.webauthn.user_verification == "required"
        mfa.record_method(account.session, "webauthn", scope.now,
                          webauthn_amr=wa.amr_of(credential, user_verified=verified))
        # webauthn.js only follows a redirect: the first factor's recovery codes are shown by the next page.
        return access.json_redirect("/account" if had_codes else "/account/recovery-codes/first")

    return await ctx.transaction(ctx.origin(request), work)


routes = [
    Route(PAGE, register_page, methods=["GET"]),
    Route(PAGE + "/options", options, methods=["POST"]),
    Route(PAGE + "/verify", verify, methods=["POST"]),
]

"""Signing out of one's sessions and forgetting trusted browsers, from ``/account``.

    POST /account/sessions/{id}/end     end one session (this one: signed out here too)
    POST /account/sessions/end-all      "sign out everywhere": every session, every token, every trusted browser
    POST /account/trusted/{id}/revoke   this browser no longer stands in for the second factor

Taking access away needs no fresh sign-in, only the session and the CSRF token. Sessions end through
``idp.oauth.logout.end_session`` (tokens revoked, back-channel logout queued for the relying parties).
"Sign out everywhere" also revokes the user's offline refresh tokens and trusted browsers: it is what a user
does after losing a laptop (security case 50; a refresh after it answers ``invalid_grant``).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from enrollment import access
from idp import audit
from idp.factors import trusted_devices
from idp.models import SsoSession, TrustedDevice
from idp.oauth.logout import end_session, end_user_sessions
from idp.oauth.requests import RequestScope
from idp.oauth.tokens import revoke_user_tokens
from idp.web import cookies
from idp.web.context import AppContext, MalformedRequest, context_of, read_fields, row_id
from idp.web.i18n import N_


def _signed_out(ctx: AppContext) -> Response:
    response = ctx.pages.render("logged_out.html")
    cookies.delete_cookie(response, ctx.services.settings, cookies.SESSION)
    return response


async def _post(request: Request, act: str) -> Response:
    ctx = context_of(request)
    try:
        form = await read_fields(request)
    except MalformedRequest as exc:
        return ctx.pages.error(400, N_("The form could not be read"), str(exc))

    def work(scope: RequestScope) -> Response:
        account = access.signed_in(ctx, scope, request, return_to="/account")
        if isinstance(account, Response):
            return account
        if not access.csrf_ok(ctx, account, form.get("csrf_token")):
            return access.csrf_refused(ctx)
        if act == "end":
            return _end_one(ctx, scope, request, account)
        if act == "end-all":
            return _end_all(ctx, scope, account)
        return _revoke_device(ctx, scope, request, account)

    response = await ctx.transaction(ctx.origin(request), work)
    ctx.sender.wake()
    return response


def _end_one(ctx: AppContext, scope: RequestScope, request: Request, account: access.Account) -> Response:
    session_id = row_id(request.path_params["session"])
    row = scope.db.get(SsoSession, session_id) if session_id is not None else None
    if row is None or row.user_id != account.user.id or row.ended_at is not None:
        return access.not_found(ctx)
    end_session(scope.db, ctx.services, row, reason="account_sign_out", now=scope.now, origin=scope.origin,
                actor=account.user.sub)
    if row.id == account.session.id:
        return _signed_out(ctx)
    return RedirectResponse("/account", status_code=303)


def _end_all(ctx: AppContext, scope: RequestScope, account: access.Account) -> Response:
    user = account.user
    ended = end_user_sessions(scope.db, ctx.services, user.id, reason="sign_out_everywhere", now=scope.now,
                              origin=scope.origin, actor=user.sub)
    tokens = revoke_user_tokens(scope.db, user.id, "sign_out_everywhere", scope.now)
    devices = trusted_devices.revoke_all(scope.db, user.id, scope.now)
    audit.record(scope.db, "account.signed_out_everywhere", origin=scope.origin, actor=user.sub,
                 subject=user.username, sessions=ended, tokens_revoked=tokens, trusted_devices_revoked=devices,
                 at=scope.now)
    if devices:
        audit.record(scope.db, "trusted_device.revoked", origin=scope.origin, actor=user.sub, subject=user.username,
                     count=devices, reason="sign_out_everywhere", at=scope.now)
    response = _signed_out(ctx)
    cookies.delete_cookie(response, ctx.services.settings, trusted_devices.COOKIE)
    return response


def _revoke_device(ctx: AppContext, scope: RequestScope, request: Request, account: access.Account) -> Response:
    device_id = row_id(request.path_params["device"])
    row = scope.db.get(TrustedDevice, device_id) if device_id is not None else None
    if row is None or not trusted_devices.revoke(scope.db, account.user, row.id, scope.now):
        return access.not_found(ctx)
    user = account.user
    audit.record(scope.db, "trusted_device.revoked", origin=scope.origin, actor=user.sub, subject=user.username,
                 device=row.id, count=1, reason="user", at=scope.now)
    response = RedirectResponse("/account", status_code=303)
    cookie = request.cookies.get(cookies.cookie_name(ctx.services.settings, trusted_devices.COOKIE))
    if cookie and len(cookie) <= 128 and ctx.services.hasher.hash(cookie) == row.token_hash:
        cookies.delete_cookie(response, ctx.services.settings, trusted_devices.COOKIE)
    return response


async def end_one(request: Request) -> Response:
    return await _post(request, "end")


async def end_all(request: Request) -> Response:
    return await _post(request, "end-all")


async def revoke_device(request: Request) -> Response:
    return await _post(request, "revoke")


routes = [
    Route("/account/sessions/end-all", end_all, methods=["POST"]),
    Route("/account/sessions/{session}/end", end_one, methods=["POST"]),
    Route("/account/trusted/{device}/revoke", revoke_device, methods=["POST"]),
]

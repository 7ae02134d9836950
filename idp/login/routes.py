"""The authorization endpoint and the pages of a sign-in: login, consent, logout.

    /authorize ──(client and redirect URI valid?)── no ──► error page, never a redirect
        │ yes
        ├─ nothing to ask (SSO session, consent known) ──► code to the client
        ├─ prompt=none but something to ask ──► login_required / consent_required to the client
        └─ a sign-in transaction (parameters kept in the database, bound to this browser)
              /login/{tx} ──► /authorize/resume/{tx} ──► /consent/{tx} (if needed) ──► code to the client

The OAuth parameters are validated by authlib each time the request is resumed, so a transaction can
never produce a code for a request that would not be valid now.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from authlib.common.urls import add_params_to_uri
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oidc.core.errors import ConsentRequiredError, InteractionRequiredError, LoginRequiredError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from idp import audit
from idp.accounts import sessions
from idp.accounts.authenticate import Outcome, Verdict, check_password, verify_ahead
from idp.crypto import random_token
from idp.db import read_only
from idp.factors import trusted_devices
from idp.factors.policy import Requirement
from idp.login import mfa
from idp.login.policy import Interaction, consent_needed, login_needed
from idp.login.transactions import (
    browser_id,
    client_name,
    client_pub_id,
    csrf_binding,
    current_session,
    expired_page,
    load_transaction,
)
from idp.models import Consent, LoginTransaction, SsoSession, User
from idp.oauth.grants import Authentication
from idp.oauth.logout import end_session
from idp.oauth.requests import Request as OAuthRequest
from idp.oauth.requests import RequestScope
from idp.oauth.server import OAuthResponse
from idp.web import cookies, csrf, i18n
from idp.web.context import AppContext, MalformedRequest, context_of, query_pairs, read_fields, read_form
from idp.web.i18n import N_

SCOPE_TEXTS = {
    "openid": N_("Confirm who you are"),
    "profile": N_("Your name and username"),
    "email": N_("Your email address"),
    "groups": N_("Your group memberships"),
    "offline_access": N_("Stay connected while you are away (offline access)"),
}


def _oauth_request(ctx: AppContext, request: Request, params: list[tuple[str, str]]) -> OAuthRequest:
    uri = f"{ctx.services.settings.issuer}/authorize?{urlencode(params)}"
    return OAuthRequest("GET", uri, request.headers, query=params, form=[])


def _error_redirect(ctx: AppContext, oreq: OAuthRequest, error: OAuth2Error) -> Response:
    response: OAuthResponse = ctx.server.handle_error_response(oreq, error)
    if response.location:
        # authlib adds RFC 9207's iss only to responses built by create_authorization_response.
        response.location = add_params_to_uri(response.location, {"iss": ctx.services.settings.issuer})
    return response


def _invalid_request_page(ctx: AppContext, error: OAuth2Error) -> Response:
    return ctx.pages.error(400, N_("The application sent an invalid sign-in request"),
                           N_("Please return to the application and try again."),
                           detail=f"{error.error}: {error.description or ''}".strip(": "))




def _params_of(oreq: OAuthRequest) -> dict[str, str]:
    return dict(oreq.payload.data)


def _prompts(data: dict[str, str]) -> set[str]:
    return set((data.get("prompt") or "").split())


def _granted_scopes(scope: RequestScope, user_id: int, client_id: int) -> set[str]:
    row = scope.db.scalar(select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id))
    return set(row.scopes) if row else set()


def _requirement(ctx: AppContext, oreq: OAuthRequest, grant: Any, user: User, now: Any) -> Requirement:
    return mfa.requirement_for(ctx.services, user, grant.client.row, oreq.payload.data.get("acr_values"), now)


def _issue_code(ctx: AppContext, scope: RequestScope, oreq: OAuthRequest, grant: Any,
                current: SsoSession) -> Response:
    sessions.touch(current, scope.now)
    need = _requirement(ctx, oreq, grant, current.user, scope.now)
    current.acr = mfa.acr_for(current, need)
    scope.extras["authentication"] = Authentication(
        session=current, auth_time=current.authenticated_at, acr=current.acr, amr=list(current.amr),
        acr_values=oreq.payload.data.get("acr_values"),
    )
    response: Response = ctx.server.create_authorization_response(oreq, grant_user=current.user, grant=grant)
    return response


def _decide(ctx: AppContext, scope: RequestScope, oreq: OAuthRequest, grant: Any,
            current: sessions.CurrentSession | None, signed_in_here: bool,
            tx: LoginTransaction | None = None) -> Interaction | None:
    data = _params_of(oreq)
    max_age = int(data["max_age"]) if data.get("max_age") is not None else None
    need = login_needed(current, prompts=_prompts(data), max_age=max_age, signed_in_during_request=signed_in_here,
                        now=scope.now)
    if need is not None or current is None:
        return need
    required = _requirement(ctx, oreq, grant, current.row.user, scope.now)
    skipped = bool(tx is not None and tx.params.get("mfa_skipped"))
    factor = mfa.second_factor_needed(scope.db, current.row, required, skipped=skipped, now=scope.now)
    if factor is not None:
        return factor
    return consent_needed(
        prompts=_prompts(data),
        client_trusted=grant.client.row.trusted,
        granted_scopes=_granted_scopes(scope, current.row.user_id, grant.client.row.id),
        requested_scopes=set(scope_to_list(grant.request.scope) or []),
    )


PAGE_FOR = {"login": "/login/{tx}", "second_factor": "/login/{tx}/factor", "enroll": "/login/{tx}/enroll",
            "consent": "/consent/{tx}"}


def _go_to(tx: LoginTransaction, need: Interaction, current: sessions.CurrentSession | None = None) -> Response:
    """Send the browser to the page that asks for ``need``, remembering why a password is asked."""
    if need.kind == "login":
        tx.params = {**tx.params, "login_reason": need.reason}
    elif current is not None and tx.session_id is None:
        # A step-up: the session proved the password earlier; the next pages continue with it.
        tx.session_id = current.row.id
    return RedirectResponse(PAGE_FOR[need.kind].format(tx=tx.id), status_code=303)


def _start_transaction(ctx: AppContext, scope: RequestScope, params: list[tuple[str, str]], client_id: int,
                       browser: str) -> LoginTransaction:
    tx = LoginTransaction(
        id=random_token(24), browser_hash=ctx.services.hasher.hash(browser), client_id=client_id,
        params={"pairs": params}, created_at=scope.now,
        expires_at=scope.now + ctx.services.settings.session.login_timeout,
    )
    scope.db.add(tx)
    scope.db.flush()
    return tx


def _with_browser_cookie(ctx: AppContext, response: Response, browser: str, new: bool) -> Response:
    if new:
        cookies.set_cookie(response, ctx.services.settings, cookies.BROWSER, browser)
    return response


async def authorize(request: Request) -> Response:
    """GET and POST /authorize (OpenID Connect Core 1.0, 3.1.2.1: both must be supported)."""
    ctx = context_of(request)
    try:
        params = query_pairs(request)
        if request.method == "POST":
            params += await read_form(request)
    except MalformedRequest as exc:
        return ctx.pages.error(400, N_("The application sent an invalid sign-in request"), str(exc))
    # The pages of this sign-in speak the language the application asked for (stored with the transaction).
    i18n.use_ui_locales(dict(params).get("ui_locales"))
    browser, new_browser = browser_id(ctx, request)

    def work(scope: RequestScope) -> Response:
        oreq = _oauth_request(ctx, request, params)
        try:
            grant = ctx.server.get_consent_grant(oreq, end_user=None)
        except OAuth2Error as error:
            if error.redirect_uri:
                return _error_redirect(ctx, oreq, error)
            # No redirect: an unknown or disabled client, or a redirect URI it did not register (or a request
            # too broken to say). Worth a trace, since it is how phishing through an open redirect is tried.
            claimed = dict(params).get("client_id", "")[:64] or None
            audit.record(scope.db, "authorize.refused", outcome="failure", origin=scope.origin, client_id=claimed,
                         error=error.error, at=scope.now)
            return _invalid_request_page(ctx, error)
        current = current_session(ctx, scope, request)
        need = _decide(ctx, scope, oreq, grant, current, signed_in_here=False)
        if need is None:
            assert current is not None
            return _issue_code(ctx, scope, oreq, grant, current.row)
        if "none" in _prompts(_params_of(oreq)):
            error_cls = {"login": LoginRequiredError, "consent": ConsentRequiredError}.get(
                need.kind, InteractionRequiredError)
            return _error_redirect(ctx, oreq, error_cls(redirect_uri=grant.redirect_uri, state=oreq.payload.state))
        tx = _start_transaction(ctx, scope, params, grant.client.row.id, browser)
        return _go_to(tx, need, current)

    return _with_browser_cookie(ctx, await ctx.transaction(ctx.origin(request), work), browser, new_browser)






def _login_page(ctx: AppContext, scope: RequestScope, tx: LoginTransaction, *, error: i18n.Text | None = None,
                username: str = "", status: int = 200) -> Response:
    pairs = dict(tx.params["pairs"])
    return ctx.pages.render(
        "login.html", status=status, action=f"/login/{tx.id}", client_name=client_name(scope, tx),
        csrf_token=csrf.make_token(ctx.services.csrf_key, "login", csrf_binding(tx)),
        username=username or pairs.get("login_hint", "")[:255], error=error,
    )


async def login_page(request: Request) -> Response:
    ctx = context_of(request)
    tx_id = request.path_params["tx"]

    def work(scope: RequestScope) -> Response:
        tx = load_transaction(ctx, scope, request, tx_id)
        return expired_page(ctx) if tx is None else _login_page(ctx, scope, tx)

    return await ctx.transaction(ctx.origin(request), work)


async def login_submit(request: Request) -> Response:
    ctx = context_of(request)
    tx_id = request.path_params["tx"]
    origin = ctx.origin(request)
    try:
        form = await read_fields(request)
    except MalformedRequest as exc:
        return ctx.pages.error(400, N_("The form could not be read"), str(exc))
    username = form.get("username", "")
    password = form.get("password", "")

    def acceptable(scope: RequestScope) -> LoginTransaction | Response:
        tx = load_transaction(ctx, scope, request, tx_id)
        if tx is None:
            return expired_page(ctx)
        if not csrf.check_token(ctx.services.csrf_key, form.get("csrf_token"), "login", csrf_binding(tx)):
            return ctx.pages.error(403, N_("The form has expired"), N_("Please reload the page and try again."))
        if len(username) > 255 or len(password) > 1024:
            return _login_page(ctx, scope, tx, error=N_("Username or password is incorrect."), status=400)
        return tx

    def verify_first() -> Verdict | None:
        # argon2 outside the transaction that locks the attempt counters (see verify_ahead), and only for a form
        # that the transaction would accept: a forged or stale POST costs no argon2 run.
        with read_only(ctx.services.sessions) as db:
            scope = RequestScope(db=db, now=ctx.services.now(), origin=origin)
            if isinstance(acceptable(scope), Response):
                return None
            return verify_ahead(db, ctx.services.passwords, ctx.services.settings.throttle, username, password,
                                now=scope.now, ip=origin.ip, directory=ctx.services.settings.directory)

    verdict = await run_in_threadpool(verify_first)

    def work(scope: RequestScope) -> Response:
        tx = acceptable(scope)
        if isinstance(tx, Response):
            return tx
        client_id = client_pub_id(scope, tx)
        result = check_password(scope.db, ctx.services.passwords, ctx.services.settings.throttle, username, password,
                                now=scope.now, origin=origin, client_id=client_id,
                                directory=ctx.services.settings.directory, verdict=verdict)
        if result.outcome is Outcome.UNAVAILABLE:
            # Not the person's fault and not counted as a failure: say so plainly (security case 53).
            return _login_page(ctx, scope, tx, username=username, status=503,
                               error=N_("Your password cannot be checked right now because the directory service "
                                     "does not answer. Please try again in a few minutes."))
        if result.outcome is Outcome.THROTTLED:
            assert result.retry_after is not None
            seconds = max(1, int(result.retry_after.total_seconds()))
            return _login_page(ctx, scope, tx, username=username, status=429,
                               error=N_("Too many failed attempts. Please wait {seconds} seconds and try again.",
                                        seconds=seconds))
        if result.outcome is Outcome.INVALID:
            return _login_page(ctx, scope, tx, username=username, error=N_("Username or password is incorrect."))
        assert result.user is not None
        methods = ["password"]
        trusted_cookie = request.cookies.get(cookies.cookie_name(ctx.services.settings, trusted_devices.COOKIE))
        if trusted_devices.is_trusted(scope.db, ctx.services.hasher, result.user, trusted_cookie, scope.now):
            methods.append("trusted_device")
        return sign_in(ctx, scope, request, tx, result.user, methods,
                       RedirectResponse(f"/authorize/resume/{tx.id}", status_code=303), resume_idle=True)

    response = await ctx.transaction(origin, work)
    ctx.sender.wake()
    return response


def sign_in(ctx: AppContext, scope: RequestScope, request: Request, tx: LoginTransaction, user: User,
            methods: list[str], response: Response, *, resume_idle: bool = False,
            webauthn_amr: list[str] | None = None) -> Response:
    """The first step succeeded (a password, or a passkey): open the SSO session or re-authenticate this
    browser's, bind it to the transaction, audit it and set the session cookie on ``response``.

    ``resume_idle``: after inactivity a password resumes the session with the methods it had proved. The
    caller wakes ``ctx.sender`` after the unit of work (a different user's session may have been ended).
    """
    current = current_session(ctx, scope, request)
    if current is not None and current.row.user_id == user.id:
        row = current.row
        if resume_idle and tx.params.get("login_reason") == "session_idle":
            # After inactivity the password alone resumes the session: its second factor still holds
            # (NIST SP 800-63B-4 2.2.3). A forced sign-in (prompt=login, max_age) starts afresh.
            methods = [*row.methods, *methods]
            # So does what its security key said (hwk or swk, user), which the amr keeps naming.
            webauthn_amr = [*(webauthn_amr or []), *(v for v in row.amr if v in mfa.WEBAUTHN_AMR)]
        cookie = sessions.reauthenticate(scope.db, ctx.services.hasher, row, amr=[], acr=None, now=scope.now)
    else:
        if current is not None:
            end_session(scope.db, ctx.services, current.row, reason="other_user_signed_in", now=scope.now,
                        origin=scope.origin)
        cookie, row = sessions.create_session(scope.db, ctx.services.hasher, ctx.services.settings.session,
                                              user, amr=[], acr=None, now=scope.now, origin=scope.origin)
    mfa.start_methods(row, methods, scope.now, webauthn_amr=webauthn_amr or [])
    tx.session_id = row.id
    tx.authenticated_at = scope.now
    audit.record(scope.db, "login", origin=scope.origin, actor=user.sub, subject=user.username,
                 client_id=client_pub_id(scope, tx), sid=row.sid, amr=row.amr, at=scope.now)
    cookies.set_cookie(response, ctx.services.settings, cookies.SESSION, cookie)
    return response



def _resume_grant(ctx: AppContext, scope: RequestScope, request: Request, tx: LoginTransaction
                  ) -> tuple[OAuthRequest, Any] | Response:
    oreq = _oauth_request(ctx, request, [(str(key), str(value)) for key, value in tx.params["pairs"]])
    try:
        return oreq, ctx.server.get_consent_grant(oreq, end_user=None)
    except OAuth2Error as error:
        tx.completed_at = scope.now
        return _error_redirect(ctx, oreq, error) if error.redirect_uri else _invalid_request_page(ctx, error)


def _session_for(ctx: AppContext, scope: RequestScope, request: Request, tx: LoginTransaction
                 ) -> tuple[sessions.CurrentSession | None, bool]:
    current = current_session(ctx, scope, request)
    signed_in_here = bool(current and tx.session_id == current.row.id and tx.authenticated_at is not None
                          and tx.authenticated_at >= current.row.authenticated_at)
    return current, signed_in_here


async def resume(request: Request) -> Response:
    ctx = context_of(request)
    tx_id = request.path_params["tx"]

    def work(scope: RequestScope) -> Response:
        tx = load_transaction(ctx, scope, request, tx_id)
        if tx is None:
            return expired_page(ctx)
        if tx.client_id is None:
            return _resume_internal(ctx, scope, request, tx)
        resumed = _resume_grant(ctx, scope, request, tx)
        if isinstance(resumed, Response):
            return resumed
        oreq, grant = resumed
        current, signed_in_here = _session_for(ctx, scope, request, tx)
        need = _decide(ctx, scope, oreq, grant, current, signed_in_here, tx)
        if need is None:
            assert current is not None
            tx.completed_at = scope.now
            return _issue_code(ctx, scope, oreq, grant, current.row)
        return _go_to(tx, need, current)

    return await ctx.transaction(ctx.origin(request), work)


def _resume_internal(ctx: AppContext, scope: RequestScope, request: Request, tx: LoginTransaction) -> Response:
    """A sign-in for the IdP's own pages (``/account``): the same steps, then back to ``return_to``."""
    current, signed_in_here = _session_for(ctx, scope, request, tx)
    prompts = {"login"} if tx.params.get("fresh") else set()
    need = login_needed(current, prompts=prompts, max_age=None, signed_in_during_request=signed_in_here,
                        now=scope.now)
    if need is None and current is not None:
        required = mfa.requirement_for(ctx.services, current.row.user, None, None, scope.now)
        if tx.params.get("second_factor"):
            required = mfa.console_requirement(required)
        if tx.params.get("fresh"):
            # Before a factor is bound or removed: the second factor itself, not a trusted browser.
            required = mfa.reauthentication_requirement(scope.db, current.row.user, required)
        need = mfa.second_factor_needed(scope.db, current.row, required,
                                        skipped=bool(tx.params.get("mfa_skipped")), now=scope.now)
    if need is not None:
        return _go_to(tx, need, current)
    assert current is not None
    sessions.touch(current.row, scope.now)
    tx.completed_at = scope.now
    return RedirectResponse(str(tx.params["return_to"]), status_code=303)


def begin_internal_sign_in(ctx: AppContext, scope: RequestScope, request: Request, *, return_to: str,
                           fresh: bool, second_factor: bool = False) -> Response:
    """Send the browser through sign-in (``fresh``: password and second factor again, e.g. before removing a
    factor; ``second_factor``: a second factor proved in this session whatever the policy says, as the admin
    console needs) and then to ``return_to``, a path on this server."""
    assert return_to.startswith("/") and not return_to.startswith("//"), "return_to must be a local path"
    browser, new = browser_id(ctx, request)
    tx = LoginTransaction(
        id=random_token(24), browser_hash=ctx.services.hasher.hash(browser), client_id=None,
        params={"pairs": [], "return_to": return_to, "fresh": fresh, "second_factor": second_factor},
        created_at=scope.now,
        expires_at=scope.now + ctx.services.settings.session.login_timeout,
    )
    scope.db.add(tx)
    scope.db.flush()
    return _with_browser_cookie(ctx, RedirectResponse(f"/authorize/resume/{tx.id}", status_code=303), browser, new)


def _consent_page(ctx: AppContext, scope: RequestScope, tx: LoginTransaction, grant: Any) -> Response:
    requested = scope_to_list(grant.request.scope) or []
    return ctx.pages.render(
        "consent.html", action=f"/consent/{tx.id}", client_name=grant.client.row.name,
        scopes=[SCOPE_TEXTS.get(s, s) for s in requested],
        csrf_token=csrf.make_token(ctx.services.csrf_key, "consent", csrf_binding(tx)),
    )


async def consent_page(request: Request) -> Response:
    ctx = context_of(request)
    tx_id = request.path_params["tx"]

    def work(scope: RequestScope) -> Response:
        tx = load_transaction(ctx, scope, request, tx_id)
        if tx is None:
            return expired_page(ctx)
        resumed = _resume_grant(ctx, scope, request, tx)
        if isinstance(resumed, Response):
            return resumed
        oreq, grant = resumed
        current, signed_in_here = _session_for(ctx, scope, request, tx)
        need = _decide(ctx, scope, oreq, grant, current, signed_in_here, tx)
        if need is not None and need.kind != "consent":
            return _go_to(tx, need, current)
        return _consent_page(ctx, scope, tx, grant)

    return await ctx.transaction(ctx.origin(request), work)


async def consent_submit(request: Request) -> Response:
    ctx = context_of(request)
    tx_id = request.path_params["tx"]
    origin = ctx.origin(request)
    try:
        form = await read_fields(request)
    except MalformedRequest as exc:
        return ctx.pages.error(400, N_("The form could not be read"), str(exc))

    def work(scope: RequestScope) -> Response:
        tx = load_transaction(ctx, scope, request, tx_id)
        if tx is None:
            return expired_page(ctx)
        if not csrf.check_token(ctx.services.csrf_key, form.get("csrf_token"), "consent", csrf_binding(tx)):
            return ctx.pages.error(403, N_("The form has expired"), N_("Please reload the page and try again."))
        resumed = _resume_grant(ctx, scope, request, tx)
        if isinstance(resumed, Response):
            return resumed
        oreq, grant = resumed
        current, signed_in_here = _session_for(ctx, scope, request, tx)
        need = _decide(ctx, scope, oreq, grant, current, signed_in_here, tx)
        if need is not None and need.kind != "consent" or current is None:
            # Consent is the last step: the password and any second factor come first, whatever is posted.
            return _go_to(tx, need or Interaction("login", "no_session"))
        decision = form.get("decision")
        client = grant.client
        user = current.row.user
        tx.completed_at = scope.now
        if decision != "allow":
            audit.record(scope.db, "consent.denied", origin=origin, actor=user.sub, subject=user.username,
                         client_id=client.client_id, at=scope.now)
            response: Response = ctx.server.create_authorization_response(oreq, grant_user=None, grant=grant)
            return response
        requested = list(scope_to_list(grant.request.scope) or [])
        row = scope.db.scalar(select(Consent).where(Consent.user_id == user.id, Consent.client_id == client.row.id))
        if row is None:
            scope.db.add(Consent(user_id=user.id, client_id=client.row.id, scopes=requested, granted_at=scope.now))
        else:
            row.scopes = sorted(set(row.scopes) | set(requested))
            row.granted_at = scope.now
        audit.record(scope.db, "consent.granted", origin=origin, actor=user.sub, subject=user.username,
                     client_id=client.client_id, scopes=requested, at=scope.now)
        return _issue_code(ctx, scope, oreq, grant, current.row)

    return await ctx.transaction(origin, work)


LOGOUT_FIELDS = ("id_token_hint", "post_logout_redirect_uri", "state", "client_id", "logout_hint", "ui_locales")


def _logout_binding(request: Request, ctx: AppContext) -> str:
    value = request.cookies.get(cookies.cookie_name(ctx.services.settings, cookies.SESSION), "")
    return "session:" + ctx.services.hasher.hash(value)


def _finish_logout(ctx: AppContext, redirect_uri: str | None) -> Response:
    response: Response
    if redirect_uri:
        response = RedirectResponse(redirect_uri, status_code=303)
    else:
        response = ctx.pages.render("logged_out.html")
    cookies.delete_cookie(response, ctx.services.settings, cookies.SESSION)
    return response


async def _logout(request: Request, *, confirmed: bool) -> Response:
    ctx = context_of(request)
    origin = ctx.origin(request)
    try:
        params = query_pairs(request) if not confirmed else []
        form = await read_form(request, required=confirmed) if request.method == "POST" else []
    except MalformedRequest as exc:
        return ctx.pages.error(400, N_("The logout request could not be read"), str(exc))
    fields = dict(form)
    if confirmed:
        params = [(k, v) for k, v in form if k in LOGOUT_FIELDS]
    else:
        params += form

    def work(scope: RequestScope) -> Response:
        oreq = OAuthRequest(request.method, f"{ctx.services.settings.issuer}/logout", request.headers,
                            query=params, form=[])
        try:
            validated = ctx.server.validate_endpoint_request("end_session", oreq)
        except OAuth2Error as error:
            return ctx.pages.error(400, N_("The logout request is invalid"),
                                   N_("You were not signed out. Please close the browser to end your session."),
                                   detail=f"{error.error}: {error.description or ''}")
        current = current_session(ctx, scope, request)
        if current is None:
            return _finish_logout(ctx, validated.redirect_uri)
        hint_matches = bool(validated.id_token_claims and validated.id_token_claims.get("sid") == current.row.sid)
        if confirmed:
            if not csrf.check_token(ctx.services.csrf_key, fields.get("csrf_token"), "logout",
                                    _logout_binding(request, ctx)):
                return ctx.pages.error(403, N_("The form has expired"), N_("Please reload the page and try again."))
        elif not hint_matches:
            return ctx.pages.render(
                "logout.html", action="/logout/confirm", fields=[(k, v) for k, v in params if k in LOGOUT_FIELDS],
                client_name=validated.client.row.name if validated.client else None,
                csrf_token=csrf.make_token(ctx.services.csrf_key, "logout", _logout_binding(request, ctx)),
            )
        end_session(scope.db, ctx.services, current.row, reason="logout", now=scope.now, origin=origin)
        return _finish_logout(ctx, validated.redirect_uri)

    response = await ctx.transaction(origin, work)
    ctx.sender.wake()
    return response


async def logout(request: Request) -> Response:
    return await _logout(request, confirmed=False)


async def logout_confirm(request: Request) -> Response:
    return await _logout(request, confirmed=True)


routes = [
    Route("/authorize", authorize, methods=["GET", "POST"]),
    Route("/authorize/resume/{tx}", resume, methods=["GET"]),
    Route("/login/{tx}", login_page, methods=["GET"]),
    Route("/login/{tx}", login_submit, methods=["POST"]),
    Route("/consent/{tx}", consent_page, methods=["GET"]),
    Route("/consent/{tx}", consent_submit, methods=["POST"]),
    Route("/logout", logout, methods=["GET", "POST"]),
    Route("/logout/confirm", logout_confirm, methods=["POST"]),
]

"""``GET /account``: the user's second factors, recovery codes, trusted browsers and sign-in sessions.

Everything here is read-only; each change has its own page or form (and the checks in ``access``). Values the
user sees but must not reuse are never shown: no phone number in full, no session or device cookie.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from enrollment import access
from idp.factors import enrolled, recovery, trusted_devices
from idp.login.second_factor import METHOD_LABELS
from idp.models import SsoSession
from idp.oauth.requests import RequestScope
from idp.web import cookies
from idp.web.context import AppContext, context_of
from idp.web.i18n import N_

KIND_LABELS = {"totp": N_("Authenticator app"), "sms": N_("Phone (SMS)"), "webauthn": N_("Security key or passkey")}


@dataclass(frozen=True)
class SessionLine:
    id: int
    created: str
    last_active: str
    ip: str
    user_agent: str
    current: bool


@dataclass(frozen=True)
class DeviceLine:
    id: int
    name: str
    created: str
    last_used: str
    expires: str
    this_browser: bool


def active_sessions(scope: RequestScope, account: access.Account) -> list[SsoSession]:
    """The user's sessions that have not ended (an idle one still resumes with the password)."""
    return list(scope.db.scalars(
        select(SsoSession).where(SsoSession.user_id == account.user.id, SsoSession.ended_at.is_(None),
                                 SsoSession.expires_at > scope.now)
        .order_by(SsoSession.last_active_at.desc(), SsoSession.id.desc())))


def _sessions(scope: RequestScope, account: access.Account) -> list[SessionLine]:
    return [SessionLine(row.id, account.when(row.created_at), account.when(row.last_active_at), row.ip or "",
                        row.user_agent or "", row.id == account.session.id)
            for row in active_sessions(scope, account)]


def _devices(ctx: AppContext, scope: RequestScope, request: Request, account: access.Account) -> list[DeviceLine]:
    cookie = request.cookies.get(cookies.cookie_name(ctx.services.settings, trusted_devices.COOKIE))
    mine = ctx.services.hasher.hash(cookie) if cookie and len(cookie) <= 128 else None
    return [DeviceLine(row.id, row.name or "", account.when(row.created_at), account.when(row.last_used_at),
                       account.when(row.expires_at), row.token_hash == mine)
            for row in trusted_devices.active(scope.db, account.user, scope.now)]


def addable_methods(account: access.Account) -> list[str]:
    """The second factors the policy lets this user enroll, in its order of preference."""
    return [m for m in account.need.methods if m in KIND_LABELS]


async def account_page(request: Request) -> Response:
    ctx = context_of(request)

    def work(scope: RequestScope) -> Response:
        account = access.signed_in(ctx, scope, request, return_to="/account")
        if isinstance(account, Response):
            return account
        factors = [
            {"kind": f.kind, "id": f.id, "label": KIND_LABELS[f.kind], "name": f.name, "detail": f.detail or "",
             "created": account.when(f.created_at), "last_used": account.when(f.last_used_at),
             "from_directory": f.managed_by is not None}
            for f in enrolled.factors_of(scope.db, account.user)
        ]
        return ctx.pages.render(
            "account.html", user=account.user, factors=factors,
            methods=[(m, METHOD_LABELS.get(m, KIND_LABELS[m])) for m in addable_methods(account)],
            recovery_remaining=recovery.remaining(scope.db, account.user),
            devices=_devices(ctx, scope, request, account), sessions=_sessions(scope, account),
            mfa_required=account.need.needs_second_factor, csrf_token=access.csrf_token(ctx, account),
        )

    return await ctx.transaction(ctx.origin(request), work)


routes = [
    Route("/account", account_page, methods=["GET"]),
]

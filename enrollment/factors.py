"""Renaming and removing one's own second factors in ``/account``.

    GET  /account/factors/{kind}/{id}          the factor, a rename form and a remove form
    POST /account/factors/{kind}/{id}/rename
    POST /account/factors/{kind}/{id}/remove

Each needs a sign-in within the last 5 minutes (``access.fresh``); a stale session is sent through sign-in
and back to the factor's page. ``{kind}`` is ``totp``, ``sms`` or ``webauthn``; every query has the user in
its WHERE clause, so another user's id answers 404 and changes nothing. Where the policy requires a second
factor, the last usable one cannot be removed (the user would be locked out at the next sign-in, or left
with only recovery codes); when the last factor of all goes, its recovery codes go with it. A phone the
directory sync maintains (``sms_from_directory``) is shown but neither renamed nor removed: the directory
decides where its codes go (the helpdesk reset removes it, and the next sync makes it again).
"""

from __future__ import annotations

from sqlalchemy import delete
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from enrollment import access
from enrollment.overview import KIND_LABELS
from idp import audit
from idp.db import rowcount
from idp.factors import enrolled
from idp.factors.enrolled import EnrolledFactor
from idp.models import RecoveryCode
from idp.oauth.requests import RequestScope
from idp.web import i18n
from idp.web.context import AppContext, MalformedRequest, context_of, read_fields, row_id
from idp.web.i18n import N_

FROM_DIRECTORY = N_("This phone number comes from the directory of your organisation. Only your IT department "
                    "can change or remove it there; it cannot be renamed or removed here.")

LAST_FACTOR = N_("This is your last second factor, and your account requires one. Add another method first, "
                 "then remove this one.")


def _url(kind: str, factor_id: int) -> str:
    return f"/account/factors/{kind}/{factor_id}"


def _parse(request: Request) -> tuple[str, int] | None:
    kind, factor_id = request.path_params["kind"], row_id(request.path_params["factor"])
    return (kind, factor_id) if kind in KIND_LABELS and factor_id is not None else None


def _return_to(request: Request) -> str:
    """Where a sign-in started from a factor's page or form comes back to."""
    parsed = _parse(request)
    return _url(*parsed) if parsed else "/account"


def _find(scope: RequestScope, account: access.Account, request: Request) -> EnrolledFactor | None:
    parsed = _parse(request)
    return enrolled.find(scope.db, account.user, *parsed) if parsed else None


def _is_last(scope: RequestScope, account: access.Account, factor: EnrolledFactor) -> bool:
    """Whether removing ``factor`` would leave a user who must use a second factor without a usable one."""
    need = account.need
    if not need.needs_second_factor or factor.kind not in need.methods:
        return False
    others = [f for f in enrolled.factors_of(scope.db, account.user)
              if f.kind in need.methods and (f.kind, f.id) != (factor.kind, factor.id)]
    return not others


def _page(ctx: AppContext, scope: RequestScope, account: access.Account, factor: EnrolledFactor, *,
          error: i18n.Text | None = None, status: int = 200) -> Response:
    return ctx.pages.render(
        "account_factor.html", status=status, factor=factor, label=KIND_LABELS[factor.kind],
        created=account.when(factor.created_at), last_used=account.when(factor.last_used_at),
        url=_url(factor.kind, factor.id), removable=not _is_last(scope, account, factor), error=error,
        last_factor=LAST_FACTOR, from_directory=factor.managed_by is not None,
        from_directory_text=FROM_DIRECTORY, csrf_token=access.csrf_token(ctx, account),
    )


async def factor_page(request: Request) -> Response:
    ctx = context_of(request)

    def work(scope: RequestScope) -> Response:
        account = access.signed_in(ctx, scope, request, return_to=_return_to(request))
        if isinstance(account, Response):
            return account
        factor = _find(scope, account, request)
        if factor is None:
            return access.not_found(ctx)
        refused = access.fresh(ctx, scope, request, account, return_to=_url(factor.kind, factor.id))
        return refused or _page(ctx, scope, account, factor)

    return await ctx.transaction(ctx.origin(request), work)


async def _change(request: Request, action: str) -> Response:
    ctx = context_of(request)
    try:
        form = await read_fields(request)
    except MalformedRequest as exc:
        return ctx.pages.error(400, N_("The form could not be read"), str(exc))

    def work(scope: RequestScope) -> Response:
        account = access.signed_in(ctx, scope, request, return_to=_return_to(request))
        if isinstance(account, Response):
            return account
        if not access.csrf_ok(ctx, account, form.get("csrf_token")):
            return access.csrf_refused(ctx)
        factor = _find(scope, account, request)
        if factor is None:
            return access.not_found(ctx)
        refused = access.fresh(ctx, scope, request, account, return_to=_url(factor.kind, factor.id))
        if refused is not None:
            return refused
        if factor.managed_by is not None:
            # Only the directory changes where its codes go, whatever form is posted.
            return _refuse_managed(ctx, scope, account, factor, action)
        if action == "rename":
            return _rename(ctx, scope, account, factor, access.clean_name(form.get("name", "")))
        return _remove(ctx, scope, account, factor)

    return await ctx.transaction(ctx.origin(request), work)


def _refuse_managed(ctx: AppContext, scope: RequestScope, account: access.Account, factor: EnrolledFactor,
                    action: str) -> Response:
    user = account.user
    audit.record(scope.db, "factor.renamed" if action == "rename" else "factor.removed", outcome="failure",
                 origin=scope.origin, actor=user.sub, subject=user.username, kind=factor.kind, factor=factor.id,
                 name=factor.name, reason="managed_by_directory", sid=account.session.sid, at=scope.now)
    return _page(ctx, scope, account, factor, error=FROM_DIRECTORY, status=409)


def _rename(ctx: AppContext, scope: RequestScope, account: access.Account, factor: EnrolledFactor,
            name: str) -> Response:
    if not name:
        return _page(ctx, scope, account, factor, error=N_("Please enter a name."), status=400)
    if not enrolled.rename(scope.db, account.user, factor.kind, factor.id, name):
        return access.not_found(ctx)
    user = account.user
    audit.record(scope.db, "factor.renamed", origin=scope.origin, actor=user.sub, subject=user.username,
                 kind=factor.kind, factor=factor.id, name=name, previous_name=factor.name, sid=account.session.sid,
                 at=scope.now)
    return RedirectResponse("/account", status_code=303)


def _remove(ctx: AppContext, scope: RequestScope, account: access.Account, factor: EnrolledFactor) -> Response:
    user = account.user
    access.lock_user(scope, account)
    if _is_last(scope, account, factor):
        audit.record(scope.db, "factor.removed", outcome="failure", origin=scope.origin, actor=user.sub,
                     subject=user.username, kind=factor.kind, factor=factor.id, name=factor.name,
                     reason="last_factor", sid=account.session.sid, at=scope.now)
        return _page(ctx, scope, account, factor, error=LAST_FACTOR, status=409)
    if not enrolled.remove(scope.db, user, factor.kind, factor.id):
        return access.not_found(ctx)
    codes_removed = 0
    if not enrolled.factors_of(scope.db, user):
        # Without a factor the codes stand in for nothing; the next first factor brings a new set.
        codes_removed = rowcount(scope.db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id)))
    audit.record(scope.db, "factor.removed", origin=scope.origin, actor=user.sub, subject=user.username,
                 kind=factor.kind, factor=factor.id, name=factor.name, recovery_codes_removed=codes_removed,
                 sid=account.session.sid, at=scope.now)
    return RedirectResponse("/account", status_code=303)


async def rename(request: Request) -> Response:
    return await _change(request, "rename")


async def remove(request: Request) -> Response:
    return await _change(request, "remove")


routes = [
    Route("/account/factors/{kind}/{factor}", factor_page, methods=["GET"]),
    Route("/account/factors/{kind}/{factor}/rename", rename, methods=["POST"]),
    Route("/account/factors/{kind}/{factor}/remove", remove, methods=["POST"]),
]

"""``/admin/clients``: the applications (OAuth clients) in the console, for administrators, helpdesk (reading) and
app owners (their own applications).

    GET  /admin/clients                      list and search; secrets expiring within 30 days
    GET  /admin/clients/new   POST           register (administrators: active; app owners: a request unless
                                             every URL is on their allowed domains)
    GET  /admin/clients/{id}                 every registered property, owners, actions
    GET  /admin/clients/{id}/edit  POST      change every registered property
    POST /admin/clients/{id}/rotate          a new secret, shown once (optionally the old one kept for a while)
    POST /admin/clients/{id}/disable|enable
    GET  /admin/clients/{id}/delete  POST    confirmation, then delete
    POST /admin/clients/{id}/owners          add an owner; POST .../owners/remove
    POST /admin/clients/{id}/approve|decline (administrators, with a comment)
    GET  /admin/clients/requests             requests waiting for review (administrators)
    GET  /admin/clients/domains  POST        per-owner allowed redirect domains (administrators)

Each handler is thin over ``idp.oauth.client_registry``, which the CLI uses too. A client the user may not see
answers 404 like a missing one; one they may see but not change (helpdesk) answers 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from idp.admin import access, client_forms
from idp.admin.access import Console
from idp.admin.roles import Action, can_manage_client, can_view_client
from idp.models import Client, OwnerRedirectDomain, User
from idp.oauth import client_registry as registry
from idp.oauth.client_registry import Who
from idp.oauth.clients import ClientError, NewClient, create_client, needs_secret, update_client
from idp.oauth.requests import RequestScope
from idp.web import themes
from idp.web.context import AppContext, MalformedRequest, query_pairs
from idp.web.i18n import N_, Text

GRACE_CHOICES = {"": None, "1h": timedelta(hours=1), "1d": timedelta(days=1), "7d": timedelta(days=7),
                 "30d": timedelta(days=30)}
"""The grace periods the rotation form offers (how long the old secret keeps working)."""
LIFETIME_CHOICES = {"": None, "90d": timedelta(days=90), "180d": timedelta(days=180), "365d": timedelta(days=365),
                    "730d": timedelta(days=730)}
"""The lifetimes the rotation and creation forms offer for a new secret ("" : it does not expire)."""
NOTICES = {
    "updated": N_("The application was saved."),
    "unchanged": N_("Nothing was changed."),
    "disabled": N_("The application was disabled; its tokens were revoked."),
    "enabled": N_("The application was enabled."),
    "approved": N_("The request was approved; the application can be used."),
    "declined": N_("The request was declined."),
    "owner-added": N_("The owner was added."),
    "owner-removed": N_("The owner was removed."),
    "deleted": N_("The application was deleted."),
    "domain-added": N_("The domain was allowed."),
    "domain-removed": N_("The domain was removed."),
}
"""Messages shown after a redirect (``?done=...``); only these keys, so no text comes from the URL."""


def _who(console: Console) -> Who:
    return "admin" if console.can(Action.MANAGE_ALL_CLIENTS) else "owner"


def _notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("done", ""))


def _done(path: str, key: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?done={key}", status_code=303)


def _row(ctx: AppContext, scope: RequestScope, request: Request, console: Console, *,
         manage: bool) -> Client | Response:
    """The client of the path, if this user may see it (else 404, as for a missing one) and, with ``manage``,
    change it (else 403: helpdesk sees every client but changes none)."""
    key = access.row_id(str(request.path_params.get("id", "")))
    row = scope.db.get(Client, key) if key is not None else None
    if row is None or not can_view_client(scope.db, console.user, console.roles, row):
        return access.not_found(ctx)
    if manage and not can_manage_client(scope.db, console.user, console.roles, row):
        return access.forbidden(ctx)
    return row


def _path(row: Client) -> str:
    return f"/admin/clients/{row.id}"


def _back(request: Request) -> str:
    key = access.row_id(str(request.path_params.get("id", "")))
    return f"/admin/clients/{key}" if key is not None else "/admin/clients"


Endpoint = Callable[[Request], Awaitable[Response]]
ClientPage = Callable[[AppContext, RequestScope, Request, Console, Client], Response]
ClientForm = Callable[[AppContext, RequestScope, Console, Client, dict[str, str]], Response]


def _client_page(body: ClientPage, *, manage: bool) -> Endpoint:
    """A console page about the client of the path: ``body`` runs only if ``_row`` finds it for this user."""

    def work(ctx: AppContext, scope: RequestScope, request: Request, console: Console) -> Response:
        row = _row(ctx, scope, request, console, manage=manage)
        return row if isinstance(row, Response) else body(ctx, scope, request, console, row)

    async def endpoint(request: Request) -> Response:
        return await access.page(request, None, work)

    return endpoint


def _client_form(body: ClientForm, action: Action | None = None) -> Endpoint:
    """A POST on the client of the path: the form, ``action`` and CSRF checked (``access.form``), then ``body``
    only if this user may change that client (``_row``); a signed-out browser comes back to the client's page."""

    def work(ctx: AppContext, scope: RequestScope, request: Request, console: Console,
             fields: dict[str, str]) -> Response:
        row = _row(ctx, scope, request, console, manage=True)
        return row if isinstance(row, Response) else body(ctx, scope, console, row, fields)

    async def endpoint(request: Request) -> Response:
        return await access.form(request, action, work, return_to=_back(request))

    return endpoint


# --- list ------------------------------------------------------------------------------------------------------

def _list(ctx: AppContext, scope: RequestScope, request: Request, console: Console) -> Response:
    try:
        query = dict(query_pairs(request))
    except MalformedRequest:
        query = {}
    text = query.get("q", "")[:100]
    status = query.get("status", "")
    status = status if status in {"active", "requested", "declined"} else ""
    mine = None if console.can(Action.VIEW_ALL_CLIENTS) else console.user
    rows = registry.search_clients(scope.db, text, owner=mine, status=status or None)
    expiring = [row for row in registry.expiring_secrets(scope.db, scope.now)
                if mine is None or row in registry.clients_owned_by(scope.db, mine)]
    pending = len(registry.pending_requests(scope.db)) if console.can(Action.MANAGE_ALL_CLIENTS) else 0
    return access.render(ctx, console, "admin/clients.html", section="clients", rows=rows, q=text, status_filter=status,
                         expiring=expiring, pending=pending, now=scope.now, secret_state=registry.secret_state,
                         notice=_notice(request), may_create=console.can(Action.CREATE_CLIENT),
                         admin=console.can(Action.MANAGE_ALL_CLIENTS), when=console.when)


async def list_clients(request: Request) -> Response:
    return await access.page(request, None, _list)


# --- create ----------------------------------------------------------------------------------------------------

def _theme_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """The themes a client may choose, as (folder name, display name): people choose "Stadt Musterstadt", not a
    folder; a theme that cannot be loaded is not offered."""
    choices = []
    for name in themes.available():
        try:
            choices.append((name, ctx.pages.add_theme(name).display_name))
        except themes.ThemeError:
            continue
    return choices


def _form_page(ctx: AppContext, console: Console, *, row: Client | None, values: dict[str, Any],
               error: Text | None = None, status: int = 200) -> Response:
    return access.render(ctx, console, "admin/client_form.html", section="clients", status=status, row=row,
                         form=values, error=error, choices=client_forms.CHOICES, themes=_theme_choices(ctx),
                         admin=console.can(Action.MANAGE_ALL_CLIENTS), lifetimes=LIFETIME_CHOICES)


def _new(ctx: AppContext, scope: RequestScope, request: Request, console: Console) -> Response:
    values = client_forms.values_of(NewClient(name="", redirect_uris=[]))
    values["owners"] = ""
    return _form_page(ctx, console, row=None, values=values)


async def new_client(request: Request) -> Response:
    return await access.page(request, Action.CREATE_CLIENT, _new)


def _check_theme(ctx: AppContext, new: NewClient) -> None:
    if new.theme is None:
        return
    if new.theme not in themes.available():
        raise ClientError(N_("there is no theme {theme}", theme=repr(new.theme)))
    try:
        ctx.pages.add_theme(new.theme)  # it must load now, not fail at the first sign-in
    except themes.ThemeError as exc:
        # The loader's detail (which theme, which file or TOML error) goes in as a value, as it is: it is for
        # whoever fixes the theme, and names files and keys that no translation would make clearer.
        raise ClientError(N_("the theme cannot be loaded: {detail}", detail=str(exc))) from exc


def _create(ctx: AppContext, scope: RequestScope, request: Request, console: Console,
            fields: dict[str, str]) -> Response:
    admin = console.can(Action.MANAGE_ALL_CLIENTS)
    try:
        new = client_forms.read_client(fields, admin=admin)
        _check_theme(ctx, new)
        lifetime = _choice(LIFETIME_CHOICES, fields.get("secret_lifetime", ""),
                           N_("choose a secret lifetime from the list"))
        owners = [registry.owner_by_username(scope.db, name) for name in
                  dict.fromkeys(fields.get("owners", "").replace(",", " ").split())] if admin else []
        if admin:
            row, secret = create_client(scope.db, ctx.services.hasher, new)
            row.created_by = console.user.username
            for owner in owners:
                registry.add_owner(scope.db, row, owner)
            auto = False
        else:
            filed = registry.file_client(scope.db, ctx.services.hasher, new, console.user, scope.now)
            row, secret, auto = filed.row, filed.secret, filed.auto_approved
    except ClientError as exc:
        return _form_page(ctx, console, row=None, values=client_forms.values_typed(fields), error=exc.text,
                          status=400)
    if secret is not None and lifetime is not None:
        row.secret_expires_at = scope.now + lifetime
    registry.audit_client(
        scope.db, "client.created", row, actor=console.actor, origin=scope.origin, at=scope.now,
        status=row.status, auto_approved=auto, owners=[u.username for u in registry.owners_of(scope.db, row)],
        redirect_uris=row.redirect_uris, grant_types=row.grant_types, auth_method=row.token_endpoint_auth_method,
        trusted=row.trusted, require_mfa=row.require_mfa, mfa_methods=row.mfa_methods,
        allow_trusted_device=row.allow_trusted_device,
    )
    return access.render(ctx, console, "admin/client_secret.html", section="clients", row=row, secret=secret,
                         created=True, auto_approved=auto, when=console.when)


async def create(request: Request) -> Response:
    return await access.form(request, Action.CREATE_CLIENT, _create, return_to="/admin/clients/new")


def _choice(choices: dict[str, timedelta | None], key: str, refusal: Text) -> timedelta | None:
    if key not in choices:
        raise ClientError(refusal)
    return choices[key]


# --- detail and edit -------------------------------------------------------------------------------------------

def _detail_page(ctx: AppContext, scope: RequestScope, console: Console, row: Client, *,
                 notice: str | None = None, error: Text | None = None, status: int = 200) -> Response:
    return access.render(
        ctx, console, "admin/client.html", section="clients", status=status, row=row,
        owners=registry.owners_of(scope.db, row), manage=can_manage_client(scope.db, console.user, console.roles, row),
        admin=console.can(Action.MANAGE_ALL_CLIENTS), secret_state=registry.secret_state(row, scope.now),
        needs_secret=needs_secret(row), graces=GRACE_CHOICES, lifetimes=LIFETIME_CHOICES, notice=notice,
        error=error, owner_may_enable=row.disabled_by == "owner", when=console.when,
    )


def _detail(ctx: AppContext, scope: RequestScope, request: Request, console: Console, row: Client) -> Response:
    return _detail_page(ctx, scope, console, row, notice=_notice(request))


detail = _client_page(_detail, manage=False)


def _edit(ctx: AppContext, scope: RequestScope, request: Request, console: Console, row: Client) -> Response:
    return _form_page(ctx, console, row=row, values=client_forms.values_of(registry.new_client_of(row)))


edit = _client_page(_edit, manage=True)


def _save(ctx: AppContext, scope: RequestScope, console: Console, row: Client, fields: dict[str, str]) -> Response:
    admin = console.can(Action.MANAGE_ALL_CLIENTS)
    try:
        new = client_forms.read_client(fields, admin=admin, stored=registry.new_client_of(row))
        _check_theme(ctx, new)
        if not admin and row.status == "active":
            # An approved client's new URLs go through review unless they lie on an owner's allowed domains.
            unreviewed = registry.unreviewed_urls(scope.db, row, new, registry.owners_of(scope.db, row))
            if unreviewed:
                raise ClientError(N_("new addresses need an administrator's approval: {addresses}",
                                      addresses=", ".join(unreviewed)))
        before, after = update_client(scope.db, ctx.services.hasher, row, new)
    except ClientError as exc:
        return _form_page(ctx, console, row=row, values=client_forms.values_typed(fields), error=exc.text,
                          status=400)
    if not admin and row.status == "declined":
        # The owner changed a declined request: it goes back to the administrators.
        before["status"], after["status"] = row.status, "requested"
        row.status = "requested"
    if after:
        registry.audit_client(scope.db, "client.updated", row, actor=console.actor, origin=scope.origin,
                              at=scope.now, before=before, after=after)
    return _done(_path(row), "updated" if after else "unchanged")


save = _client_form(_save)


# --- secret, disable, enable, delete ---------------------------------------------------------------------------

def _rotate(ctx: AppContext, scope: RequestScope, console: Console, row: Client, fields: dict[str, str]) -> Response:
    try:
        grace = _choice(GRACE_CHOICES, fields.get("grace", ""), N_("choose a grace period from the list"))
        lifetime = _choice(LIFETIME_CHOICES, fields.get("secret_lifetime", ""),
                           N_("choose a secret lifetime from the list"))
        secret = registry.rotate_secret(row, ctx.services.hasher, scope.now, grace, lifetime=lifetime)
    except ClientError as exc:
        return _detail_page(ctx, scope, console, row, error=exc.text, status=400)
    registry.audit_client(
        scope.db, "client.secret_rotated", row, actor=console.actor, origin=scope.origin, at=scope.now,
        grace_seconds=int(grace.total_seconds()) if grace else 0,
        secret_expires_at=row.secret_expires_at.isoformat() if row.secret_expires_at else None,
    )
    return access.render(ctx, console, "admin/client_secret.html", section="clients", row=row, secret=secret,
                         created=False, auto_approved=False, when=console.when)


rotate = _client_form(_rotate)


def _disable(ctx: AppContext, scope: RequestScope, console: Console, row: Client, fields: dict[str, str]) -> Response:
    if row.disabled_at is None:
        revoked = registry.disable_client(scope.db, row, scope.now, _who(console))
        registry.audit_client(scope.db, "client.disabled", row, actor=console.actor, origin=scope.origin,
                              at=scope.now, by=row.disabled_by, tokens_revoked=revoked)
    return _done(_path(row), "disabled")


disable = _client_form(_disable)


def _enable(ctx: AppContext, scope: RequestScope, console: Console, row: Client, fields: dict[str, str]) -> Response:
    previously = row.disabled_by
    try:
        changed = registry.enable_client(row, _who(console))
    except ClientError as exc:
        return _detail_page(ctx, scope, console, row, error=exc.text, status=403)
    if changed:
        registry.audit_client(scope.db, "client.enabled", row, actor=console.actor, origin=scope.origin,
                              at=scope.now, disabled_by=previously)
    return _done(_path(row), "enabled")


enable = _client_form(_enable)


def _confirm_delete(ctx: AppContext, scope: RequestScope, request: Request, console: Console,
                    row: Client) -> Response:
    return access.render(ctx, console, "admin/client_delete.html", section="clients", row=row)


confirm_delete = _client_page(_confirm_delete, manage=True)


def _delete(ctx: AppContext, scope: RequestScope, console: Console, row: Client, fields: dict[str, str]) -> Response:
    registry.delete_and_audit(scope.db, row, actor=console.actor, origin=scope.origin, at=scope.now)
    return _done("/admin/clients", "deleted")


delete = _client_form(_delete)


# --- owners ----------------------------------------------------------------------------------------------------

def _add_owner(ctx: AppContext, scope: RequestScope, console: Console, row: Client, fields: dict[str, str]) -> Response:
    try:
        user = registry.owner_by_username(scope.db, fields.get("username", "").strip())
    except ClientError as exc:
        return _detail_page(ctx, scope, console, row, error=exc.text, status=400)
    if registry.add_owner(scope.db, row, user):
        registry.audit_client(scope.db, "client.owner_added", row, actor=console.actor, origin=scope.origin,
                              at=scope.now, owner=user.username)
    return _done(_path(row), "owner-added")


add_owner = _client_form(_add_owner)


def _remove_owner(ctx: AppContext, scope: RequestScope, console: Console, row: Client,
                  fields: dict[str, str]) -> Response:
    owner = next((u for u in registry.owners_of(scope.db, row) if u.username == fields.get("username")), None)
    if owner is None:
        return _detail_page(ctx, scope, console, row, error=N_("That user is not an owner of this application."),
                            status=400)
    try:
        registry.remove_owner(scope.db, row, owner)
    except ClientError as exc:
        return _detail_page(ctx, scope, console, row, error=exc.text, status=400)
    registry.audit_client(scope.db, "client.owner_removed", row, actor=console.actor, origin=scope.origin,
                          at=scope.now, owner=owner.username)
    if not can_manage_client(scope.db, console.user, console.roles, row):
        return _done("/admin/clients", "owner-removed")  # they removed themselves
    return _done(_path(row), "owner-removed")


remove_owner = _client_form(_remove_owner)


# --- review ----------------------------------------------------------------------------------------------------

def _requests(ctx: AppContext, scope: RequestScope, request: Request, console: Console) -> Response:
    rows = registry.pending_requests(scope.db)
    owners = {row.id: registry.owners_of(scope.db, row) for row in rows}
    return access.render(ctx, console, "admin/client_requests.html", section="clients", rows=rows, owners=owners,
                         notice=_notice(request), when=console.when)


async def requests(request: Request) -> Response:
    return await access.page(request, Action.MANAGE_ALL_CLIENTS, _requests)


def _review(approve: bool) -> ClientForm:
    def body(ctx: AppContext, scope: RequestScope, console: Console, row: Client, fields: dict[str, str]) -> Response:
        before = row.status
        try:
            if approve:
                registry.approve_client(row, console.user.username, fields.get("comment"), scope.now)
            else:
                registry.decline_client(row, console.user.username, fields.get("comment"), scope.now)
        except ClientError as exc:
            return _detail_page(ctx, scope, console, row, error=exc.text, status=400)
        registry.audit_client(scope.db, "client.approved" if approve else "client.declined", row,
                              actor=console.actor, origin=scope.origin, at=scope.now,
                              before={"status": before}, after={"status": row.status}, comment=row.review_comment)
        target = "/admin/clients/requests" if fields.get("from") == "requests" else _path(row)
        return _done(target, "approved" if approve else "declined")
    return body


approve = _client_form(_review(True), Action.MANAGE_ALL_CLIENTS)
decline = _client_form(_review(False), Action.MANAGE_ALL_CLIENTS)


# --- allowed redirect domains per owner ------------------------------------------------------------------------

def _domains_page(ctx: AppContext, scope: RequestScope, request: Request, console: Console, *,
                  error: Text | None = None, typed: dict[str, str] | None = None, status: int = 200) -> Response:
    rows = registry.owner_domain_rows(scope.db)
    return access.render(ctx, console, "admin/client_domains.html", section="clients", status=status, rows=rows,
                         error=error, typed=typed or {}, notice=_notice(request))


def _domains(ctx: AppContext, scope: RequestScope, request: Request, console: Console) -> Response:
    return _domains_page(ctx, scope, request, console)


async def domains(request: Request) -> Response:
    return await access.page(request, Action.MANAGE_OWNER_DOMAINS, _domains)


def _add_domain(ctx: AppContext, scope: RequestScope, request: Request, console: Console,
                fields: dict[str, str]) -> Response:
    typed = {"username": fields.get("username", ""), "domain": fields.get("domain", "")}
    try:
        owner = registry.owner_by_username(scope.db, typed["username"].strip())
        added = registry.add_owner_domain(scope.db, owner, typed["domain"], scope.now)
    except ClientError as exc:
        return _domains_page(ctx, scope, request, console, error=exc.text, typed=typed, status=400)
    if added is not None:
        registry.audit_client_domain(scope.db, "client.owner_domain_added", owner.username, added.domain,
                                     actor=console.actor, origin=scope.origin, at=scope.now)
    return _done("/admin/clients/domains", "domain-added")


async def add_domain(request: Request) -> Response:
    return await access.form(request, Action.MANAGE_OWNER_DOMAINS, _add_domain, return_to="/admin/clients/domains")


def _remove_domain(ctx: AppContext, scope: RequestScope, request: Request, console: Console,
                   fields: dict[str, str]) -> Response:
    key = access.row_id(str(request.path_params.get("id", "")))
    row = scope.db.get(OwnerRedirectDomain, key) if key is not None else None
    if row is None:
        return access.not_found(ctx)
    owner = scope.db.get(User, row.user_id)
    domain = row.domain
    registry.remove_owner_domain(scope.db, row)
    registry.audit_client_domain(scope.db, "client.owner_domain_removed", owner.username if owner else "", domain,
                                 actor=console.actor, origin=scope.origin, at=scope.now)
    return _done("/admin/clients/domains", "domain-removed")


async def remove_domain(request: Request) -> Response:
    return await access.form(request, Action.MANAGE_OWNER_DOMAINS, _remove_domain,
                             return_to="/admin/clients/domains")


routes = [
    Route("/admin/clients", list_clients, methods=["GET"]),
    Route("/admin/clients/new", new_client, methods=["GET"]),
    Route("/admin/clients/new", create, methods=["POST"]),
    Route("/admin/clients/requests", requests, methods=["GET"]),
    Route("/admin/clients/domains", domains, methods=["GET"]),
    Route("/admin/clients/domains", add_domain, methods=["POST"]),
    Route("/admin/clients/domains/{id}/delete", remove_domain, methods=["POST"]),
    Route("/admin/clients/{id}", detail, methods=["GET"]),
    Route("/admin/clients/{id}/edit", edit, methods=["GET"]),
    Route("/admin/clients/{id}/edit", save, methods=["POST"]),
    Route("/admin/clients/{id}/rotate", rotate, methods=["POST"]),
    Route("/admin/clients/{id}/disable", disable, methods=["POST"]),
    Route("/admin/clients/{id}/enable", enable, methods=["POST"]),
    Route("/admin/clients/{id}/delete", confirm_delete, methods=["GET"]),
    Route("/admin/clients/{id}/delete", delete, methods=["POST"]),
    Route("/admin/clients/{id}/owners", add_owner, methods=["POST"]),
    Route("/admin/clients/{id}/owners/remove", remove_owner, methods=["POST"]),
    Route("/admin/clients/{id}/approve", approve, methods=["POST"]),
    Route("/admin/clients/{id}/decline", decline, methods=["POST"]),
]

"""A client's life after registration: its secret (rotation with a grace period, expiry), disabling, deleting,
its owners, and the governance of clients that app owners file.

    app owner files ──► redirect (and logout, keys, logo) URLs all https on the owner's allowed domains?
                             │ yes: active at once ("approved automatically")
                             └ no:  status "requested", unusable ──► admin approves ──► active
                                                                  └─► admin declines (with a comment)

Plain functions over the rows; the console (``idp.admin.clients``) and the CLI (``idp.cli.clients``) call them
and write the audit trail (``audit_client``). Who may call what is decided by the caller
(``idp.admin.roles``); the rules that hold whoever calls (an owner cannot enable what an administrator
disabled, a filed client keeps an owner) are checked here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from idp import audit
from idp.accounts.users import find_user, roles_of
from idp.crypto import KeyedHasher
from idp.db import rowcount
from idp.models import (
    AuthorizationCode,
    BackchannelDelivery,
    Client,
    ClientOwner,
    Consent,
    LoginTransaction,
    OwnerRedirectDomain,
    SessionClient,
    Token,
    User,
)
from idp.oauth.clients import (
    SECRET_AUTH_METHODS,
    ClientError,
    NewClient,
    create_client,
    new_client_secret,
    split_url,
)
from idp.texts import N_

APP_OWNER_ROLE = "app-owner"  # idp.admin.roles.APP_OWNER; not imported to keep idp.oauth free of the console
MAX_GRACE = timedelta(days=30)
"""The longest an old secret may keep working after a rotation (long enough to roll out, short enough to end)."""
EXPIRY_WARNING = timedelta(days=30)
"""Secrets that expire within this time are listed in the console and on the dashboard."""
Who = Literal["admin", "owner"]


# --- secrets ---------------------------------------------------------------------------------------------------

def rotate_secret(row: Client, hasher: KeyedHasher, now: datetime, grace: timedelta | None, *,
                  lifetime: timedelta | None = None) -> str:
    """Give a confidential client a new 256-bit secret and return it (shown once, stored as a keyed hash).

    With ``grace`` the old secret keeps working until ``now + grace`` (never past its own expiry), so the
    application can be switched over without downtime; without it the old secret stops at once. ``lifetime``
    sets the new secret's expiry (None: it does not expire)."""
    if row.token_endpoint_auth_method not in SECRET_AUTH_METHODS:
        raise ClientError(N_("a client that authenticates with {method} has no secret",
                             method=repr(row.token_endpoint_auth_method)))
    if grace is not None and not timedelta(0) < grace <= MAX_GRACE:
        raise ClientError(N_("the grace period must be longer than 0 and at most {days} days", days=MAX_GRACE.days))
    if lifetime is not None and lifetime <= timedelta(0):
        raise ClientError(N_("a secret's lifetime must be positive"))
    old_works = row.secret_hash is not None and (row.secret_expires_at is None or row.secret_expires_at > now)
    if grace is not None and old_works:
        until = now + grace
        if row.secret_expires_at is not None:
            until = min(until, row.secret_expires_at)
        row.previous_secret_hash, row.previous_secret_expires_at = row.secret_hash, until
    else:
        row.previous_secret_hash, row.previous_secret_expires_at = None, None
    secret = new_client_secret()
    row.secret_hash = hasher.hash(secret)
    row.secret_expires_at = now + lifetime if lifetime is not None else None
    return secret


def expiring_secrets(db: Session, now: datetime, within: timedelta = EXPIRY_WARNING) -> list[Client]:
    """Clients whose secret expires within ``within`` (or has expired), soonest first: for the console's client
    list and the dashboard. Declined requests are left out (nobody will use them)."""
    return list(db.scalars(
        select(Client).where(Client.secret_hash.is_not(None), Client.secret_expires_at.is_not(None),
                             Client.secret_expires_at <= now + within, Client.status != "declined")
        .order_by(Client.secret_expires_at, Client.name)
    ))


def secret_state(row: Client, now: datetime, within: timedelta = EXPIRY_WARNING) -> str | None:
    """``expired``, ``expiring`` (within ``within``), ``valid`` or None (the client has no secret)."""
    if row.secret_hash is None:
        return None
    if row.secret_expires_at is None or row.secret_expires_at > now + within:
        return "valid"
    return "expired" if row.secret_expires_at <= now else "expiring"


# --- disable, enable, delete -----------------------------------------------------------------------------------

def disable_client(db: Session, row: Client, now: datetime, by: Who) -> int:
    """Disable a client: it can no longer sign users in or get tokens, and its issued tokens are revoked (so that
    enabling it again does not bring them back). Returns the number of tokens revoked; 0 and no change when it
    was disabled already."""
    if row.disabled_at is not None:
        return 0
    row.disabled_at, row.disabled_by = now, by
    result = db.execute(
        update(Token).where(Token.client_id == row.id, Token.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason="client_disabled")
    )
    return rowcount(result)


def enable_client(row: Client, by: Who) -> bool:
    """Enable a disabled client again; False when it was not disabled. An owner cannot enable a client an
    administrator disabled (the administrator had a reason)."""
    if row.disabled_at is None:
        return False
    if by == "owner" and row.disabled_by != "owner":
        raise ClientError(N_("an administrator disabled this client; only an administrator can enable it again"))
    row.disabled_at, row.disabled_by = None, None
    return True


def delete_client(db: Session, row: Client) -> dict[str, int]:
    """Delete a client with everything issued to it: codes, tokens, consents, pending sign-ins and back-channel
    deliveries (the sessions it took part in stay; they simply no longer name it). Returns what went, counted."""
    counts: dict[str, int] = {}
    for name, model in (("authorization_codes", AuthorizationCode), ("tokens", Token), ("consents", Consent),
                        ("login_transactions", LoginTransaction), ("session_clients", SessionClient),
                        ("backchannel_deliveries", BackchannelDelivery), ("owners", ClientOwner)):
        result = db.execute(delete(model).where(model.client_id == row.id))
        counts[name] = rowcount(result)
    db.delete(row)
    db.flush()
    return counts


# --- owners ----------------------------------------------------------------------------------------------------

def owners_of(db: Session, row: Client) -> list[User]:
    return list(db.scalars(
        select(User).join(ClientOwner, ClientOwner.user_id == User.id).where(ClientOwner.client_id == row.id)
        .order_by(User.username)
    ))


def clients_owned_by(db: Session, user: User) -> list[Client]:
    return list(db.scalars(
        select(Client).join(ClientOwner, ClientOwner.client_id == Client.id).where(ClientOwner.user_id == user.id)
        .order_by(Client.name)
    ))


def owner_by_username(db: Session, username: str) -> User:
    """The user named ``username`` if they may own clients (an active account with the app-owner role)."""
    user = find_user(db, username) if username and len(username) <= 255 else None
    if user is None:
        raise ClientError(N_("no user {username}", username=repr(username)))
    if not user.is_active:
        raise ClientError(N_("user {username} is disabled", username=repr(user.username)))
    if APP_OWNER_ROLE not in roles_of(db, user):
        raise ClientError(N_("user {username} does not have the app-owner role", username=repr(user.username)))
    return user


def add_owner(db: Session, row: Client, user: User) -> bool:
    """Make ``user`` an owner of the client; False when they were one already."""
    exists = db.get(ClientOwner, (row.id, user.id))
    if exists is not None:
        return False
    db.add(ClientOwner(client_id=row.id, user_id=user.id))
    db.flush()
    return True


def filed_by_owner(row: Client) -> bool:
    """Whether an app owner filed the client (it went through review, or is waiting for it). Such a client always
    keeps at least one owner: someone must answer for it."""
    return row.status != "active" or row.reviewed_at is not None


def remove_owner(db: Session, row: Client, user: User) -> bool:
    """Remove ``user`` from the client's owners; False when they were none. The last owner of a client an app
    owner filed cannot be removed."""
    link = db.get(ClientOwner, (row.id, user.id))
    if link is None:
        return False
    if filed_by_owner(row) and len(owners_of(db, row)) <= 1:
        raise ClientError(N_("the client needs at least one owner; add another owner first"))
    db.delete(link)
    db.flush()
    return True


# --- governance: requests and allowed redirect domains ---------------------------------------------------------

_DOMAIN = re.compile(r"(?=.{4,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize_domain(domain: str) -> str:
    """A host name as stored in the allow-list: lower case, no trailing dot, at least two labels, not an IP
    address; raises ``ClientError`` otherwise."""
    value = domain.strip().lower().rstrip(".")
    try:
        value = value.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ClientError(N_("{domain} is not a host name", domain=repr(domain))) from exc
    if not _DOMAIN.fullmatch(value):
        raise ClientError(N_("{domain} is not a host name with at least two labels (like apps.musterstadt.de)",
                             domain=repr(domain)))
    return value


def owner_domains(db: Session, user: User) -> list[OwnerRedirectDomain]:
    return list(db.scalars(select(OwnerRedirectDomain).where(OwnerRedirectDomain.user_id == user.id)
                           .order_by(OwnerRedirectDomain.domain)))


def add_owner_domain(db: Session, user: User, domain: str, now: datetime) -> OwnerRedirectDomain | None:
    """Allow ``domain`` (and its subdomains) for ``user``'s clients; None when it was allowed already."""
    value = normalize_domain(domain)
    if db.scalar(select(OwnerRedirectDomain).where(OwnerRedirectDomain.user_id == user.id,
                                                   OwnerRedirectDomain.domain == value)) is not None:
        return None
    row = OwnerRedirectDomain(user_id=user.id, domain=value, created_at=now)
    db.add(row)
    db.flush()
    return row


def remove_owner_domain(db: Session, row: OwnerRedirectDomain) -> None:
    db.delete(row)
    db.flush()


def owner_domain_rows(db: Session) -> list[tuple[OwnerRedirectDomain, str]]:
    """Every allowed domain with its owner's username, by username and domain (the administrators' list)."""
    rows = db.execute(select(OwnerRedirectDomain, User.username).join(User, User.id == OwnerRedirectDomain.user_id)
                      .order_by(User.username, OwnerRedirectDomain.domain)).all()
    return [(domain, username) for domain, username in rows]


def _urls(item: Client | NewClient) -> list[str]:
    """Every URL of a client that points somewhere: where users, logout tokens and key fetches go, and the logo
    shown on the sign-in page."""
    return [*item.redirect_uris, *item.post_logout_redirect_uris,
            *(u for u in (item.backchannel_logout_uri, item.jwks_uri, item.logo_uri) if u)]


def _on_domains(url: str, domains: Iterable[str]) -> bool:
    parts = split_url(url)
    if parts is None or parts.scheme != "https" or not parts.hostname or "@" in parts.netloc:
        return False
    host = parts.hostname.rstrip(".")
    return any(host == d or host.endswith("." + d) for d in domains)


def auto_approvable(db: Session, owner: User, item: Client | NewClient) -> bool:
    """Whether a client that ``owner`` files may be active without review: it has a redirect URI, and every URL
    it registers is https on one of the owner's allowed domains (the host itself or a subdomain). A client
    without redirect URIs (``client_credentials`` only) always goes to an administrator."""
    domains = [d.domain for d in owner_domains(db, owner)]
    return bool(domains and item.redirect_uris) and all(_on_domains(url, domains) for url in _urls(item))


def unreviewed_urls(db: Session, row: Client, new: NewClient, owners: Iterable[User]) -> list[str]:
    """URLs an owner's edit would add that neither the client had before nor lie on an allowed domain of one
    of its owners: such an edit needs an administrator (else approval could be sidestepped by editing later)."""
    before = set(_urls(row))
    domains = [d.domain for owner in owners for d in owner_domains(db, owner)]
    return [url for url in _urls(new) if url not in before and not _on_domains(url, domains)]


@dataclass(frozen=True)
class Filed:
    row: Client
    secret: str | None
    """Shown once to whoever filed the client."""
    auto_approved: bool


def file_client(db: Session, hasher: KeyedHasher, new: NewClient, owner: User, now: datetime) -> Filed:
    """An app owner files a client: it belongs to them and is active at once when ``auto_approvable``, else it
    waits for an administrator (status ``requested``; unusable until approved)."""
    row, secret = create_client(db, hasher, new)
    row.created_by = owner.username
    add_owner(db, row, owner)
    auto = auto_approvable(db, owner, row)
    if auto:
        row.status, row.reviewed_at = "active", now
        row.review_comment = N_("approved automatically: every URL is on an allowed domain of the owner")
    else:
        row.status = "requested"
    return Filed(row, secret, auto)


def approve_client(row: Client, reviewer: str, comment: str | None, now: datetime) -> None:
    """An administrator approves a requested (or earlier declined) client: it becomes usable."""
    if row.status not in {"requested", "declined"}:
        raise ClientError(N_("only a requested or declined client can be approved"))
    row.status = "active"
    row.reviewed_by, row.reviewed_at, row.review_comment = reviewer, now, _comment(comment)


def decline_client(row: Client, reviewer: str, comment: str | None, now: datetime) -> None:
    """An administrator declines a requested client, saying why (the owner reads the comment)."""
    if row.status != "requested":
        raise ClientError(N_("only a requested client can be declined"))
    text = _comment(comment)
    if text is None:
        raise ClientError(N_("say why the request is declined (a comment is required)"))
    row.status = "declined"
    row.reviewed_by, row.reviewed_at, row.review_comment = reviewer, now, text


def _comment(comment: str | None) -> str | None:
    text = (comment or "").strip()
    if len(text) > 2000:
        raise ClientError(N_("the comment is longer than 2000 characters"))
    return text or None


def pending_requests(db: Session) -> list[Client]:
    return list(db.scalars(select(Client).where(Client.status == "requested").order_by(Client.created_at)))


def search_clients(db: Session, text: str = "", *, owner: User | None = None, status: str | None = None,
                   limit: int = 200) -> list[Client]:
    """Clients by name or client id (case-insensitive substring); only ``owner``'s when given."""
    query = select(Client)
    if owner is not None:
        query = query.join(ClientOwner, ClientOwner.client_id == Client.id).where(ClientOwner.user_id == owner.id)
    needle = text.strip().lower()[:100]
    if needle:
        pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(Client.name.ilike(pattern, escape="\\"), Client.client_id.ilike(pattern, escape="\\")))
    if status:
        query = query.where(Client.status == status)
    return list(db.scalars(query.order_by(Client.name, Client.id).limit(limit)))


# --- the audit trail -------------------------------------------------------------------------------------------

def audit_client(db: Session, event: str, row: Client, *, actor: str | None, origin: audit.Origin = audit.CLI,
                 at: datetime | None = None, **details: Any) -> None:
    """One ``client.*`` audit row naming the client (never a secret: ``audit.record`` refuses secret-named
    keys, and no secret or hash is among the fields compared)."""
    audit.record(db, event, actor=actor, client_id=row.client_id, origin=origin, at=at, name=row.name, **details)


def delete_and_audit(db: Session, row: Client, *, actor: str | None, origin: audit.Origin = audit.CLI,
                     at: datetime | None = None) -> dict[str, int]:
    """``delete_client`` and its ``client.deleted`` audit row (with the client as it was, under ``before``)."""
    before = summary(row)
    client_id, name = row.client_id, row.name
    counts = delete_client(db, row)
    audit.record(db, "client.deleted", actor=actor, client_id=client_id, origin=origin, at=at, name=name,
                 before=before, removed=counts)
    return counts


def audit_client_domain(db: Session, event: str, username: str, domain: str, *, actor: str | None,
                        origin: audit.Origin = audit.CLI, at: datetime | None = None) -> None:
    """One ``client.owner_domain_*`` audit row: whose allow-list changed, and which domain."""
    audit.record(db, event, actor=actor, subject=username, origin=origin, at=at, domain=domain)


def summary(row: Client) -> dict[str, Any]:
    """A client's registered metadata and state as JSON-able values (no secret, no hash): the ``before`` and
    ``after`` of a creation and the ``--json`` of ``idp clients show``."""
    return {
        "client_id": row.client_id, "name": row.name, "status": row.status,
        "token_endpoint_auth_method": row.token_endpoint_auth_method, "redirect_uris": list(row.redirect_uris),
        "post_logout_redirect_uris": list(row.post_logout_redirect_uris),
        "backchannel_logout_uri": row.backchannel_logout_uri, "grant_types": list(row.grant_types),
        "scope": row.scope, "trusted": row.trusted, "id_token_signed_response_alg": row.id_token_signed_response_alg,
        "jwks": row.jwks, "jwks_uri": row.jwks_uri, "require_mfa": row.require_mfa, "mfa_methods": row.mfa_methods,
        "allow_trusted_device": row.allow_trusted_device, "theme": row.theme, "logo_uri": row.logo_uri,
        "access_token_lifetime": row.access_token_lifetime, "refresh_token_lifetime": row.refresh_token_lifetime,
        "has_secret": row.secret_hash is not None,
        "secret_expires_at": _iso(row.secret_expires_at),
        "previous_secret_expires_at": _iso(row.previous_secret_expires_at) if row.previous_secret_hash else None,
        "disabled_at": _iso(row.disabled_at), "disabled_by": row.disabled_by,
        "review_comment": row.review_comment, "reviewed_by": row.reviewed_by, "reviewed_at": _iso(row.reviewed_at),
        "created_by": row.created_by, "created_at": _iso(row.created_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def new_client_of(row: Client) -> NewClient:
    """The ``NewClient`` that registers ``row`` as it is: the start of an edit (change some fields, then
    ``update_client``)."""
    return NewClient(
        name=row.name, redirect_uris=list(row.redirect_uris),
        post_logout_redirect_uris=list(row.post_logout_redirect_uris),
        backchannel_logout_uri=row.backchannel_logout_uri, public=row.is_public, grant_types=list(row.grant_types),
        token_endpoint_auth_method=row.token_endpoint_auth_method, trusted=row.trusted, scope=row.scope,
        id_token_signed_response_alg=row.id_token_signed_response_alg, jwks=row.jwks, jwks_uri=row.jwks_uri,
        require_mfa=row.require_mfa, mfa_methods=list(row.mfa_methods) if row.mfa_methods is not None else None,
        allow_trusted_device=row.allow_trusted_device, theme=row.theme, logo_uri=row.logo_uri,
        access_token_lifetime=row.access_token_lifetime, refresh_token_lifetime=row.refresh_token_lifetime,
    )

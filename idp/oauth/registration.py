"""OAuth 2.0 Dynamic Client Registration (RFC 7591) and its management protocol (RFC 7592).

``POST /register`` registers a client for the holder of an *initial access token* that an administrator made
with ``idp clients token`` (RFC 7591, 3: the endpoint is protected; open registration is not offered). The
new client gets a *registration access token* and its ``registration_client_uri``, ``/register/{client_id}``,
where that token reads (GET), replaces (PUT) or deletes (DELETE) **its own client only** (RFC 7592, 2).

What a registration may ask for is narrower than what an administrator may set (docs/client-registration.md):
no ``client_credentials``, no skipping consent, no second-factor or lifetime settings; an update never widens
what the client had (grant types, scopes), never makes a confidential client public, and never touches the
administrator's settings or an administrator's "disabled". Both tokens are 256-bit random values stored only
as keyed hashes; an initial access token's uses are counted down with one ``UPDATE ... WHERE uses_left > 0``,
so two processes cannot both spend its last use.

authlib's ``rfc7591`` / ``rfc7592`` endpoint classes are not used: they answer a missing or foreign token with
``access_denied`` instead of RFC 6750's 401 ``invalid_token``, make a secret for every client (public ones
too) and read the wall clock. Here the endpoints are thin code over ``idp.oauth.client_metadata`` (which fields
a registration may write) and ``idp.oauth.clients`` (the rules every client obeys).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from idp import audit
from idp.audit import Origin
from idp.crypto import KeyedHasher, random_token
from idp.db import rowcount
from idp.models import Client, InitialAccessToken, User
from idp.oauth.client_metadata import client_information, keep_admin_settings, read_metadata
from idp.oauth.client_registry import add_owner, delete_client
from idp.oauth.clients import ClientError, create_client, update_client
from idp.oauth.requests import RequestScope
from idp.web.context import context_of

REGISTRATION_PATH = "/register"
INITIAL_TOKEN_MAX_LIFETIME = timedelta(days=90)
INITIAL_TOKEN_MAX_USES = 1000

_TOKEN_CHARS = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750, 2.1 b64token
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what idp.oauth.clients.new_client_id makes


class RegistrationError(Exception):
    """A refused registration or management request, answered as RFC 7591 3.2.2 / RFC 6750 3 say."""

    def __init__(self, error: str, description: str, status: int = 400, challenge: str | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.challenge = challenge


def invalid_token(description: str, *, missing: bool = False) -> RegistrationError:
    """401 with a Bearer challenge; a request without any token gets the bare challenge (RFC 6750, 3.1)."""
    return RegistrationError("invalid_token", description, 401,
                             "Bearer" if missing else 'Bearer error="invalid_token"')


RFC7591_ERRORS = ("invalid_redirect_uri", "invalid_client_metadata", "unapproved_software_statement")


def _metadata_error(exc: ClientError) -> RegistrationError:
    return RegistrationError(exc.error if exc.error in RFC7591_ERRORS else "invalid_client_metadata", str(exc))


def client_uri(issuer: str, row: Client) -> str:
    """The ``registration_client_uri`` of a client (RFC 7592, 3)."""
    return f"{issuer}{REGISTRATION_PATH}/{row.client_id}"


def _information(row: Client, issuer: str) -> dict[str, Any]:
    return {**client_information(row), "registration_client_uri": client_uri(issuer, row)}


# --- initial access tokens (RFC 7591, 1.2 and 3) ---------------------------------------------------------------


def issue_initial_token(db: Session, hasher: KeyedHasher, *, now: datetime, lifetime: timedelta, uses: int,
                        owner: User | None, created_by: str | None = None) -> tuple[InitialAccessToken, str]:
    """Make an initial access token: returns the row and the token itself, which is stored only hashed."""
    if lifetime <= timedelta(0) or lifetime > INITIAL_TOKEN_MAX_LIFETIME:
        raise ValueError(f"an initial access token lives at most {INITIAL_TOKEN_MAX_LIFETIME.days} days")
    if not 1 <= uses <= INITIAL_TOKEN_MAX_USES:
        raise ValueError(f"an initial access token allows 1 to {INITIAL_TOKEN_MAX_USES} registrations")
    token = random_token(32)
    row = InitialAccessToken(token_hash=hasher.hash(token), owner_id=owner.id if owner else None,
                             created_by=created_by, created_at=now, expires_at=now + lifetime, uses_left=uses)
    db.add(row)
    db.flush()
    return row, token


def find_initial_token(db: Session, hasher: KeyedHasher, token: str, now: datetime) -> InitialAccessToken | None:
    """The initial access token with this value, if it is unexpired and has a use left."""
    row = db.scalar(select(InitialAccessToken).where(InitialAccessToken.token_hash == hasher.hash(token)))
    if row is None or row.expires_at <= now or row.uses_left <= 0:
        return None
    return row


def use_initial_token(db: Session, token_id: int, now: datetime) -> bool:
    """Spend one use, atomically: of two registrations racing for the last use only one wins."""
    result = db.execute(
        update(InitialAccessToken)
        .where(InitialAccessToken.id == token_id, InitialAccessToken.uses_left > 0,
               InitialAccessToken.expires_at > now)
        .values(uses_left=InitialAccessToken.uses_left - 1)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) == 1


# --- request bodies --------------------------------------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"member {key!r} is repeated")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass
class Body:
    """A request body as received; parsed only after the token was accepted, so that whoever has no valid
    token learns nothing about how bodies are checked."""

    content_type: str
    raw: bytes

    def json(self) -> Any:
        """The JSON body (RFC 7591, 3.1: ``application/json``), or ``RegistrationError``."""
        if self.content_type != "application/json":
            raise RegistrationError("invalid_request", "the body must be application/json")
        try:
            return json.loads(self.raw.decode("utf-8"), object_pairs_hook=_reject_duplicates,
                              parse_constant=_no_constants)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise RegistrationError("invalid_request", "the body is not valid UTF-8 JSON") from exc


# --- the operations ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What an operation answers: status and JSON body (None: no body)."""

    status: int
    body: dict[str, Any] | None


def _audit_metadata(row: Client) -> dict[str, Any]:
    return {"name": row.name, "redirect_uris": row.redirect_uris, "grant_types": row.grant_types,
            "auth_method": row.token_endpoint_auth_method, "scope": row.scope}


def authenticate_initial_token(db: Session, hasher: KeyedHasher, token: str | None, *, now: datetime,
                               origin: Origin) -> InitialAccessToken:
    """RFC 7591, 3: the registration endpoint is protected by an initial access token (RFC 6750 Bearer)."""
    if token is None:
        raise invalid_token("an initial access token is required to register a client", missing=True)
    grant = find_initial_token(db, hasher, token, now)
    if grant is None:
        audit.record(db, "client.registration_refused", outcome="failure", origin=origin, actor="registration",
                     at=now, reason="invalid_token")
        raise invalid_token("the initial access token is unknown, expired or used up")
    return grant


def _actor(db: Session, grant: InitialAccessToken) -> tuple[str, User | None]:
    owner = db.get(User, grant.owner_id) if grant.owner_id is not None else None
    return (owner.username if owner else "registration"), owner


def refuse_registration(db: Session, grant: InitialAccessToken, error: RegistrationError, *, now: datetime,
                        origin: Origin) -> RegistrationError:
    """Audit a refused registration of a valid token's holder; returns the error to raise."""
    actor, _ = _actor(db, grant)
    audit.record(db, "client.registration_refused", outcome="failure", origin=origin, actor=actor, at=now,
                 reason=error.error, description=error.description, initial_token_id=grant.id)
    return error


def register_client(db: Session, hasher: KeyedHasher, grant: InitialAccessToken, data: Any, *, now: datetime,
                    issuer: str, origin: Origin) -> Outcome:
    """RFC 7591, 3.1-3.2: check the metadata, spend one use of ``grant`` and make the client; the owner of the
    initial access token (if any) becomes the client's owner."""
    actor, owner = _actor(db, grant)
    try:
        if not isinstance(data, dict):
            raise ClientError("the body must be a JSON object of client metadata")
        metadata = read_metadata(data)
        with db.begin_nested():  # the use is given back if the client cannot be made after all
            if not use_initial_token(db, grant.id, now):
                raise invalid_token("the initial access token is unknown, expired or used up")
            row, secret = create_client(db, hasher, metadata.new)
    except (ClientError, RegistrationError) as exc:
        error = _metadata_error(exc) if isinstance(exc, ClientError) else exc
        raise refuse_registration(db, grant, error, now=now, origin=origin) from exc
    registration_token = random_token(32)
    row.registration_token_hash = hasher.hash(registration_token)
    row.extra_metadata = metadata.extra
    row.created_at = now
    if owner is not None:
        add_owner(db, row, owner)
    db.flush()
    audit.record(db, "client.registered", origin=origin, actor=actor, client_id=row.client_id, at=now,
                 initial_token_id=grant.id, owner=owner.username if owner else None, **_audit_metadata(row))
    body = _information(row, issuer)
    if secret is not None:
        body["client_secret"] = secret
    body["registration_access_token"] = registration_token
    return Outcome(201, body)


def authenticate_registration(db: Session, hasher: KeyedHasher, client_id: str, token: str, *, now: datetime,
                              origin: Origin) -> Client:
    """The client at ``/register/{client_id}`` if ``token`` is *its* registration access token.

    A token of another client, an unknown client and a deleted client's token all get the same 401: the answer
    tells nobody which clients exist (and RFC 7592, 2.1 asks for 401 when the client does not exist)."""
    row = db.scalar(select(Client).where(Client.registration_token_hash == hasher.hash(token)))
    if row is None or row.client_id != client_id:
        audit.record(db, "client.management_refused", outcome="failure", origin=origin, actor="registration",
                     client_id=client_id if _CLIENT_ID.fullmatch(client_id) else None, at=now, reason="invalid_token",
                     token_client_id=row.client_id if row else None)
        raise invalid_token("the registration access token is not valid for this client")
    return row


def read_client(row: Client, token: str, issuer: str) -> Outcome:
    """RFC 7592, 2.1: the current metadata and the registration access token the request used (no secret:
    it is stored only hashed and was shown once)."""
    return Outcome(200, {**_information(row, issuer), "registration_access_token": token})


def _swap_registration_token(db: Session, hasher: KeyedHasher, row: Client, presented: str,
                             replacement: str | None) -> None:
    """Replace (or, with None, withdraw) the registration access token, atomically: of two updates or deletions
    sent with the same token only the first succeeds (``UPDATE ... WHERE registration_token_hash = <the
    presented one>`` waits for the other transaction and then matches nothing); the other gets 401."""
    new_hash = hasher.hash(replacement) if replacement is not None else None
    result = db.execute(
        update(Client)
        .where(Client.id == row.id, Client.registration_token_hash == hasher.hash(presented))
        .values(registration_token_hash=new_hash)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        raise invalid_token("the registration access token is not valid for this client")
    set_committed_value(row, "registration_token_hash", new_hash)


def replace_client(db: Session, hasher: KeyedHasher, row: Client, presented: str, body: Body | Mapping[str, Any],
                   *, now: datetime, issuer: str, origin: Origin) -> Outcome:
    """RFC 7592, 2.2: replace the metadata with ``body``; a new registration access token replaces the one
    ``presented`` (rotated on every update, so that a token that leaked before works no longer)."""
    try:
        data = body.json() if isinstance(body, Body) else body
        if not isinstance(data, dict):
            raise ClientError("the body must be a JSON object of client metadata")
        if data.get("client_id") != row.client_id:
            raise ClientError("client_id must be present and be this client's id (RFC 7592, 2.2)")
        secret = data.get("client_secret")
        if secret is not None and not (isinstance(secret, str) and hasher.matches(secret, row.secret_hash)):
            raise ClientError("client_secret does not match: a client cannot choose its own secret")
        metadata = read_metadata(data, current=row)
        new = keep_admin_settings(metadata.new, row)
        with db.begin_nested():  # a refused update keeps the old token and metadata
            token = random_token(32)
            _swap_registration_token(db, hasher, row, presented, token)
            before, after = update_client(db, hasher, row, new)
    except (ClientError, RegistrationError) as exc:
        error = _metadata_error(exc) if isinstance(exc, ClientError) else exc
        audit.record(db, "client.management_refused", outcome="failure", origin=origin, actor="registration",
                     client_id=row.client_id, at=now, reason=error.error, description=error.description)
        raise error from exc
    if (row.extra_metadata or {}) != metadata.extra:
        before["extra_metadata"], after["extra_metadata"] = row.extra_metadata, metadata.extra
        row.extra_metadata = metadata.extra
    row.updated_at = now
    db.flush()
    audit.record(db, "client.registration_updated", origin=origin, actor="registration", client_id=row.client_id,
                 at=now, before=before, after=after)
    return Outcome(200, {**_information(row, issuer), "registration_access_token": token})


def delete_registered_client(db: Session, hasher: KeyedHasher, row: Client, presented: str, *, now: datetime,
                             origin: Origin) -> Outcome:
    """RFC 7592, 2.3: the client is gone with everything issued to it (``client_registry.delete_client``), and
    so is its registration access token."""
    _swap_registration_token(db, hasher, row, presented, None)
    client_id, name = row.client_id, row.name
    removed = delete_client(db, row)
    audit.record(db, "client.registration_deleted", origin=origin, actor="registration", client_id=client_id,
                 at=now, name=name, removed=removed)
    return Outcome(204, None)


# --- HTTP -------------------------------------------------------------------------------------------------------

NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}


def _answer(outcome: Outcome) -> Response:
    if outcome.body is None:
        return Response(status_code=outcome.status, headers=NO_STORE)
    return Response(json.dumps(outcome.body, separators=(",", ":")), status_code=outcome.status,
                    media_type="application/json", headers=NO_STORE)


def _refusal(error: RegistrationError) -> Response:
    headers = dict(NO_STORE)
    if error.challenge:
        headers["www-authenticate"] = error.challenge
    body = json.dumps({"error": error.error, "error_description": error.description})
    return Response(body, status_code=error.status, media_type="application/json", headers=headers)


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None when there is no such header at all."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512 or not _TOKEN_CHARS.fullmatch(token):
        # Another scheme or a malformed token is a wrong credential, not a missing one.
        raise invalid_token("the Authorization header must carry a Bearer token")
    return token


async def _body(request: Request) -> Body:
    """The body; one above ``[server] max_body_size`` is answered 413 by the security middleware."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return Body(content_type, await request.body())


async def register(request: Request) -> Response:
    """POST /register (RFC 7591, 3.1)."""
    ctx = context_of(request)
    services = ctx.services
    try:
        token = bearer_token(request)
    except RegistrationError as exc:
        return _refusal(exc)
    body = await _body(request)

    def work(scope: RequestScope) -> Response:
        db, now, origin = scope.db, scope.now, scope.origin
        try:
            grant = authenticate_initial_token(db, services.hasher, token, now=now, origin=origin)
            try:
                data = body.json()
            except RegistrationError as exc:
                raise refuse_registration(db, grant, exc, now=now, origin=origin) from exc
            return _answer(register_client(db, services.hasher, grant, data, now=now,
                                           issuer=services.settings.issuer, origin=origin))
        except RegistrationError as exc:
            return _refusal(exc)

    return await ctx.transaction(ctx.origin(request), work)


async def manage(request: Request) -> Response:
    """GET, PUT and DELETE /register/{client_id} (RFC 7592, 2)."""
    ctx = context_of(request)
    services = ctx.services
    client_id = request.path_params["client_id"]
    try:
        token = bearer_token(request)
        if token is None:
            raise invalid_token("the registration access token is required", missing=True)
    except RegistrationError as exc:
        return _refusal(exc)
    body = await _body(request) if request.method == "PUT" else None

    def work(scope: RequestScope) -> Response:
        db, now, origin = scope.db, scope.now, scope.origin
        try:
            row = authenticate_registration(db, services.hasher, client_id, token, now=now, origin=origin)
            if request.method == "GET":
                return _answer(read_client(row, token, services.settings.issuer))
            if body is None:
                return _answer(delete_registered_client(db, services.hasher, row, token, now=now, origin=origin))
            return _answer(replace_client(db, services.hasher, row, token, body, now=now,
                                          issuer=services.settings.issuer, origin=origin))
        except RegistrationError as exc:
            return _refusal(exc)

    return await ctx.transaction(ctx.origin(request), work)


routes = [
    Route(REGISTRATION_PATH, register, methods=["POST"]),
    Route(REGISTRATION_PATH + "/{client_id}", manage, methods=["GET", "PUT", "DELETE"]),
]

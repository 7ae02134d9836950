"""Client metadata of RFC 7591 section 2 (and OpenID Connect Dynamic Client Registration 1.0, 2), as a client
registering itself may send it: which fields it may write, which are reserved to administrators, and what an
RFC 7592 update may change of an existing client (never more than it had). Read into the ``NewClient`` that
``idp.oauth.clients.create_client`` / ``update_client`` check like every other way of making a client; and the
registered metadata as the client information response shows it (RFC 7591, 3.2.1).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import SplitResult, urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from idp.models import Client
from idp.oauth.clients import (
    SECRET_AUTH_METHODS,
    SUPPORTED_AUTH_METHODS,
    SUPPORTED_GRANT_TYPES,
    SUPPORTED_ID_TOKEN_ALGS,
    SUPPORTED_SCOPES,
    ClientError,
    NewClient,
)
from idp.texts import N_

SELF_SERVICE_GRANTS = ("authorization_code", "refresh_token")
"""Grant types a registration may ask for; ``client_credentials`` (access without a user) needs an admin."""
DEFAULT_ID_TOKEN_ALG = "RS256"
"""OpenID Connect Dynamic Client Registration 1.0, 2: the default of ``id_token_signed_response_alg``."""

ADMIN_ONLY_FIELDS = frozenset({
    "trusted", "skip_consent", "require_mfa", "mfa_methods", "allow_trusted_device", "theme",
    "access_token_lifetime", "refresh_token_lifetime", "status", "disabled", "disabled_at", "disabled_by",
    "enabled", "owners", "created_by", "review_comment", "reviewed_by",
})
"""Settings of ours that only an administrator changes (console or ``idp clients``): ``invalid_client_metadata``."""
SERVER_ASSIGNED_FIELDS = frozenset({
    "client_id", "client_secret", "client_id_issued_at", "client_secret_expires_at",
    "registration_access_token", "registration_client_uri",
})
"""Values the server assigns (RFC 7591, 3.2.1; RFC 7592, 2.2); PUT must repeat ``client_id`` and may repeat the
current ``client_secret``, nothing else of these."""
INFO_URI_FIELDS = ("client_uri", "policy_uri", "tos_uri")
INFO_TEXT_FIELDS = ("software_id", "software_version")
APPLICATION_TYPES = ("web", "native")
MAX_CONTACTS = 10
MAX_URIS = 20
MAX_URI_LENGTH = 2000
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclass
class Metadata:
    """A registration request read into what ``create_client`` / ``update_client`` take, and the informational
    RFC 7591 fields that are only stored and shown (``Client.extra_metadata``)."""

    new: NewClient
    extra: dict[str, Any]


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def _text(data: Mapping[str, Any], name: str, max_length: int = 255) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_length or _has_control(value):
        raise ClientError(N_("{name} must be a string of 1 to {max_length} printable characters", name=name,
                             max_length=max_length))
    return value


def _text_list(data: Mapping[str, Any], name: str, *, max_items: int = MAX_URIS,
               max_length: int = MAX_URI_LENGTH, error: str = "invalid_client_metadata") -> list[str] | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > max_items:
        raise ClientError(N_("{name} must be a list of at most {max_items} strings", name=name, max_items=max_items),
                          error)
    for item in value:
        if not isinstance(item, str) or not item or len(item) > max_length or _has_control(item):
            raise ClientError(N_("{name} must hold strings of 1 to {max_length} printable characters", name=name,
                                 max_length=max_length), error)
    return list(dict.fromkeys(value))


def _uri_list(data: Mapping[str, Any], name: str) -> list[str]:
    """Redirect URIs as strings that parse as URLs (``urlsplit`` raises ``ValueError`` on ``https://[::1``);
    the rules for them are ``idp.oauth.clients.validate_redirect_uri``'s."""
    uris = _text_list(data, name, error="invalid_redirect_uri") or []
    for uri in uris:
        _split(uri, name, "invalid_redirect_uri")
    return uris


def _split(uri: str, name: str, error: str = "invalid_client_metadata") -> SplitResult:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number or out of range
    except ValueError as exc:
        raise ClientError(N_("{name}: {uri} is not a URL", name=name, uri=repr(uri)), error) from exc
    return parts


def _internal_host(host: str) -> bool:
    host = host.rstrip(".")
    if not host or host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        try:
            # The legacy forms the resolver still accepts: 2130706433, 0x7f.1, 127.1 are all 127.0.0.1.
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return False  # a name: what it resolves to cannot be known here (docs/client-registration.md)
    return not address.is_global


def _public_https(data: Mapping[str, Any], name: str) -> str | None:
    """A URL the server or the user's browser will open: https on a public host, never a loopback, link-local
    (169.254.169.254) or private address (security-cases 27)."""
    value = _text(data, name, MAX_URI_LENGTH)
    if value is None:
        return None
    parts = _split(value, name)
    if (parts.scheme != "https" or not parts.hostname or "@" in parts.netloc or parts.fragment
            or any(ch.isspace() for ch in value)):
        raise ClientError(N_("{name} must be an absolute https URL without user information or fragment", name=name))
    if _internal_host(parts.hostname.lower()):
        raise ClientError(N_("{name} must not point at a loopback, link-local or private address", name=name))
    return value


def _jwks(data: Mapping[str, Any]) -> dict[str, Any] | None:
    value = data.get("jwks")
    if value is None:
        return None
    keys = value.get("keys") if isinstance(value, dict) else None
    if not isinstance(keys, list) or not keys or len(keys) > 20 or not all(isinstance(k, dict) for k in keys):
        raise ClientError(N_("jwks must be a JWK set: an object with a list of 1 to 20 keys"))
    for key in keys:
        if not isinstance(key.get("kty"), str) or key["kty"] not in {"RSA", "EC"}:
            raise ClientError(N_("jwks may hold only RSA and EC public keys"))
        if _PRIVATE_JWK_MEMBERS & set(key):
            raise ClientError(N_("jwks must hold public keys only: a private key was sent"))
    try:
        KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ClientError(N_("jwks holds a key that cannot be read")) from exc
    return {"keys": keys}


def _bool(data: Mapping[str, Any], name: str) -> bool | None:
    value = data.get(name)
    if value is not None and not isinstance(value, bool):
        raise ClientError(N_("{name} must be true or false", name=name))
    return value


def _reject_reserved(data: Mapping[str, Any], *, updating: bool) -> None:
    reserved = sorted(ADMIN_ONLY_FIELDS & set(data))
    if reserved:
        raise ClientError(N_("{fields} can only be set by an administrator", fields=", ".join(reserved)))
    assigned = SERVER_ASSIGNED_FIELDS - ({"client_id", "client_secret"} if updating else set())
    sent = sorted(assigned & set(data))
    if sent:
        raise ClientError(N_("{fields} is assigned by the server, not sent by the client", fields=", ".join(sent)))
    if data.get("software_statement") is not None:
        raise ClientError(N_("software statements are not accepted here"), "unapproved_software_statement")


def _unstorable(value: Any) -> bool:
    """A NUL (PostgreSQL stores none in text) or a lone surrogate (``"\\ud800"`` is valid JSON but no UTF-8)
    anywhere in the metadata: refused before it reaches the database or the audit log. Iterative, since a body
    may nest as deep as the JSON parser allows."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item or any("\ud800" <= ch <= "\udfff" for ch in item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def read_metadata(data: Mapping[str, Any], current: Client | None = None) -> Metadata:
    """Read a registration (``current`` None) or an RFC 7592 update of ``current``; raises ``ClientError`` with
    the RFC 7591 error code. An update replaces the metadata: omitted fields take their defaults (RFC 7592, 2.2),
    except ``scope``, which then stays as it was (a default could only widen it)."""
    if _unstorable(data):
        raise ClientError(N_("the metadata contains a NUL character or text that is not UTF-8"))
    _reject_reserved(data, updating=current is not None)
    name = _text(data, "client_name")
    if name is None:
        raise ClientError(N_("client_name is required: administrators must see which application this is"))

    method = _text(data, "token_endpoint_auth_method", 64) or "client_secret_basic"
    if method not in SUPPORTED_AUTH_METHODS:
        raise ClientError(N_("token_endpoint_auth_method must be one of {methods}",
                             methods=", ".join(SUPPORTED_AUTH_METHODS)))

    grant_types = _text_list(data, "grant_types", max_items=len(SUPPORTED_GRANT_TYPES) + 2, max_length=64)
    if grant_types is None:
        grant_types = ["authorization_code"]  # RFC 7591, 2
    unknown = [g for g in grant_types if g not in SUPPORTED_GRANT_TYPES]
    if unknown:
        raise ClientError(N_("unsupported grant type {grant}", grant=repr(unknown[0])))
    response_types = _text_list(data, "response_types", max_items=4, max_length=64)
    if response_types is not None and response_types != ["code"]:
        raise ClientError(N_("response_types must be [\"code\"] (the authorization code flow)"))

    scope = _text(data, "scope", 1000)
    if scope is not None and not all(s in SUPPORTED_SCOPES for s in scope.split()):
        raise ClientError(N_("scope may hold only {scopes}", scopes=" ".join(SUPPORTED_SCOPES)))

    alg = _text(data, "id_token_signed_response_alg", 16) or DEFAULT_ID_TOKEN_ALG
    if alg not in SUPPORTED_ID_TOKEN_ALGS:
        raise ClientError(N_("id_token_signed_response_alg must be one of {algs}",
                             algs=", ".join(SUPPORTED_ID_TOKEN_ALGS)))
    subject_type = _text(data, "subject_type", 16)
    if subject_type not in (None, "public"):
        raise ClientError(N_("subject_type must be public (pairwise identifiers are not offered)"))
    application_type = _text(data, "application_type", 16) or "web"
    if application_type not in APPLICATION_TYPES:
        raise ClientError(N_("application_type must be web or native"))

    new = NewClient(
        name=name,
        redirect_uris=_uri_list(data, "redirect_uris"),
        post_logout_redirect_uris=_uri_list(data, "post_logout_redirect_uris"),
        backchannel_logout_uri=_public_https(data, "backchannel_logout_uri"),
        public=method == "none",
        grant_types=grant_types,
        token_endpoint_auth_method=method,
        scope=scope if scope is not None else (current.scope if current else " ".join(SUPPORTED_SCOPES)),
        id_token_signed_response_alg=alg,
        jwks=_jwks(data),
        jwks_uri=_public_https(data, "jwks_uri"),
        logo_uri=_public_https(data, "logo_uri"),
    )
    if current is None:
        _check_registration(new)
    else:
        _check_update(new, current)
    return Metadata(new, _extra(data, application_type))


def _extra(data: Mapping[str, Any], application_type: str) -> dict[str, Any]:
    extra: dict[str, Any] = {"application_type": application_type}
    contacts = _text_list(data, "contacts", max_items=MAX_CONTACTS, max_length=254)
    if contacts is not None:
        if not all("@" in c and not any(ch.isspace() for ch in c) for c in contacts):
            raise ClientError(N_("contacts must be e-mail addresses"))
        extra["contacts"] = contacts
    for name in INFO_URI_FIELDS:
        uri = _public_https(data, name)
        if uri is not None:
            extra[name] = uri
    for name in INFO_TEXT_FIELDS:
        text = _text(data, name)
        if text is not None:
            extra[name] = text
    session_required = _bool(data, "backchannel_logout_session_required")
    if session_required is not None:
        extra["backchannel_logout_session_required"] = session_required
    return extra


def _check_registration(new: NewClient) -> None:
    widened = [g for g in new.grant_types if g not in SELF_SERVICE_GRANTS]
    if widened:
        raise ClientError(N_("grant type {grant} is granted by an administrator, not through registration",
                             grant=repr(widened[0])))
    if "authorization_code" not in new.grant_types:
        raise ClientError(N_("a registered client signs users in: grant_types must include authorization_code"))


def _check_update(new: NewClient, current: Client) -> None:
    """An update may keep or narrow what the client may do; it never widens it (RFC 7592 leaves this to us)."""
    method = new.token_endpoint_auth_method
    if current.is_public != (method == "none"):
        raise ClientError(N_("a client cannot change between public and confidential: register a new client"))
    if current.token_endpoint_auth_method == "private_key_jwt" and method in SECRET_AUTH_METHODS:
        raise ClientError(N_("a client that signs with its key cannot fall back to a client secret"))
    added = [g for g in new.grant_types if g not in current.grant_types]
    if added:
        raise ClientError(N_("grant type {grant} was not granted to this client; ask an administrator",
                             grant=repr(added[0])))
    had = set(current.scope.split())
    wider = [s for s in new.scope.split() if s not in had]
    if wider:
        raise ClientError(N_("scope {scope} was not granted to this client; ask an administrator",
                             scope=repr(wider[0])))
    if not new.grant_types:
        raise ClientError(N_("grant_types must not be empty"))


SELF_SERVICE_FIELDS = frozenset({
    "name", "redirect_uris", "post_logout_redirect_uris", "backchannel_logout_uri", "public", "grant_types",
    "token_endpoint_auth_method", "scope", "id_token_signed_response_alg", "jwks", "jwks_uri", "logo_uri",
})
"""The ``NewClient`` fields a registration writes; every other one is the administrator's and is kept."""


def keep_admin_settings(new: NewClient, row: Client) -> NewClient:
    """``new`` with every setting a registration cannot write (trusted, second factors, theme, lifetimes and
    whatever an administrator may set in the future) taken over from ``row`` unchanged."""
    for item in fields(NewClient):
        if item.name not in SELF_SERVICE_FIELDS and hasattr(row, item.name):
            setattr(new, item.name, getattr(row, item.name))
    return new


# --- the client information response (RFC 7591, 3.2.1; RFC 7592, 3) --------------------------------------------


def client_information(row: Client) -> dict[str, Any]:
    """The registered metadata as the client sees it; never a secret, and without the RFC 7592 fields (both
    added by the caller where they apply)."""
    body: dict[str, Any] = {
        "client_id": row.client_id,
        "client_id_issued_at": int(row.created_at.timestamp()),
        "client_name": row.name,
        "redirect_uris": list(row.redirect_uris),
        "grant_types": list(row.grant_types),
        "response_types": list(row.response_types),
        "token_endpoint_auth_method": row.token_endpoint_auth_method,
        "scope": row.scope,
        "id_token_signed_response_alg": row.id_token_signed_response_alg,
        "subject_type": "public",
    }
    if row.token_endpoint_auth_method in SECRET_AUTH_METHODS:
        expires = row.secret_expires_at
        body["client_secret_expires_at"] = int(expires.timestamp()) if expires else 0
    optional = {"post_logout_redirect_uris": list(row.post_logout_redirect_uris) or None,
                "backchannel_logout_uri": row.backchannel_logout_uri, "jwks": row.jwks, "jwks_uri": row.jwks_uri,
                "logo_uri": row.logo_uri}
    body.update({key: value for key, value in optional.items() if value is not None})
    body.update(row.extra_metadata or {})
    return body

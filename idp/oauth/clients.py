"""Clients as authlib sees them, and the registration rules every way of creating a client shares.

``OAuthClient`` wraps a ``Client`` row with the methods of authlib's ``ClientMixin``; the models stay free
of authlib. Redirect URIs are compared byte for byte (RFC 9700, 2.1), except that a public native client
registered with a loopback ``http`` URI may use any port (RFC 8252, 7.3).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.util import scope_to_list
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.config import MFA_METHODS
from idp.crypto import KeyedHasher, random_token
from idp.models import Client
from idp.texts import N_, Text, english

SUPPORTED_SCOPES = ("openid", "profile", "email", "groups", "offline_access")
SUPPORTED_GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")
SUPPORTED_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
SUPPORTED_ID_TOKEN_ALGS = ("ES256", "RS256")


class ClientError(ValueError):
    """Client metadata that cannot be registered; ``error`` is the RFC 7591 error code.

    ``text`` is the message marked with ``N_()``: the console shows it in the reader's language. ``str()`` is
    its English text, the ``error_description`` of ``/register`` (RFC 7591, 3.2.2) and what the CLI prints."""

    def __init__(self, message: Text, error: str = "invalid_client_metadata") -> None:
        super().__init__(english(message))
        self.text = message
        self.error = error


def _is_loopback_host(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_url(url: str) -> SplitResult | None:
    """``urlsplit``, or None for what it cannot read (``https://[::1``, a bracketed host that is no address)."""
    try:
        return urlsplit(url)
    except ValueError:
        return None


_UNREADABLE = SplitResult("", "", "", "", "")
"""Stands for a URL ``split_url`` could not read: no scheme, no host, so every check below refuses it."""


def validate_redirect_uri(uri: str, *, public: bool) -> None:
    """Registration rules: absolute, no fragment, no wildcard; https, loopback http, or (public) a custom scheme."""
    if not uri or len(uri) > 2000 or any(ch.isspace() for ch in uri):
        raise ClientError(N_("redirect URI {uri} is empty, too long or contains white space", uri=repr(uri)),
                          "invalid_redirect_uri")
    parts = split_url(uri) or _UNREADABLE
    if not parts.scheme:
        raise ClientError(N_("redirect URI {uri} is not absolute", uri=repr(uri)), "invalid_redirect_uri")
    if "#" in uri:
        raise ClientError(N_("redirect URI {uri} has a fragment", uri=repr(uri)), "invalid_redirect_uri")
    if "*" in uri:
        raise ClientError(N_("redirect URI {uri} has a wildcard", uri=repr(uri)), "invalid_redirect_uri")
    if "@" in parts.netloc:
        # user:password@host is credentials in a URL, or a way to make one host look like another.
        raise ClientError(N_("redirect URI {uri} must not contain user information", uri=repr(uri)),
                          "invalid_redirect_uri")
    scheme = parts.scheme.lower()
    if scheme in {"javascript", "data", "file", "vbscript"}:
        raise ClientError(N_("redirect URI {uri} uses a forbidden scheme", uri=repr(uri)), "invalid_redirect_uri")
    if scheme == "https":
        if not parts.hostname:
            raise ClientError(N_("redirect URI {uri} has no host", uri=repr(uri)), "invalid_redirect_uri")
        return
    if scheme == "http":
        if _is_loopback_host(parts.hostname):
            return
        raise ClientError(N_("redirect URI {uri} must use https (http only for 127.0.0.1 or [::1])", uri=repr(uri)),
                          "invalid_redirect_uri")
    if not public:
        raise ClientError(N_("redirect URI {uri}: custom schemes are only for public native clients", uri=repr(uri)),
                          "invalid_redirect_uri")
    if "." not in scheme:
        # RFC 8252 7.1: private-use schemes are reverse domain names, e.g. de.musterstadt.app
        raise ClientError(N_("redirect URI {uri}: a custom scheme must be a reverse domain name", uri=repr(uri)),
                          "invalid_redirect_uri")


_LOOPBACK_NETLOC = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[0-9.]+)(?::[0-9]{1,5})?")


def _valid_port(parts: SplitResult) -> bool:
    try:
        return parts.port is None or 0 < parts.port
    except ValueError:  # above 65535
        return False


def redirect_uri_matches(registered: list[str], requested: str, *, public: bool) -> bool:
    if requested in registered:
        return True
    if not public:
        return False
    # RFC 8252 7.3: loopback redirects of native apps may use any port; everything else must match exactly.
    req = split_url(requested) or _UNREADABLE
    if req.scheme != "http" or not _is_loopback_host(req.hostname):
        return False
    if not _LOOPBACK_NETLOC.fullmatch(req.netloc) or not _valid_port(req):
        # User info ("evil@127.0.0.1") or a port that is empty, not a number or out of range is more than
        # "another port".
        return False
    for uri in registered:
        reg = split_url(uri) or _UNREADABLE
        if reg.scheme == "http" and _is_loopback_host(reg.hostname) and reg.hostname == req.hostname:
            if (reg.path, reg.query, reg.fragment) == (req.path, req.query, req.fragment):
                return True
    return False


@dataclass
class NewClient:
    """What the registration of a client asks for; checked by ``create_client``."""

    name: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str] = field(default_factory=list)
    backchannel_logout_uri: str | None = None
    public: bool = False
    grant_types: list[str] = field(default_factory=lambda: ["authorization_code", "refresh_token"])
    token_endpoint_auth_method: str | None = None
    trusted: bool = False
    scope: str = " ".join(SUPPORTED_SCOPES)
    id_token_signed_response_alg: str = "ES256"
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    require_mfa: bool | None = None
    """True: every sign-in to this client needs a second factor; None (or False): the policy decides."""
    mfa_methods: list[str] | None = None
    """Second factors the client accepts (e.g. no ``sms`` for social-welfare data); None: any allowed one."""
    allow_trusted_device: bool | None = None
    """False: a trusted browser never replaces the second factor for this client; None: the policy decides."""
    theme: str | None = None
    """The theme of this client's sign-in pages (a folder under themes/); None: the configured one."""
    logo_uri: str | None = None
    """An https URL of the application's logo, shown on the sign-in page."""
    access_token_lifetime: int | None = None
    """Seconds; None: the configured ``[tokens] access_token_lifetime``."""
    refresh_token_lifetime: int | None = None
    """Seconds; None: the configured ``[tokens] refresh_token_lifetime``."""


def _check_mfa_methods(methods: list[str] | None) -> None:
    if methods is None:
        return
    unknown = [m for m in methods if m not in MFA_METHODS]
    if unknown or not methods:
        raise ClientError(N_("mfa_methods must be a non-empty list of {methods}", methods=", ".join(MFA_METHODS)))


def _check(new: NewClient) -> str:
    if not new.name.strip() or len(new.name) > 255:
        raise ClientError(N_("a client needs a name of at most 255 characters"))
    method = new.token_endpoint_auth_method or ("none" if new.public else "client_secret_basic")
    if method not in SUPPORTED_AUTH_METHODS:
        raise ClientError(N_("unsupported token_endpoint_auth_method {method}", method=repr(method)))
    if new.public != (method == "none"):
        raise ClientError(N_("public clients authenticate with 'none', confidential clients never do"))
    if method == "private_key_jwt" and not (new.jwks or new.jwks_uri):
        raise ClientError(N_("private_key_jwt needs jwks or jwks_uri"))
    if new.jwks and new.jwks_uri:
        raise ClientError(N_("jwks and jwks_uri must not both be given (RFC 7591, 2)"))
    if new.jwks is not None and not (isinstance(new.jwks, dict) and isinstance(new.jwks.get("keys"), list)
                                     and all(isinstance(key, dict) for key in new.jwks["keys"])):
        raise ClientError(N_("jwks must be a JWK set: an object with a list of keys"))
    if new.jwks_uri:
        keys_at = split_url(new.jwks_uri) or _UNREADABLE
        if keys_at.scheme not in {"https", "http"} or not keys_at.hostname or "@" in keys_at.netloc:
            raise ClientError(N_("jwks_uri must be an absolute https URL"))
        if keys_at.scheme == "http" and not _is_loopback_host(keys_at.hostname):
            # As for back-channel logout: plain http only to a service on this machine (RFC 7591 registration,
            # open to app owners, refuses loopback and private addresses altogether: idp.oauth.client_metadata).
            raise ClientError(N_("jwks_uri must use https (http only for loopback)"))
    for grant in new.grant_types:
        if grant not in SUPPORTED_GRANT_TYPES:
            raise ClientError(N_("unsupported grant type {grant}", grant=repr(grant)))
    if new.public and "client_credentials" in new.grant_types:
        raise ClientError(N_("a public client cannot use client_credentials"))
    if "authorization_code" in new.grant_types and not new.redirect_uris:
        raise ClientError(N_("the authorization_code grant needs at least one redirect URI"), "invalid_redirect_uri")
    for uri in new.redirect_uris:
        validate_redirect_uri(uri, public=new.public)
    for uri in new.post_logout_redirect_uris:
        validate_redirect_uri(uri, public=new.public)
    if new.backchannel_logout_uri:
        parts = split_url(new.backchannel_logout_uri) or _UNREADABLE
        if parts.scheme not in {"https", "http"} or not parts.hostname or parts.fragment:
            raise ClientError(N_("backchannel_logout_uri must be an absolute http(s) URL without fragment"))
        if parts.scheme == "http" and not _is_loopback_host(parts.hostname):
            raise ClientError(N_("backchannel_logout_uri must use https (http only for loopback)"))
    unknown = set(scope_to_list(new.scope) or []) - set(SUPPORTED_SCOPES)
    if unknown:
        raise ClientError(N_("unsupported scopes {scopes}", scopes=str(sorted(unknown))))
    if new.id_token_signed_response_alg not in SUPPORTED_ID_TOKEN_ALGS:
        raise ClientError(N_("id_token_signed_response_alg must be one of {algs}",
                             algs=", ".join(SUPPORTED_ID_TOKEN_ALGS)))
    _check_mfa_methods(new.mfa_methods)
    if new.logo_uri:
        logo = split_url(new.logo_uri) or _UNREADABLE
        if (logo.scheme != "https" or not logo.hostname or "@" in logo.netloc or len(new.logo_uri) > 2000
                or any(ch.isspace() for ch in new.logo_uri)):
            raise ClientError(N_("logo_uri must be an absolute https URL"))
    _check_lifetime("access_token_lifetime", new.access_token_lifetime, ACCESS_TOKEN_LIFETIME_RANGE)
    _check_lifetime("refresh_token_lifetime", new.refresh_token_lifetime, REFRESH_TOKEN_LIFETIME_RANGE)
    return method


ACCESS_TOKEN_LIFETIME_RANGE = (60, 24 * 3600)
"""Seconds a client's own access token lifetime may have: a minute to a day (a bearer token cannot be recalled)."""
REFRESH_TOKEN_LIFETIME_RANGE = (300, 366 * 24 * 3600)
"""Seconds a client's own refresh token lifetime may have: five minutes to a year."""


def _check_lifetime(name: str, value: int | None, bounds: tuple[int, int]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise ClientError(N_("{name} must be between {low} and {high} seconds",
                             name=name, low=bounds[0], high=bounds[1]))


def new_client_secret() -> str:
    return random_token(32)


def new_client_id() -> str:
    """A random client id that does not start with ``-`` or ``_``: one starting with ``-`` reads as an option on
    a command line (``idp clients update -x...`` fails)."""
    while True:
        value = random_token(18)
        if value[0].isalnum():
            return value


SECRET_AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post"})


def _metadata(new: NewClient) -> dict[str, Any]:
    """The registered metadata of ``new`` as column values, checked and normalized (never a secret)."""
    method = _check(new)
    return {
        "name": new.name.strip(),
        "token_endpoint_auth_method": method,
        "redirect_uris": list(new.redirect_uris),
        "post_logout_redirect_uris": list(new.post_logout_redirect_uris),
        "backchannel_logout_uri": new.backchannel_logout_uri or None,
        "grant_types": list(dict.fromkeys(new.grant_types)),
        "response_types": ["code"] if "authorization_code" in new.grant_types else [],
        "scope": " ".join(dict.fromkeys(scope_to_list(new.scope) or [])),
        "trusted": bool(new.trusted),
        "id_token_signed_response_alg": new.id_token_signed_response_alg,
        # Keys for private_key_jwt only: a client that leaves that method keeps no stale keys around.
        "jwks": new.jwks if method == "private_key_jwt" else None,
        "jwks_uri": (new.jwks_uri or None) if method == "private_key_jwt" else None,
        "require_mfa": True if new.require_mfa else None,
        "mfa_methods": list(dict.fromkeys(new.mfa_methods)) if new.mfa_methods is not None else None,
        "allow_trusted_device": False if new.allow_trusted_device is False else None,
        "theme": _check_theme(new.theme),
        "logo_uri": new.logo_uri or None,
        "access_token_lifetime": new.access_token_lifetime,
        "refresh_token_lifetime": new.refresh_token_lifetime,
    }


def create_client(db: Session, hasher: KeyedHasher, new: NewClient) -> tuple[Client, str | None]:
    """Register a client; returns the row and, for confidential clients, the secret (shown once)."""
    values = _metadata(new)
    secret = new_client_secret() if values["token_endpoint_auth_method"] in SECRET_AUTH_METHODS else None
    row = Client(client_id=new_client_id(), secret_hash=hasher.hash(secret) if secret else None, **values)
    db.add(row)
    db.flush()
    return row, secret


def update_client(db: Session, hasher: KeyedHasher, row: Client,
                  new: NewClient) -> tuple[dict[str, Any], dict[str, Any]]:
    """Replace a client's registered metadata with ``new`` (checked exactly like ``create_client``); returns
    (before, after) of the fields that changed, for the audit trail (never a secret).

    The secret follows the authentication method: a client that leaves ``client_secret_*`` loses its secret
    (and any previous one in a grace period); a client that comes to ``client_secret_*`` without a secret has
    none until ``rotate_secret`` gives it one (``needs_secret`` tells the caller), so no secret is made here
    that nobody would see. Owners, status and the registration access token are not metadata and stay."""
    values = _metadata(new)
    before, after = _apply(row, values)
    if values["token_endpoint_auth_method"] not in SECRET_AUTH_METHODS:
        row.secret_hash = None
        row.secret_expires_at = None
        row.previous_secret_hash = None
        row.previous_secret_expires_at = None
    db.flush()
    return before, after


def needs_secret(row: Client) -> bool:
    """A client that authenticates with a secret but has none (after ``update_client`` changed its method)."""
    return row.token_endpoint_auth_method in SECRET_AUTH_METHODS and row.secret_hash is None


POLICY_FIELDS = ("trusted", "require_mfa", "mfa_methods", "allow_trusted_device", "theme")
"""What ``update_policy`` changes: consent, second-factor and theme settings (never secrets or redirect URIs)."""
THEME_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def _check_theme(theme: str | None) -> str | None:
    """A theme's name as stored (whether the theme can be loaded is checked by the caller, with the themes)."""
    if theme is None or theme == "":
        return None
    if not THEME_NAME.fullmatch(theme):
        raise ClientError(N_("theme {theme} is not a theme name (lower-case letters, digits, - and _)",
                             theme=repr(theme)))
    return theme


def update_policy(row: Client, changes: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply ``changes`` to a client's consent and second-factor settings; returns (before, after) of the fields
    that changed. ``require_mfa`` False and ``allow_trusted_device`` True are stored as None ("the policy
    decides"), which is what they mean."""
    unknown = set(changes) - set(POLICY_FIELDS)
    if unknown:
        raise ClientError(N_("cannot update {fields}", fields=str(sorted(unknown))))
    normalized = dict(changes)
    if "require_mfa" in normalized:
        normalized["require_mfa"] = True if normalized["require_mfa"] else None
    if "allow_trusted_device" in normalized:
        normalized["allow_trusted_device"] = False if normalized["allow_trusted_device"] is False else None
    if "mfa_methods" in normalized:
        methods = normalized["mfa_methods"]
        _check_mfa_methods(methods)
        normalized["mfa_methods"] = list(dict.fromkeys(methods)) if methods is not None else None
    if "trusted" in normalized:
        normalized["trusted"] = bool(normalized["trusted"])
    if "theme" in normalized:
        normalized["theme"] = _check_theme(normalized["theme"])
    return _apply(row, normalized)


def _apply(row: Client, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set ``values`` on ``row``; returns (before, after) of the fields that changed, for the audit trail."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key, value in values.items():
        old = getattr(row, key)
        if old != value:
            before[key], after[key] = old, value
            setattr(row, key, value)
    return before, after


def find_client(db: Session, client_id: str) -> Client | None:
    if not client_id or len(client_id) > 64 or "\x00" in client_id:
        return None  # a NUL (e.g. from a Basic header) would fail in PostgreSQL as a 500; no client id has one
    for row in db.identity_map.values():
        # A sign-in step looks its client up several times in one transaction (authlib, the page, the audit
        # record); the row this transaction already read is the same row, without another round trip.
        if isinstance(row, Client) and row.client_id == client_id and row not in db.deleted:
            return row
    return db.scalar(select(Client).where(Client.client_id == client_id))


class OAuthClient(ClientMixin):  # type: ignore[misc]
    """authlib's view of a client row."""

    def __init__(self, row: Client, hasher: KeyedHasher, now: datetime) -> None:
        self.row = row
        self._hasher = hasher
        self._now = now

    @property
    def client_id(self) -> str:
        return self.row.client_id

    @property
    def id_token_signed_response_alg(self) -> str:
        return self.row.id_token_signed_response_alg

    @property
    def client_metadata(self) -> dict[str, Any]:
        return {
            "client_name": self.row.name,
            "redirect_uris": self.row.redirect_uris,
            "grant_types": self.row.grant_types,
            "response_types": self.row.response_types,
            "token_endpoint_auth_method": self.row.token_endpoint_auth_method,
            "scope": self.row.scope,
            "id_token_signed_response_alg": self.row.id_token_signed_response_alg,
        }

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.row.redirect_uris
        # OpenID Connect requires redirect_uri; plain OAuth may omit it only when exactly one is registered.
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        allowed = set(scope_to_list(self.row.scope) or [])
        return " ".join(s for s in dict.fromkeys(scope_to_list(scope) or []) if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri_matches(self.row.redirect_uris, redirect_uri, public=self.row.is_public)

    def check_client_secret(self, client_secret: str) -> bool:
        row = self.row
        if row.secret_expires_at is None or row.secret_expires_at > self._now:
            if self._hasher.matches(client_secret, row.secret_hash):
                return True
        # After a rotation with a grace period the old secret still works until the grace ends.
        return (row.previous_secret_hash is not None and row.previous_secret_expires_at is not None
                and row.previous_secret_expires_at > self._now
                and self._hasher.matches(client_secret, row.previous_secret_hash))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.row.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type in self.row.response_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.row.grant_types

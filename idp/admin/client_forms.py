"""The client form of the console: its fields read into a ``NewClient``, and a ``NewClient`` (or what was typed)
back into the values the form shows.

Every field is named once (``read_fields`` refuses repeated names), so check boxes of a group carry the value in
the name: ``grant_type_refresh_token``, ``scope_email``, ``mfa_method_totp``. Lists of URIs are text areas, one
URI a line. What cannot be read (a lifetime that is not a number, a JWK set that is not JSON) is a
``ClientError`` like every other registration rule, so the form shows it next to what was typed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from idp.config import MFA_METHODS
from idp.oauth.clients import SUPPORTED_GRANT_TYPES, SUPPORTED_ID_TOKEN_ALGS, SUPPORTED_SCOPES, ClientError, NewClient
from idp.web.i18n import N_

CONFIDENTIAL_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")
ADMIN_ONLY = ("trusted", "access_token_lifetime", "refresh_token_lifetime")
"""Fields only an administrator sets: skipping consent and longer-lived tokens widen what a client may do, so an
app owner's form keeps what is stored (or the defaults)."""
MAX_JWKS = 64 * 1024


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _seconds(fields: Mapping[str, str], name: str) -> int | None:
    text = fields.get(name, "").strip()
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise ClientError(N_("{name} must be a number of seconds", name=name))
    return int(text)


def _jwks(text: str) -> dict[str, Any] | None:
    if not text.strip():
        return None
    if len(text) > MAX_JWKS:
        raise ClientError(N_("the JWK set is longer than 64 KiB"))
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ClientError(N_("the JWK set is not valid JSON: {detail}", detail=str(exc))) from exc
    if not isinstance(value, dict):
        raise ClientError(N_("jwks must be a JWK set: an object with a list of keys"))
    return value


def read_client(fields: Mapping[str, str], *, admin: bool, stored: NewClient | None = None) -> NewClient:
    """The client a submitted form describes. Without ``admin`` the administrator-only fields come from
    ``stored`` (the client as it is), or their defaults for a new client."""
    public = fields.get("client_type") == "public"
    if fields.get("client_type") not in {"public", "confidential"}:
        raise ClientError(N_("choose whether the client is confidential or public"))
    method = "none"
    if not public:
        method = fields.get("token_endpoint_auth_method", "")
        if method not in CONFIDENTIAL_METHODS:
            raise ClientError(N_("choose the token endpoint authentication method: {methods}",
                                 methods=", ".join(CONFIDENTIAL_METHODS)))
    alg = fields.get("id_token_signed_response_alg", "ES256")
    methods = [m for m in MFA_METHODS if fields.get(f"mfa_method_{m}")]
    new = NewClient(
        name=fields.get("name", ""),
        redirect_uris=_lines(fields.get("redirect_uris", "")),
        post_logout_redirect_uris=_lines(fields.get("post_logout_redirect_uris", "")),
        backchannel_logout_uri=fields.get("backchannel_logout_uri", "").strip() or None,
        public=public,
        grant_types=[g for g in SUPPORTED_GRANT_TYPES if fields.get(f"grant_type_{g}")],
        token_endpoint_auth_method=method,
        scope=" ".join(s for s in SUPPORTED_SCOPES if fields.get(f"scope_{s}")),
        id_token_signed_response_alg=alg,
        jwks=_jwks(fields.get("jwks", "")) if method == "private_key_jwt" else None,
        jwks_uri=(fields.get("jwks_uri", "").strip() or None) if method == "private_key_jwt" else None,
        require_mfa=True if fields.get("require_mfa") else None,
        mfa_methods=methods or None,
        allow_trusted_device=False if fields.get("no_trusted_device") else None,
        theme=fields.get("theme", "").strip() or None,
        logo_uri=fields.get("logo_uri", "").strip() or None,
        trusted=bool(fields.get("trusted")),
        access_token_lifetime=_seconds(fields, "access_token_lifetime"),
        refresh_token_lifetime=_seconds(fields, "refresh_token_lifetime"),
    )
    if not admin:
        new.trusted = stored.trusted if stored else False
        new.access_token_lifetime = stored.access_token_lifetime if stored else None
        new.refresh_token_lifetime = stored.refresh_token_lifetime if stored else None
    return new


def values_of(new: NewClient) -> dict[str, Any]:
    """What the form shows for a client (or the defaults of a new one)."""
    return {
        "name": new.name, "logo_uri": new.logo_uri or "",
        "redirect_uris": "\n".join(new.redirect_uris),
        "post_logout_redirect_uris": "\n".join(new.post_logout_redirect_uris),
        "backchannel_logout_uri": new.backchannel_logout_uri or "",
        "client_type": "public" if new.public else "confidential",
        "token_endpoint_auth_method": new.token_endpoint_auth_method or "client_secret_basic",
        "grant_types": set(new.grant_types), "scopes": set((new.scope or "").split()),
        "jwks": json.dumps(new.jwks, indent=2) if new.jwks else "", "jwks_uri": new.jwks_uri or "",
        "id_token_signed_response_alg": new.id_token_signed_response_alg, "trusted": new.trusted,
        "require_mfa": bool(new.require_mfa), "mfa_methods": set(new.mfa_methods or []),
        "no_trusted_device": new.allow_trusted_device is False, "theme": new.theme or "",
        "access_token_lifetime": "" if new.access_token_lifetime is None else str(new.access_token_lifetime),
        "refresh_token_lifetime": "" if new.refresh_token_lifetime is None else str(new.refresh_token_lifetime),
    }


def values_typed(fields: Mapping[str, str]) -> dict[str, Any]:
    """What the form shows again after an error: what was typed, as it was typed."""
    text = {key: fields.get(key, "") for key in (
        "name", "logo_uri", "redirect_uris", "post_logout_redirect_uris", "backchannel_logout_uri", "jwks",
        "jwks_uri", "theme", "access_token_lifetime", "refresh_token_lifetime", "owners")}
    return {
        **text,
        "client_type": fields.get("client_type", "confidential"),
        "token_endpoint_auth_method": fields.get("token_endpoint_auth_method", "client_secret_basic"),
        "grant_types": {g for g in SUPPORTED_GRANT_TYPES if fields.get(f"grant_type_{g}")},
        "scopes": {s for s in SUPPORTED_SCOPES if fields.get(f"scope_{s}")},
        "id_token_signed_response_alg": fields.get("id_token_signed_response_alg", "ES256"),
        "trusted": bool(fields.get("trusted")), "require_mfa": bool(fields.get("require_mfa")),
        "mfa_methods": {m for m in MFA_METHODS if fields.get(f"mfa_method_{m}")},
        "no_trusted_device": bool(fields.get("no_trusted_device")),
    }


CHOICES: dict[str, tuple[str, ...]] = {
    "grant_types": SUPPORTED_GRANT_TYPES, "scopes": SUPPORTED_SCOPES, "mfa_methods": MFA_METHODS,
    "auth_methods": CONFIDENTIAL_METHODS, "id_token_algs": SUPPORTED_ID_TOKEN_ALGS,
}
"""The options the form offers (the template loops over them)."""

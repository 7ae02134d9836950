"""Provider metadata: OpenID Connect Discovery 1.0 and RFC 8414, serialised once per process.

The ``issuer`` comes from the settings, never from the request's ``Host`` header, so the document is the
same bytes for every request; it is validated with authlib's metadata classes when it is built.
"""

from __future__ import annotations

import json
from typing import Any

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata

from idp.config import Settings
from idp.factors.policy import ACR_MFA, ACR_PHR, ACR_SFA
from idp.oauth.client_auth import ASSERTION_ALGORITHMS
from idp.oauth.clients import SUPPORTED_GRANT_TYPES, SUPPORTED_ID_TOKEN_ALGS, SUPPORTED_SCOPES
from idp.oauth.grants import TOKEN_AUTH_METHODS

CLAIMS_SUPPORTED = [
    "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "at_hash",
    "name", "given_name", "family_name", "preferred_username", "locale", "updated_at",
    "email", "email_verified", "groups",
]


def provider_metadata(settings: Settings) -> dict[str, Any]:
    issuer = settings.issuer
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/jwks",
        "end_session_endpoint": f"{issuer}/logout",
        "introspection_endpoint": f"{issuer}/introspect",
        "revocation_endpoint": f"{issuer}/revoke",
        "registration_endpoint": f"{issuer}/register",
        "scopes_supported": list(SUPPORTED_SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(SUPPORTED_GRANT_TYPES),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(SUPPORTED_ID_TOKEN_ALGS),
        "token_endpoint_auth_methods_supported": list(TOKEN_AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "introspection_endpoint_auth_methods_supported": [m for m in TOKEN_AUTH_METHODS if m != "none"],
        "introspection_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": list(TOKEN_AUTH_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": CLAIMS_SUPPORTED,
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "require_request_uri_registration": False,
        "acr_values_supported": [ACR_SFA, ACR_MFA, ACR_PHR],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "ui_locales_supported": ["de", "en"],
        "claim_types_supported": ["normal"],
        "authorization_response_iss_parameter_supported": True,
        "frontchannel_logout_supported": False,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
    }


def discovery_document(settings: Settings) -> bytes:
    """The metadata, checked against both specs and serialised; served at both well-known paths."""
    metadata = provider_metadata(settings)
    OpenIDProviderMetadata(metadata).validate()
    AuthorizationServerMetadata(metadata).validate()
    return json.dumps(metadata, separators=(",", ":")).encode()

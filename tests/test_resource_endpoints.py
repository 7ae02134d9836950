"""Userinfo, introspection and revocation: what a bearer, a resource server or a client may learn or end.

Attack cases 23-25 of the security list: OpenID Connect Core 1.0 5.3, RFC 6750, RFC 9068, RFC 7662, RFC 7009.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import select, update
from starlette.testclient import TestClient

from idp.db import read_only, unit_of_work
from idp.models import AuditEvent, Client, Token, User
from idp.services import Services
from tests.conftest import ISSUER, FakeClock
from tests.helpers import Flow, RegisteredClient, add_client, add_user, authorize, decode, exchange


def _tokens(browser: TestClient, app: RegisteredClient, scope: str = "openid profile email groups") -> dict[str, Any]:
    flow = Flow(app, scope=scope)
    params = authorize(browser, flow)
    response = exchange(browser, flow, params["code"])
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


def _userinfo(browser: TestClient, token: str, scheme: str = "Bearer") -> Any:
    return browser.get("/userinfo", headers=_bearer(token, scheme))


def _introspect(browser: TestClient, app: RegisteredClient, token: str, **extra: str) -> Any:
    assert app.client_secret is not None
    return browser.post("/introspect", data={"token": token, **extra}, auth=(app.client_id, app.client_secret))


def _revoke(browser: TestClient, app: RegisteredClient, token: str, **extra: str) -> Any:
    assert app.client_secret is not None
    return browser.post("/revoke", data={"token": token, **extra}, auth=(app.client_id, app.client_secret))


def _assert_invalid_token(response: Any) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert response.json()["error"] == "invalid_token"
    assert response.headers["cache-control"] == "no-store"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return (json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))),
            json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _is_active(browser: TestClient, app: RegisteredClient, token: str) -> bool:
    response = _introspect(browser, app, token)
    assert response.status_code == 200, response.text
    return bool(response.json()["active"])


# --- userinfo ---------------------------------------------------------------------------------------------------


def test_userinfo_get_releases_claims_of_every_granted_scope(client: TestClient, services: Services) -> None:
    """GET /userinfo with a Bearer token returns the profile, email and groups claims (OIDC Core 5.3.2, 5.4)."""
    sub = add_user(services, given_name="Erika", family_name="Mustermann", groups=["Bauamt", "Archiv"])
    body = _tokens(client, add_client(services))
    response = _userinfo(client, body["access_token"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    claims = response.json()
    assert claims["sub"] == sub
    assert claims["name"] == "Erika Mustermann"
    assert claims["given_name"] == "Erika" and claims["family_name"] == "Mustermann"
    assert claims["preferred_username"] == "erika"
    assert isinstance(claims["updated_at"], int)
    assert claims["email"] == "erika@musterstadt.de" and claims["email_verified"] is False
    assert claims["groups"] == ["Archiv", "Bauamt"]


def test_userinfo_post_with_bearer_header(client: TestClient, services: Services) -> None:
    """POST /userinfo with the token in the Authorization header is served like GET (OIDC Core 5.3.1)."""
    sub = add_user(services)
    body = _tokens(client, add_client(services), scope="openid email")
    response = client.post("/userinfo", headers=_bearer(body["access_token"]))
    assert response.status_code == 200, response.text
    assert response.json() == {"sub": sub, "email": "erika@musterstadt.de", "email_verified": False}


def test_userinfo_releases_only_the_scopes_granted(client: TestClient, services: Services) -> None:
    """A token with scope `openid email` gets email claims but no profile or group claims (OIDC Core 5.4)."""
    add_user(services, groups=["Bauamt"])
    claims = _userinfo(client, _tokens(client, add_client(services), scope="openid email")["access_token"]).json()
    assert set(claims) == {"sub", "email", "email_verified"}


def test_userinfo_with_openid_only_returns_just_sub(client: TestClient, services: Services) -> None:
    """A token with scope `openid` alone yields only the subject identifier (OIDC Core 5.3.2)."""
    sub = add_user(services, groups=["Bauamt"])
    response = _userinfo(client, _tokens(client, add_client(services), scope="openid")["access_token"])
    assert response.status_code == 200, response.text
    assert response.json() == {"sub": sub}


def test_userinfo_profile_scope(client: TestClient, services: Services) -> None:
    """A token with `openid profile` gets name and preferred_username but neither email nor groups."""
    add_user(services, groups=["Bauamt"])
    claims = _userinfo(client, _tokens(client, add_client(services), scope="openid profile")["access_token"]).json()
    assert claims["name"] == "Erika Mustermann" and claims["preferred_username"] == "erika"
    assert "email" not in claims and "groups" not in claims


def test_userinfo_without_token_is_401_with_bearer_challenge(client: TestClient, services: Services) -> None:
    """A request without a token gets 401 and a `WWW-Authenticate: Bearer` challenge (RFC 6750 3)."""
    for response in (client.get("/userinfo"), client.post("/userinfo")):
        assert response.status_code == 401, response.text
        # RFC 6750 3.1: no error code in the challenge when no credentials were sent at all.
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["cache-control"] == "no-store"


def test_userinfo_accepts_lowercase_bearer_scheme(client: TestClient, services: Services) -> None:
    """The authentication scheme is case-insensitive, so `bearer` works too (RFC 9110 11.1; FAPI2 test)."""
    sub = add_user(services)
    token = _tokens(client, add_client(services))["access_token"]
    for scheme in ("bearer", "BEARER"):
        response = _userinfo(client, token, scheme)
        assert response.status_code == 200, response.text
        assert response.json()["sub"] == sub


def test_userinfo_refuses_other_schemes(client: TestClient, services: Services) -> None:
    """A token under a non-Bearer scheme (here Basic) is not accepted (RFC 6750 2.1)."""
    add_user(services)
    token = _tokens(client, add_client(services))["access_token"]
    response = _userinfo(client, token, "Basic")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_userinfo_refuses_expired_access_token(client: TestClient, services: Services, clock: FakeClock) -> None:
    """Past `exp` the access token is answered with 401 invalid_token (RFC 6750 3.1; RFC 9068 4)."""
    add_user(services)
    token = _tokens(client, add_client(services))["access_token"]
    lifetime = services.settings.tokens.access_token_lifetime.total_seconds()
    clock.advance(seconds=lifetime - 1)
    assert _userinfo(client, token).status_code == 200
    clock.advance(seconds=1)
    _assert_invalid_token(_userinfo(client, token))


def test_userinfo_refuses_token_of_a_revoked_grant(client: TestClient, services: Services) -> None:
    """After the client revoked its refresh token, the access token of that grant is 401 (RFC 7009 2.1)."""
    add_user(services)
    app = add_client(services)
    body = _tokens(client, app)
    assert _userinfo(client, body["access_token"]).status_code == 200
    assert _revoke(client, app, body["refresh_token"]).status_code == 200
    _assert_invalid_token(_userinfo(client, body["access_token"]))


def test_userinfo_refuses_id_token_as_bearer(client: TestClient, services: Services) -> None:
    """An ID token is not an access token: without `typ: at+jwt` it is refused (RFC 9068 4; ASVS 9.2.2)."""
    add_user(services)
    body = _tokens(client, add_client(services))
    _assert_invalid_token(_userinfo(client, body["id_token"]))


def test_userinfo_refuses_unsigned_token(client: TestClient, services: Services) -> None:
    """A copy of a real access token re-sent with `alg: none` and no signature is refused (RFC 8725 3.1)."""
    add_user(services)
    token = _tokens(client, add_client(services))["access_token"]
    header, claims = _segments(token)
    for alg in ("none", "None", "NONE"):
        forged = f"{_b64({**header, 'alg': alg})}.{_b64(claims)}."
        _assert_invalid_token(_userinfo(client, forged))


def test_userinfo_refuses_token_signed_by_a_foreign_key(client: TestClient, services: Services) -> None:
    """The same claims signed by an attacker's key under our `kid` are refused (RFC 8725 3.1; ASVS 9.1.3)."""
    add_user(services)
    token = _tokens(client, add_client(services))["access_token"]
    header, claims = _segments(token)
    ec_key = ECKey.generate_key("P-256")
    forged = jwt.encode(header, claims, ec_key, algorithms=["ES256"])
    _assert_invalid_token(_userinfo(client, forged))
    # The attacker's public key carried in the token header itself is not trusted either.
    with_jwk = jwt.encode({**header, "jwk": ec_key.as_dict(private=False)}, claims, ec_key, algorithms=["ES256"])
    _assert_invalid_token(_userinfo(client, with_jwk))
    rsa_key = RSAKey.generate_key(2048)
    forged_rs = jwt.encode({**header, "alg": "RS256"}, claims, rsa_key, algorithms=["RS256"])
    _assert_invalid_token(_userinfo(client, forged_rs))


def test_userinfo_refuses_hmac_signed_with_the_public_key(client: TestClient, services: Services) -> None:
    """HMAC keyed with our published public key (algorithm confusion) is refused (RFC 8725 2.1)."""
    add_user(services)
    token = _tokens(client, add_client(services))["access_token"]
    header, claims = _segments(token)
    public = next(k for k in client.get("/jwks").json()["keys"] if k["kid"] == header["kid"])
    signing_input = f"{_b64({**header, 'alg': 'HS256'})}.{_b64(claims)}"
    signature = hmac.new(json.dumps(public).encode(), signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    _assert_invalid_token(_userinfo(client, forged))


def test_userinfo_refuses_tampered_claims(client: TestClient, services: Services) -> None:
    """Changing the payload of a valid token (another `sub`) breaks the signature and is refused."""
    add_user(services)
    token = _tokens(client, add_client(services))["access_token"]
    _, claims = _segments(token)
    head, _, signature = token.split(".")
    forged = f"{head}.{_b64({**claims, 'scope': 'openid profile email groups offline_access'})}.{signature}"
    _assert_invalid_token(_userinfo(client, forged))
    _assert_invalid_token(_userinfo(client, "not-a-jwt"))
    _assert_invalid_token(_userinfo(client, "a.b.c"))


@pytest.mark.parametrize("where", ["query", "form"])
def test_userinfo_refuses_token_outside_the_header(client: TestClient, services: Services, where: str) -> None:
    """A token in the query string or the form body is refused with 400 (RFC 6750 2.2-2.3; RFC 9700 4.3.2)."""
    add_user(services)
    token = _tokens(client, add_client(services))["access_token"]
    if where == "query":
        response = client.get("/userinfo", params={"access_token": token})
    else:
        response = client.post("/userinfo", data={"access_token": token})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert response.headers["cache-control"] == "no-store"
    # Even next to a valid header the extra copy is refused, so no proxy log ever learns it was fine.
    response = client.get("/userinfo", params={"access_token": token}, headers=_bearer(token))
    assert response.status_code == 400


def test_userinfo_refuses_token_of_a_disabled_user(client: TestClient, services: Services) -> None:
    """A user disabled after the token was issued can no longer be read with it (ASVS 7.4.2)."""
    sub = add_user(services)
    token = _tokens(client, add_client(services))["access_token"]
    assert _userinfo(client, token).status_code == 200
    with unit_of_work(services.sessions) as db:
        db.execute(update(User).where(User.sub == sub).values(disabled_at=services.now()))
    _assert_invalid_token(_userinfo(client, token))


def test_userinfo_refuses_token_of_a_disabled_client(client: TestClient, services: Services) -> None:
    """Disabling the client ends what its tokens may read (attack case 56)."""
    add_user(services)
    app = add_client(services)
    token = _tokens(client, app)["access_token"]
    with unit_of_work(services.sessions) as db:
        db.execute(update(Client).where(Client.client_id == app.client_id).values(disabled_at=services.now()))
    _assert_invalid_token(_userinfo(client, token))


def test_userinfo_refuses_client_credentials_token(client: TestClient, services: Services) -> None:
    """A client_credentials token has no `openid` scope and no user: 403 insufficient_scope (OIDC Core 5.3)."""
    app = add_client(services, grant_types=["client_credentials"], redirect_uris=[], post_logout_redirect_uris=[])
    assert app.client_secret is not None
    response = client.post("/token", data={"grant_type": "client_credentials"},
                           auth=(app.client_id, app.client_secret))
    assert response.status_code == 200, response.text
    answer = _userinfo(client, response.json()["access_token"])
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"] == "insufficient_scope"
    # RFC 6750 3.1: the challenge names the error and the scope that would have been needed.
    assert answer.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="openid"'


# --- introspection ----------------------------------------------------------------------------------------------


def test_introspection_without_client_authentication_is_401(client: TestClient, services: Services) -> None:
    """Introspection needs client authentication: none, or a wrong secret, is 401 (RFC 7662 2.1, 2.3)."""
    add_user(services)
    app = add_client(services)
    token = _tokens(client, app)["access_token"]
    response = client.post("/introspect", data={"token": token})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert "active" not in response.json()
    response = client.post("/introspect", data={"token": token}, auth=(app.client_id, "wrong"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert response.headers["cache-control"] == "no-store"


def test_introspection_refuses_public_clients(client: TestClient, services: Services) -> None:
    """A public client cannot authenticate, so it cannot introspect even its own token (RFC 7662 2.1)."""
    add_user(services)
    native = add_client(services, public=True, name="App")
    flow = Flow(native)
    response = exchange(client, flow, authorize(client, flow)["code"])
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    answer = client.post("/introspect", data={"token": token, "client_id": native.client_id})
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "invalid_client"
    assert "active" not in answer.json()


def test_introspection_of_own_access_token(client: TestClient, services: Services) -> None:
    """The client's own access token is active, with the RFC 7662 2.2 members that describe it."""
    sub = add_user(services)
    app = add_client(services)
    body = _tokens(client, app)
    response = _introspect(client, app, body["access_token"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    info = response.json()
    access = decode(client, body["access_token"]).claims
    assert info["active"] is True
    assert info["sub"] == sub and info["client_id"] == app.client_id
    assert info["scope"] == "openid profile email groups"
    assert info["token_type"] == "Bearer"
    assert info["aud"] == app.client_id and info["iss"] == ISSUER
    assert info["jti"] == access["jti"]
    assert info["exp"] == access["exp"] and info["iat"] == access["iat"]
    assert info["username"] == "erika"
    # The hint is only a hint: the wrong one still finds the token (RFC 7662 2.1).
    assert _introspect(client, app, body["access_token"], token_type_hint="refresh_token").json()["active"] is True


def test_introspection_of_own_refresh_token(client: TestClient, services: Services) -> None:
    """The client's own refresh token is active and says it is one (RFC 7662 2.2)."""
    sub = add_user(services)
    app = add_client(services)
    body = _tokens(client, app)
    info = _introspect(client, app, body["refresh_token"], token_type_hint="refresh_token").json()
    assert info["active"] is True
    assert info["sub"] == sub and info["client_id"] == app.client_id and info["iss"] == ISSUER
    assert info["token_type"] == "refresh_token"
    assert info["exp"] > info["iat"]
    assert _introspect(client, app, body["refresh_token"]).json()["active"] is True


def test_introspection_after_expiry(client: TestClient, services: Services, clock: FakeClock) -> None:
    """An expired access token is reported `active: false` and nothing else (RFC 7662 2.2)."""
    add_user(services)
    app = add_client(services)
    body = _tokens(client, app)
    clock.advance(seconds=services.settings.tokens.access_token_lifetime.total_seconds() + 1)
    assert _introspect(client, app, body["access_token"]).json() == {"active": False}
    # The refresh token lives longer and is still active.
    assert _is_active(client, app, body["refresh_token"])
    clock.advance(seconds=services.settings.tokens.refresh_token_lifetime.total_seconds())
    assert _introspect(client, app, body["refresh_token"]).json() == {"active": False}


def test_introspection_after_revocation(client: TestClient, services: Services) -> None:
    """After revocation both tokens of the grant are `active: false` (RFC 7662 2.2; RFC 7009 2.1)."""
    add_user(services)
    app = add_client(services)
    body = _tokens(client, app)
    assert _revoke(client, app, body["refresh_token"]).status_code == 200
    assert _introspect(client, app, body["access_token"]).json() == {"active": False}
    assert _introspect(client, app, body["refresh_token"]).json() == {"active": False}


def test_introspection_of_another_clients_token(client: TestClient, services: Services) -> None:
    """Client B learns nothing about client A's tokens: `active: false` (RFC 7662 2.2; authentik CVE-2024-47077)."""
    add_user(services)
    first = add_client(services, name="A")
    second = add_client(services, name="B")
    body = _tokens(client, first)
    assert _introspect(client, second, body["access_token"]).json() == {"active": False}
    assert _introspect(client, second, body["refresh_token"]).json() == {"active": False}
    assert _is_active(client, first, body["access_token"])


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 9000, "eyJhbGciOiJub25lIn0.e30.", ""])
def test_introspection_of_garbage(client: TestClient, services: Services, token: str) -> None:
    """A token that does not exist here is `active: false`, never an error page (RFC 7662 2.2)."""
    app = add_client(services)
    response = _introspect(client, app, token)
    assert response.status_code == 200, response.text
    assert response.json() == {"active": False}


def test_introspection_without_token_parameter(client: TestClient, services: Services) -> None:
    """A request without `token` is invalid_request (RFC 7662 2.1)."""
    app = add_client(services)
    assert app.client_secret is not None
    response = client.post("/introspect", data={"token_type_hint": "access_token"},
                           auth=(app.client_id, app.client_secret))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_introspection_refuses_parameters_in_the_query(client: TestClient, services: Services) -> None:
    """The token must travel in the body, never in the URL that proxies log (RFC 7662 2.1)."""
    add_user(services)
    app = add_client(services)
    token = _tokens(client, app)["access_token"]
    assert app.client_secret is not None
    response = client.post("/introspect", params={"token": token}, auth=(app.client_id, app.client_secret))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# --- revocation -------------------------------------------------------------------------------------------------


def test_revocation_of_unknown_token_is_200(client: TestClient, services: Services) -> None:
    """Revoking a token the server does not know answers 200 all the same (RFC 7009 2.2)."""
    app = add_client(services)
    response = _revoke(client, app, "no-such-token")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"


def test_revoking_refresh_token_revokes_the_family(client: TestClient, services: Services) -> None:
    """Revoking a refresh token revokes the grant: its access token is inactive too (RFC 7009 2.1)."""
    add_user(services)
    app = add_client(services)
    body = _tokens(client, app)
    assert _revoke(client, app, body["refresh_token"], token_type_hint="refresh_token").status_code == 200
    assert not _is_active(client, app, body["access_token"])
    assert not _is_active(client, app, body["refresh_token"])
    assert app.client_secret is not None
    refresh = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
                          auth=(app.client_id, app.client_secret))
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
    with read_only(services.sessions) as db:
        reasons = set(db.scalars(select(Token.revoked_reason)))
    assert reasons == {"revoked_by_client"}


def test_revoking_access_token_leaves_the_rest_of_the_family(client: TestClient, services: Services) -> None:
    """Revoking an access token ends that token (and the refresh token issued with it, which RFC 7009 2.1
    allows), but not the newer tokens of the same grant."""
    add_user(services)
    app = add_client(services)
    first = _tokens(client, app)
    assert app.client_secret is not None
    refresh = client.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
                          auth=(app.client_id, app.client_secret))
    assert refresh.status_code == 200, refresh.text
    second = refresh.json()
    assert _revoke(client, app, first["access_token"], token_type_hint="access_token").status_code == 200
    assert not _is_active(client, app, first["access_token"])
    _assert_invalid_token(_userinfo(client, first["access_token"]))
    assert _is_active(client, app, second["access_token"])
    assert _is_active(client, app, second["refresh_token"])
    assert _userinfo(client, second["access_token"]).status_code == 200
    with read_only(services.sessions) as db:
        newest = db.scalar(select(Token).where(Token.jti == decode(client, second["access_token"]).claims["jti"]))
        assert newest is not None and newest.revoked_at is None


def test_revocation_by_another_client_has_no_effect(client: TestClient, services: Services) -> None:
    """Client B cannot revoke client A's tokens (RFC 7009 2.1; authentik CVE-2024-47077)."""
    add_user(services)
    first = add_client(services, name="A")
    second = add_client(services, name="B")
    body = _tokens(client, first)
    for token in (body["refresh_token"], body["access_token"]):
        # RFC 7009 2.1: the request is refused (authlib: invalid_grant), and nothing is revoked.
        response = _revoke(client, second, token)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_grant"
        assert response.headers["cache-control"] == "no-store"
    assert _is_active(client, first, body["access_token"])
    assert _is_active(client, first, body["refresh_token"])
    assert _userinfo(client, body["access_token"]).status_code == 200


def test_revocation_with_unsupported_token_type_hint(client: TestClient, services: Services) -> None:
    """A `token_type_hint` the server does not know is unsupported_token_type (RFC 7009 2.2.1)."""
    add_user(services)
    app = add_client(services)
    body = _tokens(client, app)
    response = _revoke(client, app, body["refresh_token"], token_type_hint="id_token")
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "unsupported_token_type"
    assert response.headers["cache-control"] == "no-store"
    assert _is_active(client, app, body["refresh_token"])


def test_revocation_without_client_authentication(client: TestClient, services: Services) -> None:
    """An unauthenticated caller cannot revoke a confidential client's token (RFC 7009 2.1)."""
    add_user(services)
    app = add_client(services)
    body = _tokens(client, app)
    response = client.post("/revoke", data={"token": body["refresh_token"], "client_id": app.client_id})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert _is_active(client, app, body["refresh_token"])


def test_public_client_revokes_its_own_token(client: TestClient, services: Services) -> None:
    """A public client identifies itself with client_id and may revoke its own refresh token (RFC 7009 5)."""
    add_user(services)
    native = add_client(services, public=True, name="App")
    flow = Flow(native)
    body = exchange(client, flow, authorize(client, flow)["code"]).json()
    response = client.post("/revoke", data={"token": body["refresh_token"], "client_id": native.client_id})
    assert response.status_code == 200, response.text
    _assert_invalid_token(_userinfo(client, body["access_token"]))


def test_revocation_is_audited(client: TestClient, services: Services) -> None:
    """A revocation leaves an audit event naming the client, never the token."""
    add_user(services)
    app = add_client(services)
    body = _tokens(client, app)
    _revoke(client, app, body["refresh_token"])
    with read_only(services.sessions) as db:
        events = db.scalars(select(AuditEvent).where(AuditEvent.event == "token.revoked")).all()
        assert [e.client_id for e in events] == [app.client_id]
        assert body["refresh_token"] not in json.dumps(events[0].details)

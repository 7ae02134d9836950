"""The valid state the fuzz tests start from: users, clients, tokens and signed-in browsers, made directly.

Sessions are opened in the database rather than through the sign-in pages, so that a property can open a new
one cheaply whenever an earlier example ended it (a fuzzed "sign out everywhere" with a valid CSRF token).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey
from starlette.testclient import TestClient

from idp.accounts.sessions import create_session
from idp.audit import Origin
from idp.db import unit_of_work
from idp.login.mfa import record_method, start_methods
from idp.models import SsoSession
from idp.services import Services
from idp.web import cookies, csrf
from tests.fuzz.hostile import NASTY, hostile_text
from tests.helpers import RegisteredClient, add_client, user_row

FUZZ_ORIGIN = Origin(ip="203.0.113.66", user_agent="hypothesis")
CLIENT_KEY = ECKey.generate_key("P-256", parameters={"use": "sig"}, auto_kid=True)
ATTACKER_KEY = ECKey.generate_key("P-256", auto_kid=True)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def open_session(services: Services, browser: TestClient, username: str, *, second_factor: bool) -> str:
    """Sign ``username`` in on ``browser`` (password, and the app's code with ``second_factor``), now; returns
    the session cookie."""
    with unit_of_work(services.sessions) as db:
        user = user_row(db, username)
        cookie, row = create_session(db, services.hasher, services.settings.session, user, amr=[], acr=None,
                                     now=services.now(), origin=FUZZ_ORIGIN)
        start_methods(row, ["password"], services.now())
        if second_factor:
            record_method(row, "totp", services.now())
    browser.cookies.set(cookies.cookie_name(services.settings, cookies.SESSION), cookie)
    return cookie


def session_alive(services: Services, cookie: str) -> bool:
    with unit_of_work(services.sessions) as db:
        row = db.query(SsoSession).filter(SsoSession.cookie_hash == services.hasher.hash(cookie)).one_or_none()
        return row is not None and row.ended_at is None and row.user.is_active


def session_token(services: Services, purpose: str, cookie: str) -> str:
    """The CSRF token of a session-bound form (``account``, ``admin``, ``logout``)."""
    return csrf.make_token(services.csrf_key, purpose, "session:" + services.hasher.hash(cookie))


@dataclass
class Clients:
    basic: RegisteredClient
    post: RegisteredClient
    public: RegisteredClient
    key_client_id: str


def add_clients(services: Services) -> Clients:
    """One client per token endpoint authentication method, each allowed every grant it may have."""
    grants = ["authorization_code", "refresh_token", "client_credentials"]
    basic = add_client(services, name="Basic", grant_types=grants, trusted=True)
    post = add_client(services, name="Post", grant_types=grants, token_endpoint_auth_method="client_secret_post")
    public = add_client(services, name="Public", public=True, redirect_uris=["http://127.0.0.1/cb"])
    key = add_client(services, name="Key", grant_types=grants, token_endpoint_auth_method="private_key_jwt",
                     jwks={"keys": [CLIENT_KEY.as_dict(private=False)]})
    return Clients(basic, post, public, key.client_id)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@st.composite
def client_assertion(draw: st.DrawFn, client_id: str, issuer: str, now: int) -> str:
    """A private_key_jwt assertion (RFC 7523 2.2), right or wrong in every claim and in how it is signed."""
    anything: st.SearchStrategy[Any] = st.one_of(hostile_text, st.integers(-(2**70), 2**70), st.none(),
                                                 st.lists(hostile_text, max_size=2), st.booleans())
    claims = {
        "iss": draw(st.one_of(st.just(client_id), anything)),
        "sub": draw(st.one_of(st.just(client_id), anything)),
        "aud": draw(st.one_of(st.sampled_from([f"{issuer}/token", issuer, [f"{issuer}/token", "x"]]), anything)),
        "exp": draw(st.one_of(st.sampled_from([now + 60, now - 3600, now + 10**6, 10**20]), anything)),
        "iat": draw(st.one_of(st.just(now), anything)),
        "jti": draw(st.one_of(st.uuids().map(str), anything)),
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    how = draw(st.sampled_from(["client", "attacker", "none", "hs256", "garbage", "embedded_jwk"]))
    if how == "garbage":
        return draw(st.sampled_from(NASTY))
    if how == "none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    if how == "hs256":
        # HMAC keyed with the client's public key: the classic algorithm confusion.
        key = OctKey.import_key(json.dumps(CLIENT_KEY.as_dict(private=False)).encode())
        return jwt.encode({"alg": "HS256"}, claims, key, algorithms=["HS256"])
    signer = CLIENT_KEY if how == "client" else ATTACKER_KEY
    header: dict[str, Any] = {"alg": "ES256", "kid": draw(st.one_of(st.just(signer.kid), hostile_text))}
    if how == "embedded_jwk":
        header["jwk"] = ATTACKER_KEY.as_dict(private=False)
        signer = ATTACKER_KEY
    return jwt.encode(header, claims, signer, algorithms=["ES256"])

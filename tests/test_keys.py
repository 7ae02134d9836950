"""Signing keys, the JWKS and provider metadata (RFC 7517, RFC 7638, OpenID Connect Discovery 1.0, RFC 8414).

Security case 12: the JWKS holds only public members with unique ``kid`` values and RSA keys of 3072 bits or
more; private keys are stored sealed under the key-encryption key; a rotated key stays published until
every token it signed has expired; the discovery document never takes its issuer from the request.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import select, update
from starlette.testclient import TestClient

from idp.crypto import Sealer
from idp.db import read_only, unit_of_work
from idp.models import SigningKey
from idp.oauth.keys import KeyStore, rotate_keys
from idp.services import Services, build_services
from tests.conftest import ISSUER, make_settings
from tests.helpers import Flow, RegisteredClient, add_client, add_user, authorize, decode, exchange

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwks(client: TestClient) -> list[dict[str, Any]]:
    response = client.get("/jwks")
    assert response.status_code == 200
    keys: list[dict[str, Any]] = response.json()["keys"]
    return keys


def tokens_for(client: TestClient, app: RegisteredClient) -> dict[str, Any]:
    flow = Flow(app)
    params = authorize(client, flow)
    response = exchange(client, flow, params["code"])
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def header_of(token: str) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(b64url_decode(token.split(".")[0]))
    return header


def rotate(services: Services) -> None:
    with unit_of_work(services.sessions) as db:
        rotate_keys(db, services.sealer, services.settings.keys.rsa_bits, services.now())
    services.keys.refresh(force=True)


def retire_at(services: Services, kids: set[str], when: datetime) -> None:
    """Pretend that the keys ``kids`` were retired at ``when`` (as seen by the services' clock)."""
    with unit_of_work(services.sessions) as db:
        db.execute(update(SigningKey).where(SigningKey.kid.in_(kids)).values(retired_at=when))
    services.keys.refresh(force=True)


def test_jwks_has_only_public_members(client: TestClient) -> None:
    """No key in the JWKS carries a private or symmetric member (security case 12)."""
    keys = jwks(client)
    assert keys
    for key in keys:
        assert not PRIVATE_MEMBERS & set(key), key
        assert key["use"] == "sig"
        assert key["kty"] in {"EC", "RSA"}


def test_jwks_kids_are_unique_thumbprints(client: TestClient, services: Services) -> None:
    """Every key has a ``kid``, unique in the set: its RFC 7638 thumbprint; rotation keeps them unique."""
    rotate(services)
    keys = jwks(client)
    kids = [key["kid"] for key in keys]
    assert all(kids) and len(kids) == len(set(kids))
    for key in keys:
        imported = ECKey.import_key(key) if key["kty"] == "EC" else RSAKey.import_key(key)
        assert imported.thumbprint() == key["kid"]


def test_jwks_offers_es256_and_rs256(client: TestClient) -> None:
    """The JWKS holds an ES256 key on P-256 and an RS256 key of at least 3072 bits (BSI TR-02102-1)."""
    keys = jwks(client)
    assert {key["alg"] for key in keys} >= {"ES256", "RS256"}
    for key in keys:
        if key["alg"] == "ES256":
            assert key["kty"] == "EC" and key["crv"] == "P-256"
        else:
            assert key["alg"] == "RS256" and key["kty"] == "RSA"
            assert len(b64url_decode(key["n"])) * 8 >= 3072
            assert RSAKey.import_key(key).raw_value.key_size >= 3072


def test_jwks_content_type_and_caching(client: TestClient) -> None:
    """The JWKS is served as ``application/jwk-set+json`` (RFC 7517 8.5.1) and may be cached briefly."""
    response = client.get("/jwks")
    assert response.headers["content-type"] == "application/jwk-set+json"
    assert "max-age" in response.headers["cache-control"]


def test_private_keys_stored_sealed(services: Services) -> None:
    """The database column holds neither the PEM nor the private scalar; only the right KEK opens it."""
    with read_only(services.sessions) as db:
        rows = list(db.scalars(select(SigningKey)))
        assert rows
        for row in rows:
            sealed = row.private_key_encrypted
            assert b"-----BEGIN" not in sealed and b"PRIVATE KEY" not in sealed
            pem = services.sealer.open(sealed, context=row.kid)
            assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
            key = ECKey.import_key(pem) if row.alg == "ES256" else RSAKey.import_key(pem)
            assert key.thumbprint() == row.kid
            private_d = str(key.as_dict(private=True)["d"])
            assert private_d.encode() not in sealed and b64url_decode(private_d) not in sealed
            # The PEM body (base64 of the DER) must not appear either.
            body = b"".join(pem.splitlines()[1:-1])
            assert body[:40] not in sealed
            with pytest.raises(InvalidTag):
                Sealer(os.urandom(32)).open(sealed, context=row.kid)
            with pytest.raises(InvalidTag):
                services.sealer.open(sealed, context="another-kid")


def test_wrong_key_encryption_key_cannot_load_keys(services: Services, tmp_path: Any) -> None:
    """A server started with another key-encryption key cannot decrypt the stored signing keys."""
    other = make_settings(tmp_path, services.settings.database_url,
                          IDP_KEYS_ENCRYPTION_KEY=base64.b64encode(os.urandom(32)).decode())
    stranger = build_services(other, engine=services.engine)
    with pytest.raises(InvalidTag):
        stranger.keys.refresh(force=True)
    with pytest.raises(InvalidTag):
        KeyStore(services.sessions, Sealer(os.urandom(32)), timedelta(minutes=15)).signing_key("ES256")


def test_rotation_signs_with_new_keys_and_keeps_old_ones_published(client: TestClient, services: Services) -> None:
    """After rotation new ID tokens carry new kids, and tokens signed before still verify (retention)."""
    add_user(services)
    es_client = add_client(services, trusted=True)
    rs_client = add_client(services, trusted=True, id_token_signed_response_alg="RS256")
    services.keys.refresh(force=True)
    before_es = tokens_for(client, es_client)
    before_rs = tokens_for(client, rs_client)
    old_es, old_rs = header_of(before_es["id_token"]), header_of(before_rs["id_token"])
    assert (old_es["alg"], old_rs["alg"]) == ("ES256", "RS256")
    old_kids = {old_es["kid"], old_rs["kid"], header_of(before_es["access_token"])["kid"]}

    rotate(services)
    after_es = tokens_for(client, es_client)
    after_rs = tokens_for(client, rs_client)
    new_es, new_rs = header_of(after_es["id_token"]), header_of(after_rs["id_token"])
    assert (new_es["alg"], new_rs["alg"]) == ("ES256", "RS256")
    assert new_es["kid"] != old_es["kid"] and new_rs["kid"] != old_rs["kid"]
    assert header_of(after_es["access_token"])["kid"] == new_es["kid"]

    published = {key["kid"] for key in jwks(client)}
    assert old_kids | {new_es["kid"], new_rs["kid"]} <= published
    for body in (before_es, before_rs, after_es, after_rs):
        assert decode(client, body["id_token"]).claims["iss"] == ISSUER
    userinfo = client.get("/userinfo", headers={"Authorization": f"Bearer {before_es['access_token']}"})
    assert userinfo.status_code == 200, userinfo.text

    # While a token signed just before the rotation can still be valid, its key stays published.
    longest = max(services.settings.tokens.access_token_lifetime, services.settings.tokens.id_token_lifetime)
    now = services.now()
    retire_at(services, old_kids, now - longest + timedelta(seconds=30))
    assert old_kids <= {key["kid"] for key in jwks(client)}
    assert decode(client, before_rs["id_token"]).claims["aud"] == rs_client.client_id

    # Once the retention has passed, the old keys are gone and their signatures no longer verify.
    retention: timedelta = services.keys._retention
    assert retention >= longest
    retire_at(services, old_kids, services.now() - retention - timedelta(seconds=1))
    published = {key["kid"] for key in jwks(client)}
    assert not old_kids & published
    assert {new_es["kid"], new_rs["kid"]} <= published
    with pytest.raises((JoseError, ValueError)):
        decode(client, before_es["id_token"])
    userinfo = client.get("/userinfo", headers={"Authorization": f"Bearer {before_es['access_token']}"})
    assert userinfo.status_code == 401
    assert decode(client, after_es["id_token"]).claims["aud"] == es_client.client_id


def test_rotation_retires_every_active_key(services: Services) -> None:
    """Rotation leaves exactly one active key per algorithm, the new one."""
    rotate(services)
    with read_only(services.sessions) as db:
        active = list(db.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))))
        assert sorted(row.alg for row in active) == ["ES256", "RS256"]
        assert {services.keys.signing_key("ES256").kid, services.keys.signing_key("RS256").kid} == \
            {row.kid for row in active}


DISCOVERY_PATHS = ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]


@pytest.mark.parametrize("path", DISCOVERY_PATHS)
@pytest.mark.parametrize("headers", [
    {},
    {"host": "evil.example"},
    {"host": "idp.test:8443"},
    {"x-forwarded-host": "evil.example", "x-forwarded-proto": "http"},
    {"forwarded": "host=evil.example;proto=http"},
])
def test_discovery_issuer_ignores_host_header(client: TestClient, path: str, headers: dict[str, str]) -> None:
    """The issuer and every endpoint come from the settings, whatever Host the request names (security case 12)."""
    response = client.get(path, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    metadata = response.json()
    assert metadata["issuer"] == ISSUER
    assert b'"issuer":"https://idp.test"' in response.content
    for name, value in metadata.items():
        if name.endswith(("_endpoint", "_uri")):
            assert value.startswith(ISSUER + "/"), name
    assert "evil.example" not in response.text


def test_both_discovery_documents_are_the_same(client: TestClient) -> None:
    """OpenID Connect Discovery and RFC 8414 metadata are served, with the same content."""
    first, second = (client.get(path) for path in DISCOVERY_PATHS)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content


def test_discovery_algorithms_and_pkce(client: TestClient) -> None:
    """No ``none`` or HMAC algorithm is offered; PKCE is S256 only; only the code flow (RFC 9700 2.1.1)."""
    metadata = client.get(DISCOVERY_PATHS[0]).json()
    assert metadata["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["response_types_supported"] == ["code"]
    for name, value in metadata.items():
        if name.endswith("_alg_values_supported"):
            assert "none" not in value and not any(alg.startswith("HS") for alg in value), name
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
    assert "password" not in metadata["grant_types_supported"]
    assert "implicit" not in metadata["grant_types_supported"]
    assert metadata["jwks_uri"] == f"{ISSUER}/jwks"
    assert metadata["authorization_response_iss_parameter_supported"] is True


def test_a_fresh_key_set_is_served_from_memory(services: Services) -> None:
    """Between refreshes the JWKS document comes from memory (the endpoint then answers without a worker thread);
    it is the same document ``jwks_bytes`` serves."""
    services.keys.refresh(force=True)
    fresh = services.keys.fresh_jwks_bytes()
    assert fresh is not None and fresh == services.keys.jwks_bytes()
    assert len(json.loads(fresh)["keys"]) >= 2

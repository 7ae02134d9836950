"""Client registration rules of ``idp.oauth.clients``: redirect URIs, their matching, and created clients.

RFC 9700 2.1 (exact redirect URI matching), RFC 8252 7.1/7.3 (native apps: reverse-domain schemes, loopback
with any port), RFC 7591 2 (client metadata).
"""

from __future__ import annotations

import re

import pytest
from joserfc.jwk import ECKey
from sqlalchemy import select

from idp.crypto import KeyedHasher
from idp.db import read_only, unit_of_work
from idp.models import Client
from idp.oauth.clients import (
    ClientError,
    NewClient,
    create_client,
    new_client_secret,
    redirect_uri_matches,
    validate_redirect_uri,
)
from idp.services import Services

HASHER = KeyedHasher(b"k" * 32)


@pytest.mark.parametrize("uri", [
    "https://app.example/cb",
    "https://app.example/cb?tenant=musterstadt",
    "https://app.example:8443/oidc/callback",
    "http://127.0.0.1/cb",
    "http://127.0.0.1:53111/cb",
    "http://[::1]:8080/cb",
])
@pytest.mark.parametrize("public", [False, True])
def test_redirect_uri_accepted(uri: str, public: bool) -> None:
    """https redirect URIs and http on a loopback address are accepted for every client."""
    assert validate_redirect_uri(uri, public=public) is None  # raises ClientError when refused


@pytest.mark.parametrize("uri", [
    "http://app.example/cb",
    "http://localhost/cb",
    "http://127.0.0.1.evil.example/cb",
    "http://10.0.0.1/cb",
    "https://app.example/cb#fragment",
    "https://app.example/cb#",
    "https://*.app.example/cb",
    "https://app.example/*",
    "/cb",
    "app.example/cb",
    "//app.example/cb",
    "",
    "https:///cb",
    "https://app.example/c b",
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "file:///etc/passwd",
    "vbscript:msgbox(1)",
    "https://app.example/" + "a" * 2000,
    "https://user:pass@app.example/cb",
    "https://app.example@evil.example/cb",
    "http://evil@127.0.0.1:8080/cb",
    "https://[::1/cb",  # urlsplit cannot read these: refused, never an exception
    "https://[app.example]/cb",
])
@pytest.mark.parametrize("public", [False, True])
def test_redirect_uri_refused(uri: str, public: bool) -> None:
    """Non-loopback http, fragments, wildcards, relative URIs and script schemes are refused (security case 26)."""
    with pytest.raises(ClientError) as info:
        validate_redirect_uri(uri, public=public)
    assert info.value.error == "invalid_redirect_uri"


def test_custom_scheme_only_for_public_clients() -> None:
    """A reverse-domain private-use scheme is for public native apps only (RFC 8252 7.1)."""
    validate_redirect_uri("de.musterstadt.app:/oauth2redirect", public=True)
    validate_redirect_uri("de.musterstadt.app://callback", public=True)
    with pytest.raises(ClientError) as info:
        validate_redirect_uri("de.musterstadt.app:/oauth2redirect", public=False)
    assert info.value.error == "invalid_redirect_uri"


@pytest.mark.parametrize("uri", ["myapp://callback", "myapp:/cb", "musterstadt:/cb"])
def test_custom_scheme_must_be_reverse_domain(uri: str) -> None:
    """A custom scheme without a dot is not a reverse domain name and is refused even for public clients."""
    with pytest.raises(ClientError) as info:
        validate_redirect_uri(uri, public=True)
    assert info.value.error == "invalid_redirect_uri"


@pytest.mark.parametrize("requested", [
    "https://app.example/cb?foo=bar",
    "https://app.example/cb/",
    "HTTPS://APP.EXAMPLE/cb",
    "https://APP.example/cb",
    "https://app.example/cb/../cb",
    "https://app.example/%63b",
    "https://app.example:443/cb",
    "http://app.example/cb",
    "https://app.example/cb#frag",
    "https://app.example/CB",
    "https://app.example/cb ",
    "",
])
@pytest.mark.parametrize("public", [False, True])
def test_near_misses_do_not_match(requested: str, public: bool) -> None:
    """Redirect URIs are compared byte for byte; near misses never match (security case 2, RFC 9700 2.1)."""
    assert not redirect_uri_matches(["https://app.example/cb"], requested, public=public)


@pytest.mark.parametrize("public", [False, True])
def test_exact_match(public: bool) -> None:
    """A registered URI, including one with a query, matches exactly as registered."""
    registered = ["https://app.example/cb", "https://app.example/cb?tenant=a"]
    assert redirect_uri_matches(registered, "https://app.example/cb", public=public)
    assert redirect_uri_matches(registered, "https://app.example/cb?tenant=a", public=public)
    assert not redirect_uri_matches(registered, "https://app.example/cb?tenant=b", public=public)


def test_loopback_any_port_for_public_clients() -> None:
    """A public native client registered with a loopback URI may use any port (RFC 8252 7.3)."""
    registered = ["http://127.0.0.1/cb", "http://[::1]:80/native"]
    assert redirect_uri_matches(registered, "http://127.0.0.1:53111/cb", public=True)
    assert redirect_uri_matches(registered, "http://127.0.0.1/cb", public=True)
    assert redirect_uri_matches(registered, "http://[::1]:61000/native", public=True)


@pytest.mark.parametrize("requested", [
    "http://localhost:53111/cb",
    "http://127.0.0.1.evil.example:53111/cb",
    "http://127.0.0.1:53111/other",
    "http://127.0.0.1:53111/cb?x=1",
    "http://127.0.0.1:53111/cb/",
    "https://127.0.0.1:53111/cb",
    "http://127.0.0.2:53111/cb",
    "http://[::1]:53111/cb",
    "http://[::1:53111/cb",  # unreadable for urlsplit: no match, no exception
    "http://[127.0.0.1]:53111/cb",
])
def test_loopback_port_rule_keeps_everything_else_exact(requested: str) -> None:
    """Only the port may vary: another host, path, query or scheme is refused (security case 3)."""
    assert not redirect_uri_matches(["http://127.0.0.1/cb"], requested, public=True)


def test_no_port_relaxation_for_confidential_clients() -> None:
    """A confidential client registered with a loopback URI must match it exactly (Keycloak CVE-2024-8883)."""
    assert redirect_uri_matches(["http://127.0.0.1:8080/cb"], "http://127.0.0.1:8080/cb", public=False)
    assert not redirect_uri_matches(["http://127.0.0.1:8080/cb"], "http://127.0.0.1:9090/cb", public=False)
    assert not redirect_uri_matches(["http://127.0.0.1/cb"], "http://127.0.0.1:53111/cb", public=False)


def test_confidential_client_secret_returned_once_and_only_hmac_stored(services: Services) -> None:
    """The secret (256 bits, at least 43 URL-safe characters) is returned once; the database holds its HMAC."""
    with unit_of_work(services.sessions) as db:
        row, secret = create_client(db, services.hasher, NewClient(name="Fachverfahren",
                                                                   redirect_uris=["https://app.example/cb"]))
        client_id = row.client_id
    assert secret is not None and len(secret) >= 43
    assert re.fullmatch(r"[A-Za-z0-9_-]+", secret)
    with read_only(services.sessions) as db:
        stored = db.scalar(select(Client).where(Client.client_id == client_id))
        assert stored is not None
        assert stored.secret_hash == services.hasher.hash(secret)
        assert secret not in stored.secret_hash
        assert stored.token_endpoint_auth_method == "client_secret_basic"
        assert not stored.is_public
        assert len(client_id) >= 22


def test_secrets_are_unique() -> None:
    """Every client secret is fresh randomness of at least 256 bits."""
    secrets_seen = {new_client_secret() for _ in range(200)}
    assert len(secrets_seen) == 200
    assert all(len(s) >= 43 for s in secrets_seen)


def test_public_client_has_no_secret(services: Services) -> None:
    """A public client authenticates with ``none`` and gets no secret."""
    with unit_of_work(services.sessions) as db:
        row, secret = create_client(db, services.hasher, NewClient(name="App", public=True,
                                                                   redirect_uris=["de.musterstadt.app:/cb"]))
        assert secret is None
        assert row.secret_hash is None
        assert row.token_endpoint_auth_method == "none" and row.is_public


def test_private_key_jwt_client_has_no_secret(services: Services) -> None:
    """A private_key_jwt client is registered with its keys and gets no secret."""
    jwks = {"keys": [ECKey.generate_key("P-256").as_dict(private=False)]}
    with unit_of_work(services.sessions) as db:
        row, secret = create_client(db, services.hasher, NewClient(
            name="Dienst", redirect_uris=["https://app.example/cb"], token_endpoint_auth_method="private_key_jwt",
            jwks=jwks))
        assert secret is None and row.secret_hash is None
        assert row.jwks == jwks


@pytest.mark.parametrize("new", [
    NewClient(name="Dienst", redirect_uris=["https://app.example/cb"], token_endpoint_auth_method="private_key_jwt"),
    NewClient(name="Dienst", redirect_uris=[], grant_types=["client_credentials"],
              token_endpoint_auth_method="private_key_jwt"),
])
def test_private_key_jwt_requires_keys(services: Services, new: NewClient) -> None:
    """private_key_jwt needs ``jwks`` or ``jwks_uri``: otherwise the client could never authenticate."""
    with unit_of_work(services.sessions) as db, pytest.raises(ClientError, match="jwks"):
        create_client(db, services.hasher, new)


@pytest.mark.parametrize("new", [
    NewClient(name="App", public=True, redirect_uris=["http://127.0.0.1/cb"], grant_types=["client_credentials"]),
    NewClient(name="App", public=True, redirect_uris=["http://127.0.0.1/cb"],
              grant_types=["authorization_code", "client_credentials"]),
])
def test_client_credentials_refused_for_public_clients(services: Services, new: NewClient) -> None:
    """A public client cannot use client_credentials: it has no credentials (security case 19)."""
    with unit_of_work(services.sessions) as db, pytest.raises(ClientError, match="client_credentials"):
        create_client(db, services.hasher, new)


@pytest.mark.parametrize(("new", "error"), [
    (NewClient(name="", redirect_uris=["https://app.example/cb"]), "invalid_client_metadata"),
    (NewClient(name="x" * 256, redirect_uris=["https://app.example/cb"]), "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], token_endpoint_auth_method="none"),
     "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], public=True,
               token_endpoint_auth_method="client_secret_basic"), "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], token_endpoint_auth_method="client_secret_jwt"),
     "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], grant_types=["password"]),
     "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], grant_types=["implicit"]),
     "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=[]), "invalid_redirect_uri"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb#x"]), "invalid_redirect_uri"),
    (NewClient(name="App", redirect_uris=["de.musterstadt.app:/cb"]), "invalid_redirect_uri"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"],
               post_logout_redirect_uris=["http://app.example/out"]), "invalid_redirect_uri"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], backchannel_logout_uri="http://app.example/bc"),
     "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], backchannel_logout_uri="ftp://app.example/bc"),
     "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], scope="openid admin"),
     "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], id_token_signed_response_alg="none"),
     "invalid_client_metadata"),
    (NewClient(name="App", redirect_uris=["https://app.example/cb"], id_token_signed_response_alg="HS256"),
     "invalid_client_metadata"),
])
def test_invalid_metadata_refused(services: Services, new: NewClient, error: str) -> None:
    """Metadata a client may not have is refused with the RFC 7591 error code, and nothing is stored."""
    with unit_of_work(services.sessions) as db, pytest.raises(ClientError) as info:
        create_client(db, services.hasher, new)
    assert info.value.error == error
    with read_only(services.sessions) as db:
        assert db.scalar(select(Client.id).limit(1)) is None


def test_client_credentials_client_needs_no_redirect_uri(services: Services) -> None:
    """A machine client using only client_credentials has no redirect URIs and no response types."""
    with unit_of_work(services.sessions) as db:
        row, secret = create_client(db, services.hasher, NewClient(name="Batch", redirect_uris=[],
                                                                   grant_types=["client_credentials"]))
        assert secret and row.response_types == [] and row.grant_types == ["client_credentials"]


def test_keyed_hash_depends_on_the_server_key() -> None:
    """The stored HMAC is useless without the server key: another key gives another digest."""
    assert HASHER.hash("s3cret") != KeyedHasher(b"j" * 32).hash("s3cret")
    assert HASHER.matches("s3cret", HASHER.hash("s3cret"))
    assert not HASHER.matches("s3cret", None)
    assert not HASHER.matches("S3cret", HASHER.hash("s3cret"))

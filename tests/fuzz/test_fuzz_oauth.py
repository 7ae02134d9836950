"""Property-based tests of the protocol endpoints with malformed and hostile input (issue 7, Tests).

For every input: no 500 and no stack trace, the security headers on every answer; the API endpoints answer
an RFC 6749 5.2 error JSON (400, or 401 with ``WWW-Authenticate``), userinfo RFC 6750 3 (``WWW-Authenticate:
Bearer``); browsers get an HTML error page and are never redirected to an address the client did not
register; a refused token request writes no token and no code.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from starlette.routing import Match, Route
from starlette.testclient import TestClient

from idp.db import unit_of_work
from idp.models import AuthorizationCode, Token
from idp.oauth import registration
from idp.services import Services
from tests.conftest import ISSUER, FakeClock
from tests.fuzz.hostile import (
    AUTH_HEADERS,
    BROWSER,
    NASTY,
    Hostile,
    assert_html_error,
    assert_oauth_error,
    assert_safe,
    hostile_params,
    hostile_text,
    mutated,
    raw_body,
    raw_query,
    snapshot,
)
from tests.fuzz.world import ASSERTION_TYPE, Clients, add_clients, client_assertion, open_session
from tests.helpers import Flow, add_user, authorize, exchange

FUZZ = settings.get_profile("idp-fuzz")

AUTHORIZE_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge",
                    "code_challenge_method", "prompt", "max_age", "ui_locales", "acr_values", "login_hint",
                    "id_token_hint", "claims", "request", "request_uri", "response_mode", "display")
TOKEN_PARAMS = ("grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "scope", "client_id",
                "client_secret", "client_assertion", "client_assertion_type", "resource", "audience")
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials", "password", "implicit",
               "urn:ietf:params:oauth:grant-type:jwt-bearer", "urn:ietf:params:oauth:grant-type:device_code",
               "AUTHORIZATION_CODE", "client_credentials ", "")


def basic(client_id: str, secret: str) -> bytes:
    """RFC 6749 2.3.1: both parts form-encoded, then base64."""
    return b"Basic " + base64.b64encode(f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode())


def rows(services: Services) -> tuple[set[int], set[str]]:
    """The token rows and authorization codes there are."""
    with unit_of_work(services.sessions) as db:
        return set(db.scalars(select(Token.id))), set(map(str, db.scalars(select(AuthorizationCode.id))))


class World:
    """A user, one client per authentication method, and a live code, refresh token and access token."""

    def __init__(self, services: Services, client: TestClient) -> None:
        add_user(services)
        self.clients: Clients = add_clients(services)
        flow = Flow(self.clients.basic)
        params = authorize(client, flow)
        tokens = exchange(client, flow, params["code"]).json()
        self.refresh_token: str = tokens["refresh_token"]
        self.access_token: str = tokens["access_token"]
        self.id_token: str = tokens["id_token"]
        self.flow = Flow(self.clients.basic)
        self.code = authorize(client, self.flow)["code"]


# --- the authorization endpoint ----------------------------------------------------------------------------------


def _check_authorize(response: Any, request: Hostile, registered: set[str]) -> None:
    assert_safe(response, request)
    if response.status_code in (302, 303, 307):
        location = response.headers["location"]
        if not location.startswith("/"):
            # Only ever to a redirect URI the client registered, byte for byte up to the query (RFC 6749 4.1.2.1).
            target = location.split("?", 1)[0]
            assert target in registered, f"redirected to {location}\n{request!r}"
            parts = urlsplit(location)
            query = parse_qs(parts.query)
            assert not parts.fragment and not {"access_token", "id_token", "token"} & set(query), location
            assert ("code" in query) != ("error" in query), location
            assert query.get("iss") == [ISSUER], location
        else:
            assert location.startswith(("/login/", "/consent/", "/authorize/resume/")), location
    elif response.status_code != 200:
        assert_html_error(response, request)


def test_authorize_withstands_hostile_parameters_signed_out(client: TestClient, services: Services) -> None:
    """GET and POST /authorize with near-valid and hostile parameters, signed out: an error page or a redirect
    to the registered URI only, never a 500 or a trace; no code is issued without a session."""
    world = World(services, TestClient(client.app, base_url=ISSUER, follow_redirects=False))
    registered = {world.clients.basic.redirect_uri, world.clients.public.redirect_uri}
    base = Flow(world.clients.basic).params()

    @FUZZ
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        params = list(base.items())
        for name, value in data.draw(hostile_params(AUTHORIZE_PARAMS, max_size=4)):
            if data.draw(st.booleans()):
                params = [(k, v) for k, v in params if k != name]
            params.append((name, value))
        params = data.draw(st.permutations(params))
        method = data.draw(st.sampled_from(["GET", "POST"]))
        if data.draw(st.integers(0, 4)) == 0:
            query, (body, ctype) = data.draw(raw_query(AUTHORIZE_PARAMS)), data.draw(raw_body(AUTHORIZE_PARAMS))
        else:
            query, body, ctype = urlencode(params), b"", None
            if method == "POST" and data.draw(st.booleans()):
                query, body, ctype = "", urlencode(params).encode(), "application/x-www-form-urlencoded"
        request = Hostile(method, "/authorize", query=query, body=body, content_type=ctype, headers=dict(BROWSER))
        before = rows(services)
        response = request.send(client)
        _check_authorize(response, request, registered)
        assert rows(services) == before, request

    prop()


def test_authorize_withstands_hostile_parameters_signed_in(client: TestClient, services: Services,
                                                           clock: FakeClock) -> None:
    """The same with a signed-in session for a client that asks no consent (trusted), so that hostile parameters
    reach the code issuance: a code only for a valid request, to the registered URI."""
    world = World(services, client)  # signs erika in on this browser
    registered = {world.clients.basic.redirect_uri, world.clients.public.redirect_uri}

    @FUZZ
    @given(changes=hostile_params(AUTHORIZE_PARAMS, max_size=3), method=st.sampled_from(["GET", "POST"]))
    def prop(changes: list[tuple[str, str]], method: str) -> None:
        params = Flow(world.clients.basic).params()
        for name, value in changes:
            params[name] = value
        query = urlencode(params)
        request = (Hostile(method, "/authorize", query=query, headers=dict(BROWSER)) if method == "GET" else
                   Hostile(method, "/authorize", body=query.encode(), content_type="application/x-www-form-urlencoded",
                           headers=dict(BROWSER)))
        response = request.send(client)
        _check_authorize(response, request, registered)

    prop()


# --- the token endpoint ------------------------------------------------------------------------------------------


@st.composite
def token_request(draw: st.DrawFn, world: World, now: int) -> Hostile:
    """A token request for any grant type, authenticated in any way (or several at once, or broken): a valid
    request with a few hostile changes, or at times a body that is no form at all."""
    c = world.clients
    grant = draw(st.sampled_from(["authorization_code", "refresh_token", "client_credentials", "other"]))
    fields: list[tuple[str, str]] = [("grant_type", grant if grant != "other" else draw(st.sampled_from(GRANT_TYPES)))]
    if grant == "authorization_code":
        fields += [("code", world.code), ("redirect_uri", c.basic.redirect_uri), ("code_verifier", world.flow.verifier)]
    elif grant == "refresh_token":
        fields.append(("refresh_token", world.refresh_token))
    elif grant == "client_credentials":
        fields.append(("scope", draw(st.sampled_from(["", "openid", "profile groups", "offline_access"]))))
    headers: dict[str, bytes] = {}
    auth = draw(st.sampled_from(["basic", "basic", "basic_wrong", "header", "post", "post_wrong", "jwt", "jwt",
                                 "none", "both"]))
    if auth in ("basic", "both"):
        headers["authorization"] = basic(c.basic.client_id, c.basic.client_secret or "")
    elif auth == "basic_wrong":
        headers["authorization"] = basic(draw(st.one_of(st.just(c.basic.client_id), hostile_text)),
                                         draw(hostile_text))
    elif auth == "header":
        headers["authorization"] = draw(st.sampled_from(AUTH_HEADERS))
    if auth in ("post", "post_wrong", "both"):
        fields += [("client_id", c.post.client_id),
                   ("client_secret", (c.post.client_secret or "") if auth != "post_wrong" else draw(hostile_text))]
    elif auth == "jwt":
        fields += [("client_assertion_type", ASSERTION_TYPE),
                   ("client_assertion", draw(client_assertion(c.key_client_id, ISSUER, now)))]
        if draw(st.booleans()):
            fields.append(("client_id", draw(st.one_of(st.just(c.key_client_id), hostile_text))))
    elif auth == "none":
        fields.append(("client_id", draw(st.one_of(st.just(c.public.client_id), hostile_text))))
    fields = draw(mutated(fields, TOKEN_PARAMS))
    if draw(st.integers(0, 5)) == 0:
        body, ctype = draw(raw_body(TOKEN_PARAMS))
        return Hostile("POST", "/token", query=draw(st.sampled_from(["", "grant_type=client_credentials"])),
                       body=body, content_type=ctype, headers=headers)
    return Hostile("POST", "/token", body=urlencode(fields).encode(), content_type="application/x-www-form-urlencoded",
                   headers=headers)


def test_token_endpoint_answers_rfc_errors_and_writes_nothing_when_it_refuses(
        client: TestClient, services: Services, clock: FakeClock) -> None:
    """POST /token, every grant type and client authentication method (Basic, post, private_key_jwt, none),
    malformed Basic headers and assertions: a token response or an RFC 6749 5.2 error (400, or 401 with
    WWW-Authenticate; 401 whenever the Authorization header was used and the client was not accepted); a
    refused request creates no token and no code."""
    world = World(services, client)

    @FUZZ
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        request = data.draw(token_request(world, int(clock().timestamp())))
        before = rows(services)
        response = request.send(client)
        assert_safe(response, request)
        if response.status_code == 200:
            body = response.json()
            assert body["token_type"] == "Bearer" and body["access_token"], request
            return
        error = assert_oauth_error(response, request)
        if error["error"] == "invalid_client" and "authorization" in request.headers:
            assert response.status_code == 401, request
        tokens, codes = rows(services)
        assert tokens <= before[0] and codes <= before[1], f"a refused request wrote a row\n{request!r}"

    prop()


# --- userinfo, introspection, revocation -------------------------------------------------------------------------


def test_userinfo_answers_rfc6750_errors(client: TestClient, services: Services) -> None:
    """GET and POST /userinfo with Bearer header variants, odd queries and bodies: the claims for the valid
    token, else 400/401/403 with ``WWW-Authenticate: Bearer`` (RFC 6750 3) and no trace."""
    world = World(services, client)
    client.cookies.clear()

    @FUZZ
    @given(method=st.sampled_from(["GET", "POST"]),
           auth=st.one_of(st.sampled_from(AUTH_HEADERS), st.just(b"Bearer " + world.access_token.encode()),
                          st.builds(lambda t: b"Bearer " + t.encode(), hostile_text), st.none()),
           query=st.one_of(st.just(""), raw_query(("access_token", "schema", "claims"))),
           body=raw_body(("access_token", "claims")))
    def prop(method: str, auth: bytes | None, query: str, body: tuple[bytes, str | None]) -> None:
        headers = {"authorization": auth} if auth is not None else {}
        request = Hostile(method, "/userinfo", query=query, body=body[0] if method == "POST" else b"",
                          content_type=body[1] if method == "POST" else None, headers=headers)
        response = request.send(client)
        assert_safe(response, request)
        if response.status_code == 200:
            assert response.json()["sub"], request
            return
        assert response.status_code in (400, 401, 403, 413), request
        if response.status_code == 413:
            return  # refused by SecurityMiddleware before the endpoint ran
        challenge = response.headers.get("www-authenticate", "")
        assert challenge.startswith("Bearer"), f"no RFC 6750 challenge\n{request!r}\n{response.text}"
        if response.content:
            assert response.headers["content-type"].startswith("application/json"), request

    prop()


@st.composite
def client_auth(draw: st.DrawFn, world: World) -> tuple[list[tuple[str, str]], dict[str, bytes]]:
    c = world.clients
    how = draw(st.sampled_from(["basic", "post", "bad_header", "wrong_secret", "none"]))
    if how == "basic":
        return [], {"authorization": basic(c.basic.client_id, c.basic.client_secret or "")}
    if how == "post":
        return [("client_id", c.post.client_id), ("client_secret", c.post.client_secret or "")], {}
    if how == "bad_header":
        return [], {"authorization": draw(st.sampled_from(AUTH_HEADERS))}
    if how == "wrong_secret":
        return [], {"authorization": basic(c.basic.client_id, draw(hostile_text))}
    return [], {}


def _form_api_property(client: TestClient, services: Services, world: World, path: str) -> None:
    tokens = st.one_of(st.sampled_from([world.access_token, world.refresh_token, world.id_token]), hostile_text)

    @FUZZ
    @given(auth=client_auth(world), token=tokens, hint=st.one_of(
        st.none(), st.sampled_from(["access_token", "refresh_token", "id_token"]), hostile_text), data=st.data(),
        broken=st.integers(0, 9))
    def prop(auth: tuple[list[tuple[str, str]], dict[str, bytes]], token: str, hint: str | None,
             data: st.DataObject, broken: int) -> None:
        # One example in ten sends a body that is no form, one in ten parameters in the query.
        raw = data.draw(raw_body(("token", "token_type_hint"))) if broken == 0 else None
        query = data.draw(raw_query(("token",))) if broken == 1 else ""
        fields = data.draw(mutated([("token", token), *([("token_type_hint", hint)] if hint is not None else []),
                                    *auth[0]], ("token", "token_type_hint", "client_id", "client_secret"),
                                   max_changes=2))
        body, ctype = raw if raw is not None else (urlencode(fields).encode(), "application/x-www-form-urlencoded")
        request = Hostile("POST", path, query=query, body=body, content_type=ctype, headers=auth[1])
        before = rows(services)
        response = request.send(client)
        assert_safe(response, request)
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("application/json"), request
            if path == "/introspect":
                assert isinstance(response.json().get("active"), bool), request
        else:
            error = assert_oauth_error(response, request)
            if error["error"] == "invalid_client" and "authorization" in request.headers:
                assert response.status_code == 401, request
        assert rows(services)[0] <= before[0], request

    prop()


def test_introspection_withstands_hostile_input(client: TestClient, services: Services) -> None:
    """POST /introspect (RFC 7662): ``active`` true or false for an authenticated client, else an RFC error."""
    world = World(services, client)
    _form_api_property(client, services, world, "/introspect")


def test_revocation_withstands_hostile_input(client: TestClient, services: Services) -> None:
    """POST /revoke (RFC 7009): 200 for any token string from an authenticated client, else an RFC error."""
    world = World(services, client)
    _form_api_property(client, services, world, "/revoke")


# --- logout ------------------------------------------------------------------------------------------------------


LOGOUT_PARAMS = ("id_token_hint", "post_logout_redirect_uri", "state", "client_id", "logout_hint", "ui_locales",
                 "csrf_token")


def test_rp_initiated_logout_withstands_hostile_parameters(client: TestClient, services: Services) -> None:
    """GET and POST /logout (OIDC RP-Initiated Logout 1.0): a page, or a redirect to a registered
    post_logout_redirect_uri only; an invalid request is an HTML error page, never a trace."""
    world = World(services, client)
    registered = {world.clients.basic.post_logout_redirect_uri}
    hints = st.one_of(st.just(world.id_token), hostile_text)

    @FUZZ
    @given(method=st.sampled_from(["GET", "POST"]), hint=st.one_of(st.none(), hints),
           target=st.one_of(st.none(), st.sampled_from(sorted(r for r in registered if r)), hostile_text),
           extra=hostile_params(LOGOUT_PARAMS, max_size=4), raw=st.one_of(st.none(), raw_query(LOGOUT_PARAMS)),
           signed_in=st.booleans())
    def prop(method: str, hint: str | None, target: str | None, extra: list[tuple[str, str]], raw: str | None,
             signed_in: bool) -> None:
        client.cookies.clear()
        if signed_in:
            open_session(services, client, "erika", second_factor=False)
        fields = [*([("id_token_hint", hint)] if hint else []),
                  *([("post_logout_redirect_uri", target)] if target else []), *extra]
        query = raw if raw is not None else urlencode(fields)
        if method == "GET" or raw is not None:
            request = Hostile(method, "/logout", query=query, headers=dict(BROWSER))
        else:
            request = Hostile(method, "/logout", body=query.encode(), content_type="application/x-www-form-urlencoded",
                              headers=dict(BROWSER))
        response = request.send(client)
        assert_safe(response, request)
        if response.status_code in (302, 303):
            location = response.headers["location"]
            assert location.split("?", 1)[0] in registered, f"redirected to {location}\n{request!r}"
        elif response.status_code != 200:
            assert_html_error(response, request)
        else:
            assert response.headers["content-type"].startswith("text/html"), request

    prop()


# --- discovery, JWKS and methods nobody should use ---------------------------------------------------------------


def test_discovery_and_jwks_ignore_odd_queries_and_refuse_odd_methods(client: TestClient) -> None:
    """The metadata documents answer the same bytes whatever the query; other methods get 405 with ``Allow``."""
    expected = {path: client.get(path).content for path in
                ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server", "/jwks")}

    @FUZZ
    @given(path=st.sampled_from(sorted(expected)), query=raw_query(("a", "callback", "format")),
           method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]),
           body=raw_body())
    def prop(path: str, query: str, method: str, body: tuple[bytes, str | None]) -> None:
        request = Hostile(method, path, query=query, body=body[0], content_type=body[1])
        response = request.send(client)
        assert_safe(response, request)
        if method == "GET":
            assert response.status_code == 200 and response.content == expected[path], request
        elif method == "HEAD":
            assert response.status_code in (200, 405), request
        elif response.status_code != 413:  # a body over the limit is refused before the method is looked at
            assert response.status_code == 405 and "GET" in response.headers.get("allow", ""), request

    prop()


def test_every_endpoint_refuses_unknown_methods_cleanly(client: TestClient) -> None:
    """Any method an endpoint does not take: 405 with ``Allow`` and the security headers, no trace."""
    methods = ("GET", "POST", "PUT", "DELETE", "PATCH", "TRACE", "OPTIONS", "PROPFIND", "FOO")

    def allowed(path: str) -> set[str]:
        scope = {"type": "http", "path": path, "method": "GET"}
        return {method for route in client.app.routes if isinstance(route, Route)
                and route.matches(scope)[0] is not Match.NONE for method in route.methods or ()}

    @FUZZ
    @given(path=st.sampled_from(["/token", "/introspect", "/revoke", "/userinfo", "/authorize", "/logout",
                                 "/logout/confirm", "/jwks", "/login/x", "/account", "/admin", "/register",
                                 "/register/x", "/.well-known/openid-configuration"]), data=st.data())
    def prop(path: str, data: st.DataObject) -> None:
        method = data.draw(st.sampled_from([m for m in methods if m not in allowed(path)]))
        response = client.request(method, path)
        assert_safe(response, f"{method} {path}")
        assert response.status_code == 405 and response.headers.get("allow"), f"{method} {path}"

    prop()


def test_paths_with_traversal_and_nul_are_refused(client: TestClient) -> None:
    """Path segments with traversal, NUL, broken escapes or huge ids: 4xx page, no trace."""
    segments = st.one_of(st.sampled_from(["..", "%2e%2e", "%2F", "%00", "%ff", "%ZZ", "..%2F..%2Fetc%2Fpasswd",
                                          "9" * 400, "-1", "%0d%0aX:y", "\u0661", ";", "%u002e"]),
                         hostile_text.map(lambda t: urlencode({"": t})[1:] or "x"))

    @FUZZ
    @given(prefix=st.sampled_from(["/login/", "/consent/", "/authorize/resume/", "/account/factors/totp/",
                                   "/account/sessions/", "/static/", "/language/", "/admin/", "/register/"]),
           segment=segments, suffix=st.sampled_from(["", "/factor", "/end", "/remove", "/enroll/totp"]),
           method=st.sampled_from(["GET", "POST"]))
    def prop(prefix: str, segment: str, suffix: str, method: str) -> None:
        request = Hostile(method, prefix + segment + suffix, headers=dict(BROWSER))
        response = request.send(client)
        assert_safe(response, request)
        # /register answers JSON (test below); /static serves files, whose 404 is a plain "not found".
        if response.status_code >= 400 and not prefix.startswith(("/register", "/static")):
            assert_html_error(response, request)

    prop()


# --- dynamic client registration (RFC 7591 / 7592) ---------------------------------------------------------------


REGISTRATION_FIELDS = ("redirect_uris", "client_name", "token_endpoint_auth_method", "grant_types", "response_types",
                       "scope", "jwks", "jwks_uri", "logo_uri", "post_logout_redirect_uris", "backchannel_logout_uri",
                       "client_id", "client_secret", "software_statement", "contacts")


@st.composite
def registration_metadata(draw: st.DrawFn) -> Any:
    """RFC 7591 2 client metadata, valid in parts and hostile in others (wrong JSON types included)."""
    value: st.SearchStrategy[Any] = st.one_of(
        hostile_text, st.lists(st.one_of(hostile_text, st.sampled_from(["https://app.example/cb", "http://127.0.0.1/cb",
                                                                        "com.example.app:/cb"])), max_size=3),
        st.integers(-(2**80), 2**80), st.none(), st.booleans(), st.dictionaries(hostile_text, hostile_text, max_size=2))
    metadata: dict[str, Any] = {"redirect_uris": ["https://app.example/cb"], "client_name": "Fuzz"}
    metadata.update(draw(st.dictionaries(st.sampled_from(REGISTRATION_FIELDS), value, max_size=4)))
    return draw(st.one_of(st.just(metadata), st.sampled_from([[], "x", 1, None])))


def test_registration_endpoint_withstands_hostile_metadata(client: TestClient, services: Services) -> None:
    """POST /register and GET/PUT/DELETE /register/{client_id} (RFC 7591 3, RFC 7592 2) with hostile metadata,
    ids and tokens, some with a valid initial or registration access token: success, or an RFC 7591 3.2.2
    error JSON (401 with ``WWW-Authenticate: Bearer`` for a bad token); a refusal changes no row."""
    with unit_of_work(services.sessions) as db:
        _, initial = registration.issue_initial_token(db, services.hasher, now=services.now(),
                                                      lifetime=timedelta(days=1), uses=5, owner=None)
    created = client.post("/register", json={"redirect_uris": ["https://app.example/cb"], "client_name": "Fuzz"},
                          headers={"authorization": f"Bearer {initial}"})
    assert created.status_code == 201, created.text
    client_id, management = created.json()["client_id"], created.json()["registration_access_token"]

    def bearer(valid: str) -> st.SearchStrategy[bytes | None]:
        return st.one_of(st.just(f"Bearer {valid}".encode()), st.sampled_from(AUTH_HEADERS),
                         st.builds(lambda t: b"Bearer " + t.encode(), hostile_text), st.none())

    ids = st.one_of(st.just(client_id), st.sampled_from([n for n in NASTY if n and "/" not in n and "%2F" not in n])
                    .map(lambda t: urlencode({"": t})[1:]))

    @FUZZ
    @given(metadata=registration_metadata(), operation=st.sampled_from(["register", "read", "update", "delete"]),
           data=st.data(), ctype=st.sampled_from(["application/json", "application/json; charset=utf-8",
                                                  "text/plain", "application/x-www-form-urlencoded", None]),
           raw=st.one_of(st.none(), st.none(), raw_body(REGISTRATION_FIELDS)))
    def prop(metadata: Any, operation: str, data: st.DataObject, ctype: str | None,
             raw: tuple[bytes, str | None] | None) -> None:
        body = json.dumps(metadata).encode() if raw is None else raw[0]
        ctype = ctype if raw is None else raw[1]
        if operation == "register":
            auth, path, method = data.draw(bearer(initial)), "/register", "POST"
        else:
            # A valid token never deletes here: the client must stay for the next examples.
            auth = data.draw(bearer(management) if operation != "delete" else bearer("x"))
            method = {"read": "GET", "update": "PUT", "delete": "DELETE"}[operation]
            path = f"/register/{data.draw(ids)}"
        request = Hostile(method, path, body=body if method in ("POST", "PUT") else b"", content_type=ctype,
                          headers={"authorization": auth} if auth is not None else {})
        before = snapshot(services.engine)
        response = request.send(client)
        assert_safe(response, request)
        if response.status_code in (307, 308):
            # The router's redirect of a path ending in "/" (or a segment the client decoded to one): same place.
            assert response.headers["location"].startswith(f"{ISSUER}/register"), request
            assert snapshot(services.engine) == before, request
            return
        if response.status_code < 300:
            assert response.headers["content-type"].startswith("application/json"), request
            return
        error = assert_oauth_error(response, request, statuses=(400, 401, 403, 404))
        if response.status_code == 401:
            assert response.headers["www-authenticate"].startswith("Bearer"), request
        assert error["error"]
        assert snapshot(services.engine) == before, f"a refused request changed a row\n{request!r}"

    prop()

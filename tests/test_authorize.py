"""The authorization endpoint, GET and POST /authorize: what it accepts, refuses, and where errors go.

The rule tested throughout (RFC 6749 4.1.2.1; RFC 9700 2.1 and 4.11.2): while client and redirect URI are
not both known good, the user sees an error page and nothing is sent anywhere; once they are, every error
goes back to the registered redirect URI with ``error``, ``state`` and RFC 9207's ``iss``, in the query,
never with a token. Attack cases 1-10 of ``security-cases.md`` and the issue's "Bad input" section.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx2
import pytest
from sqlalchemy import Engine, func, select, update
from starlette.testclient import TestClient

from idp.app import create_app
from idp.db import read_only, unit_of_work
from idp.models import AuthorizationCode, Client, Consent, LoginTransaction
from idp.services import Services, build_services
from tests.conftest import ISSUER, FakeClock, make_settings
from tests.helpers import (
    REDIRECT_URI,
    Flow,
    RegisteredClient,
    add_client,
    add_user,
    authorize,
    csrf_of,
    decode,
    exchange,
    finish,
    query_of,
    submit_login,
)

LOOPBACK = "http://127.0.0.1/cb"
NO_TOKEN_PARAMS = {"code", "access_token", "id_token", "token_type", "refresh_token"}


# ---------------------------------------------------------------------------------------------- helpers


def get(browser: TestClient, params: dict[str, str] | list[tuple[str, str]]) -> httpx2.Response:
    return browser.get("/authorize?" + urlencode(params))


def changed(flow: Flow, **changes: str | None) -> dict[str, str]:
    """The flow's parameters with some replaced; ``None`` removes one."""
    params = flow.params()
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return params


def count(services: Services, model: type[Any]) -> int:
    with read_only(services.sessions) as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def assert_error_page(response: httpx2.Response, services: Services | None = None, status: int = 400) -> None:
    """An HTML error page for the user: nothing sent to any client, no sign-in started."""
    assert response.status_code == status, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="error-title"' in response.text
    if services is not None:
        assert count(services, LoginTransaction) == 0
        assert count(services, AuthorizationCode) == 0


def assert_redirected_error(response: httpx2.Response, redirect_uri: str, error: str | set[str],
                            state: str | None) -> dict[str, str]:
    """An OAuth error sent to the registered redirect URI, in the query, with state and iss, and no token."""
    assert response.status_code in (302, 303), response.text
    location = response.headers["location"]
    assert "#" not in location, "nothing may travel in a fragment"
    parts, registered = urlsplit(location), urlsplit(redirect_uri)
    assert (parts.scheme, parts.netloc, parts.path) == (registered.scheme, registered.netloc, registered.path)
    params = query_of(location)
    assert params["error"] in ({error} if isinstance(error, str) else error), params
    if state is None:
        assert "state" not in params
    else:
        assert params["state"] == state
    assert params["iss"] == ISSUER
    assert not NO_TOKEN_PARAMS & set(params)
    return params


def assert_login_page_next(response: httpx2.Response) -> str:
    assert response.status_code == 303, response.text
    location = str(response.headers["location"])
    assert location.startswith("/login/")
    return location


def sign_in(browser: TestClient, services: Services) -> RegisteredClient:
    """Give the browser an SSO session through a trusted client; returns that client."""
    add_user(services)
    sso = add_client(services, name="Intranet", trusted=True, redirect_uris=["https://intranet.example/cb"])
    assert "code" in authorize(browser, Flow(sso))
    return sso


def set_client(services: Services, client_id: str, **values: Any) -> None:
    with unit_of_work(services.sessions) as db:
        db.execute(update(Client).where(Client.client_id == client_id).values(**values))


def id_token_claims(browser: TestClient, flow: Flow, code: str) -> dict[str, Any]:
    response = exchange(browser, flow, code)
    assert response.status_code == 200, response.text
    return dict(decode(browser, response.json()["id_token"]).claims)


# ---------------------------------------------------------------------- error page: client or URI unknown


def test_unknown_client_id_shows_error_page(client: TestClient, services: Services) -> None:
    """An unknown client_id gets an error page, never a redirect (RFC 6749 4.1.2.1; case 5)."""
    app = add_client(services)
    response = get(client, changed(Flow(app), client_id="no-such-client"))
    assert_error_page(response, services)


def test_disabled_client_shows_error_page(client: TestClient, services: Services, clock: FakeClock) -> None:
    """A disabled client is treated like an unknown one: error page, no redirect (case 5)."""
    app = add_client(services)
    set_client(services, app.client_id, disabled_at=clock())
    assert_error_page(get(client, Flow(app).params()), services)


def test_missing_client_id_shows_error_page(client: TestClient, services: Services) -> None:
    """Without client_id nothing can be validated, so the user gets an error page (RFC 6749 4.1.2.1)."""
    app = add_client(services)
    assert_error_page(get(client, changed(Flow(app), client_id=None)), services)


@pytest.mark.parametrize("response_type", ["code", "token", "code id_token", None])
def test_unknown_client_never_redirects_whatever_the_response_type(
    client: TestClient, services: Services, response_type: str | None
) -> None:
    """An unsupported response_type with an unknown client must not redirect to the unvalidated URI (case 6)."""
    app = add_client(services)
    response = get(client, changed(Flow(app), client_id="no-such-client", response_type=response_type,
                                   redirect_uri="https://evil.example/cb"))
    assert_error_page(response, services)


NEAR_MISSES = [
    "https://evil.example/cb",
    "https://app.example/cb?foo=bar",
    "https://app.example/cb?",
    "https://app.example/cb/",
    "HTTPS://APP.EXAMPLE/cb",
    "https://APP.example/cb",
    "https://app.example/CB",
    "https://app.example/cb/../cb",
    "https://app.example/./cb",
    "https://app.example%2Fcb",
    "https://app.example/%63b",
    "https://app.example:443/cb",
    "http://app.example/cb",
    "https://app.example/cb#frag",
    "https://app.example/cb#",
    "https://app.example.evil.example/cb",
    "https://app.example@evil.example/cb",
    "https://evil.example/https://app.example/cb",
    "//app.example/cb",
    "/cb",
    " https://app.example/cb",
    "https://app.example/cb ",
]


@pytest.mark.parametrize("redirect_uri", NEAR_MISSES)
def test_unregistered_redirect_uri_shows_error_page(client: TestClient, services: Services,
                                                    redirect_uri: str) -> None:
    """Redirect URIs are compared byte for byte; every near miss is refused without a redirect (cases 1-2)."""
    app = add_client(services)
    assert_error_page(get(client, changed(Flow(app), redirect_uri=redirect_uri)), services)


def test_empty_redirect_uri_counts_as_not_sent(client: TestClient, services: Services) -> None:
    """A parameter without a value is treated as omitted (RFC 6749 3.1): the one registered URI is used."""
    app = add_client(services)
    assert_login_page_next(get(client, changed(Flow(app), redirect_uri="")))
    two = add_client(services, redirect_uris=[REDIRECT_URI, "https://app.example/other"])
    assert_error_page(get(client, changed(Flow(two), redirect_uri="")))


@pytest.mark.parametrize("redirect_uri", ["https://evil.example/cb", "https://app.example/cb/"])
@pytest.mark.parametrize("changes", [
    {"response_type": "token"},
    {"response_type": None},
    {"scope": "profile"},
    {"prompt": "none"},
    {"code_challenge_method": "plain"},
    {"request_uri": "https://evil.example/request.jwt"},
])
def test_unregistered_redirect_uri_wins_over_other_errors(
    client: TestClient, services: Services, redirect_uri: str, changes: dict[str, str | None]
) -> None:
    """Whatever else is wrong, an unvalidated redirect URI is never redirected to (RFC 9700 4.11.2; case 6)."""
    app = add_client(services)
    response = get(client, changed(Flow(app), redirect_uri=redirect_uri, **changes))
    assert_error_page(response, services)
    assert "evil.example" not in response.headers.get("location", "")


def test_post_with_unregistered_redirect_uri_shows_error_page(client: TestClient, services: Services) -> None:
    """POST /authorize applies the same rule as GET (OpenID Connect Core 1.0, 3.1.2.1)."""
    app = add_client(services)
    response = client.post("/authorize", data=changed(Flow(app), redirect_uri="https://evil.example/cb"))
    assert_error_page(response, services)


def test_error_page_escapes_the_reflected_redirect_uri(client: TestClient, services: Services) -> None:
    """Parameters echoed on the error page are HTML-escaped, so the page cannot be used for XSS."""
    app = add_client(services)
    response = get(client, changed(Flow(app), redirect_uri='https://evil.example/"><script>alert(1)</script>'))
    assert_error_page(response, services)
    assert "<script>alert(1)</script>" not in response.text


@pytest.mark.parametrize("redirect_uri", [
    'https://app.example/cb"',
    "https://app.example/cb\\",
    "https://app.example/cb\u00e9",
    "https://app.example/cb\x01",
    "https://app.example/cb\u2028",
])
def test_redirect_uri_with_characters_forbidden_in_error_descriptions(client: TestClient, services: Services,
                                                                      redirect_uri: str) -> None:
    """A redirect URI holding quotes, backslashes or non-ASCII gets the error page, not a 500 (RFC 6749 4.1.2.1)."""
    app = add_client(services)
    assert_error_page(get(client, changed(Flow(app), redirect_uri=redirect_uri)), services)


@pytest.mark.parametrize("response_type", ['code"', "code\\", "c\u00f6de", "code\x7f"])
def test_response_type_with_forbidden_characters_is_no_server_error(client: TestClient, services: Services,
                                                                    response_type: str) -> None:
    """A response_type with quotes or non-ASCII is unsupported_response_type at the registered URI, not a 500."""
    app = add_client(services)
    flow = Flow(app)
    response = get(client, changed(flow, response_type=response_type))
    assert_redirected_error(response, app.redirect_uri, "unsupported_response_type", flow.state)


REGISTERED_WITH_QUERY = "https://app.example/cb?tenant=7"


def test_registered_redirect_uri_with_query_works_byte_exact(client: TestClient, services: Services) -> None:
    """A registered URI with a query is accepted as is, and the code is added to its query (RFC 6749 3.1.2)."""
    add_user(services)
    app = add_client(services, redirect_uris=[REGISTERED_WITH_QUERY])
    flow = Flow(app)
    response = client.get(flow.url())
    response = submit_login(client, assert_login_page_next(response))
    location = finish(client, response)
    assert location.startswith(REGISTERED_WITH_QUERY + "&")
    params = query_of(location)
    assert params["tenant"] == "7" and params["state"] == flow.state and params["code"]
    assert exchange(client, flow, params["code"]).status_code == 200


@pytest.mark.parametrize("redirect_uri", [
    "https://app.example/cb",
    "https://app.example/cb?tenant=8",
    "https://app.example/cb?tenant=7&foo=bar",
    "https://app.example/cb?foo=bar&tenant=7",
    "https://app.example/cb?tenant=07",
    "https://app.example/cb?tenant=7#x",
    "https://app.example/cb?Tenant=7",
])
def test_registered_query_must_match_exactly(client: TestClient, services: Services, redirect_uri: str) -> None:
    """A different, extended or reordered query is a different redirect URI (oidcc-redirect-uri-query-*)."""
    app = add_client(services, redirect_uris=[REGISTERED_WITH_QUERY])
    assert_error_page(get(client, changed(Flow(app), redirect_uri=redirect_uri)), services)


def test_two_registered_uris_and_none_sent_shows_error_page(client: TestClient, services: Services) -> None:
    """With two registered redirect URIs the request must name one (OpenID Connect Core 3.1.2.1; case 4)."""
    app = add_client(services, redirect_uris=[REDIRECT_URI, "https://app.example/other"])
    assert_error_page(get(client, changed(Flow(app), redirect_uri=None)), services)
    assert_error_page(get(client, changed(Flow(app), redirect_uri=None, response_type="token")), services)


def test_second_registered_uri_is_accepted(client: TestClient, services: Services) -> None:
    """Any one of the registered redirect URIs may be used, and the code goes to that one."""
    add_user(services)
    app = add_client(services, trusted=True, redirect_uris=[REDIRECT_URI, "https://app.example/other"])
    flow = Flow(RegisteredClient(app.client_id, app.client_secret, "https://app.example/other"))
    params = authorize(client, flow)
    assert params["code"] and params["state"] == flow.state


# ------------------------------------------------------------------------------------ loopback (case 3)


@pytest.mark.parametrize("redirect_uri", ["http://127.0.0.1:53111/cb", "http://127.0.0.1/cb",
                                          "http://127.0.0.1:1/cb", "http://127.0.0.1:65535/cb"])
def test_public_loopback_client_may_use_any_port(client: TestClient, services: Services, redirect_uri: str) -> None:
    """A native app's loopback redirect URI may use any port (RFC 8252 7.3)."""
    app = add_client(services, public=True, redirect_uris=[LOOPBACK])
    assert_login_page_next(get(client, changed(Flow(app), redirect_uri=redirect_uri)))


def test_public_loopback_client_gets_its_code_on_the_requested_port(client: TestClient,
                                                                     services: Services) -> None:
    """The code goes to the port the app asked for and is redeemed with that same redirect URI (RFC 8252 7.3)."""
    add_user(services)
    app = add_client(services, public=True, trusted=True, redirect_uris=[LOOPBACK])
    flow = Flow(RegisteredClient(app.client_id, None, "http://127.0.0.1:53111/cb"))
    params = authorize(client, flow)
    response = exchange(client, flow, params["code"])
    assert response.status_code == 200, response.text


def test_public_ipv6_loopback_client_may_use_any_port(client: TestClient, services: Services) -> None:
    """The port rule holds for [::1] as for 127.0.0.1 (RFC 8252 7.3)."""
    app = add_client(services, public=True, redirect_uris=["http://[::1]/cb"])
    assert_error_page(get(client, changed(Flow(app), redirect_uri="http://127.0.0.1:53111/cb")), services)
    assert_login_page_next(get(client, changed(Flow(app), redirect_uri="http://[::1]:53111/cb")))


@pytest.mark.parametrize("redirect_uri", [
    "http://localhost:53111/cb",
    "http://localhost/cb",
    "http://127.0.0.1:53111/other",
    "http://127.0.0.1:53111/cb/",
    "http://127.0.0.1:53111/CB",
    "http://127.0.0.1:53111/cb?x=1",
    "http://127.0.0.1:53111/cb#x",
    "http://127.0.0.1.evil.example/cb",
    "http://127.0.0.1.evil.example:53111/cb",
    "http://127.0.0.2:53111/cb",
    "http://127.1:53111/cb",
    "http://[::1]:53111/cb",
    "https://127.0.0.1:53111/cb",
    "http://evil.example:53111/cb",
    "http://127.0.0.1:53111@evil.example/cb",
    "http://evil.example@127.0.0.1:53111/cb",
    "http://127.0.0.1:abc/cb",
    "http://127.0.0.1:99999/cb",
    "http://127.0.0.1:/cb",
    "http://127.0.0.1:0/cb",
    "http://127.0.0.1:+80/cb",
    "http://127.0.0.1:53111:1/cb",
])
def test_public_loopback_client_refuses_everything_but_the_port(client: TestClient, services: Services,
                                                                redirect_uri: str) -> None:
    """Only the port may differ: other hosts, paths, schemes, user info or bogus ports are refused (case 3)."""
    app = add_client(services, public=True, redirect_uris=[LOOPBACK])
    assert_error_page(get(client, changed(Flow(app), redirect_uri=redirect_uri)), services)


def test_confidential_loopback_client_gets_no_port_relaxation(client: TestClient, services: Services) -> None:
    """The port rule is for native (public) apps only; a confidential client must match exactly (RFC 9700 2.1)."""
    app = add_client(services, redirect_uris=[LOOPBACK])
    assert_error_page(get(client, changed(Flow(app), redirect_uri="http://127.0.0.1:53111/cb")), services)
    assert_login_page_next(get(client, changed(Flow(app), redirect_uri=LOOPBACK)))


# ----------------------------------------------------- errors sent back to the client (case 6 and more)


@pytest.mark.parametrize(("changes", "error"), [
    ({"response_type": None}, {"unsupported_response_type", "invalid_request"}),
    ({"response_type": ""}, {"unsupported_response_type", "invalid_request"}),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": "id_token"}, "unsupported_response_type"),
    ({"response_type": "code id_token"}, "unsupported_response_type"),
    ({"response_type": "code token"}, "unsupported_response_type"),
    ({"response_type": "id_token token"}, "unsupported_response_type"),
    ({"response_type": "CODE"}, "unsupported_response_type"),
    ({"scope": "profile email"}, "invalid_scope"),
    ({"scope": None}, "invalid_scope"),
    ({"scope": "OPENID"}, "invalid_scope"),
    ({"scope": "openid admin"}, "invalid_scope"),
    ({"scope": "openid profile phone"}, "invalid_scope"),
])
def test_invalid_request_for_a_valid_client_goes_back_to_the_client(
    client: TestClient, services: Services, changes: dict[str, str | None], error: str | set[str]
) -> None:
    """With client and redirect URI valid, errors go to the registered URI with state and iss (case 6)."""
    app = add_client(services)
    flow = Flow(app)
    response = get(client, changed(flow, **changes))
    assert_redirected_error(response, app.redirect_uri, error, flow.state)
    assert count(services, LoginTransaction) == 0


def test_error_without_state_has_no_state(client: TestClient, services: Services) -> None:
    """state is echoed only when it was sent (RFC 6749 4.1.2.1)."""
    app = add_client(services)
    response = get(client, changed(Flow(app), state=None, response_type="token"))
    assert_redirected_error(response, app.redirect_uri, "unsupported_response_type", None)


def test_error_without_redirect_uri_goes_to_the_only_registered_one(client: TestClient, services: Services) -> None:
    """When the one registered URI is used by default, errors go there (RFC 6749 3.1.2.3)."""
    app = add_client(services)
    flow = Flow(app)
    response = get(client, changed(flow, redirect_uri=None, scope="profile"))
    assert_redirected_error(response, app.redirect_uri, "invalid_scope", flow.state)


def test_error_keeps_the_registered_query(client: TestClient, services: Services) -> None:
    """An error response keeps the query of the registered redirect URI (RFC 6749 3.1.2)."""
    app = add_client(services, redirect_uris=[REGISTERED_WITH_QUERY])
    flow = Flow(app)
    params = assert_redirected_error(get(client, changed(flow, response_type="token")), REGISTERED_WITH_QUERY,
                                     "unsupported_response_type", flow.state)
    assert params["tenant"] == "7"


def test_client_without_code_grant_is_unauthorized(client: TestClient, services: Services) -> None:
    """A client not registered for the code flow gets unauthorized_client (RFC 6749 4.1.2.1)."""
    app = add_client(services, grant_types=["client_credentials"])
    flow = Flow(app)
    assert_redirected_error(get(client, flow.params()), REDIRECT_URI, "unauthorized_client", flow.state)


def test_post_error_goes_back_to_the_client(client: TestClient, services: Services) -> None:
    """A POSTed authorization request reports errors the same way, never with 307/308 (RFC 9700 4.12)."""
    app = add_client(services)
    flow = Flow(app)
    response = client.post("/authorize", data=changed(flow, response_type="token"))
    assert response.status_code not in (307, 308)
    assert_redirected_error(response, app.redirect_uri, "unsupported_response_type", flow.state)


# ----------------------------------------------------------------------------------------- PKCE (case 7)

CHALLENGE_43 = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@pytest.mark.parametrize("changes", [
    {"code_challenge": None, "code_challenge_method": None},
    {"code_challenge": None},
    {"code_challenge_method": "plain"},
    {"code_challenge_method": "s256"},
    {"code_challenge_method": "S512"},
    {"code_challenge_method": None},
    {"code_challenge": CHALLENGE_43[:42]},
    {"code_challenge": CHALLENGE_43 + "A"},
    {"code_challenge": CHALLENGE_43 + "="},
    {"code_challenge": "A" * 128},
    {"code_challenge": "A" * 129},
    {"code_challenge": CHALLENGE_43[:41] + "+/"},
    {"code_challenge": CHALLENGE_43[:41] + "~."},
    {"code_challenge": CHALLENGE_43[:42] + " "},
    {"code_challenge": ""},
    {"code_challenge": CHALLENGE_43 + "\n"},
])
def test_public_client_pkce_is_checked_at_authorize(client: TestClient, services: Services,
                                                    changes: dict[str, str | None]) -> None:
    """Public clients need PKCE with S256 and a 43-character base64url challenge (RFC 7636 4.2; RFC 9700 2.1.1)."""
    app = add_client(services, public=True, redirect_uris=[LOOPBACK])
    flow = Flow(app)
    assert_redirected_error(get(client, changed(flow, **changes)), LOOPBACK, "invalid_request", flow.state)
    assert count(services, LoginTransaction) == 0


@pytest.mark.parametrize("changes", [
    {"code_challenge_method": "plain"},
    {"code_challenge_method": None},
    {"code_challenge": None},
    {"code_challenge": CHALLENGE_43[:42]},
])
def test_confidential_client_pkce_if_sent_must_be_valid(client: TestClient, services: Services,
                                                        changes: dict[str, str | None]) -> None:
    """A confidential client need not send PKCE, but what it sends is held to S256 (RFC 9700 2.1.1)."""
    app = add_client(services)
    flow = Flow(app)
    assert_redirected_error(get(client, changed(flow, **changes)), app.redirect_uri, "invalid_request", flow.state)


def test_confidential_client_without_pkce_is_allowed_by_default(client: TestClient, services: Services) -> None:
    """With the default [tokens] pkce = "public", a confidential client may leave PKCE out."""
    add_user(services)
    app = add_client(services, trusted=True)
    flow = Flow(app)
    flow.challenge = ""
    flow.verifier = ""
    params = changed(flow, code_challenge=None, code_challenge_method=None)
    response = get(client, params)
    response = submit_login(client, assert_login_page_next(response))
    code = query_of(finish(client, response))["code"]
    assert exchange(client, flow, code, code_verifier=None).status_code == 200  # type: ignore[arg-type]


def test_pkce_for_all_refuses_confidential_client_without_pkce(
    backend: tuple[str, Engine], services: Services, clock: FakeClock, tmp_path: Path
) -> None:
    """With IDP_TOKENS_PKCE=all, every client must send a code challenge (RFC 9700 2.1.1)."""
    data_dir = tmp_path / "pkce-all"
    data_dir.mkdir()
    strict = build_services(make_settings(data_dir, backend[0], IDP_TOKENS_PKCE="all"), engine=backend[1])
    strict.clock = clock
    assert strict.settings.tokens.pkce == "all"
    app = add_client(strict)
    flow = Flow(app)
    with TestClient(create_app(services=strict), base_url=ISSUER, follow_redirects=False) as browser:
        response = get(browser, changed(flow, code_challenge=None, code_challenge_method=None))
        assert_redirected_error(response, app.redirect_uri, "invalid_request", flow.state)
        assert_login_page_next(get(browser, flow.params()))


# ---------------------------------------------------------------------------------------- prompt (case 8)


def test_prompt_none_without_session_is_login_required(client: TestClient, services: Services) -> None:
    """prompt=none without a session answers login_required at the redirect URI (OIDC Core 3.1.2.6)."""
    app = add_client(services, trusted=True)
    flow = Flow(app, extra={"prompt": "none"})
    assert_redirected_error(client.get(flow.url()), app.redirect_uri, "login_required", flow.state)
    assert count(services, LoginTransaction) == 0


def test_prompt_none_without_consent_is_consent_required(client: TestClient, services: Services) -> None:
    """prompt=none with a session but no consent for a non-trusted client answers consent_required."""
    sign_in(client, services)
    app = add_client(services, name="Ticketsystem")
    flow = Flow(app, extra={"prompt": "none"})
    transactions = count(services, LoginTransaction)
    assert_redirected_error(client.get(flow.url()), app.redirect_uri, "consent_required", flow.state)
    assert count(services, LoginTransaction) == transactions
    assert count(services, Consent) == 0


def test_prompt_none_with_session_and_consent_issues_a_code(client: TestClient, services: Services) -> None:
    """prompt=none succeeds silently when nothing needs to be asked (OIDC Core 3.1.2.1)."""
    sign_in(client, services)
    app = add_client(services, name="Ticketsystem")
    assert "code" in authorize(client, Flow(app))  # consent given once
    flow = Flow(app, extra={"prompt": "none"})
    response = client.get(flow.url())
    assert response.status_code == 302
    params = query_of(response.headers["location"])
    assert params["code"] and params["state"] == flow.state and params["iss"] == ISSUER


def test_prompt_none_asking_more_than_consented_is_consent_required(client: TestClient, services: Services) -> None:
    """Consent covers the scopes granted; a wider request with prompt=none needs consent again."""
    sign_in(client, services)
    app = add_client(services, name="Ticketsystem")
    assert "code" in authorize(client, Flow(app, scope="openid"))
    flow = Flow(app, scope="openid email", extra={"prompt": "none"})
    assert_redirected_error(client.get(flow.url()), app.redirect_uri, "consent_required", flow.state)


@pytest.mark.parametrize("prompt", ["none login", "login none", "none consent", "none select_account",
                                    "bogus", "none bogus", "NONE", "create"])
def test_invalid_prompt_is_invalid_request(client: TestClient, services: Services, prompt: str) -> None:
    """prompt=none combined with anything, or an unknown prompt value, is invalid_request (OIDC Core 3.1.2.1)."""
    sign_in(client, services)
    app = add_client(services, trusted=True)
    flow = Flow(app, extra={"prompt": prompt})
    assert_redirected_error(client.get(flow.url()), app.redirect_uri, "invalid_request", flow.state)


def test_prompt_consent_shows_consent_even_for_trusted_client(client: TestClient, services: Services) -> None:
    """prompt=consent asks for consent even where it would be skipped (OIDC Core 3.1.2.1)."""
    sso = sign_in(client, services)
    response = client.get(Flow(sso, extra={"prompt": "consent"}).url())
    assert response.status_code == 303
    assert response.headers["location"].startswith("/consent/")


# ------------------------------------------------------------------------------ re-authentication, max_age


@pytest.mark.parametrize("extra", [{"prompt": "login"}, {"prompt": "select_account"}, {"max_age": "0"},
                                   {"prompt": "login consent"}])
def test_forced_login_with_sso_session_shows_login_page(client: TestClient, services: Services,
                                                        extra: dict[str, str]) -> None:
    """prompt=login and max_age=0 ask for the password again despite the SSO session (OIDC Core 3.1.2.1)."""
    sso = sign_in(client, services)
    login_url = assert_login_page_next(client.get(Flow(sso, extra=extra).url()))
    page = client.get(login_url)
    assert page.status_code == 200 and 'id="login-form"' in page.text


def test_max_age_exceeded_shows_login_page(client: TestClient, services: Services, clock: FakeClock) -> None:
    """When more than max_age seconds passed since the login, the user logs in again (OIDC Core 3.1.2.1)."""
    sso = sign_in(client, services)
    clock.advance(seconds=61)
    assert_login_page_next(client.get(Flow(sso, extra={"max_age": "60"}).url()))


def test_max_age_not_exceeded_issues_code_with_auth_time(client: TestClient, services: Services,
                                                         clock: FakeClock) -> None:
    """Within max_age the SSO session is used and the ID token carries the original auth_time (OIDC Core 2)."""
    login_time = int(clock().timestamp())
    sso = sign_in(client, services)
    clock.advance(seconds=30)
    flow = Flow(sso, extra={"max_age": "60"})
    response = client.get(flow.url())
    assert response.status_code == 302
    claims = id_token_claims(client, flow, query_of(response.headers["location"])["code"])
    assert claims["auth_time"] == login_time


@pytest.mark.parametrize("extra", [{"prompt": "login"}, {"max_age": "0"}, {"max_age": "60"}])
def test_relogin_issues_code_with_new_auth_time(client: TestClient, services: Services, clock: FakeClock,
                                                extra: dict[str, str]) -> None:
    """After the forced login the code is issued and auth_time is the new login time (OIDC Core 2)."""
    sso = sign_in(client, services)
    first_login = int(clock().timestamp())
    clock.advance(seconds=120)
    flow = Flow(sso, extra=extra)
    login_url = assert_login_page_next(client.get(flow.url()))
    response = submit_login(client, login_url)
    assert response.status_code == 303
    params = query_of(finish(client, response))
    assert params["state"] == flow.state
    claims = id_token_claims(client, flow, params["code"])
    assert claims["auth_time"] == int(clock().timestamp()) == first_login + 120


@pytest.mark.parametrize("max_age", ["-1", "abc", "1.5", "1e3", "", " 5", "0x10", "9999999999", "٣"])
def test_malformed_max_age_is_invalid_request(client: TestClient, services: Services, max_age: str) -> None:
    """max_age must be a non-negative whole number of seconds; anything else is invalid_request."""
    app = add_client(services)
    flow = Flow(app, extra={"max_age": max_age})
    assert_redirected_error(client.get(flow.url()), app.redirect_uri, "invalid_request", flow.state)


# --------------------------------------------------------------- request objects, response modes (case 9)


@pytest.fixture
def network_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host name or address Python code resolves or connects to during the test."""
    calls: list[str] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_create_connection = socket.create_connection

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(host))
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> Any:
        calls.append(str(address))
        return real_connect(self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(address))
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return calls


UNSIGNED_REQUEST_OBJECT = "eyJhbGciOiJub25lIn0.eyJyZWRpcmVjdF91cmkiOiJodHRwczovL2V2aWwuZXhhbXBsZS9jYiJ9."


@pytest.mark.parametrize(("extra", "error"), [
    ({"request": UNSIGNED_REQUEST_OBJECT}, "request_not_supported"),
    ({"request": ""}, "request_not_supported"),
    ({"request_uri": "http://169.254.169.254/latest/meta-data/"}, "request_uri_not_supported"),
    ({"request_uri": "https://evil.example/request.jwt"}, "request_uri_not_supported"),
    ({"request_uri": "urn:ietf:params:oauth:request_uri:abc"}, "request_uri_not_supported"),
    ({"registration": '{"redirect_uris":["https://evil.example/cb"]}'}, "registration_not_supported"),
])
def test_request_objects_are_refused_not_ignored(client: TestClient, services: Services,
                                                 network_calls: list[str], extra: dict[str, str],
                                                 error: str) -> None:
    """request/request_uri are refused with their own error codes and nothing is fetched (OIDC Core 6)."""
    app = add_client(services)
    flow = Flow(app, extra=extra)
    assert_redirected_error(client.get(flow.url()), app.redirect_uri, error, flow.state)
    assert not [call for call in network_calls if "169.254" in call or "evil.example" in call]


@pytest.mark.parametrize("response_mode", ["fragment", "form_post", "query.jwt", "jwt", "web_message", ""])
def test_other_response_modes_are_invalid_request(client: TestClient, services: Services,
                                                  response_mode: str) -> None:
    """Only response_mode=query is offered; asking for another is invalid_request, sent in the query."""
    app = add_client(services)
    flow = Flow(app, extra={"response_mode": response_mode})
    assert_redirected_error(client.get(flow.url()), app.redirect_uri, "invalid_request", flow.state)


def test_response_mode_query_is_accepted(client: TestClient, services: Services) -> None:
    """response_mode=query is the default and may be named explicitly (OAuth 2.0 Multiple Response Types 2.1)."""
    add_user(services)
    app = add_client(services, trusted=True)
    assert authorize(client, Flow(app, extra={"response_mode": "query"}))["code"]


# ------------------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize("name", ["response_type", "client_id", "redirect_uri", "scope", "state"])
def test_repeated_core_parameter_shows_error_page(client: TestClient, services: Services, name: str) -> None:
    """A repeated core parameter makes the request ambiguous: refused with a page (RFC 6749 3.1)."""
    app = add_client(services)
    params = list(Flow(app).params().items())
    value = dict(params)[name]
    second = {"redirect_uri": "https://evil.example/cb"}.get(name, value)
    response = get(client, [*params, (name, second)])
    assert_error_page(response, services)


@pytest.mark.parametrize("name", ["nonce", "code_challenge", "code_challenge_method", "prompt", "max_age"])
def test_repeated_other_parameter_is_invalid_request(client: TestClient, services: Services, name: str) -> None:
    """Any other repeated parameter is invalid_request at the validated redirect URI (RFC 6749 3.1)."""
    app = add_client(services)
    flow = Flow(app, extra={"prompt": "login", "max_age": "60"})
    params = list(flow.params().items())
    response = get(client, [*params, (name, dict(params)[name])])
    assert_redirected_error(response, app.redirect_uri, "invalid_request", flow.state)


@pytest.mark.parametrize("name", ["\u00e9", 'a"b', "a\\b", "\u202e"])
def test_repeated_or_oversized_odd_parameter_name_is_invalid_request(client: TestClient, services: Services,
                                                                     name: str) -> None:
    """Parameter names are not echoed raw into error descriptions, so odd names give invalid_request, not a 500."""
    app = add_client(services)
    flow = Flow(app)
    params = list(flow.params().items())
    assert_redirected_error(get(client, [*params, (name, "1"), (name, "2")]), app.redirect_uri, "invalid_request",
                            flow.state)
    assert_redirected_error(get(client, [*params, (name, "x" * 5000)]), app.redirect_uri, "invalid_request",
                            flow.state)


def test_repeated_parameter_split_between_query_and_body(client: TestClient, services: Services) -> None:
    """A POST whose query and body both carry scope is as ambiguous as a repeated query parameter."""
    app = add_client(services)
    flow = Flow(app)
    response = client.post("/authorize?" + urlencode({"scope": "openid"}), data=flow.params())
    assert_error_page(response, services)


@pytest.mark.parametrize("name", ["state", "nonce", "login_hint", "ui_locales", "extra", "acr_values"])
def test_oversized_parameter_is_invalid_request(client: TestClient, services: Services, name: str) -> None:
    """A parameter of 5000 characters is refused with invalid_request, not processed (issue: Bad input)."""
    app = add_client(services)
    flow = Flow(app)
    response = get(client, changed(flow, **{name: "x" * 5000}))
    state = "x" * 5000 if name == "state" else flow.state
    assert_redirected_error(response, app.redirect_uri, "invalid_request", state)
    assert count(services, LoginTransaction) == 0


@pytest.mark.parametrize("name", ["client_id", "redirect_uri"])
def test_oversized_client_id_or_redirect_uri_shows_error_page(client: TestClient, services: Services,
                                                              name: str) -> None:
    """An oversized client_id or redirect_uri cannot be valid: error page, bounded work."""
    app = add_client(services)
    value = "x" * 5000 if name == "client_id" else REDIRECT_URI + "?" + "x" * 5000
    assert_error_page(get(client, changed(Flow(app), **{name: value})), services)


@pytest.mark.parametrize("query", ["state=%ff", "%ff=1", "client_id=%ff",
                                   "redirect_uri=https%3A%2F%2Fapp.example%2F%ff",
                                   "scope=openid%20%c3%28", "state=%ed%a0%80"])
def test_invalid_utf8_in_query_is_a_400_page(client: TestClient, services: Services, query: str) -> None:
    """A query that is not valid UTF-8 gets a 400 page, never a 500 (issue: Bad input)."""
    app = add_client(services)
    base = urlencode(changed(Flow(app), state=None))
    assert_error_page(client.get(f"/authorize?{base}&{query}"), services)


def test_invalid_utf8_in_post_body_is_a_400_page(client: TestClient, services: Services) -> None:
    """A POSTed form that is not valid UTF-8 gets a 400 page (issue: Bad input)."""
    app = add_client(services)
    body = urlencode(changed(Flow(app), state=None)).encode() + b"&state=%ff"
    response = client.post("/authorize", content=body,
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert_error_page(response, services)


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "multipart/form-data; boundary=x"])
def test_post_with_other_body_type_is_a_400_page(client: TestClient, services: Services, content_type: str) -> None:
    """POST /authorize takes form encoding only (OIDC Core 3.1.2.1); anything else is a 400 page."""
    add_client(services)
    response = client.post("/authorize", content=b'{"client_id": "x"}', headers={"content-type": content_type})
    assert_error_page(response, services)


@pytest.mark.parametrize("name", ["state", "nonce", "login_hint", "client_id", "redirect_uri", "scope", "extra"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_nul_character_in_parameter_is_a_400_page(client: TestClient, services: Services, name: str,
                                                  method: str) -> None:
    """A NUL character (which PostgreSQL cannot store in text) gets a 400 page, never a 500 (issue: Bad input)."""
    app = add_client(services)
    params = changed(Flow(app), **{name: "a\x00b"})
    response = get(client, params) if method == "GET" else client.post("/authorize", data=params)
    assert_error_page(response, services)


def test_nul_character_in_parameter_name_is_a_400_page(client: TestClient, services: Services) -> None:
    """A NUL in a parameter name is refused like one in a value."""
    app = add_client(services)
    assert_error_page(get(client, [*Flow(app).params().items(), ("a\x00", "1")]), services)


@pytest.mark.parametrize("path", ["/login/a%00b", "/consent/a%00b", "/authorize/resume/a%00b", "/authorize%00"])
def test_nul_character_in_sign_in_paths_is_a_400(client: TestClient, services: Services, path: str) -> None:
    """A %00 in the path of a sign-in page is refused with 400 before it reaches the database."""
    app = add_client(services)
    assert_login_page_next(client.get(Flow(app).url()))
    for response in (client.get(path), client.post(path, data={"username": "erika"})):
        assert response.status_code == 400, response.text
        assert "location" not in response.headers


def test_nul_character_in_login_form_is_a_400_page(client: TestClient, services: Services) -> None:
    """A NUL in the username of the login form gets a 400 page, not a 500, and signs nobody in."""
    add_user(services)
    app = add_client(services)
    response = submit_login(client, assert_login_page_next(client.get(Flow(app).url())), username="erika\x00")
    assert_error_page(response)
    assert "set-cookie" not in response.headers


# -------------------------------------------------------------------------- accepted variations (case 10)


@pytest.mark.parametrize("extra", [
    {"extra": "foobar"},
    {"display": "popup"},
    {"display": "page"},
    {"ui_locales": "se"},
    {"claims_locales": "se"},
    {"login_hint": "erika"},
    {"acr_values": "https://refeds.org/profile/sfa"},
    {"id_token_hint": "not-checked-before-login"},
    {"claims": '{"userinfo":{"email":null}}'},
    {"resource": "https://api.example/"},
])
def test_extra_parameters_do_not_break_the_flow(client: TestClient, services: Services,
                                                extra: dict[str, str]) -> None:
    """Unknown or optional parameters are ignored and the flow succeeds (OIDC Basic plan A14-A26)."""
    add_user(services)
    app = add_client(services)
    flow = Flow(app, extra=extra)
    params = authorize(client, flow)
    assert params["state"] == flow.state and params["iss"] == ISSUER
    assert exchange(client, flow, params["code"]).status_code == 200


def test_reversed_scope_order_succeeds(client: TestClient, services: Services) -> None:
    """Scope order carries no meaning (RFC 6749 3.3): a reversed scope list works like the usual one."""
    add_user(services)
    app = add_client(services)
    flow = Flow(app, scope="groups email profile openid")
    params = authorize(client, flow)
    response = exchange(client, flow, params["code"])
    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == {"openid", "profile", "email", "groups"}


def test_login_hint_prefills_the_username(client: TestClient, services: Services) -> None:
    """login_hint fills the username field of the login form (OIDC Core 3.1.2.1), HTML-escaped."""
    app = add_client(services)
    login_url = assert_login_page_next(client.get(Flow(app, extra={"login_hint": "erika"}).url()))
    page = client.get(login_url)
    assert page.status_code == 200
    assert '<input id="username" name="username"' in page.text
    assert 'value="erika"' in page.text

    login_url = assert_login_page_next(client.get(Flow(app, extra={"login_hint": '"><script>x()</script>'}).url()))
    page = client.get(login_url)
    assert page.status_code == 200 and "<script>x()</script>" not in page.text


def test_post_authorize_succeeds_like_get(client: TestClient, services: Services) -> None:
    """POST /authorize with form-encoded parameters runs the same flow (OIDC Core 3.1.2.1)."""
    add_user(services)
    app = add_client(services)
    flow = Flow(app)
    response = client.post("/authorize", data=flow.params())
    login_url = assert_login_page_next(response)
    params = query_of(finish(client, submit_login(client, login_url)))
    assert params["state"] == flow.state and params["iss"] == ISSUER
    assert exchange(client, flow, params["code"]).status_code == 200


def test_code_goes_to_the_query_never_a_fragment(client: TestClient, services: Services) -> None:
    """The successful response carries code, state and iss in the query only (RFC 6749 4.1.2; RFC 9207)."""
    sso = sign_in(client, services)
    flow = Flow(sso)
    response = client.get(flow.url())
    assert response.status_code == 302
    location = response.headers["location"]
    assert "#" not in location and location.startswith("https://intranet.example/cb?")
    assert set(query_of(location)) == {"code", "state", "iss"}


# -------------------------------------------------------------------------------------- security headers


def open_page(kind: str, browser: TestClient, services: Services) -> httpx2.Response:
    if kind == "error":
        return browser.get("/authorize?client_id=unknown&response_type=code",
                           headers={"Origin": "https://evil.example"})
    if kind == "redirect":
        app = add_client(services)
        return browser.get(Flow(app).url(), headers={"Origin": "https://evil.example"})
    if kind == "login":
        app = add_client(services)
        return browser.get(assert_login_page_next(browser.get(Flow(app).url())))
    if kind == "consent":
        add_user(services)
        app = add_client(services)
        response = submit_login(browser, assert_login_page_next(browser.get(Flow(app).url())))
        response = browser.get(response.headers["location"])
        assert response.status_code == 303 and response.headers["location"].startswith("/consent/")
        page = browser.get(response.headers["location"])
        assert "decision" in page.text
        return page
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["error", "redirect", "login", "consent"])
def test_pages_carry_security_headers(client: TestClient, services: Services, kind: str) -> None:
    """Error, login and consent pages forbid framing, inline script, sniffing, referrers and caching (RFC 9700 4.16)."""
    response = open_page(kind, client, services)
    assert response.status_code in (200, 303, 400), response.text
    headers = response.headers
    csp = headers["content-security-policy"]
    directives = {part.split()[0]: part.split()[1:] for part in csp.split(";") if part.strip()}
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["base-uri"] == ["'none'"]
    assert "*" not in directives.get("script-src", []) and "data:" not in directives.get("script-src", [])
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    hsts = headers["strict-transport-security"]
    assert int(hsts.split("max-age=")[1].split(";")[0]) >= 31536000


@pytest.mark.parametrize("method", ["GET", "POST", "OPTIONS"])
def test_authorize_offers_no_cors(client: TestClient, services: Services, method: str) -> None:
    """The authorization endpoint MUST NOT support CORS (RFC 9700 2.6)."""
    app = add_client(services)
    headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    if method == "POST":
        response = client.post("/authorize", data=Flow(app).params(), headers=headers)
    else:
        response = client.request(method, Flow(app).url(), headers=headers)
    assert response.status_code < 500
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]


# ---------------------------------------------------------------------------------------------- login POST


def test_login_post_answers_303(client: TestClient, services: Services) -> None:
    """After the login POST the browser is sent on with 303, never 307/308 (RFC 9700 4.12)."""
    add_user(services)
    app = add_client(services)
    response = submit_login(client, assert_login_page_next(client.get(Flow(app).url())))
    assert response.status_code == 303
    assert response.headers["location"].startswith("/authorize/resume/")


def test_failed_login_post_does_not_redirect(client: TestClient, services: Services) -> None:
    """A wrong password shows the login page again; nothing is forwarded anywhere."""
    add_user(services)
    app = add_client(services)
    response = submit_login(client, assert_login_page_next(client.get(Flow(app).url())), password="wrong password")
    assert response.status_code == 200
    assert "location" not in response.headers
    assert 'id="login-error"' in response.text
    assert count(services, AuthorizationCode) == 0


def test_consent_post_redirect_is_not_307(client: TestClient, services: Services) -> None:
    """The consent POST's redirect to the client is not a 307/308, so the form is not re-posted (RFC 9700 4.12)."""
    add_user(services)
    app = add_client(services)
    flow = Flow(app)
    response = submit_login(client, assert_login_page_next(client.get(flow.url())))
    response = client.get(response.headers["location"])
    consent_url = response.headers["location"]
    page = client.get(consent_url)
    response = client.post(consent_url, data={"decision": "allow", "csrf_token": csrf_of(page.text)})
    assert response.status_code in (302, 303)
    assert response.headers["location"].startswith(app.redirect_uri + "?code=")


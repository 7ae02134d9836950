"""Plain regression tests for what the fuzz tests found, each with the input that broke it."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from idp.db import unit_of_work
from idp.models import SsoSession
from idp.services import Services
from tests.helpers import Flow, add_client, add_user, follow_to_login, submit_login


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
@pytest.mark.parametrize("header", ["Basic ", "Basic \t", "basic  "])
def test_a_basic_header_without_credentials_is_invalid_client_not_a_500(client: TestClient, services: Services,
                                                                         path: str, header: str) -> None:
    """``Authorization: Basic `` with nothing after the scheme made authlib unpack a one-item split (ValueError,
    a 500). RFC 6749 5.2: a client that tried the Authorization header and failed gets 401 ``invalid_client``
    with ``WWW-Authenticate``."""
    registered = add_client(services, grant_types=["client_credentials"], redirect_uris=[])
    response = client.post(path, data={"grant_type": "client_credentials", "token": "x",
                                       "client_id": registered.client_id}, headers={"authorization": header})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize("request_kwargs", [
    {"method": "POST", "content": b"{}", "headers": {"content-type": "application/json"}},
    {"method": "GET", "params": {"access_token": "x"}},
    {"method": "GET", "params": {"a": "\x00"}},
])
def test_userinfo_refusals_carry_the_bearer_challenge(client: TestClient, request_kwargs: dict[str, object]) -> None:
    """RFC 6750 3: a refused userinfo request (here a JSON body, a token in the query, a NUL) answers 400
    ``invalid_request`` with ``WWW-Authenticate: Bearer error="invalid_request"``; it had no challenge at all."""
    kwargs = dict(request_kwargs)
    headers = {"authorization": "Bearer abc", **kwargs.pop("headers", {})}  # type: ignore[dict-item]
    response = client.request(url="/userinfo", headers=headers, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_request"')


def test_a_nul_in_the_user_agent_does_not_break_sign_in(client: TestClient, services: Services) -> None:
    """``User-Agent: \\x00`` reached the session row and the audit trail as text, which PostgreSQL refuses: the
    password sign-in answered 500. The agent is stored without control characters; the sign-in succeeds."""
    add_user(services)
    registered = add_client(services)
    client.headers["user-agent"] = "Mozilla/5.0\x00\x1b[31m (evil)"
    response = submit_login(client, follow_to_login(client, Flow(registered)))
    assert response.status_code == 303, response.text
    with unit_of_work(services.sessions) as db:
        assert db.scalars(select(SsoSession.user_agent)).one() == "Mozilla/5.0[31m (evil)"


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
@pytest.mark.parametrize("header", ["Basic", "Basic dW5rbm93bjp3cm9uZw==", "Bearer abc"])
def test_a_failed_authorization_header_is_401_even_with_a_client_id_in_the_body(
        client: TestClient, services: Services, path: str, header: str) -> None:
    """RFC 6749 5.2: a client that tried the Authorization header and failed gets 401 with WWW-Authenticate.
    With an unknown ``client_id`` in the body too, authlib's ``none`` method refused it first with a 400."""
    response = client.post(path, data={"grant_type": "client_credentials", "token": "x", "client_id": "unknown"},
                           headers={"authorization": header})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("GET", "/login/%00", b"", 400),
    ("POST", "/login/abc", b"username=" + b"a" * 70000, 413),
])
def test_a_browser_refused_before_any_route_gets_the_error_page(client: TestClient, method: str, path: str,
                                                                  body: bytes, status: int) -> None:
    """A NUL in the path or a body over ``[server] max_body_size``: a browser (it accepts HTML) gets the theme's
    error page, a machine the small JSON error, both with the security headers."""
    headers = {"content-type": "application/x-www-form-urlencoded"}
    page = client.request(method, path, content=body or None, headers={**headers, "accept": "text/html,*/*"})
    assert page.status_code == status
    assert page.headers["content-type"].startswith("text/html") and 'id="error-title"' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    machine = client.request(method, path, content=body or None, headers={**headers, "accept": "application/json"})
    assert machine.status_code == status and machine.json()["error"] == "invalid_request"

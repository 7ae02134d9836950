"""Property-based tests of every HTML form with malformed and hostile input (issue 7, Tests).

The forms are found, not listed: every route under ``/login/{tx}``, ``/consent/{tx}``, ``/logout/confirm``,
``/account`` and ``/admin`` that takes a POST (or PUT/PATCH/DELETE) is fuzzed, with the field names and path
values the pages' own forms use, a valid CSRF token (or a broken one) and hostile values. For every input: no
500, no stack trace, the security headers; a refusal is an HTML error page (JSON for the WebAuthn steps); a
refused form or one without a valid CSRF token leaves every row as it was.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.routing import Route
from starlette.testclient import TestClient

from idp.accounts.users import grant_role, roles_of
from idp.db import unit_of_work
from idp.factors import enrolled, recovery, sms, trusted_devices
from idp.login.transactions import csrf_binding
from idp.models import LoginTransaction
from idp.services import Services
from idp.web import csrf
from tests.conftest import ISSUER, FakeClock
from tests.fuzz.forms import (
    Form,
    Target,
    crawl,
    crawl_site,
    field_vocabulary,
    form_request,
    mutating_routes,
    parameter_values,
)
from tests.fuzz.hostile import BROWSER, Hostile, assert_html_error, assert_safe, mutated, raw_query, snapshot
from tests.fuzz.world import open_session, session_alive, session_token
from tests.helpers import (
    LOGIN_PAGE,
    PASSWORD,
    Flow,
    add_client,
    add_console_user,
    add_user,
    seed_totp,
    submit_login,
    user_row,
)

FUZZ = settings.get_profile("idp-fuzz")

FAMILIES = {
    "sign-in": ("/login/{tx}", "/consent/{tx}"),
    "logout": ("/logout/confirm",),
    "account": ("/account",),
    "admin": ("/admin",),
    # Machines' endpoints, fuzzed in test_fuzz_oauth.py.
    "protocol": ("/authorize", "/token", "/userinfo", "/introspect", "/revoke", "/logout", "/register"),
}


def check(response: Any, target: Target, before: dict[str, Any], after: Callable[[], dict[str, Any]]) -> None:
    """The properties of one form submission (see the module docstring)."""
    request = Hostile(target.route.method, target.path, body=target.body, content_type=target.content_type)
    status = response.status_code
    assert_safe(response, request)
    if 400 <= status < 500:
        if target.route.json and response.headers.get("content-type", "").startswith("application/json"):
            assert isinstance(response.json(), dict), request
        else:
            assert_html_error(response, request)
    if status >= 400 or not target.may_act:
        assert after() == before, f"a refused form changed a row ({status})\n{request!r}"
    if not target.may_act:
        assert status in (200, 303, 400, 403, 404, 405, 413, 429), f"accepted without a CSRF token\n{request!r}"
        if status in (200, 303) and not target.route.json:
            # Only the way through sign-in (the session has gone), or the page shown again: never "done".
            location = response.headers.get("location", "")
            assert status == 200 or location.startswith(("/authorize/resume/", "/login/")), request


def test_every_form_route_belongs_to_a_fuzzed_family(client: TestClient) -> None:
    """A route that changes something and belongs to no family below would escape the fuzzing: name its
    family here (and the property that covers it) when adding one."""
    every = {prefix for prefixes in FAMILIES.values() for prefix in prefixes}
    orphans = [route for route in mutating_routes(client.app.routes, ("/",))
               if not any(route.path == p or route.path.startswith(p + "/") for p in every)]
    assert not orphans, f"POST routes no fuzz test covers: {[r.path for r in orphans]}"


# --- session-bound forms: /account, /admin, /logout/confirm ------------------------------------------------------


@dataclass
class SessionBrowser:
    """A browser with a live session of ``username``, opened again whenever a fuzzed form ended it."""

    services: Services
    browser: TestClient
    username: str
    second_factor: bool
    ensure_user: Callable[[], None] = lambda: None
    cookie: str = ""

    def ready(self) -> None:
        self.ensure_user()
        if not self.cookie or not session_alive(self.services, self.cookie):
            self.cookie = open_session(self.services, self.browser, self.username, second_factor=self.second_factor)

    def csrf(self, purpose: str) -> dict[str, str]:
        """The session's token for ``purpose``, and wrong ones: another form's, and one of another browser."""
        return {purpose: session_token(self.services, purpose, self.cookie),
                "other form": session_token(self.services, "consent", self.cookie),
                "other browser": session_token(self.services, purpose, "another browser's cookie")}


def _get_pages(client: TestClient, prefix: str) -> list[str]:
    """The family's GET pages that need no path parameter: where the crawl starts."""
    return [route.path for route in client.app.routes if isinstance(route, Route) and route.path.startswith(prefix)
            and "{" not in route.path and "GET" in (route.methods or set())]


def _fuzz_session_family(client: TestClient, services: Services, session: SessionBrowser, prefix: str,
                         purpose: str, extra_params: dict[str, list[str]], extra_forms: list[Form] | None = None,
                         ) -> None:
    routes = mutating_routes(client.app.routes, (prefix,))
    assert routes, f"no form under {prefix}"
    session.ready()
    forms = crawl(session.browser, _get_pages(client, prefix), prefix) + (extra_forms or [])
    params = parameter_values(routes, forms, extra_params)
    vocabulary = field_vocabulary()

    @FUZZ
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        session.ready()
        target = data.draw(form_request(routes, forms, params, vocabulary, session.csrf(purpose),
                                        lambda path: purpose))
        before = snapshot(services.engine)
        response = session.browser.request(target.route.method, target.path, content=target.body,
                                           headers=target.headers())
        check(response, target, before, lambda: snapshot(services.engine))

    prop()


def _seed_account(services: Services, username: str) -> dict[str, list[str]]:
    """A user with every kind of factor, recovery codes, a trusted browser and a second session."""
    from datetime import timedelta

    totp_id, _ = seed_totp(services, username)
    with unit_of_work(services.sessions) as db:
        user = user_row(db, username)
        phone = sms.add_phone(db, user, "+4915112345678", "Diensthandy", services.settings.sms,
                              services.now() - timedelta(days=1))
        sms.confirm(db, phone, services.now() - timedelta(days=1))
        recovery.regenerate(db, services.passwords, user, services.now())
        _, device = trusted_devices.trust(db, services.hasher, user, lifetime=timedelta(hours=12),
                                          user_agent="Firefox/128.0", now=services.now())
        return {"kind": ["totp", "sms", "webauthn"], "factor": [str(totp_id), str(phone.id)],
                "device": [str(device.id)]}


def test_account_forms_withstand_hostile_input(client: TestClient, services: Services) -> None:
    """Every /account form (rename, remove, add a factor, phone, recovery codes, sessions, trusted browsers),
    signed in with a fresh second factor: no 500 or trace; a refusal is an error page and changes nothing."""
    add_user(services)
    params = _seed_account(services, "erika")

    def keep_a_factor() -> None:
        with unit_of_work(services.sessions) as db:
            has_one = bool(enrolled.factors_of(db, user_row(db)))
        if not has_one:
            seed_totp(services)

    session = SessionBrowser(services, client, "erika", second_factor=True, ensure_user=keep_a_factor)
    _fuzz_session_family(client, services, session, "/account", "account", params)


def test_logout_confirmation_form_withstands_hostile_input(client: TestClient, services: Services) -> None:
    """POST /logout/confirm with hostile fields: signed out only with the session's CSRF token; a redirect
    only to a registered post_logout_redirect_uri; never a 500 or a trace."""
    add_user(services)
    registered = add_client(services)
    session = SessionBrowser(services, client, "erika", second_factor=False)
    form = Form("/logout/confirm", {"post_logout_redirect_uri": [registered.post_logout_redirect_uri or ""],
                                    "client_id": [registered.client_id], "state": ["xyz"]})
    _fuzz_session_family(client, services, session, "/logout/confirm", "logout", {}, [form])


def test_admin_console_forms_withstand_hostile_input(client: TestClient, services: Services) -> None:
    """Every /admin form there is (found from the routes, with the ids and fields the console's pages show), as
    an administrator with a second factor: no 500 or trace; a refusal is an error page and changes nothing; a
    form without the session's CSRF token changes nothing."""
    add_console_user(services, "admina", "admin")
    add_console_user(services, "helga", "helpdesk", group="IT-Servicedesk")
    add_user(services)
    _seed_account(services, "erika")
    add_client(services, name="Fachverfahren")
    add_client(services, name="Intranet", public=True, redirect_uris=["http://127.0.0.1/cb"])
    names = itertools.count()
    state = {"username": "admina"}

    def keep_an_admin() -> None:
        with unit_of_work(services.sessions) as db:
            user = user_row(db, state["username"])
            if user.is_active and "admin" in roles_of(db, user):
                return
            if user.is_active:
                grant_role(db, user, "admin")
                return
        # The fuzzer disabled the administrator itself (allowed for another admin): carry on as a new one.
        state["username"] = session.username = f"admin{next(names)}"
        add_console_user(services, session.username, "admin")
        session.cookie = ""

    session = SessionBrowser(services, client, "admina", second_factor=True, ensure_user=keep_an_admin)
    _fuzz_session_family(client, services, session, "/admin", "admin", {})


# --- the pages behind the forms: GET with hostile queries (searches, filters, paging) ------------------------------


COMMON_QUERY = ("q", "page", "per_page", "sort", "order", "from", "to", "since", "until", "limit", "offset", "format",
                "next", "status", "role", "event", "user", "client", "kind")


def _fuzz_pages(client: TestClient, session: SessionBrowser, prefix: str) -> None:
    session.ready()
    site = crawl_site(session.browser, _get_pages(client, prefix), prefix)
    # The pages the crawl saw (ids from their links), and the family's own GET routes (an export among them).
    pages = sorted({page.split("?")[0] for page in site.pages} | set(_get_pages(client, prefix)))
    names = sorted({name for form in site.searches for name in form.fields} | set(COMMON_QUERY))

    def filters(page: str) -> list[tuple[str, str]]:
        """The page's own search form, filled with the first value each field offers."""
        return [(name, values[0]) for form in site.searches if form.action.split("?")[0] == page.removesuffix(".csv")
                for name, values in form.fields.items()]

    @FUZZ
    @given(page=st.sampled_from(pages), data=st.data(), raw=st.integers(0, 4))
    def prop(page: str, data: st.DataObject, raw: int) -> None:
        session.ready()
        query = data.draw(raw_query(names)) if raw == 0 else urlencode(data.draw(mutated(filters(page), names)))
        request = Hostile("GET", page, query=query, headers=dict(BROWSER))
        response = request.send(session.browser)
        assert_safe(response, request)
        if response.status_code in (302, 303):
            assert response.headers["location"].startswith("/"), request
        elif response.status_code >= 400:
            assert_html_error(response, request)

    prop()


def test_account_pages_withstand_hostile_queries(client: TestClient, services: Services) -> None:
    """Every /account page (found by crawling) with hostile query parameters: a page, a redirect on this server
    or an error page; never a 500 or a trace."""
    add_user(services)
    _seed_account(services, "erika")
    _fuzz_pages(client, SessionBrowser(services, client, "erika", second_factor=True), "/account")


def test_admin_pages_withstand_hostile_searches_and_filters(client: TestClient, services: Services) -> None:
    """Every /admin page (found by crawling, with the ids its links carry) with hostile searches, filters and
    paging, including the audit log and its CSV export: never a 500 or a trace."""
    add_console_user(services, "admina", "admin")
    add_user(services)
    _seed_account(services, "erika")
    add_client(services, name="Fachverfahren")
    _fuzz_pages(client, SessionBrowser(services, client, "admina", second_factor=True), "/admin")


# --- the sign-in pages: password, second factor, enrollment, consent ---------------------------------------------


@dataclass
class Stage:
    """One browser stopped at one page of a sign-in (``/login/{tx}``, ``.../factor``, ``.../enroll``,
    ``/consent/{tx}``), made again when an example moved it on."""

    name: str
    make: Callable[[], tuple[TestClient, str]]
    browser: TestClient | None = None
    tx: str = ""
    forms: list[Form] = field(default_factory=list)

    def ready(self, services: Services) -> None:
        if self.browser is not None:
            return
        self.browser, self.tx = self.make()
        prefix = "/consent/" if self.name == "consent" else f"/login/{self.tx}"
        page = {"login": f"/login/{self.tx}", "factor": f"/login/{self.tx}/factor",
                "enroll": f"/login/{self.tx}/enroll", "consent": f"/consent/{self.tx}"}[self.name]
        self.forms = crawl(self.browser, [page], prefix, limit=8)
        if self.name == "login":
            self.forms.append(Form(f"/login/{self.tx}", {"username": ["erika", "admina"], "password": [PASSWORD]}))

    def csrf(self, services: Services) -> dict[str, str]:
        with unit_of_work(services.sessions) as db:
            tx = db.get(LoginTransaction, self.tx)
            assert tx is not None
            binding = csrf_binding(tx)
        return {purpose: csrf.make_token(services.csrf_key, purpose, binding)
                for purpose in ("login", "factor", "enroll", "consent")}


def purpose_of(path: str) -> str:
    """The CSRF purpose of a sign-in form, as the pages make it."""
    if path.startswith("/consent/"):
        return "consent"
    if "/enroll" in path:
        return "enroll"
    if path.endswith(("/factor", "/sms/send")) or "/webauthn/" in path:
        return "factor"
    return "login"


def _to_page(browser: TestClient, response: Any, username: str, stop: Callable[[str], bool]) -> str:
    """Follow the IdP's redirects (answering the password) until ``stop`` says this is the page."""
    for _ in range(10):
        assert response.status_code in (302, 303), response.text
        location = response.headers["location"]
        if stop(location):
            return str(location)
        response = submit_login(browser, location, username) if LOGIN_PAGE.fullmatch(location) else \
            browser.get(location)
    raise AssertionError("the sign-in did not reach the page")


def test_sign_in_forms_withstand_hostile_input(client: TestClient, services: Services, clock: FakeClock) -> None:
    """Every form of a sign-in (password, passkey, second factor by app, SMS or recovery code, WebAuthn steps,
    enrollment of a factor or skipping it, consent), each fuzzed at the step it belongs to: no 500 or trace; a
    refusal is an error page (JSON for the WebAuthn steps) and changes nothing."""
    add_user(services)
    add_console_user(services, "admina", "admin")
    _seed_account(services, "admina")
    add_user(services, "neu")
    app = client.app
    web = add_client(services, name="Fachverfahren")

    def browser() -> TestClient:
        return TestClient(app, base_url=ISSUER, follow_redirects=False)

    def login() -> tuple[TestClient, str]:
        b = browser()
        location = b.get(Flow(web).url()).headers["location"]
        return b, location.split("/")[2]

    def factor() -> tuple[TestClient, str]:
        b = browser()
        location = _to_page(b, b.get("/admin"), "admina", lambda loc: loc.endswith("/factor"))
        return b, location.split("/")[2]

    def enroll() -> tuple[TestClient, str]:
        b = browser()
        location = _to_page(b, b.get("/admin"), "neu", lambda loc: loc.endswith("/enroll"))
        return b, location.split("/")[2]

    def consent() -> tuple[TestClient, str]:
        b = browser()
        open_session(services, b, "erika", second_factor=False)
        # prompt=consent: an earlier example may have given consent already.
        flow = Flow(web, extra={"prompt": "consent"})
        location = _to_page(b, b.get(flow.url()), "erika", lambda loc: loc.startswith("/consent/"))
        return b, location.split("/")[2]

    stages = [Stage("login", login), Stage("factor", factor), Stage("enroll", enroll), Stage("consent", consent)]
    routes = mutating_routes(app.routes, FAMILIES["sign-in"])
    vocabulary = field_vocabulary()

    @FUZZ
    @given(data=st.data())
    def prop(data: st.DataObject) -> None:
        stage = data.draw(st.sampled_from(stages))
        stage.ready(services)
        assert stage.browser is not None
        params = parameter_values(routes, stage.forms, {"tx": [stage.tx]})
        # Mostly the forms of this step; one example in five a form of another step, out of order.
        here = [route for route in routes if purpose_of(route.path) == stage.name]
        chosen = here if here and data.draw(st.integers(0, 4)) else routes
        target = data.draw(form_request(chosen, stage.forms, params, vocabulary, stage.csrf(services), purpose_of))
        before = snapshot(services.engine)
        clock.advance(seconds=1)
        response = stage.browser.request(target.route.method, target.path, content=target.body,
                                         headers=target.headers())
        check(response, target, before, lambda: snapshot(services.engine))
        if response.status_code in (302, 303) or re.search(r'"redirect"', response.text[:200]):
            stage.browser = None  # it moved on: start this step afresh for the next example

    prop()


# --- hostile request headers -------------------------------------------------------------------------------------


HEADER_VALUES = st.one_of(
    st.sampled_from([b"\x00", b"a\x00b", b"\xff\xfe", b"x" * 8000, b"de-DE,de;q=0.9,en;q=abc", b"*;q=2,;;,",
                     b"q=0.5,,,", b"zz-ZZ-x-private;q=1", b"../../etc", b"\x1b[31m", b"() { :; }; echo pwned",
                     b"<script>", b"1.2.3.4, 5.6.7.8, unknown", b"::1, [::1]:80", b"text/html;q=NaN"]),
    st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b))
HEADER_NAMES = ("user-agent", "accept-language", "accept", "cookie", "x-forwarded-for", "x-forwarded-proto",
                "x-forwarded-host", "origin", "referer", "x-request-id", "forwarded", "content-language")


def test_hostile_headers_do_not_break_pages_or_sign_in(client: TestClient, services: Services) -> None:
    """Pages, the authorization endpoint and a complete password sign-in with hostile request headers (a NUL
    or bytes that are not UTF-8 in the User-Agent the session records, a broken Accept-Language, cookies,
    forwarded headers from an untrusted peer): never a 500 or a trace, the security headers always there."""
    add_user(services)
    web = add_client(services, name="Fachverfahren")

    @FUZZ
    @given(headers=st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_VALUES, min_size=1, max_size=3),
           scenario=st.sampled_from(["page", "account", "authorize", "sign-in"]))
    def prop(headers: dict[str, bytes], scenario: str) -> None:
        browser = TestClient(client.app, base_url=ISSUER, follow_redirects=False)
        if scenario == "page":
            responses = [browser.get("/", headers=headers), browser.get("/accessibility", headers=headers)]
        elif scenario == "account":
            responses = [browser.get("/account", headers=headers)]
        else:
            first = browser.get(Flow(web).url(), headers=headers)
            responses = [first]
            if scenario == "sign-in" and first.status_code == 303 and LOGIN_PAGE.fullmatch(first.headers["location"]):
                login = first.headers["location"]
                page = browser.get(login, headers=headers)
                responses.append(page)
                match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
                if match:
                    responses.append(browser.post(login, headers=headers, data={
                        "username": "erika", "password": PASSWORD, "csrf_token": match.group(1)}))
        for response in responses:
            assert_safe(response, f"{scenario} with {headers!r}")

    prop()

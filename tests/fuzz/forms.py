"""Finding the forms to fuzz by themselves: POST routes from ``app.routes``, forms harvested from the pages.

A route added tomorrow under ``/admin`` or ``/account`` is fuzzed without touching the tests: its path template
comes from the app's routes, real values for its path parameters and its field names come from the forms the
console's or the account's pages show (crawled from the family's GET pages, following links one level deep).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from hypothesis import strategies as st
from starlette.routing import BaseRoute, Route
from starlette.testclient import TestClient

from tests.fuzz.hostile import BROWSER, NASTY, hostile_text, raw_body

TEMPLATES = Path(__file__).resolve().parents[2] / "themes" / "default" / "templates"

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def field_vocabulary() -> list[str]:
    """Every form field name any template uses: what a fuzzer should try in any form."""
    names: set[str] = set()
    for template in TEMPLATES.rglob("*.html"):
        names.update(re.findall(r'name="([A-Za-z0-9_\-\[\]]+)"', template.read_text()))
    return sorted(names)


@dataclass(frozen=True)
class FormRoute:
    path: str
    """The route's template, e.g. ``/admin/clients/{id}/rotate``."""
    method: str
    pattern: re.Pattern[str]
    params: tuple[str, ...]

    @property
    def json(self) -> bool:
        """The WebAuthn steps read JSON from the page's script and answer JSON."""
        return self.path.endswith(("/options", "/verify"))


def mutating_routes(routes: Iterable[BaseRoute], prefixes: tuple[str, ...]) -> list[FormRoute]:
    """Every route under ``prefixes`` that takes a method that changes something."""
    found = []
    for route in routes:
        if not isinstance(route, Route) or not route.path.startswith(prefixes):
            continue
        for method in sorted((route.methods or set()) & MUTATING):
            params = tuple(re.findall(r"{(\w+)(?::\w+)?}", route.path))
            regex = "^" + re.sub(r"{\w+(?::\w+)?}", "([^/]+)", re.escape(route.path).replace(r"\{", "{")
                                 .replace(r"\}", "}")) + "$"
            found.append(FormRoute(route.path, method, re.compile(regex), params))
    return found


@dataclass
class Form:
    action: str
    fields: dict[str, list[str]] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self, page: str) -> None:
        super().__init__()
        self.page = page
        self.forms: list[Form] = []
        self.searches: list[Form] = []
        """GET forms (search, filters): their fields are the page's query parameters."""
        self.links: list[str] = []
        self._form: Form | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "a" and a.get("href", "").startswith("/"):
            self.links.append(a["href"])
        elif tag == "form":
            self._form = Form(a.get("action") or self.page)
            (self.forms if a.get("method", "get").lower() == "post" else self.searches).append(self._form)
        elif self._form is not None and tag in ("input", "textarea", "button", "select") and a.get("name"):
            self._form.fields.setdefault(a["name"], []).append(a.get("value", ""))
            if tag == "select":
                self._select = a["name"]
        elif self._form is not None and tag == "option" and self._select:
            self._form.fields[self._select].append(a.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None


@dataclass
class Site:
    """What a crawl found: the POST forms, the pages shown, and the GET forms (searches, filters)."""

    forms: list[Form] = field(default_factory=list)
    pages: list[str] = field(default_factory=list)
    searches: list[Form] = field(default_factory=list)


def crawl(browser: TestClient, start: Iterable[str], prefix: str, *, limit: int = 60) -> list[Form]:
    """The POST forms on the pages under ``prefix``, from ``start`` and the links found there (one level)."""
    return crawl_site(browser, start, prefix, limit=limit).forms


def crawl_site(browser: TestClient, start: Iterable[str], prefix: str, *, limit: int = 60) -> Site:
    """The pages under ``prefix``, from ``start`` and the links found there (one level), and their forms."""
    seen: set[str] = set()
    site = Site()
    queue = list(start)
    depth = {path: 0 for path in queue}
    while queue and len(seen) < limit:
        path = queue.pop(0)
        if path in seen or not path.startswith(prefix) or path.endswith(".csv"):
            continue
        seen.add(path)
        response = browser.get(path)
        if response.status_code != 200 or not response.headers.get("content-type", "").startswith("text/html"):
            continue
        parser = _FormParser(path)
        parser.feed(response.text)
        site.pages.append(path)
        site.forms += [form for form in parser.forms if form.action.startswith(prefix)]
        site.searches += [form for form in parser.searches if form.action.startswith(prefix)]
        if depth[path] < 1:
            for link in parser.links:
                link = link.split("#")[0]
                if link not in depth:
                    depth[link] = depth[path] + 1
                    queue.append(link)
    return site


def parameter_values(routes: list[FormRoute], forms: list[Form], extra: dict[str, list[str]]) -> dict[str, list[str]]:
    """Real values of each path parameter, read from the actions of the harvested forms."""
    values: dict[str, set[str]] = {name: set(found) for name, found in extra.items()}
    for form in forms:
        path = urlsplit(form.action).path
        for route in routes:
            match = route.pattern.match(path)
            if match:
                for name, value in zip(route.params, match.groups(), strict=True):
                    values.setdefault(name, set()).add(value)
    return {name: sorted(found) for name, found in values.items()}


HOSTILE_SEGMENTS = ("0", "-1", "1.5", "99999999999999999999", "2147483648", "%2e%2e", "..%5c..", "%00", "%ff", "%ZZ",
                    "1%20OR%201=1", "%27", "%3Cscript%3E", "%C2%B9", "%D9%A1", "+1", "1e3", "totp", "sms", "webauthn",
                    "recovery", "x" * 300)


@dataclass
class Target:
    route: FormRoute
    path: str
    body: bytes
    content_type: str | None
    may_act: bool
    """False: no valid CSRF token anywhere in the body, so the request must change nothing."""

    def headers(self) -> dict[str, Any]:
        """As the page sends it: a form from the browser, a JSON call from webauthn.js."""
        accept = b"application/json" if self.route.json else BROWSER["accept"]
        return {"accept": accept, **({"content-type": self.content_type} if self.content_type is not None else {})}


@st.composite
def form_request(draw: st.DrawFn, routes: list[FormRoute], forms: list[Form], params: dict[str, list[str]],
                 vocabulary: list[str], csrf: dict[str, str], purpose_of: Any) -> Target:
    """One POST to one of ``routes``: real or hostile path parameters, the form's real fields with hostile values
    mixed in, a valid CSRF token or a broken one, and at times a body that is no form at all."""
    route = draw(st.sampled_from(routes))
    path = route.path
    for name in route.params:
        choices = params.get(name, [])
        value = draw(st.sampled_from(choices)) if choices and draw(st.integers(0, 3)) else draw(
            st.sampled_from(HOSTILE_SEGMENTS))
        path = re.sub(r"{" + name + r"(?::\w+)?}", value, path, count=1)
    known = [form for form in forms if urlsplit(form.action).path == path]
    fields: dict[str, str] = {}
    if known:
        form = draw(st.sampled_from(known))
        fields = {name: draw(st.sampled_from(values)) for name, values in form.fields.items() if name != "csrf_token"}
    for name in draw(st.lists(st.sampled_from(sorted({*fields, *vocabulary})), max_size=4)):
        fields[name] = draw(hostile_text)
    pairs = list(fields.items())
    token = csrf.get(purpose_of(route.path), "")
    csrf_choice = draw(st.sampled_from(["valid", "valid", "valid", "missing", "garbage", "other", "twice"]))
    if csrf_choice in ("valid", "twice"):
        pairs += [("csrf_token", token)] * (2 if csrf_choice == "twice" else 1)
    elif csrf_choice == "garbage":
        broken = token[:-2] + ("BB" if token.endswith("AA") else "AA")
        pairs.append(("csrf_token", draw(st.one_of(st.sampled_from(NASTY), st.just(broken)))))
    elif csrf_choice == "other":
        others = [value for key, value in sorted(csrf.items()) if key != purpose_of(route.path)]
        pairs.append(("csrf_token", draw(st.sampled_from(others)) if others else "x"))
    extra = draw(st.lists(st.tuples(st.sampled_from([v for v in vocabulary if v != "csrf_token"]), hostile_text),
                          max_size=2))
    pairs += extra  # a field given twice at times
    encoding = draw(st.sampled_from(["form", "form", "form", "json", "raw"]))
    if encoding == "raw":
        body, ctype = draw(raw_body(vocabulary))
    elif route.json or encoding == "json":
        body = json.dumps(dict(pairs)).encode()
        ctype = "application/json" if route.json else draw(st.sampled_from(
            ["application/json", "application/x-www-form-urlencoded"]))
    else:
        body, ctype = urlencode(pairs).encode(), "application/x-www-form-urlencoded"
    # Refused for certain: no valid token anywhere in the body (the raw bodies never hold one).
    refused = encoding == "raw" or csrf_choice in ("missing", "garbage", "other")
    return Target(route, path, body, ctype, not refused)

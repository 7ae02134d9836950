"""Hostile input for the fuzz tests, and the checks every answer to it must pass.

The strategies produce what an attacker or a broken client sends: very long values, NUL and control characters,
bytes that are not UTF-8, broken percent-encoding, repeated parameters, PHP-style arrays, JSON where a form is
expected, huge numbers, look-alike Unicode, CR/LF for header injection, path traversal, SQL and HTML
metacharacters. The checks are the quality bar of the project (security-cases.md, "every case"): never a 500,
never a stack trace, the security headers on every answer, an RFC error JSON from the API endpoints and an HTML
page for browsers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import strategies as st
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from idp.db import Base

NASTY: tuple[str, ...] = (
    "", " ", "\x00", "a\x00b", "\r\n", "x\r\nSet-Cookie: pwned=1", "x\nLocation: https://evil.example/",
    "\t\x0b\x0c\x1b[31m\x08", "\x7f", "\x85", "'; DROP TABLE users; --", '" OR "1"="1', "1' OR '1'='1' --",
    "%", "%%", "%00", "%ZZ", "%u0041", "%c0%af", "%2e%2e%2f", "+", "&", "=", "a=b&c=d", "#frag",
    "<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "javascript:alert(1)", "{{7*7}}", "${7*7}",
    "{% raw %}", "../../../../etc/passwd", "..\\..\\windows\\win.ini", "/..;/admin",
    "9" * 400, "-1", "0", "00", "1e309", "NaN", "Infinity", "-0", "2147483648", "9223372036854775808", "0x10",
    "\u0661\u0662\u0663", "\uff45\uff52\uff49\uff4b\uff41", "e\u0301", "\u212a", "\ufb01", "\u202eevil", "\u200b",
    "\ufeff", "\U0001f600", "\u00df", "\u0130", "\ufffd", "null", "true", "[]", "{}", '{"a": 1}',
    "A" * 5000, "\u00e9" * 3000, "a" * 20000,
    "https://evil.example/cb", "https://app.example/cb/../../evil", "HTTPS://APP.EXAMPLE/cb", "//evil.example",
    "data:text/html,<b>x</b>", "Basic Og==", "Bearer ", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
)
"""Values known to break careless code, tried first by Hypothesis (``sampled_from`` shrinks towards them)."""

PRINTABLE = st.characters(exclude_categories=("Cs",))
"""Any code point that can be encoded as UTF-8 (lone surrogates cannot be sent at all)."""

hostile_text: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(NASTY),
    st.text(PRINTABLE, max_size=40),
    st.builds(lambda a, b: a + b, st.sampled_from(NASTY), st.text(PRINTABLE, max_size=10)),
)


def hostile_params(names: Sequence[str], *, max_size: int = 8) -> st.SearchStrategy[list[tuple[str, str]]]:
    """A list of (name, value) pairs: the expected names and hostile ones, in any order, repeated at times."""
    name = st.one_of(st.sampled_from(list(names)), st.sampled_from([f"{n}[]" for n in names]),
                     st.sampled_from(["", "a" * 300, "\x00", "x\r\ny", "__proto__", "constructor"]),
                     st.text(PRINTABLE, max_size=12))
    return st.lists(st.tuples(name, hostile_text), max_size=max_size)


@st.composite
def mutated(draw: st.DrawFn, base: Sequence[tuple[str, str]], names: Sequence[str], *,
            max_changes: int = 3) -> list[tuple[str, str]]:
    """``base`` (a valid request's parameters) with a few changes: a value replaced by a hostile one (most
    often), a parameter dropped, repeated, or a hostile one added; so that most examples get past the first
    check and reach the code behind it."""
    pairs = list(base)
    for _ in range(draw(st.integers(0, max_changes))):
        op = draw(st.sampled_from(["set", "set", "set", "drop", "repeat", "add"]))
        name = draw(st.sampled_from(list(names)))
        if op == "set":
            pairs = [(k, v) for k, v in pairs if k != name] + [(name, draw(hostile_text))]
        elif op == "drop":
            pairs = [(k, v) for k, v in pairs if k != name]
        elif op == "repeat":
            pairs.append((name, draw(hostile_text)))
        else:
            pairs.append((draw(st.one_of(st.text(PRINTABLE, max_size=12), st.sampled_from(
                [f"{name}[]", "", "a" * 300, "\x00", "x\r\ny"]))), draw(hostile_text)))
    return list(draw(st.permutations(pairs)))


RAW_BODIES: tuple[bytes, ...] = (
    b"", b"\xff\xfe\xfd", b"a=%ff%fe", b"a=\xc0\xaf", b"=&=&&", b"a", b"a=1;b=2", b"%", b"a=%", b"a=%2",
    b"a=%00", b"\x00=\x00", b"a[]=1&a[]=2", b"a[b][c]=1", b'{"grant_type": "client_credentials"}',
    b'[{"a": 1}]', b"null", b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--x--\r\n",
    b"a=" + b"9" * 30000, b"&" * 500, b"a=1&" * 150, ("a=" + "\u00e9" * 50).encode("latin-1"),
)
"""Bodies a form parser chokes on: not UTF-8, broken escapes, NUL, PHP arrays, JSON, multipart, too many fields."""

CONTENT_TYPES: tuple[str | None, ...] = (
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
    "APPLICATION/X-WWW-FORM-URLENCODED", "application/json", "multipart/form-data",
    "multipart/form-data; boundary=x", "text/plain", "application/xml", "", None, "x/y\r\nX-Injected: 1",
)


@st.composite
def raw_body(draw: st.DrawFn, names: Sequence[str] = ()) -> tuple[bytes, str | None]:
    """A request body and its Content-Type: a well-formed form of hostile values, or bytes that are not one."""
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    kind = draw(st.sampled_from(["form", "raw", "json"]))
    if kind == "form":
        return urlencode(draw(hostile_params(names or ["a"]))).encode(), content_type
    if kind == "json":
        data = draw(st.dictionaries(st.sampled_from([*names, "a"]), st.one_of(
            hostile_text, st.integers(min_value=-(2**80), max_value=2**80), st.lists(hostile_text, max_size=3),
            st.none(), st.booleans(), st.floats(allow_nan=False)), max_size=5))
        return json.dumps(data).encode(), draw(st.sampled_from(["application/json", *CONTENT_TYPES]))
    return draw(st.sampled_from(RAW_BODIES)), content_type


RAW_QUERIES: tuple[str, ...] = (
    "a=%ZZ", "a=%ff%fe", "a=%00", "%", "a=%", "&&&", "=", "a=1&a=2", "a[]=1", "a=\u00e9".encode().decode("latin-1"),
    "x=" + "y" * 5000, "a=%0d%0aSet-Cookie:%20x=1", "redirect_uri=%2F%2Fevil.example",
)


@st.composite
def raw_query(draw: st.DrawFn, names: Sequence[str] = ()) -> str:
    """A query string as sent on the wire: hostile pairs, percent-encoded, or broken escapes left as they are."""
    if draw(st.booleans()):
        return draw(st.sampled_from(RAW_QUERIES))
    return urlencode(draw(hostile_params(names or ["a"])), quote_via=quote)


AUTH_HEADERS: tuple[bytes, ...] = (
    b"Basic", b"Basic ", b"Basic Og==", b"Basic !!!", b"Basic " + b"A" * 5000, b"Basic YTpi\r\nX: y",
    b"Basic \xff\xfe", b"Basic YQ==", b"Basic OmI=", b"Basic JTAwOiUwMA==", b"Basic JXp6OiV6eg==",
    b"Bearer", b"Bearer ", b"Bearer a b", b"Bearer \x00", b"bearer abc", b"BEARER abc", b"Bearer " + b"x" * 9000,
    b"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", b"Bearer a,Bearer b", b"Digest x", b"Negotiate YII=", b"\xff",
    b"Basic dXNlcjpw\xc3\xa4ss", b"Basic AAA6AA==", b"Basic /zr/", b"Basic JUZGOiVGRg==", b"Basic Og==Og==",
)
"""Authorization header values, broken in every way: empty, not base64, not UTF-8, CR/LF, wrong scheme, huge."""


# --- sending -----------------------------------------------------------------------------------------------------


@dataclass
class Hostile:
    """One request with raw parts, sent through the test client without re-encoding them."""

    method: str
    path: str
    query: str = ""
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, bytes] = field(default_factory=dict)

    def send(self, client: TestClient) -> Any:
        headers: dict[str, Any] = dict(self.headers)
        if self.content_type is not None:
            headers["content-type"] = self.content_type.encode("latin-1")
        # At most 32 KB of query: the test client refuses longer URLs itself (and proxies cut them far shorter).
        url = self.path + (f"?{self.query[:32768]}" if self.query else "")
        return client.request(self.method, url, content=self.body if self.method not in ("GET", "HEAD") else None,
                              headers=headers)


# --- the checks --------------------------------------------------------------------------------------------------


TRACE = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]*\.py\", line \d+|"
    r"\b(?:sqlalchemy|psycopg|sqlite3|starlette\.|authlib\.|jinja2\.)\w*|"
    r"\b(?:KeyError|TypeError|ValueError|AttributeError|IndexError|UnicodeDecodeError|UnicodeEncodeError|"
    r"AssertionError|IntegrityError|OperationalError|DataError|ProgrammingError|OverflowError|"
    r"RecursionError|NotImplementedError|JSONDecodeError|binascii\.Error)\b"
)
"""What a leaked Python exception looks like in a body."""

SECURITY_HEADERS = {
    "content-security-policy": "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def describe(request: Hostile | str, response: Any) -> str:
    return f"{request!r}\n-> {response.status_code} {dict(response.headers)}\n{response.text[:800]}"


def assert_safe(response: Any, request: Hostile | str = "") -> None:
    """No 500 (a 503 only for a service that is really unavailable, e.g. the SMS gateway, which the tests do
    not configure), no stack trace, every security header, no header split by injected CR/LF."""
    info = describe(request, response)
    assert response.status_code < 500 or response.status_code == 503, info
    assert not TRACE.search(response.text), info
    for name, expected in SECURITY_HEADERS.items():
        assert expected in response.headers.get(name, ""), f"{name} missing\n{info}"
    assert "cache-control" in response.headers, info
    for name, value in response.headers.raw:
        assert b"\r" not in value and b"\n" not in value, info
        assert name.lower() not in (b"set-cookie",) or b"pwned" not in value, info


def assert_oauth_error(response: Any, request: Hostile | str = "", *,
                       statuses: Iterable[int] = (400, 401)) -> dict[str, Any]:
    """An RFC 6749 5.2 error: JSON with a string ``error`` (a defined code's characters only), not cached."""
    info = describe(request, response)
    assert response.status_code in (*statuses, 413), info
    assert response.headers.get("content-type", "").startswith("application/json"), info
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), info
    # RFC 6749 5.2: error is %x20-21 / %x23-5B / %x5D-7E; so is error_description.
    assert re.fullmatch(r"[\x20\x21\x23-\x5b\x5d-\x7e]+", body["error"]), info
    description = body.get("error_description")
    assert description is None or isinstance(description, str), info
    assert "no-store" in response.headers.get("cache-control", ""), info
    if response.status_code == 401:
        # RFC 6749 5.2: a 401 for invalid_client MUST carry WWW-Authenticate.
        assert response.headers.get("www-authenticate"), info
    return dict(body)


BROWSER = {"accept": b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
"""What a browser's navigation accepts; the pages' error answers are chosen by it."""


def assert_html_error(response: Any, request: Hostile | str = "") -> None:
    """A browser gets a page, not JSON or a bare text, for whatever it did wrong."""
    info = describe(request, response)
    assert 400 <= response.status_code < 500, info
    assert response.headers.get("content-type", "").startswith("text/html"), info
    assert "<html" in response.text.lower(), info


# --- nothing half-written ----------------------------------------------------------------------------------------


VOLATILE = {
    # Written on purpose by requests that are refused: the audit trail, throttling counters, and a session's
    # "last active" time (touched by every page the signed-in user opens).
    "audit_events": None,
    "attempt_counters": None,
    "sso_sessions": {"last_active_at"},
    # Sign-in transactions: a refused page may leave or start one (bound to the browser, expiring by itself).
    "login_transactions": None,
    # Consumed once each; a refused assertion may still have been recorded as seen (replay protection).
    "used_assertions": None,
    "signing_keys": None,
}


def snapshot(engine: Engine, skip: dict[str, set[str] | None] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (but those that change on refused requests by design), sorted, for comparison."""
    skip = VOLATILE if skip is None else skip
    rows: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            if table.name in skip and skip[table.name] is None:
                continue
            ignored = skip.get(table.name) or set()
            columns = [c for c in table.columns if c.name not in ignored]
            rows[table.name] = sorted(tuple(map(repr, row)) for row in connection.execute(select(*columns)))
    return rows

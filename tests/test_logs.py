"""JSON logs with a request id (issue 7, operations).

Every response carries an ``X-Request-ID``: the one a trusted reverse proxy sent (short, safe characters) or
one made here; every log line written while the request is served carries it too, the audit lines and
uvicorn's access log included, so that one request can be followed through the logs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from starlette.testclient import TestClient

from idp.app import create_app
from idp.config import load_settings
from idp.logs import JsonFormatter, RequestIdFilter, TextFormatter, log_format, request_id_var
from idp.services import Services, build_services
from tests.conftest import ISSUER, FakeClock, make_settings
from tests.helpers import add_client
from tests.serving import serve, server_environment

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def behind_proxy(backend: tuple[str, Engine], tmp_path: Path, clock: FakeClock) -> Iterator[TestClient]:
    """The app behind a reverse proxy at 10.0.0.2 (trusted: 10.0.0.0/24)."""
    settings = make_settings(tmp_path, backend[0], IDP_SERVER_TRUSTED_PROXIES="10.0.0.0/24")
    services = build_services(settings, engine=backend[1])
    services.clock = clock
    with TestClient(create_app(services=services), base_url=ISSUER, client=("10.0.0.2", 50000)) as browser:
        yield browser


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def audit_lines() -> Iterator[list[logging.LogRecord]]:
    handler = Captured()
    logger = logging.getLogger("idp.audit")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_every_response_carries_a_new_request_id(client: TestClient) -> None:
    """Without a trusted proxy, each request gets an id of its own, made here (128 random bits, hex)."""
    first, second = client.get("/healthz"), client.get("/no-such-page")
    assert GENERATED.fullmatch(first.headers["x-request-id"])
    assert GENERATED.fullmatch(second.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_a_clients_own_request_id_is_not_taken(client: TestClient) -> None:
    """A client talking to us directly cannot choose the id its lines are logged under."""
    response = client.get("/healthz", headers={"X-Request-ID": "chosen-by-the-client"})
    assert GENERATED.fullmatch(response.headers["x-request-id"])


def test_a_trusted_proxys_request_id_is_kept(behind_proxy: TestClient) -> None:
    """The id a trusted proxy sends is echoed, also when it forwards the client's address (X-Forwarded-For
    replaces the peer address only after the request id was taken from the proxy's connection)."""
    assert behind_proxy.get("/healthz", headers={"X-Request-ID": "f81d4fae-7dec-11d0"}).headers[
        "x-request-id"] == "f81d4fae-7dec-11d0"
    forwarded = behind_proxy.get("/healthz", headers={"X-Request-ID": "nginx:0a1b2c", "X-Forwarded-For": "203.0.113.7"})
    assert forwarded.headers["x-request-id"] == "nginx:0a1b2c"


@pytest.mark.parametrize("given", ["a b", "x" * 65, "<script>", "id\"quote", "-leading-dash", "",
                                   "zeile\\neins"])
def test_an_unsafe_request_id_is_replaced(behind_proxy: TestClient, given: str) -> None:
    """Even from a trusted proxy only a short id of letters, digits and ``.-_:`` is written into the logs."""
    response = behind_proxy.get("/healthz", headers={"X-Request-ID": given})
    assert GENERATED.fullmatch(response.headers["x-request-id"]), given


def test_non_ascii_and_repeated_request_ids_are_replaced(behind_proxy: TestClient) -> None:
    non_ascii = behind_proxy.get("/healthz", headers=[("X-Request-ID", "idé".encode())])
    assert GENERATED.fullmatch(non_ascii.headers["x-request-id"])
    twice = behind_proxy.get("/healthz", headers=[("X-Request-ID", "one"), ("X-Request-ID", "two")])
    assert GENERATED.fullmatch(twice.headers["x-request-id"])


def test_audit_lines_carry_the_request_id(client: TestClient, services: Services,
                                          audit_lines: list[logging.LogRecord]) -> None:
    """The audit event written while a request is served names that request's id."""
    app = add_client(services, grant_types=["client_credentials"], redirect_uris=[], post_logout_redirect_uris=[])
    response = client.post("/token", data={"grant_type": "client_credentials"}, auth=(app.client_id, "wrong"))
    [line] = [r for r in audit_lines if getattr(r, "audit_fields", {}).get("audit") == "client.authentication_failed"]
    fields = line.audit_fields  # type: ignore[attr-defined]
    assert fields["request_id"] == response.headers["x-request-id"]
    assert json.loads(line.getMessage())["request_id"] == response.headers["x-request-id"]


def _record(message: str, *args: object, name: str = "idp.web", **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(name, logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    RequestIdFilter().filter(record)
    return record


def test_json_lines_have_time_level_logger_message_request_id_and_fields() -> None:
    token = request_id_var.set("abc123")
    try:
        record = _record("sync of %s failed", "rathaus", source="rathaus")
        try:
            raise ValueError("broken")
        except ValueError:
            record.exc_info = sys.exc_info()
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["level"] == "warning" and line["logger"] == "idp.web"
    assert line["message"] == "sync of rathaus failed" and line["request_id"] == "abc123"
    assert line["source"] == "rathaus" and "ValueError: broken" in line["exception"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])
    outside = json.loads(JsonFormatter().format(_record("idle")))
    assert outside["request_id"] is None


def test_access_log_lines_become_fields() -> None:
    record = _record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/healthz", "1.1", 200,
                     name="uvicorn.access")
    line = json.loads(JsonFormatter().format(record))
    assert (line["client"], line["method"], line["path"], line["status"]) == ("127.0.0.1:5000", "GET", "/healthz", 200)


def test_text_lines_show_the_request_id() -> None:
    token = request_id_var.set("abc123")
    try:
        assert TextFormatter().format(_record("hello")) == "WARNING idp.web [abc123]: hello"
    finally:
        request_id_var.reset(token)
    assert TextFormatter().format(_record("hello")) == "WARNING idp.web: hello"


@pytest.mark.parametrize("env, configured, expected", [
    ("production", "auto", "json"), ("development", "auto", "text"), ("production", "text", "text"),
    ("development", "json", "json"),
])
def test_the_format_follows_the_setting(env: str, configured: str, expected: str) -> None:
    """``auto`` (the default) writes JSON in production and text on a developer's terminal."""
    settings = replace(load_settings(environ={"IDP_LOGGING_FORMAT": configured}), env=env)
    assert log_format(settings) == expected


@pytest.mark.e2e
def test_a_served_request_is_found_in_every_json_line_by_its_id(backend: tuple[str, Engine], services: Services,
                                                              tmp_path: Path) -> None:
    """`idp serve` with `[logging] format = "json"`: every log line is one JSON object; the access log and the
    audit line of one request carry the id its trusted proxy (127.0.0.1 here) sent."""
    env = server_environment(tmp_path, backend[0], IDP_LOGGING_FORMAT="json")
    with serve(env, tmp_path) as served:
        services = served.services()
        try:
            app = add_client(services, grant_types=["client_credentials"], redirect_uris=[],
                             post_logout_redirect_uris=[])
        finally:
            services.engine.dispose()
        response = httpx.post(f"{served.base}/token", data={"grant_type": "client_credentials"},
                              auth=(app.client_id, "wrong"), headers={"X-Request-ID": "proxy-4711"}, timeout=10)
        assert response.headers["x-request-id"] == "proxy-4711"
        assert served.stop() == 0
    lines = served.log.read_text().splitlines()
    printed = ("Serving ", "Created the administrator account")  # the command's own messages on stdout
    entries = [json.loads(line) for line in lines if line and not line.startswith(printed)]
    assert len(entries) == len([line for line in lines if line and not line.startswith(printed)])
    assert all({"time", "level", "logger", "message", "request_id"} <= set(entry) for entry in entries)
    mine = [entry for entry in entries if entry["request_id"] == "proxy-4711"]
    assert {entry["logger"] for entry in mine} == {"uvicorn.access", "idp.audit"}
    [access] = [entry for entry in mine if entry["logger"] == "uvicorn.access"]
    assert (access["method"], access["path"], access["status"]) == ("POST", "/token", 401)
    [audit] = [entry for entry in mine if entry["logger"] == "idp.audit"]
    assert audit["audit"] == "client.authentication_failed" and audit["outcome"] == "failure"
    assert any(entry["logger"].startswith("uvicorn") and "startup complete" in entry["message"] for entry in entries)
    assert not any("color_message" in entry for entry in entries)  # uvicorn's terminal colours stay out

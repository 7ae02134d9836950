"""SMS one-time codes: E.164 numbers, gateways, send limits and code checks (issue 3 section 1).

Codes: 6 digits, valid 5 minutes, at most 5 attempts, stored as keyed hashes, bound to a purpose; asking
for a new code does not reset the failure count (NIST SP 800-63B-4 3.1.3.2; attack case 40). Sending is
throttled per user and per number, 30 s apart and 5 an hour (attack case 41). The HTTP gateway is tested
against a real server on loopback that records what it receives.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from idp.accounts.users import find_user
from idp.config import ConfigError
from idp.db import unit_of_work
from idp.factors import sms
from idp.models import AttemptCounter, SmsChallenge, SmsFactor, User
from idp.services import Services
from tests.conftest import FakeClock, make_settings
from tests.helpers import add_user

MOBILE = "0151 12345678"
MOBILE_E164 = "+4915112345678"
LOGIN = "login:tx-1"


# --- a real gateway on loopback -------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class GatewayServer:
    """An HTTP server in a daemon thread that records every request and answers as ``modes`` says
    (one mode per request, then ``ok``): ok, text, 500, 400, sleep, garbage, badjson."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.modes: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                mode = server.modes.pop(0) if server.modes else "ok"
                if mode == "sleep":
                    time.sleep(1.0)
                if mode == "garbage":
                    self.wfile.write(b"\x00\x01 this is not HTTP\r\n\r\n")
                    self.close_connection = True
                    return
                status, content_type, reply = {
                    "ok": (202, "application/json", b'{"id": "msg-1"}'),
                    "sleep": (202, "application/json", b'{"id": "late"}'),
                    "text": (200, "text/plain", b"OK"),
                    "500": (500, "text/plain", b"internal error"),
                    "400": (400, "application/json", b'{"error": "bad number"}'),
                    "badjson": (200, "application/json", b"{not json"),
                }[mode]
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out closed the socket under a sleeping handler: expected here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/send"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def gateway_server() -> Iterator[GatewayServer]:
    server = GatewayServer()
    yield server
    server.close()


def _http(server: GatewayServer, **kwargs: Any) -> sms.HttpGateway:
    kwargs.setdefault("timeout", timedelta(seconds=0.3))
    kwargs.setdefault("retries", 1)
    return sms.HttpGateway(server.url, {"X-Api-Key": "k-123"}, pause=timedelta(0), **kwargs)


# --- gateways used by the code tests --------------------------------------------------------------------


class Recorder:
    """A gateway that keeps the messages, so a test can read the code the user would get."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def send(self, to: str, text: str) -> None:
        self.messages.append((to, text))

    @property
    def code(self) -> str:
        match = re.search(r"\b\d{6}\b", self.messages[-1][1])
        assert match, self.messages[-1][1]
        return match.group()


class Down:
    """A gateway that always fails."""

    def __init__(self) -> None:
        self.calls = 0

    def send(self, to: str, text: str) -> None:
        self.calls += 1
        raise sms.SmsUnavailable("down")


def _user(services: Services, username: str = "erika") -> int:
    add_user(services, username)
    with unit_of_work(services.sessions) as db:
        user = find_user(db, username)
        assert user is not None
        return user.id


def _phone(services: Services, clock: FakeClock, user_id: int, phone: str = MOBILE, *, confirmed: bool = True,
           name: str = "Diensthandy") -> int:
    with unit_of_work(services.sessions) as db:
        user = db.get_one(User, user_id)
        factor = sms.add_phone(db, user, phone, name, services.settings.sms, clock())
        if confirmed:
            sms.confirm(db, factor, clock())
        return factor.id


def _send(services: Services, clock: FakeClock, factor_id: int, gateway: sms.SmsGateway,
          purpose: str = LOGIN) -> int:
    # Like the pages: SmsUnavailable is caught inside the unit of work, so what the try wrote is committed.
    with unit_of_work(services.sessions) as db:
        factor = db.get_one(SmsFactor, factor_id)
        try:
            return sms.send_code(db, services.hasher, gateway, factor, purpose, clock()).id
        except sms.SmsUnavailable:
            return -1


def _verify(services: Services, clock: FakeClock, factor_id: int, code: str, purpose: str = LOGIN) -> bool:
    with unit_of_work(services.sessions) as db:
        factor = db.get_one(SmsFactor, factor_id)
        return sms.verify_code(db, services.hasher, factor, purpose, code, clock())


def _challenge(services: Services, challenge_id: int) -> SmsChallenge:
    with unit_of_work(services.sessions) as db:
        return db.get_one(SmsChallenge, challenge_id)


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


@pytest.fixture
def factor_id(services: Services, clock: FakeClock) -> int:
    return _phone(services, clock, _user(services))


# --- numbers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("030 123456", "+4930123456"),
    ("+49 30 123456", "+4930123456"),
    ("0049 30 123456", "+4930123456"),
    ("  0049 (30) 123456  ", "+4930123456"),
    ("0151 12345678", MOBILE_E164),
    ("0151-1234-5678", MOBILE_E164),
    ("0151/12345678", MOBILE_E164),
    ("+49 (0)151 1234 5678", MOBILE_E164),
    ("+43 664 1234567", "+436641234567"),
])
def test_german_numbers_are_normalised_to_e164(text: str, expected: str) -> None:
    """National (0-prefix), +49 and 0049 forms with spaces and separators all become one E.164 number."""
    assert sms.normalize_phone(text, "DE") == expected


@pytest.mark.parametrize("text", [
    "", "   ", "12", "abc", "+49 1", "030123456789012345", "tel:+4930123456", "0151 12345678\x00",
    "+49 30 123456 ext. 5", "0151 1234567a", "+999 123456",
])
def test_invalid_numbers_are_refused_with_a_readable_message(text: str) -> None:
    """Empty, too short, too long, letters, control characters, extensions and unknown countries are refused."""
    with pytest.raises(sms.PhoneNumberInvalid) as raised:
        sms.normalize_phone(text, "DE")
    assert str(raised.value).endswith(".") and "phone number" in str(raised.value)


def test_national_number_without_a_usable_region_asks_for_the_country_code() -> None:
    """Without a known default region a national number cannot be read; the message says what to write."""
    with pytest.raises(sms.PhoneNumberInvalid, match="country code"):
        sms.normalize_phone("030 123456", "XX")
    assert sms.normalize_phone("+49 30 123456", "XX") == "+4930123456"


# --- HTTP gateway ---------------------------------------------------------------------------------------


def test_http_gateway_posts_json_with_the_configured_headers(gateway_server: GatewayServer) -> None:
    """The gateway receives one POST with body {"to", "text"} as JSON and the configured headers."""
    _http(gateway_server).send(MOBILE_E164, "Ihr Anmeldecode: 123456 (5 Minuten gültig)")
    assert len(gateway_server.received) == 1
    request = gateway_server.received[0]
    assert request.path == "/send"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-api-key"] == "k-123"
    assert json.loads(request.body) == {"to": MOBILE_E164, "text": "Ihr Anmeldecode: 123456 (5 Minuten gültig)"}


def test_http_gateway_accepts_a_plain_text_reply(gateway_server: GatewayServer) -> None:
    """A 2xx reply that does not claim to be JSON is not interpreted: the message was taken."""
    gateway_server.modes = ["text"]
    _http(gateway_server).send(MOBILE_E164, "x")
    assert len(gateway_server.received) == 1


def test_http_gateway_retries_after_a_server_error(gateway_server: GatewayServer) -> None:
    """A 500 is retried; when the retry is taken, the send succeeds."""
    gateway_server.modes = ["500"]
    _http(gateway_server, retries=2).send(MOBILE_E164, "x")
    assert len(gateway_server.received) == 2


@pytest.mark.parametrize("mode, reason", [
    ("500", "HTTP 500"), ("sleep", "timeout"), ("garbage", "RemoteProtocolError"), ("badjson", "malformed reply"),
])
def test_http_gateway_failures_raise_sms_unavailable_after_the_retries(
    gateway_server: GatewayServer, caplog: pytest.LogCaptureFixture, mode: str, reason: str
) -> None:
    """A 500, a timeout, a reply that is not HTTP and a broken JSON reply each end in SmsUnavailable after
    1 + retries requests, and the warning logged names the reason but not the text."""
    gateway_server.modes = [mode] * 3
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="idp.sms"), pytest.raises(sms.SmsUnavailable) as raised:
        _http(gateway_server, retries=2).send(MOBILE_E164, "Ihr Anmeldecode: 654321")
    assert raised.value.reason.startswith(reason) and "3 tries" in raised.value.reason
    assert len(gateway_server.received) == 3
    assert time.monotonic() - started < 3  # the timeout really cut the sleeping gateway off
    assert "654321" not in caplog.text and MOBILE_E164 not in caplog.text and reason in caplog.text


def test_http_gateway_does_not_retry_a_client_error(gateway_server: GatewayServer) -> None:
    """A 400 would be refused again, so it fails at once (non-2xx → SmsUnavailable)."""
    gateway_server.modes = ["400", "400"]
    with pytest.raises(sms.SmsUnavailable, match="HTTP 400"):
        _http(gateway_server, retries=3).send(MOBILE_E164, "x")
    assert len(gateway_server.received) == 1


def test_http_gateway_connection_refused_raises_sms_unavailable() -> None:
    """Nobody listening on the configured port → SmsUnavailable, never a connection exception."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = sms.HttpGateway(f"http://127.0.0.1:{port}/send", retries=1, pause=timedelta(0))
    with pytest.raises(sms.SmsUnavailable, match="ConnectError after 2 tries"):
        gateway.send(MOBILE_E164, "x")


def test_gateway_from_settings_builds_the_configured_http_gateway(gateway_server: GatewayServer,
                                                                  tmp_path: Path) -> None:
    """IDP_SMS_GATEWAY=http with IDP_SMS_URL and IDP_SMS_HEADERS reaches the server with those headers."""
    settings = make_settings(tmp_path, "sqlite://", IDP_SMS_GATEWAY="http", IDP_SMS_URL=gateway_server.url,
                             IDP_SMS_HEADERS='{"Authorization": "Bearer t0k"}', IDP_SMS_RETRIES="0")
    gateway = sms.gateway_from_settings(settings.sms)
    assert isinstance(gateway, sms.HttpGateway)
    gateway_server.modes = ["500"]
    with pytest.raises(sms.SmsUnavailable):
        gateway.send(MOBILE_E164, "x")
    assert len(gateway_server.received) == 1  # retries = 0
    assert gateway_server.received[0].headers["authorization"] == "Bearer t0k"
    assert isinstance(sms.gateway_from_settings(make_settings(tmp_path, "sqlite://").sms), sms.LogGateway)


def test_http_gateway_without_url_stops_the_start(tmp_path: Path) -> None:
    """gateway = http without an http(s) URL is a configuration error, not a failure at the first login."""
    with pytest.raises(ConfigError, match=r"\[sms\] url"):
        make_settings(tmp_path, "sqlite://", IDP_SMS_GATEWAY="http")
    with pytest.raises(ConfigError, match=r"\[sms\] url"):
        make_settings(tmp_path, "sqlite://", IDP_SMS_GATEWAY="http", IDP_SMS_URL="file:///etc/passwd")


def test_log_gateway_never_logs_the_code_at_info(caplog: pytest.LogCaptureFixture) -> None:
    """The log gateway says at INFO that an SMS went out (masked number), and shows the text only at DEBUG."""
    with caplog.at_level(logging.DEBUG, logger="idp.sms"):
        sms.LogGateway().send(MOBILE_E164, "Ihr Anmeldecode: 987654 (5 Minuten gültig)")
    info = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert info and all("987654" not in r.getMessage() for r in info)
    assert "SMS to +49" in info[0].getMessage() and MOBILE_E164 not in info[0].getMessage()
    assert any(r.levelno == logging.DEBUG and "987654" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="idp.sms"):
        sms.LogGateway().send(MOBILE_E164, "Ihr Anmeldecode: 987654 (5 Minuten gültig)")
    assert caplog.records and "987654" not in caplog.text


# --- phones ---------------------------------------------------------------------------------------------


def test_add_phone_is_unconfirmed_and_refuses_a_confirmed_duplicate(services: Services, clock: FakeClock) -> None:
    """A new number is stored in E.164 and unconfirmed; re-adding it before confirmation reuses the row;
    adding it again after confirmation is refused."""
    user_id = _user(services)
    first = _phone(services, clock, user_id, "0151 1234 5678", confirmed=False)
    again = _phone(services, clock, user_id, "+49 151 12345678", confirmed=False, name="Handy")
    assert again == first
    with unit_of_work(services.sessions) as db:
        factor = db.get_one(SmsFactor, first)
        assert (factor.phone, factor.name, factor.confirmed_at) == (MOBILE_E164, "Handy", None)
        sms.confirm(db, factor, clock())
        assert factor.confirmed_at == clock()
    with pytest.raises(sms.PhoneAlreadyEnrolled, match="already registered"):
        _phone(services, clock, user_id, "0049 151 12345678")
    with pytest.raises(sms.PhoneNumberInvalid):
        _phone(services, clock, user_id, "12")


def test_unconfirmed_phone_receives_only_its_enrollment_code(services: Services, clock: FakeClock) -> None:
    """During sign-in no code goes to a number the user has not proved (attack case 41); the enrollment
    code confirms the number."""
    factor_id = _phone(services, clock, _user(services), confirmed=False)
    gateway = Recorder()
    with unit_of_work(services.sessions) as db:
        factor = db.get_one(SmsFactor, factor_id)
        with pytest.raises(ValueError, match="unconfirmed"):
            sms.send_code(db, services.hasher, gateway, factor, LOGIN, clock())
        purpose = sms.enroll_purpose(factor)
    assert gateway.messages == []
    _send(services, clock, factor_id, gateway, purpose)
    assert not _verify(services, clock, factor_id, gateway.code)  # not for a login
    assert _verify(services, clock, factor_id, gateway.code, purpose)


# --- codes ----------------------------------------------------------------------------------------------


def test_code_is_sent_through_the_http_gateway_and_accepted(services: Services, clock: FakeClock, factor_id: int,
                                                            gateway_server: GatewayServer) -> None:
    """send_code posts the E.164 number and the German text with 6 digits; that code signs in once."""
    challenge_id = _send(services, clock, factor_id, _http(gateway_server))
    body = json.loads(gateway_server.received[0].body)
    assert body["to"] == MOBILE_E164
    match = re.fullmatch(r"Ihr Anmeldecode: (\d{6}) \(5 Minuten gültig\)", body["text"])
    assert match
    challenge = _challenge(services, challenge_id)
    assert challenge.expires_at - challenge.created_at == timedelta(minutes=5)
    assert _verify(services, clock, factor_id, match.group(1))
    with unit_of_work(services.sessions) as db:
        assert db.get_one(SmsFactor, factor_id).last_used_at == clock()


def test_code_is_never_stored_in_clear(services: Services, clock: FakeClock, factor_id: int) -> None:
    """The row holds a keyed hash bound to factor and purpose; no column holds the code."""
    gateway = Recorder()
    challenge = _challenge(services, _send(services, clock, factor_id, gateway))
    code = gateway.code
    assert re.fullmatch(r"[0-9a-f]{64}", challenge.code_hash)
    assert challenge.code_hash != services.hasher.hash(code)
    row = {column: getattr(challenge, column) for column in SmsChallenge.__table__.columns.keys()}
    assert all(code not in str(value) for key, value in row.items() if key != "phone")


@pytest.mark.parametrize("seconds, accepted", [(299, True), (300, False)])
def test_code_expires_after_five_minutes(services: Services, clock: FakeClock, factor_id: int, seconds: int,
                                         accepted: bool) -> None:
    """A code works for five minutes and not a second longer."""
    gateway = Recorder()
    _send(services, clock, factor_id, gateway)
    clock.advance(seconds=seconds)
    assert _verify(services, clock, factor_id, gateway.code) is accepted


def test_code_is_accepted_once(services: Services, clock: FakeClock, factor_id: int) -> None:
    """A used code is refused when presented again."""
    gateway = Recorder()
    _send(services, clock, factor_id, gateway)
    assert _verify(services, clock, factor_id, gateway.code)
    assert not _verify(services, clock, factor_id, gateway.code)


def test_parallel_use_of_one_code_has_one_winner(services: Services, clock: FakeClock, factor_id: int) -> None:
    """Four requests with the same code at once: exactly one succeeds (atomic consumption)."""
    gateway = Recorder()
    challenge_id = _send(services, clock, factor_id, gateway)
    barrier = threading.Barrier(4)
    results: list[bool] = []

    def use() -> None:
        barrier.wait()
        results.append(_verify(services, clock, factor_id, gateway.code))

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]
    assert _challenge(services, challenge_id).consumed_at == clock()


def test_code_is_bound_to_its_purpose(services: Services, clock: FakeClock, factor_id: int) -> None:
    """A code sent for transaction A is refused for transaction B, and still works for A."""
    gateway = Recorder()
    challenge_id = _send(services, clock, factor_id, gateway, "login:tx-A")
    assert not _verify(services, clock, factor_id, gateway.code, "login:tx-B")
    assert _challenge(services, challenge_id).attempts == 0
    assert _verify(services, clock, factor_id, gateway.code, "login:tx-A")


def test_a_new_code_supersedes_the_older_one(services: Services, clock: FakeClock, factor_id: int) -> None:
    """After a resend only the newest code of that purpose works."""
    gateway = Recorder()
    first = _send(services, clock, factor_id, gateway)
    old = gateway.code
    clock.advance(seconds=30)
    _send(services, clock, factor_id, gateway)
    assert _challenge(services, first).expires_at == clock()
    if old != gateway.code:  # two random codes coincide once in a million sends
        assert not _verify(services, clock, factor_id, old)
    assert _verify(services, clock, factor_id, gateway.code)


def test_four_wrong_tries_leave_the_fifth(services: Services, clock: FakeClock, factor_id: int) -> None:
    """Each code allows five attempts: four wrong ones and then the right one succeed."""
    gateway = Recorder()
    challenge_id = _send(services, clock, factor_id, gateway)
    for _ in range(4):
        assert not _verify(services, clock, factor_id, _wrong(gateway.code))
    assert _verify(services, clock, factor_id, gateway.code)
    assert _challenge(services, challenge_id).attempts == 5


def test_five_wrong_tries_kill_the_code(services: Services, clock: FakeClock, factor_id: int) -> None:
    """After five wrong attempts even the right code is refused (once the user's delay has passed)."""
    gateway = Recorder()
    challenge_id = _send(services, clock, factor_id, gateway)
    for _ in range(5):
        assert not _verify(services, clock, factor_id, _wrong(gateway.code))
    clock.advance(seconds=61)
    assert not _verify(services, clock, factor_id, gateway.code)
    assert _challenge(services, challenge_id).attempts == 5


def test_malformed_entries_are_refused_without_counting(services: Services, clock: FakeClock,
                                                        factor_id: int) -> None:
    """Letters or the wrong length guess nothing, so they take no attempt; spaces inside a code are ignored."""
    gateway = Recorder()
    challenge_id = _send(services, clock, factor_id, gateway)
    for entry in ("", "12345", "1234567", "abcdef", "１２３４５６"):
        assert not _verify(services, clock, factor_id, entry)
    assert _challenge(services, challenge_id).attempts == 0
    assert _verify(services, clock, factor_id, f" {gateway.code[:3]} {gateway.code[3:]} ")


def test_a_new_code_does_not_reset_the_failure_count(services: Services, clock: FakeClock, factor_id: int) -> None:
    """NIST SP 800-63B-4 3.1.3.2 / attack case 40: failures count across codes; after five, each further
    failure holds a growing delay, during which even a right new code is not checked; a success resets."""
    gateway = Recorder()
    _send(services, clock, factor_id, gateway)
    for _ in range(5):
        assert not _verify(services, clock, factor_id, _wrong(gateway.code))
    clock.advance(seconds=61)
    second = _send(services, clock, factor_id, gateway)
    assert not _verify(services, clock, factor_id, _wrong(gateway.code))  # sixth failure: 2 minutes
    with pytest.raises(sms.SmsThrottled) as raised:
        _verify(services, clock, factor_id, gateway.code)
    assert raised.value.retry_after == timedelta(minutes=2)
    assert _challenge(services, second).attempts == 1  # the blocked try took no attempt
    clock.advance(minutes=2)
    assert _verify(services, clock, factor_id, gateway.code)
    with unit_of_work(services.sessions) as db:
        counter = db.scalars(select(AttemptCounter).where(AttemptCounter.key.like("sms:%"))).one()
        assert (counter.failures, counter.blocked_until) == (0, None)


def test_removing_the_phone_keeps_the_failure_count(services: Services, clock: FakeClock) -> None:
    """The failure count belongs to the user: a re-added number starts with the same delay."""
    user_id = _user(services)
    factor_id = _phone(services, clock, user_id)
    gateway = Recorder()
    _send(services, clock, factor_id, gateway)
    for _ in range(5):
        assert not _verify(services, clock, factor_id, _wrong(gateway.code))
    with unit_of_work(services.sessions) as db:
        db.execute(delete(SmsFactor).where(SmsFactor.id == factor_id))
    again = _phone(services, clock, user_id)
    with pytest.raises(sms.SmsThrottled):
        _verify(services, clock, again, "123456")


# --- send limits ----------------------------------------------------------------------------------------


def test_sends_are_at_least_thirty_seconds_apart(services: Services, clock: FakeClock, factor_id: int) -> None:
    """A second code within 30 s is refused with the remaining wait, and sent once it has passed."""
    gateway = Recorder()
    _send(services, clock, factor_id, gateway)
    clock.advance(seconds=10)
    with pytest.raises(sms.SmsThrottled) as raised:
        _send(services, clock, factor_id, gateway)
    assert raised.value.retry_after == timedelta(seconds=20)
    clock.advance(seconds=20)
    _send(services, clock, factor_id, gateway)
    assert len(gateway.messages) == 2


def test_at_most_five_sends_an_hour(services: Services, clock: FakeClock, factor_id: int) -> None:
    """The sixth code within an hour is refused until the first has left the window (attack case 41)."""
    gateway = Recorder()
    for _ in range(5):
        _send(services, clock, factor_id, gateway)
        clock.advance(seconds=30)
    with pytest.raises(sms.SmsThrottled) as raised:
        _send(services, clock, factor_id, gateway)
    assert raised.value.retry_after == timedelta(hours=1) - timedelta(seconds=150)
    clock.advance(seconds=raised.value.retry_after.total_seconds())
    _send(services, clock, factor_id, gateway)
    assert len(gateway.messages) == 6


def test_parallel_sends_pass_the_limit_once(services: Services, clock: FakeClock) -> None:
    """Four sends at once to one number from two accounts: one goes out, three wait (the count is locked)."""
    factors = [_phone(services, clock, _user(services, name)) for name in ("erika", "max")]
    gateway = Recorder()
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def send(factor_id: int) -> None:
        barrier.wait()
        try:
            _send(services, clock, factor_id, gateway)
            outcomes.append("sent")
        except sms.SmsThrottled:
            outcomes.append("throttled")

    threads = [threading.Thread(target=send, args=(factors[i % 2],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["sent", "throttled", "throttled", "throttled"]
    assert len(gateway.messages) == 1


def test_send_limit_is_per_number_across_users(services: Services, clock: FakeClock) -> None:
    """Two accounts with the same number share its limit: nobody floods a phone through several accounts."""
    first = _phone(services, clock, _user(services, "erika"))
    second = _phone(services, clock, _user(services, "max"))
    gateway = Recorder()
    _send(services, clock, first, gateway)
    clock.advance(seconds=5)
    with pytest.raises(sms.SmsThrottled):
        _send(services, clock, second, gateway)
    assert len(gateway.messages) == 1


def test_send_limit_is_per_user_across_numbers(services: Services, clock: FakeClock) -> None:
    """One account with two numbers shares its limit between them."""
    user_id = _user(services)
    first = _phone(services, clock, user_id)
    second = _phone(services, clock, user_id, "0160 98765432")
    gateway = Recorder()
    _send(services, clock, first, gateway)
    clock.advance(seconds=5)
    with pytest.raises(sms.SmsThrottled):
        _send(services, clock, second, gateway)
    assert len(gateway.messages) == 1


def test_removing_and_re_adding_a_phone_keeps_the_send_limit(services: Services, clock: FakeClock) -> None:
    """The sends are counted by user and number, not by factor row, so a re-added phone gains nothing."""
    user_id = _user(services)
    factor_id = _phone(services, clock, user_id, confirmed=False)
    gateway = Recorder()
    with unit_of_work(services.sessions) as db:
        purpose = sms.enroll_purpose(db.get_one(SmsFactor, factor_id))
    _send(services, clock, factor_id, gateway, purpose)
    with unit_of_work(services.sessions) as db:
        db.execute(delete(SmsFactor).where(SmsFactor.id == factor_id))
    again = _phone(services, clock, user_id, confirmed=False)
    with unit_of_work(services.sessions) as db:
        purpose = sms.enroll_purpose(db.get_one(SmsFactor, again))
    with pytest.raises(sms.SmsThrottled):
        _send(services, clock, again, gateway, purpose)


def test_failed_send_allows_an_immediate_retry_and_keeps_the_older_code(services: Services, clock: FakeClock,
                                                                        factor_id: int) -> None:
    """A gateway failure raises SmsUnavailable, leaves the previous code valid and no unusable code behind,
    and does not start the 30 s wait."""
    gateway = Recorder()
    _send(services, clock, factor_id, gateway)
    older = gateway.code
    clock.advance(seconds=30)
    down = Down()
    with unit_of_work(services.sessions) as db:
        factor = db.get_one(SmsFactor, factor_id)
        with pytest.raises(sms.SmsUnavailable):
            sms.send_code(db, services.hasher, down, factor, LOGIN, clock())
    with unit_of_work(services.sessions) as db:
        failed = db.scalars(select(SmsChallenge).where(SmsChallenge.failed_at.is_not(None))).one()
        assert failed.expires_at == clock()
    assert _verify(services, clock, factor_id, older)
    _send(services, clock, factor_id, gateway)  # at once: the failure started no wait
    assert _verify(services, clock, factor_id, gateway.code)


def test_failed_sends_count_towards_the_hourly_limit(services: Services, clock: FakeClock, factor_id: int) -> None:
    """A timed-out request may have been delivered, so five failed tries an hour are all a phone gets."""
    down = Down()
    for _ in range(5):
        assert _send(services, clock, factor_id, down) == -1
    with pytest.raises(sms.SmsThrottled):
        _send(services, clock, factor_id, Recorder())
    assert down.calls == 5


def test_purge_deletes_codes_older_than_a_day(services: Services, clock: FakeClock, factor_id: int) -> None:
    """Old codes are removed once they no longer count towards any limit."""
    _send(services, clock, factor_id, Recorder())
    clock.advance(hours=25)
    _send(services, clock, factor_id, Recorder())
    with unit_of_work(services.sessions) as db:
        assert sms.purge(db, clock()) == 1
        assert len(db.scalars(select(SmsChallenge)).all()) == 1

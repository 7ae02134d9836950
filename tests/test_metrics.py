"""Prometheus metrics (issue 7, operations): what is counted, when, with bounded labels, and who may read them.

Counters are read from prometheus_client's registry of this process before and after each action, so each
assertion is about exactly the increments the action caused. The multi-process test runs a real
``idp serve --workers 2`` and reads absolute values: there the counters start at zero.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyotp
import pytest
from prometheus_client import REGISTRY
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from idp import audit
from idp.app import create_app
from idp.config import ConfigError, load_settings
from idp.db import unit_of_work
from idp.models import BackchannelDelivery, Client
from idp.oauth.logout import record_result
from idp.services import Services, build_services
from tests.conftest import ISSUER, FakeClock, make_settings
from tests.helpers import Flow, add_client, add_user, csrf_of, seed_totp, submit_login
from tests.serving import Served, free_port, serve, server_environment

TOKEN = "scrape-" + "x" * 40
TOKEN_SHA256 = hashlib.sha256(TOKEN.encode()).hexdigest()


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """The change of one sample across a block of a test."""

    def __init__(self, name: str, **labels: str) -> None:
        self.name, self.labels = name, labels
        self.before = value(name, **labels)

    @property
    def change(self) -> float:
        return value(self.name, **self.labels) - self.before


def attempts(outcome: str, reason: str = "", method: str = "password") -> Delta:
    return Delta("idp_sign_in_attempts_total", method=method, outcome=outcome, reason=reason)


@pytest.fixture
def scraping(backend: tuple[str, Engine], tmp_path: Path, clock: FakeClock) -> Iterator[TestClient]:
    """The app with a metrics token configured."""
    settings = make_settings(tmp_path, backend[0], IDP_METRICS_TOKEN_SHA256=TOKEN_SHA256)
    services = build_services(settings, engine=backend[1])
    services.clock = clock
    with TestClient(create_app(services=services), base_url=ISSUER, follow_redirects=False) as browser:
        yield browser


def _login_page(browser: TestClient, services: Services) -> str:
    flow = Flow(add_client(services))
    response = browser.get(flow.url())
    assert response.status_code == 303
    return str(response.headers["location"])


# --- sign-ins --------------------------------------------------------------------------------------------------


def test_a_failed_and_a_good_password_sign_in_count_one_each(client: TestClient, services: Services) -> None:
    """One wrong password and one right one: one failure (bad_password), one success, one sign-in completed."""
    add_user(services)
    failed, good, completed = attempts("failure", "bad_password"), attempts("success"), Delta("idp_sign_ins_total")
    login = _login_page(client, services)
    assert submit_login(client, login, password="not the password").status_code == 200
    assert failed.change == 1 and good.change == 0
    assert submit_login(client, login).status_code == 303
    assert (failed.change, good.change, completed.change) == (1, 1, 1)


def test_unknown_users_and_wrong_passwords_look_the_same(client: TestClient, services: Services) -> None:
    """An unknown username and a wrong password are one reason, bad_password: the metrics cannot be used to
    find out which usernames exist."""
    add_user(services)
    failed = attempts("failure", "bad_password")
    unknown = attempts("failure", "unknown_user")
    login = _login_page(client, services)
    submit_login(client, login, username="nobody", password="whatever")
    submit_login(client, login, password="wrong")
    assert failed.change == 2 and unknown.change == 0


def test_second_factor_verifications_by_method_and_outcome(backend: tuple[str, Engine], tmp_path: Path,
                                                           clock: FakeClock, services: Services) -> None:
    """A wrong authenticator code and then the right one: one failure (wrong_code) and one success for totp."""
    strict = build_services(make_settings(tmp_path, backend[0], IDP_MFA_DEFAULT="required"), engine=backend[1])
    strict.clock = clock
    add_user(strict)
    _, secret = seed_totp(strict)
    wrong = Delta("idp_second_factor_verifications_total", method="totp", outcome="failure", reason="wrong_code")
    right = Delta("idp_second_factor_verifications_total", method="totp", outcome="success", reason="")
    with TestClient(create_app(services=strict), base_url=ISSUER, follow_redirects=False) as browser:
        response = submit_login(browser, _login_page(browser, strict))
        while not response.headers["location"].endswith("/factor"):
            response = browser.get(response.headers["location"])
        factor = response.headers["location"]
        page = browser.get(factor)
        code = pyotp.TOTP(secret).at(clock())
        bad = "000000" if code != "000000" else "111111"
        refused = browser.post(factor, data={"method": "totp", "code": bad, "csrf_token": csrf_of(page.text)})
        assert refused.status_code == 200
        assert (wrong.change, right.change) == (1, 0)
        clock.advance(seconds=30)
        accepted = browser.post(factor, data={"method": "totp", "code": pyotp.TOTP(secret).at(clock()),
                                              "csrf_token": csrf_of(page.text)})
        assert accepted.status_code == 303, accepted.text
    assert (wrong.change, right.change) == (1, 1)


# --- tokens ------------------------------------------------------------------------------------------------------


def test_tokens_issued_by_grant_type_and_errors_by_code(client: TestClient, services: Services) -> None:
    """A client_credentials token counts under its grant type; a wrong secret under invalid_client and a
    missing grant_type under invalid_request (RFC 6749 5.2 codes)."""
    app = add_client(services, grant_types=["client_credentials"], redirect_uris=[], post_logout_redirect_uris=[])
    issued = Delta("idp_tokens_issued_total", grant_type="client_credentials")
    invalid_client = Delta("idp_token_errors_total", error="invalid_client")
    invalid_request = Delta("idp_token_errors_total", error="invalid_request")
    good = client.post("/token", data={"grant_type": "client_credentials"}, auth=(app.client_id, app.client_secret))
    assert good.status_code == 200
    assert client.post("/token", data={"grant_type": "client_credentials"},
                       auth=(app.client_id, "wrong")).json()["error"] == "invalid_client"
    assert client.post("/token", data={}, auth=(app.client_id, app.client_secret)).status_code == 400
    assert (issued.change, invalid_client.change, invalid_request.change) == (1, 1, 1)


# --- counted only after the commit -------------------------------------------------------------------------------


def test_audit_events_count_only_when_their_transaction_commits(services: Services) -> None:
    """A sync run recorded in a transaction that rolls back is not counted; one that commits is, once."""
    runs = Delta("idp_directory_sync_runs_total", source="rathaus", trigger="schedule", status="success")
    with pytest.raises(RuntimeError), unit_of_work(services.sessions) as db:
        audit.record(db, "directory.sync", source="rathaus", trigger="schedule", status="success", mode="full")
        raise RuntimeError("the run failed to store")
    assert runs.change == 0
    with unit_of_work(services.sessions) as db:
        audit.record(db, "directory.sync", source="rathaus", trigger="schedule", status="success", mode="full")
        assert runs.change == 0  # not before the commit
    assert runs.change == 1


def test_backchannel_deliveries_by_outcome(services: Services, clock: FakeClock) -> None:
    """A delivered logout token, a failure that will be retried, and one given up after the last attempt."""
    registered = add_client(services)
    deltas = {outcome: Delta("idp_backchannel_deliveries_total", outcome=outcome)
              for outcome in ("delivered", "retry", "failed")}
    with unit_of_work(services.sessions) as db:
        client_row = db.scalars(select(Client).where(Client.client_id == registered.client_id)).one()
        rows = [BackchannelDelivery(client_id=client_row.id, uri="https://app.example/bc", logout_token="t",
                                    next_attempt_at=clock(), attempts=attempts) for attempts in (0, 0, 5)]
        db.add_all(rows)
        db.flush()
        ids = [row.id for row in rows]
    for delivery_id, error in zip(ids, [None, "HTTP 500", "HTTP 500"], strict=True):
        with unit_of_work(services.sessions) as db:
            record_result(db, delivery_id, error, clock(), max_attempts=6)
    assert {outcome: delta.change for outcome, delta in deltas.items()} == {"delivered": 1, "retry": 1, "failed": 1}


# --- request latency and label cardinality ----------------------------------------------------------------------


def _route_labels() -> set[str]:
    return {sample.labels["route"] for family in REGISTRY.collect()
            if family.name == "idp_http_request_duration_seconds" for sample in family.samples}


def test_latency_is_labelled_by_route_template_and_a_404_flood_adds_no_labels(client: TestClient) -> None:
    """Requests are observed under their route's template; a hundred different unknown paths all fall under
    one label, ``unmatched``, so that a scanner cannot grow the metrics without bound."""
    ok = Delta("idp_http_request_duration_seconds_count", route="/healthz", method="GET", status="2xx")
    client.get("/healthz")
    client.get("/language/xx")  # a path parameter: counted under the template
    assert ok.change == 1
    assert "/language/{code}" in _route_labels() and "/language/xx" not in _route_labels()
    client.get("/no-such-page-0")
    labels = _route_labels()
    unmatched = Delta("idp_http_request_duration_seconds_count", route="unmatched", method="GET", status="4xx")
    for _ in range(100):
        assert client.get(f"/scan/{secrets.token_hex(8)}").status_code == 404
    client.request("PROPFIND", "/x")
    assert unmatched.change == 100
    assert _route_labels() == labels
    methods = {sample.labels["method"] for family in REGISTRY.collect()
               if family.name == "idp_http_request_duration_seconds" for sample in family.samples}
    assert "PROPFIND" not in methods and "other" in methods


# --- who may read them ---------------------------------------------------------------------------------------------


def test_metrics_are_not_served_without_configuration(client: TestClient) -> None:
    """The default serves no metrics on the main port: /metrics is as unknown as any other path."""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_metrics_need_the_configured_bearer_token(scraping: TestClient) -> None:
    """No token, another scheme or a wrong token: 401 with a Bearer challenge; the right token: the metrics."""
    missing = scraping.get("/metrics")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert "idp_" not in missing.text
    for authorization in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer ", f"Bearer {TOKEN_SHA256}", TOKEN):
        refused = scraping.get("/metrics", headers={"Authorization": authorization})
        assert refused.status_code == 401, authorization
        assert "idp_" not in refused.text
    assert 'error="invalid_token"' in scraping.get("/metrics", headers={"Authorization": "Bearer no"}).headers[
        "www-authenticate"]
    served = scraping.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(served.text)}
    assert {"idp_sign_in_attempts", "idp_tokens_issued", "idp_http_request_duration_seconds"} <= names


def test_disabled_metrics_are_not_served_even_with_a_token(backend: tuple[str, Engine], tmp_path: Path,
                                                          clock: FakeClock) -> None:
    settings = make_settings(tmp_path, backend[0], IDP_METRICS_TOKEN_SHA256=TOKEN_SHA256, IDP_METRICS_ENABLED="false")
    services = build_services(settings, engine=backend[1])
    with TestClient(create_app(services=services), base_url=ISSUER) as browser:
        assert browser.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


@pytest.mark.parametrize("variables, message", [
    ({"IDP_METRICS_TOKEN_SHA256": TOKEN}, "token_sha256"),
    ({"IDP_METRICS_TOKEN_SHA256": "ab" * 31}, "token_sha256"),
    ({"IDP_METRICS_PORT": "70000"}, "port"),
    ({"IDP_METRICS_PORT": "8000"}, "[metrics] port must differ"),
])
def test_metrics_settings_are_checked(variables: dict[str, str], message: str) -> None:
    """The token setting takes only a SHA-256 (never the token itself); the port is a port, not the main one."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(environ=variables)


# --- several worker processes -------------------------------------------------------------------------------------


@pytest.fixture
def metered_workers(backend: tuple[str, Engine], services: Services, tmp_path: Path) -> Iterator[tuple[Served, int]]:
    """`idp serve --workers 2` with a metrics token and a metrics port, on the test run's database."""
    metrics_port = free_port()
    env = server_environment(tmp_path, backend[0], IDP_METRICS_TOKEN_SHA256=TOKEN_SHA256,
                             IDP_METRICS_PORT=str(metrics_port))
    with serve(env, tmp_path, workers=2) as served:
        yield served, metrics_port


def _sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def _per_worker(directory: Path, needle: str) -> dict[int, float]:
    """Each worker's own value of the samples whose key contains ``needle``, read from its counter file."""
    found: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        found[pid] = sum(entry[1] for entry in MmapedDict.read_all_values_from_file(str(path))
                         if needle in entry[0])
    return found


@pytest.mark.e2e
def test_counters_of_two_workers_add_up(metered_workers: tuple[Served, int], tmp_path: Path) -> None:
    """With `idp serve --workers 2`, each worker counts into its own file under the data dir and every
    exposition adds them up: the metrics port and either worker's /metrics show the total of both."""
    served, metrics_port = metered_workers
    base, process = served.base, served.process
    directory = tmp_path / "prometheus"
    services = served.services()
    try:
        app = add_client(services, grant_types=["client_credentials"], redirect_uris=[], post_logout_redirect_uris=[])
    finally:
        services.engine.dispose()
    needle = '"invalid_client"'
    sent = 0
    # Send on new connections until both workers have answered some (the kernel chooses who accepts).
    while sent < 200 and (sent < 10 or len([v for v in _per_worker(directory, needle).values() if v]) < 2):
        with httpx.Client(base_url=base, timeout=10) as http:
            response = http.post("/token", data={"grant_type": "client_credentials"}, auth=(app.client_id, "wrong"))
        assert response.json()["error"] == "invalid_client"
        sent += 1
    per_worker = _per_worker(directory, needle)
    # Two workers (three or more if uvicorn replaced one that missed its health check: a dead worker's file stays,
    # so its counts are not lost) each counted some, and together exactly what was sent.
    assert len([v for v in per_worker.values() if v]) >= 2, per_worker
    assert sum(per_worker.values()) == sent
    listener = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert _sample(listener, "idp_token_errors_total", error="invalid_client") == sent
    for _ in range(4):  # whichever worker answers, it reads both workers' files
        with httpx.Client(base_url=base, timeout=10) as http:
            scraped = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert scraped.status_code == 200
        assert _sample(scraped.text, "idp_token_errors_total", error="invalid_client") == sent
        assert (_sample(scraped.text, "idp_http_request_duration_seconds_count", route="/token", method="POST",
                        status="4xx") == sent)
    assert httpx.get(f"{base}/metrics", timeout=5).status_code == 401
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not directory.exists()  # the parent removed the workers' files at the stop


@pytest.mark.e2e
def test_metrics_port_listens_on_loopback_only(metered_workers: tuple[Served, int]) -> None:
    """The metrics listener is bound to 127.0.0.1, not to every address of the machine."""
    _, metrics_port = metered_workers
    with open("/proc/net/tcp") as table:
        listening = [line.split() for line in table.readlines()[1:] if line.split()[3] == "0A"]
    bound = {line[1] for line in listening if int(line[1].split(":")[1], 16) == metrics_port}
    assert bound == {f"0100007F:{metrics_port:04X}"}


@pytest.mark.e2e
def test_metrics_port_of_a_single_process(tmp_path: Path) -> None:
    """With one process the listener serves that process's registry: request times and the process metrics."""
    metrics_port = free_port()
    with serve(server_environment(tmp_path, IDP_METRICS_PORT=str(metrics_port)), tmp_path) as served:
        for _ in range(3):
            assert httpx.get(f"{served.base}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{served.base}/metrics", timeout=5).status_code == 404  # no token configured
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert _sample(text, "idp_http_request_duration_seconds_count", route="/healthz", method="GET",
                       status="2xx") == 3
        assert _sample(text, "process_resident_memory_bytes") is not None
        assert served.stop() == 0
    assert not (tmp_path / "prometheus").exists()

"""Prometheus metrics: what is counted, when, and where it is served.

**When a count is taken.** Sign-ins, second factors, issued tokens and directory sync runs are counted from the
audit events that record them (``idp.audit.record`` calls ``count_audit_event``), and only once the transaction
that wrote the audit row has committed (``after_commit`` of the session): a counter never shows what the
database does not hold, and the metrics and the audit trail speak of the same events. Back-channel deliveries are
counted the same way, after their outcome is stored. Token endpoint errors and request latencies are about
*responses* (nothing is stored for most of them): they are counted when the response is made.

**Labels are bounded**: routes by their template (``/admin/users/{user_id}``, ``unmatched`` for any unknown
path), methods and reasons from fixed lists (anything else is ``other``), statuses by class (``2xx``). Failed
password sign-ins of unknown users, users without a password and wrong passwords are all ``bad_password``,
so that the metrics cannot tell which usernames exist.

**Several processes.** ``idp serve --workers N`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh folder in the data
dir before the workers start; prometheus_client then keeps each worker's values in files there, and every
exposition (either worker's ``/metrics``, or the parent's metrics listener) adds them up with
``MultiProcessCollector``. The folder is emptied at each start and removed at the stop.

**Where it is served**: ``/metrics`` on the main port only with the Bearer token whose SHA-256 is
``[metrics] token_sha256`` (compared in constant time; without it the path answers 404), and/or a listener on
127.0.0.1:``[metrics] port`` without a token. The default serves nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from sqlalchemy import event
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idp.config import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

SIGN_IN_ATTEMPTS = Counter(
    "idp_sign_in_attempts", "First-factor sign-in checks (password or passkey) by outcome and failure reason.",
    ["method", "outcome", "reason"],
)
SECOND_FACTORS = Counter(
    "idp_second_factor_verifications", "Second factors proved or failed in a sign-in, by method and outcome.",
    ["method", "outcome", "reason"],
)
SIGN_INS = Counter("idp_sign_ins", "Sign-in sessions opened or re-authenticated (sign-ins completed).")
TOKENS_ISSUED = Counter("idp_tokens_issued", "Token responses issued, by grant type.", ["grant_type"])
TOKEN_ERRORS = Counter("idp_token_errors", "Error responses of the token endpoint, by OAuth error code.", ["error"])
SYNC_RUNS = Counter("idp_directory_sync_runs", "Directory sync runs of this server, by source, trigger and status.",
                    ["source", "trigger", "status"])
BACKCHANNEL_DELIVERIES = Counter(
    "idp_backchannel_deliveries", "Back-channel logout delivery attempts: delivered, retry (will be tried again) or "
    "failed (given up).", ["outcome"],
)
REQUEST_SECONDS = Histogram(
    "idp_http_request_duration_seconds", "Time to answer HTTP requests, by route template, method and status class.",
    ["route", "method", "status"],
    # Sign-ins cost one argon2 run (about 20-50 ms); the slow end catches a stalled database or directory.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
_PASSWORD_REASONS = {
    # One label for every "these credentials do not sign in" answer: no enumeration of usernames through metrics.
    "unknown_user": "bad_password", "no_password": "bad_password", "wrong_password": "bad_password",
    "empty_password": "bad_password", "not_in_directory": "bad_password", "unknown_source": "bad_password",
    "disabled": "disabled", "disabled_in_directory": "disabled",
    "throttled": "throttled", "directory_unavailable": "directory_unavailable",
}
_FACTOR_METHODS = {"totp", "sms", "webauthn", "recovery"}
_FACTOR_REASONS = {"wrong_code", "throttled", "gateway_unavailable", "disabled"}
_GRANT_TYPES = {"authorization_code", "refresh_token", "client_credentials",
                "urn:ietf:params:oauth:grant-type:device_code", "urn:ietf:params:oauth:grant-type:token-exchange"}
_TOKEN_ERRORS = {"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type",
                 "invalid_scope", "server_error", "temporarily_unavailable", "invalid_target", "access_denied"}
_SYNC_STATUSES = {"success", "refused", "failed"}
_PENDING = "idp.metrics.pending"


def _failure_reason(outcome: str, reason: str | None, known: dict[str, str] | set[str]) -> str:
    if outcome == "success":
        return ""
    if isinstance(known, dict):
        return known.get(reason or "", "other")
    if reason in known:
        return reason or "other"
    # Every WebAuthn refusal (replayed or foreign challenge, unknown credential, wrong origin, ...) is one reason.
    return "refused"


def _from_audit(event_name: str, outcome: str, details: dict[str, Any]) -> Callable[[], None] | None:
    """The increment an audit event stands for, or None for events that are not counted."""
    if event_name == "login.password":
        labels = ("password", outcome, _failure_reason(outcome, details.get("reason"), _PASSWORD_REASONS))
        return SIGN_IN_ATTEMPTS.labels(*labels).inc
    if event_name == "login.passkey":
        reason = details.get("reason")
        labels = ("passkey", outcome, _failure_reason(outcome, reason, {"throttled", "disabled"}))
        return SIGN_IN_ATTEMPTS.labels(*labels).inc
    if event_name == "login.second_factor":
        method = details.get("method")
        method = method if method in _FACTOR_METHODS else "other"
        return SECOND_FACTORS.labels(method, outcome, _failure_reason(outcome, details.get("reason"),
                                                                      _FACTOR_REASONS)).inc
    if event_name == "login":
        return SIGN_INS.inc
    if event_name == "token.issued":
        grant_type = details.get("grant_type")
        return TOKENS_ISSUED.labels(grant_type if grant_type in _GRANT_TYPES else "other").inc
    if event_name == "directory.sync":
        # Source names come from the configuration: a bounded set.
        status = details.get("status")
        return SYNC_RUNS.labels(str(details.get("source"))[:64], str(details.get("trigger"))[:16],
                                status if status in _SYNC_STATUSES else "other").inc
    return None


def count_after_commit(db: Session, increment: Callable[[], None]) -> None:
    """Apply ``increment`` once ``db``'s transaction has committed; forget it if the transaction rolls back."""
    db.info.setdefault(_PENDING, []).append(increment)


def count_audit_event(db: Session, event_name: str, outcome: str, details: dict[str, Any]) -> None:
    increment = _from_audit(event_name, outcome, details)
    if increment is not None:
        count_after_commit(db, increment)


@event.listens_for(Session, "after_commit")
def _apply_pending(session: Session) -> None:
    for increment in session.info.pop(_PENDING, ()):
        increment()


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


def count_token_response(response: Response) -> None:
    """Count a token endpoint error response by its ``error`` code (RFC 6749 5.2)."""
    if response.status_code < 400:
        return
    error = "other"
    try:
        body = json.loads(bytes(response.body))
        if isinstance(body, dict) and body.get("error") in _TOKEN_ERRORS:
            error = body["error"]
    except ValueError:
        pass
    TOKEN_ERRORS.labels(error).inc()


# --- request latency ---------------------------------------------------------------------------------------


class RequestMetricsMiddleware:
    """Observes every HTTP request's duration under its route template (never the raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) if route is not None else None
            method = scope.get("method", "")
            REQUEST_SECONDS.labels(
                template if isinstance(template, str) else "unmatched",
                method if method in _METHODS else "other",
                f"{status // 100}xx",
            ).observe(time.perf_counter() - started)


# --- exposition --------------------------------------------------------------------------------------------


def _registry() -> CollectorRegistry:
    """What to expose: all workers' files in multiprocess mode, else this process's registry."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def token_matches(authorization: str | None, token_sha256: str) -> bool:
    """Whether ``Authorization: Bearer TOKEN`` carries the token whose SHA-256 (hex) is configured."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    presented = hashlib.sha256(token.strip().encode()).hexdigest()
    return hmac.compare_digest(presented, token_sha256)


async def endpoint(request: Request) -> Response:
    """GET /metrics on the main port: only with the configured Bearer token, else 404 (not configured) or 401."""
    settings: Settings = request.app.state.ctx.services.settings
    digest = settings.metrics.token_sha256
    if not settings.metrics.enabled or digest is None:
        raise HTTPException(404)
    if not token_matches(request.headers.get("authorization"), digest):
        error = ', error="invalid_token"' if request.headers.get("authorization") else ""
        return Response("metrics need the configured Bearer token\n", status_code=401, media_type="text/plain",
                        headers={"www-authenticate": f'Bearer realm="metrics"{error}'})
    body = await run_in_threadpool(generate_latest, _registry())
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def prepare_multiprocess(settings: Settings) -> Path:
    """Make the empty folder the workers of ``idp serve --workers N`` keep their values in, and point
    prometheus_client at it (the workers inherit the variable). Stale files of an earlier run are removed:
    counters start at zero with each start, as they do for one process."""
    directory = Path(settings.data_dir).resolve() / "prometheus"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def remove_multiprocess(directory: Path) -> None:
    os.environ.pop(MULTIPROC_ENV, None)
    shutil.rmtree(directory, ignore_errors=True)


def worker_exited() -> None:
    """Called as a worker stops: prometheus_client drops its live gauges (its counters stay counted)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def start_listener(port: int) -> Callable[[], None]:
    """Serve the metrics on 127.0.0.1:``port`` from a thread of this process; returns a function that stops it."""
    server, thread = start_http_server(port, addr="127.0.0.1", registry=_registry())

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop

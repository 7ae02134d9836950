"""Health checks for the process supervisor and the load balancer (issue 7, "Operations").

``GET /healthz`` answers whether the process lives and its event loop turns: it touches nothing else, so a
database outage never makes a supervisor restart healthy workers. ``GET /readyz`` answers whether this process
can serve sign-ins now: the database answers, its schema is the one this code expects, and the signing keys
open with the configured key-encryption key. A load balancer sends traffic only to ready processes.

Asking Alembic whether the schema is current costs a few queries, so that answer is kept for
``MIGRATION_CHECK_SECONDS``; the database and key checks run on every call (the keys are re-read by the key
store's own cache at most every few seconds).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from idp import migrate
from idp.oauth.keys import SUPPORTED_ALGORITHMS
from idp.services import Services
from idp.web.context import context_of

MIGRATION_CHECK_SECONDS = 5.0
RETRY_AFTER_SECONDS = 5
NO_STORE = {"cache-control": "no-store"}


class Readiness:
    """The checks behind ``/readyz`` for one server process; keeps the migration answer for a few seconds."""

    def __init__(self, services: Services, cache_seconds: float = MIGRATION_CHECK_SECONDS) -> None:
        self._services = services
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._current: bool | None = None
        self._checked_at = -1e9

    def _schema_current(self) -> bool:
        with self._lock:
            if self._current is None or time.monotonic() - self._checked_at >= self._cache_seconds:
                # Read-only: on SQLite a plain connection would begin with BEGIN IMMEDIATE and wait for writers.
                self._current = migrate.is_current(self._services.engine.execution_options(idp_read_only=True))
                self._checked_at = time.monotonic()
            return self._current

    def check(self) -> tuple[bool, dict[str, Any]]:
        """Run the checks in order, stopping at the first that fails: ``(ready, body)``."""
        checks: dict[str, str] = {}
        try:
            with self._services.engine.execution_options(idp_read_only=True).connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # any failure to reach the database means "not ready", never a 500
            checks["database"] = f"unreachable ({type(exc).__name__})"
            return False, {"status": "unavailable", "failed": "database", "checks": checks}
        checks["database"] = "ok"
        try:
            current = self._schema_current()
        except Exception as exc:
            checks["migrations"] = f"unknown ({type(exc).__name__})"
            return False, {"status": "unavailable", "failed": "migrations", "checks": checks}
        if not current:
            checks["migrations"] = "pending: run `idp db upgrade`"
            return False, {"status": "unavailable", "failed": "migrations", "checks": checks}
        checks["migrations"] = "ok"
        try:
            for alg in SUPPORTED_ALGORITHMS:
                self._services.keys.signing_key(alg)
        except Exception as exc:  # no active key (LookupError), or the key-encryption key does not open it
            checks["signing_keys"] = f"not loadable ({type(exc).__name__})"
            return False, {"status": "unavailable", "failed": "signing_keys", "checks": checks}
        checks["signing_keys"] = "ok"
        return True, {"status": "ready", "checks": checks}


async def healthz(request: Request) -> Response:
    """The process lives: no database, no keys, no template."""
    return PlainTextResponse("ok", headers=NO_STORE)


def readiness_of(request: Request) -> Readiness:
    state = request.app.state
    readiness: Readiness | None = getattr(state, "readiness", None)
    if readiness is None:
        readiness = state.readiness = Readiness(context_of(request).services)
    return readiness


async def readyz(request: Request) -> Response:
    ready, body = await run_in_threadpool(readiness_of(request).check)
    headers = dict(NO_STORE) if ready else {**NO_STORE, "retry-after": str(RETRY_AFTER_SECONDS)}
    return Response(json.dumps(body), status_code=200 if ready else 503, media_type="application/json",
                    headers=headers)


routes = [
    Route("/healthz", healthz, methods=["GET", "HEAD"]),
    Route("/readyz", readyz, methods=["GET", "HEAD"]),
]

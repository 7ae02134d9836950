"""A database outage answers 503 with ``Retry-After`` (RFC 9110 section 15.6.4 and 10.2.3), never a 500.

When the database cannot be reached (connection refused or dropped, the pool exhausted, a server restarting),
the request's unit of work has already rolled back (``idp.db.unit_of_work``), so nothing is half-written, and
the client is told to come back shortly. Nothing in the process needs repair afterwards: the pool drops the
broken connections, and on PostgreSQL ``pool_pre_ping`` checks every connection before it is handed out, so
the first request after the database returns succeeds.

Machines (the OAuth endpoints, the JSON calls of the sign-in pages) get an OAuth-style JSON error; browsers
get the error page.
"""

from __future__ import annotations

import json
import logging

from starlette.requests import Request
from starlette.responses import Response

from idp.db import UNAVAILABLE_ERRORS
from idp.web.context import context_of
from idp.web.i18n import N_

log = logging.getLogger("idp.web")

RETRY_AFTER_SECONDS = 5

OUTAGE_ERRORS = UNAVAILABLE_ERRORS

API_PATHS = ("/token", "/userinfo", "/introspect", "/revoke", "/jwks", "/.well-known/", "/healthz", "/readyz")
JSON_SUFFIXES = ("/options", "/verify")
"""The WebAuthn steps are called by the page's script and read JSON."""


def wants_json(request: Request) -> bool:
    path = request.url.path
    if path.startswith(API_PATHS) or path.endswith(JSON_SUFFIXES):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


async def database_unavailable(request: Request, exc: Exception) -> Response:
    # One line, no stack trace: during an outage every request ends here, and the cause is the database.
    log.warning("database unavailable serving %s %s: %s", request.method, request.url.path,
                type(getattr(exc, "orig", None) or exc).__name__)
    headers = {"retry-after": str(RETRY_AFTER_SECONDS), "cache-control": "no-store"}
    if wants_json(request):
        body = json.dumps({"error": "temporarily_unavailable",
                           "error_description": "the service is temporarily unavailable, try again shortly"})
        return Response(body, status_code=503, media_type="application/json", headers=headers)
    response = context_of(request).pages.error(503, N_("Not available"), N_("Please reload the page and try again."))
    response.headers.update(headers)
    return response


exception_handlers = dict.fromkeys(OUTAGE_ERRORS, database_unavailable)

"""Security headers on every response, a bound on request bodies, and no stack trace ever.

Written as plain ASGI middleware (not ``BaseHTTPMiddleware``) so that it adds no task or copy per request.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idp.web.i18n import N_

log = logging.getLogger("idp.web")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
# form-action is left out on purpose: browsers apply it to the redirect that follows the consent POST,
# which must reach the client's registered redirect URI.

BASE_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


class BodyTooLarge(Exception):
    pass


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, *, https: bool, max_body_size: int) -> None:
        self.app = app
        self.headers = BASE_HEADERS + ([HSTS] if https else [])
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                if b"cache-control" not in present:
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        if "\x00" in scope.get("path", ""):
            # No route takes a NUL (decoded from %00), and PostgreSQL cannot store one in text: refuse it here,
            # before it reaches a query as a path parameter and fails there as a 500.
            await _refuse(scope, receive, send_with_headers, 400, "the path contains a NUL character")
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_size:
            await _refuse(scope, receive, send_with_headers, 413, "request body too large")
            return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_size:
                    raise BodyTooLarge()
            return message

        try:
            await self.app(scope, bounded_receive, send_with_headers)
        except BodyTooLarge:
            if not started:
                await _refuse(scope, receive, send_with_headers, 413, "request body too large")
        except Exception:
            log.exception("unhandled error serving %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _plain_error(send_with_headers, 500, "server_error")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


REFUSAL_PAGES = {
    400: (N_("Page not found"), N_("The address you opened does not exist.")),
    413: (N_("The form could not be read"), N_("Please reload the page and try again.")),
}


async def _refuse(scope: Scope, receive: Receive, send: Any, status: int, description: str) -> None:
    """A refusal before any route ran: the theme's error page for a browser (it accepts HTML), else JSON."""
    accept = dict(scope.get("headers", [])).get(b"accept", b"")
    ctx = getattr(getattr(scope.get("app"), "state", None), "ctx", None)
    if b"text/html" in accept and ctx is not None:
        title, message = REFUSAL_PAGES[status]
        await ctx.pages.error(status, title, message)(scope, receive, send)
        return
    await _plain_error(send, status, description)


async def _plain_error(send: Any, status: int, description: str) -> None:
    error = "server_error" if status >= 500 else "invalid_request"
    body = json.dumps({"error": error, "error_description": description}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

"""A request id on every request: taken from a trusted reverse proxy's ``X-Request-ID`` or made here.

The id is set in ``idp.logs.request_id_var`` while the request is served (every log line and audit line carries
it) and echoed in the ``X-Request-ID`` response header, so that a user's error report, the proxy's access log
and our logs can be matched. A client's own ``X-Request-ID`` is ignored unless it came through one of the
``[server] trusted_proxies`` (anyone could otherwise put another request's id, or a forged line, in our logs),
and even then only a short id of safe characters is taken.

This middleware must see the connecting peer before ``X-Forwarded-For`` replaces it: ``create_app`` places it
outside the proxy-headers middleware.
"""

from __future__ import annotations

import ipaddress
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idp.logs import request_id_var

HEADER = b"x-request-id"
# What proxies send (nginx's $request_id is 32 hex digits, others use UUIDs): short, no spaces or quotes.
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def new_request_id() -> str:
    return secrets.token_hex(16)


def valid_request_id(value: bytes) -> str | None:
    """The id if it is one we may write into logs as it is, else None."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if _VALID.fullmatch(text) else None


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp, *, trusted_proxies: tuple[str, ...]) -> None:
        self.app = app
        self.networks = []
        for entry in trusted_proxies:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                continue  # a host name in the list cannot match a peer address

    def _from_trusted_proxy(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not client or not self.networks:
            return False
        try:
            peer = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(peer in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        if self._from_trusted_proxy(scope):
            given = [value for name, value in scope.get("headers", []) if name == HEADER]
            if len(given) == 1:
                request_id = valid_request_id(given[0])
        request_id = request_id or new_request_id()
        encoded = request_id.encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message["headers"] = [*headers, (HEADER, encoded)]
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)

"""Who is asking: the client address, taking ``X-Forwarded-For`` only from configured proxies."""

from __future__ import annotations

import ipaddress

from starlette.requests import HTTPConnection

from idp.audit import Origin


def _is_trusted(address: str | None, trusted: tuple[str, ...]) -> bool:
    if not address or not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in trusted:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def client_ip(request: HTTPConnection, trusted: tuple[str, ...]) -> str | None:
    peer = request.client.host if request.client else None
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and _is_trusted(peer, trusted):
        # The right-most address not added by one of our proxies is the client.
        for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
            if not _is_trusted(hop, trusted):
                return hop[:64]
    return peer


def origin_of(request: HTTPConnection, trusted: tuple[str, ...]) -> Origin:
    # The User-Agent is stored (sessions, audit trail): no NUL, which PostgreSQL refuses in text (a 500 at
    # sign-in), and no other control character.
    agent = "".join(ch for ch in request.headers.get("user-agent", "")[:512] if ch.isprintable())
    return Origin(ip=client_ip(request, trusted), user_agent=agent or None)

"""What a request handler needs, and how it runs synchronous work in one database transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request

from idp.audit import Origin
from idp.db import unit_of_work
from idp.oauth.logout import BackchannelSender
from idp.oauth.requests import RequestScope, request_scope
from idp.oauth.server import Protector, Server
from idp.services import Services
from idp.web.middleware import BodyTooLarge
from idp.web.origin import origin_of
from idp.web.templates import Pages

T = TypeVar("T")

MAX_FIELDS = 100


class MalformedRequest(ValueError):
    """The body could not be read as a form (wrong type, bad encoding, too many fields)."""


@dataclass
class AppContext:
    services: Services
    server: Server
    protector: Protector
    pages: Pages
    discovery: bytes
    sender: BackchannelSender

    def origin(self, request: HTTPConnection) -> Origin:
        return origin_of(request, self.services.settings.server.trusted_proxies)

    async def transaction(self, origin: Origin, work: Callable[[RequestScope], T]) -> T:
        """Run ``work`` in a worker thread, inside one unit of work and an OAuth request scope."""

        def run() -> T:
            with unit_of_work(self.services.sessions) as db:
                scope = RequestScope(db=db, now=self.services.now(), origin=origin,
                                     extras={"services": self.services})
                with request_scope(scope):
                    return work(scope)

        return await run_in_threadpool(run)


def context_of(request: HTTPConnection) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def _bad_text(text: str) -> bool:
    # U+FFFD stands for bytes that were not UTF-8. No parameter needs NUL, and PostgreSQL cannot store it in
    # text: a NUL reaching a query would fail there as a 500.
    return "\ufffd" in text or "\x00" in text


async def read_form(request: Request, *, required: bool = True) -> list[tuple[str, str]]:
    """The url-encoded form of a POST, as (name, value) pairs, or ``MalformedRequest``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        if required or content_type:
            raise MalformedRequest("the body must be application/x-www-form-urlencoded")
        return []
    try:
        form = await request.form(max_fields=MAX_FIELDS, max_files=0)
    except BodyTooLarge:
        raise  # answered 413 by SecurityMiddleware, like a body whose Content-Length is too large
    except Exception as exc:  # python-multipart raises several types for malformed bodies
        raise MalformedRequest("the form could not be read") from exc
    pairs = []
    for key, value in form.multi_items():
        if not isinstance(value, str):
            raise MalformedRequest("files are not accepted")
        if _bad_text(key) or _bad_text(value):
            raise MalformedRequest("the form is not valid UTF-8 or contains a NUL character")
        pairs.append((key, value))
    return pairs


async def read_fields(request: Request) -> dict[str, str]:
    """A form of named fields, each at most once: a repeated field is refused rather than guessed at."""
    pairs = await read_form(request)
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise MalformedRequest("a form field is repeated")
    return fields


def query_pairs(request: HTTPConnection) -> list[tuple[str, str]]:
    pairs = list(request.query_params.multi_items())
    if any(_bad_text(key) or _bad_text(value) for key, value in pairs):
        raise MalformedRequest("the query is not valid UTF-8 or contains a NUL character")
    return pairs


def row_id(text: str) -> int | None:
    """A row id from a path: digits only and within a 32-bit integer (a larger one would fail in PostgreSQL)."""
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        return None
    return int(text)

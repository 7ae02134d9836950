"""Adapting already-parsed HTTP requests to authlib's synchronous request objects.

authlib's server is synchronous (authlib#278): the Starlette handler reads the body, builds one of these
from the parsed data, and calls authlib in a worker thread. authlib's callbacks that receive no request
(``query_client`` and friends) find the database session of the running request in ``current_scope``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from authlib.oauth2.rfc6749 import JsonPayload, JsonRequest, OAuth2Payload, OAuth2Request
from sqlalchemy.orm import Session

from idp.audit import Origin

Pairs = Sequence[tuple[str, str]]


class Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, query: Pairs, form: Pairs) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in [*query, *form]:
            self._datalist[key].append(value)
        self._data = {key: values[0] for key, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class Request(OAuth2Request):  # type: ignore[misc]
    """An OAuth request whose query and form fields were parsed by the web layer."""

    def __init__(self, method: str, uri: str, headers: Mapping[str, str], query: Pairs, form: Pairs) -> None:
        super().__init__(method=method, uri=uri, headers=headers)
        self._args = dict(query)
        self._form = dict(form)
        self.payload = Payload(query, form)

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class JsonBody(JsonPayload):  # type: ignore[misc]
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    @property
    def data(self) -> dict[str, Any]:
        return self._data


class JsonBodyRequest(JsonRequest):  # type: ignore[misc]
    def __init__(self, method: str, uri: str, headers: Mapping[str, str], data: dict[str, Any]) -> None:
        super().__init__(method, uri, headers)
        self.payload = JsonBody(data)


@dataclass
class RequestScope:
    """What authlib's callbacks need of the request being served."""

    db: Session
    now: datetime
    origin: Origin
    extras: dict[str, Any] = field(default_factory=dict)


_current: ContextVar[RequestScope | None] = ContextVar("idp_oauth_request_scope", default=None)


def current_scope() -> RequestScope:
    scope = _current.get()
    assert scope is not None, "authlib was called outside idp.oauth.requests.request_scope()"
    return scope


def running_scope() -> RequestScope | None:
    """The scope of the request being served in this thread, or None outside of one (CLI, background work)."""
    return _current.get()


@contextmanager
def request_scope(scope: RequestScope) -> Iterator[RequestScope]:
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)

"""Paging and filter values of the console's lists, read from the query string without ever failing.

A page number that is not a number, zero, negative or far past the end shows the nearest page that exists;
a date that is not ``YYYY-MM-DD`` is reported on the page rather than guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from starlette.requests import Request

from idp.web.context import MalformedRequest, query_pairs

PAGE_SIZE = 50


def query_of(request: Request) -> dict[str, str]:
    """The query's parameters (the first of a repeated one), or none at all for a query that is not UTF-8."""
    try:
        pairs = query_pairs(request)
    except MalformedRequest:
        return {}
    found: dict[str, str] = {}
    for key, value in pairs:
        found.setdefault(key, value[:1000])
    return found


@dataclass(frozen=True)
class Paging:
    number: int
    """1-based, within ``1 .. pages``."""
    total: int
    size: int = PAGE_SIZE

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def previous(self) -> int | None:
        return self.number - 1 if self.number > 1 else None

    @property
    def next(self) -> int | None:
        return self.number + 1 if self.number < self.pages else None


def requested_page(text: str | None) -> int:
    """The page asked for: digits only, at least 1 (a huge number is clamped by ``paging``)."""
    if text is None or not text.isascii() or not text.isdigit():
        return 1
    return max(1, int(text[:9]))


def paging(requested: int, total: int, size: int = PAGE_SIZE) -> Paging:
    pages = max(1, -(-total // size))
    return Paging(number=min(max(requested, 1), pages), total=total, size=size)


class BadFilter(ValueError):
    """A filter value that cannot be read; the message names the field."""


def parse_day(text: str, field: str) -> date | None:
    text = text.strip()
    if not text:
        return None
    # Exactly YYYY-MM-DD: fromisoformat would also take 20260310 and week dates, which nobody types here.
    if len(text) != 10:
        raise BadFilter(field)
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise BadFilter(field) from exc


def day_range(start: date | None, end: date | None, timezone: str) -> tuple[datetime | None, datetime | None]:
    """From the start of ``start`` to the end of ``end`` (inclusive), as instants in the console's time zone."""
    zone = ZoneInfo(timezone)
    since = datetime.combine(start, time(0), zone) if start else None
    until = datetime.combine(end, time(0), zone) + timedelta(days=1) if end else None
    return since, until

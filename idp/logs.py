"""Log lines: one JSON object each (or text for a terminal), every one carrying the id of its request.

The request id lives in a context variable that ``idp.web.request_id`` sets for the duration of a request;
Starlette's worker threads and ``asyncio.to_thread`` copy the context, so a line logged from a database unit
of work, an audit record or uvicorn's access log written while the response starts all carry it. Lines from
the background tasks (back-channel sender, directory scheduler, purger) have none (``null``).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from idp.config import Settings

request_id_var: ContextVar[str | None] = ContextVar("idp_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is written as a field.
# uvicorn adds ``color_message`` (the message with terminal colour codes) to some of its records: not a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "request_id",
                                                                          "color_message"}
# uvicorn's access log line: '%s - "%s %s HTTP/%s" %d' with these arguments.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def current_request_id() -> str | None:
    """The id of the request being served, or None outside a request."""
    return request_id_var.get()


class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` on every record, so that both formatters can show it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id, then the fields.

    An audit record passes its event as ``extra={"audit_fields": {...}}``: those fields are written at the top
    level (``audit``, ``outcome``, ``actor``, ...), so that a collector can filter on them directly.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        audit_fields = getattr(record, "audit_fields", None)
        if isinstance(audit_fields, dict):
            entry["message"] = str(audit_fields.get("audit", entry["message"]))
            entry.update({key: value for key, value in audit_fields.items() if key not in entry})
        elif record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            entry.update(zip(_ACCESS_FIELDS, record.args, strict=True))
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != "audit_fields" and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``LEVEL logger [request id]: message`` for a terminal; audit lines stay the JSON they are."""

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(getattr(record, "audit_fields", None), dict):
            return record.getMessage()
        request_id = getattr(record, "request_id", None)
        line = f"{record.levelname} {record.name}{f' [{request_id}]' if request_id else ''}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def log_format(settings: Settings | None) -> str:
    """``json`` or ``text``: as configured, ``auto`` being json in production."""
    if settings is None:
        return "text"
    if settings.logging.format == "auto":
        return "json" if settings.env == "production" else "text"
    return settings.logging.format


def configure(settings: Settings | None = None) -> None:
    """Route our loggers and uvicorn's (server and access log) to one stderr handler in the chosen format.

    uvicorn is started with ``log_config=None`` so that it leaves its loggers to this function; in a worker of
    ``idp serve --workers N`` this runs again when the app is built, after uvicorn's own set-up.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format(settings) == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    level = getattr(logging, (settings.logging.level if settings else "info").upper())
    for name in ("idp", "directory_sync", "enrollment", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    # Audit events are always written, whatever the level: they are the security trail.
    audit = logging.getLogger("idp.audit")
    audit.handlers[:] = [handler]
    audit.setLevel(logging.INFO)
    audit.propagate = False

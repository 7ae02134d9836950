"""The one way to record a security event: a row in the append-only audit table and a JSON log line.

Never pass tokens, codes, secrets, passwords or OTPs as details; names and ids only. The event names
are listed in ``docs/audit-events.md``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from idp import metrics
from idp.db import utcnow
from idp.logs import current_request_id
from idp.models import AuditEvent

log = logging.getLogger("idp.audit")

_FORBIDDEN_DETAIL_KEYS = {"password", "secret", "client_secret", "code", "token", "refresh_token", "access_token"}


@dataclass(frozen=True)
class Origin:
    """Where a request came from, as far as the audit trail is concerned."""

    ip: str | None = None
    user_agent: str | None = None


CLI = Origin(ip=None, user_agent="idp-cli")


def record(
    db: Session,
    event: str,
    *,
    outcome: str = "success",
    origin: Origin = CLI,
    actor: str | None = None,
    subject: str | None = None,
    client_id: str | None = None,
    at: datetime | None = None,
    **details: Any,
) -> AuditEvent:
    leaked = _FORBIDDEN_DETAIL_KEYS & set(details)
    assert not leaked, f"audit details must not carry secrets: {sorted(leaked)}"
    row = AuditEvent(
        at=at or utcnow(),
        event=event,
        outcome=outcome,
        actor=actor,
        subject=subject,
        client_id=client_id,
        ip=origin.ip,
        user_agent=(origin.user_agent or "")[:512] or None,
        details=details,
    )
    db.add(row)
    # Counted once this transaction commits (idp.metrics), like the row itself.
    metrics.count_audit_event(db, event, outcome, details)
    fields = {
        "audit": event,
        "outcome": outcome,
        "at": row.at.isoformat(),
        "actor": actor,
        "subject": subject,
        "client_id": client_id,
        "ip": origin.ip,
        "request_id": current_request_id(),
        **details,
    }
    log.info(json.dumps(fields, default=str, ensure_ascii=False), extra={"audit_fields": fields})
    return row

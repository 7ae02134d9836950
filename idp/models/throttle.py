"""Failure counters for guessable secrets, shared by every server process."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from idp.db import Base, UTCDateTime


class AttemptCounter(Base):
    __tablename__ = "attempt_counters"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    """What is counted, e.g. ``password:user:<hash>`` or ``password:ip:<address>``."""
    failures: Mapped[int] = mapped_column(default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)

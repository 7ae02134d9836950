"""Purging rows that can no longer matter: expired codes, challenges, transactions, sessions and tokens.

A row is kept as long as it still protects something: a consumed authorization code, a rotated refresh token
and a used client assertion must be remembered until they could no longer be accepted anyway, so that a replay
is recognised (RFC 9700 sections 4.5 and 4.14.2; RFC 7523 section 3, rule 7). After that, and a margin for
clocks and for an operator who looks into an incident, they go. What each kind keeps::

    authorization code      until 1 h after it expired (consumed or not)
    login transaction       until it expired
    used client assertion   until it expired
    WebAuthn challenge      until it expired
    SMS challenge           1 day (the send limits count them: ``idp.factors.sms.purge``)
    SSO session             30 days after it ended or expired (the account page and the service desk show them)
    token row               1 day after its refresh token (or, without one, its access token) expired
    back-channel delivery   7 days after it was delivered or given up

Every server process runs ``Purger`` every ``PURGE_INTERVAL`` in a worker thread; the deletes are idempotent,
so several processes need not take turns. ``idp db purge`` runs the same function once. Each run that deleted
something is audited as one ``maintenance.purged`` event with the counts.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_
from sqlalchemy.orm import Session

from idp import audit
from idp.db import log_background_failure, rowcount, unit_of_work
from idp.factors import sms
from idp.models import (
    AuthorizationCode,
    BackchannelDelivery,
    LoginTransaction,
    SsoSession,
    Token,
    UsedAssertion,
    WebAuthnChallenge,
)

log = logging.getLogger("idp.maintenance")

PURGE_INTERVAL = timedelta(minutes=10)
CODE_KEPT = timedelta(hours=1)
SESSION_KEPT = timedelta(days=30)
TOKEN_KEPT = timedelta(days=1)
DELIVERY_KEPT = timedelta(days=7)


def purge_expired(db: Session, now: datetime) -> dict[str, int]:
    """Delete what has expired as of ``now``; returns the number of rows deleted per kind."""
    counts: dict[str, int] = {}
    counts["authorization_codes"] = rowcount(db.execute(
        delete(AuthorizationCode).where(AuthorizationCode.expires_at < now - CODE_KEPT)))
    counts["login_transactions"] = rowcount(db.execute(
        delete(LoginTransaction).where(LoginTransaction.expires_at < now)))
    counts["used_assertions"] = rowcount(db.execute(delete(UsedAssertion).where(UsedAssertion.expires_at < now)))
    counts["webauthn_challenges"] = rowcount(db.execute(
        delete(WebAuthnChallenge).where(WebAuthnChallenge.expires_at < now)))
    counts["sms_challenges"] = sms.purge(db, now)
    # Tokens first: a refresh token bound to a session expires with it, so none of a purged session is live.
    counts["issued_tokens"] = rowcount(db.execute(delete(Token).where(
        func.coalesce(Token.refresh_expires_at, Token.access_expires_at) < now - TOKEN_KEPT)))
    counts["sso_sessions"] = rowcount(db.execute(delete(SsoSession).where(
        or_(SsoSession.ended_at < now - SESSION_KEPT, SsoSession.expires_at < now - SESSION_KEPT))))
    counts["backchannel_deliveries"] = rowcount(db.execute(delete(BackchannelDelivery).where(
        or_(BackchannelDelivery.delivered_at < now - DELIVERY_KEPT,
            BackchannelDelivery.failed_at < now - DELIVERY_KEPT))))
    return counts


MAINTENANCE = audit.Origin(ip=None, user_agent="idp-maintenance")


def run_purge(services: Any, *, origin: audit.Origin = MAINTENANCE, always_audit: bool = False) -> dict[str, int]:
    """One purge in its own unit of work, audited as one ``maintenance.purged`` event with the counts.

    The schedule audits only runs that deleted something: every process purges every few minutes, and a
    trail of empty runs would bury the events that matter. ``idp db purge`` (``always_audit``) always audits.
    """
    with unit_of_work(services.sessions) as db:
        counts = purge_expired(db, services.now())
        if always_audit or any(counts.values()):
            details: dict[str, Any] = dict(counts)
            audit.record(db, "maintenance.purged", origin=origin, **details)
    return counts


class Purger:
    """Runs ``run_purge`` on an interval in the background of a server process."""

    def __init__(self, services: Any, interval: timedelta = PURGE_INTERVAL) -> None:
        self._services = services
        self._interval = interval.total_seconds()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            # Wait first: a process that starts (or restarts in a loop) does not hit the database at once.
            await asyncio.sleep(self._interval)
            try:
                counts = await asyncio.to_thread(run_purge, self._services)
                if any(counts.values()):
                    log.info("purged expired rows: %s", counts)
            except Exception as exc:  # a broken database must not end the schedule; the next round tries again
                log_background_failure(log, "purging expired rows failed", exc)

"""Ending sign-in sessions and telling the relying parties (OpenID Connect Back-Channel Logout 1.0).

``end_session`` is the one place where a session ends, whatever the cause (the user's logout, an
administrator, a disabled account): the row is marked ended, the tokens bound to it are revoked, and a
logout token is queued for every client of the session that registered a ``backchannel_logout_uri``.

Delivery never blocks the user: queued tokens are POSTed by ``BackchannelSender``, which runs in every
server process; a delivery is leased with an atomic update, so only one process sends it, and failures
are retried with growing pauses until ``[logout] backchannel_attempts`` is reached.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import httpx
from joserfc import jwt
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from idp import audit, metrics
from idp.accounts.sessions import mark_ended
from idp.crypto import random_token
from idp.db import log_background_failure, rowcount, unit_of_work
from idp.models import BackchannelDelivery, Client, SessionClient, SsoSession
from idp.oauth.tokens import revoke_session_tokens

log = logging.getLogger(__name__)

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_LIFETIME = 120
LEASE = timedelta(seconds=60)


def make_logout_token(services: Any, client: Client, session: SsoSession, now: datetime) -> str:
    """A logout token (BCL 2.4): ``typ: logout+jwt``, ``events``, ``sid`` and ``sub``, and never a ``nonce``."""
    key = services.keys.signing_key(client.id_token_signed_response_alg)
    iat = int(now.timestamp())
    claims = {
        "iss": services.settings.issuer,
        "aud": client.client_id,
        "iat": iat,
        "exp": iat + LOGOUT_TOKEN_LIFETIME,
        "jti": random_token(16),
        "sub": session.user.sub,
        "sid": session.sid,
        "events": {LOGOUT_EVENT: {}},
    }
    header = {"alg": key.alg, "kid": key.kid, "typ": "logout+jwt"}
    return jwt.encode(header, claims, key.private, algorithms=[key.alg])


def end_session(
    db: Session, services: Any, session: SsoSession, *, reason: str, now: datetime, origin: audit.Origin,
    actor: str | None = None,
) -> int:
    """End ``session``: revoke its tokens and queue back-channel logout; returns the number queued."""
    if session.ended_at is not None:
        return 0
    mark_ended(session, reason, now)
    revoke_session_tokens(db, session.id, reason, now)
    clients = db.scalars(
        select(Client).join(SessionClient, SessionClient.client_id == Client.id).where(
            SessionClient.session_id == session.id
        )
    ).all()
    queued = 0
    for client in clients:
        if client.backchannel_logout_uri and client.is_usable:
            db.add(BackchannelDelivery(
                client_id=client.id, uri=client.backchannel_logout_uri,
                logout_token=make_logout_token(services, client, session, now), created_at=now, next_attempt_at=now,
            ))
            queued += 1
    audit.record(db, "logout", origin=origin, actor=actor or session.user.sub, subject=session.user.username,
                 reason=reason, sid=session.sid, clients=[c.client_id for c in clients], at=now)
    return queued


def end_user_sessions(db: Session, services: Any, user_id: int, *, reason: str, now: datetime,
                      origin: audit.Origin, actor: str | None = None) -> int:
    rows = db.scalars(select(SsoSession).where(SsoSession.user_id == user_id, SsoSession.ended_at.is_(None))).all()
    for row in rows:
        end_session(db, services, row, reason=reason, now=now, origin=origin, actor=actor)
    return len(rows)


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(5 * 2 ** max(attempts - 1, 0), 3600))


def lease_due(db: Session, now: datetime, limit: int = 20) -> list[BackchannelDelivery]:
    """Take the deliveries that are due and not leased by another process."""
    candidates = db.scalars(
        select(BackchannelDelivery)
        .where(BackchannelDelivery.delivered_at.is_(None), BackchannelDelivery.failed_at.is_(None),
               BackchannelDelivery.next_attempt_at <= now,
               or_(BackchannelDelivery.leased_until.is_(None), BackchannelDelivery.leased_until < now))
        .order_by(BackchannelDelivery.next_attempt_at)
        .limit(limit)
    ).all()
    leased = []
    for row in candidates:
        won = rowcount(db.execute(
            update(BackchannelDelivery)
            .where(BackchannelDelivery.id == row.id,
                   or_(BackchannelDelivery.leased_until.is_(None), BackchannelDelivery.leased_until < now))
            .values(leased_until=now + LEASE)
        ))
        if won == 1:
            leased.append(row)
    return leased


def record_result(db: Session, delivery_id: int, error: str | None, now: datetime, max_attempts: int) -> None:
    row = db.get(BackchannelDelivery, delivery_id)
    if row is None:
        return
    row.attempts += 1
    row.leased_until = None
    if error is None:
        row.delivered_at = now
        metrics.count_after_commit(db, metrics.BACKCHANNEL_DELIVERIES.labels("delivered").inc)
        return
    row.last_error = error[:255]
    if row.attempts >= max_attempts:
        row.failed_at = now
        metrics.count_after_commit(db, metrics.BACKCHANNEL_DELIVERIES.labels("failed").inc)
        # The audit trail names clients by their public client_id, as every other event does.
        client = db.get(Client, row.client_id)
        audit.record(db, "logout.backchannel_failed", outcome="failure",
                     client_id=client.client_id if client else None, attempts=row.attempts, error=row.last_error,
                     at=now)
    else:
        row.next_attempt_at = now + _backoff(row.attempts)
        metrics.count_after_commit(db, metrics.BACKCHANNEL_DELIVERIES.labels("retry").inc)


class BackchannelSender:
    """Sends queued logout tokens in the background of a server process."""

    def __init__(self, services: Any, poll_seconds: float = 5.0) -> None:
        self._services = services
        self._poll = poll_seconds
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Deliver now rather than at the next poll; called from the event loop after a session ended."""
        if self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        # The event belongs to the loop that runs the sender, which is only known once the app starts.
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        settings = self._services.settings.logout
        async with httpx.AsyncClient(timeout=settings.backchannel_timeout.total_seconds(),
                                     follow_redirects=False) as http:
            while True:
                try:
                    await self.deliver_due(http)
                except Exception as exc:  # a broken database must not kill the sender; it tries again later
                    log_background_failure(log, "back-channel logout delivery round failed", exc)
                try:
                    await asyncio.wait_for(wake.wait(), timeout=self._poll)
                except TimeoutError:
                    pass
                wake.clear()

    async def deliver_due(self, http: httpx.AsyncClient) -> int:
        due = await asyncio.to_thread(self._lease)
        for delivery_id, uri, token in due:
            error = None
            try:
                response = await http.post(uri, data={"logout_token": token},
                                           headers={"Cache-Control": "no-store"})
                if response.status_code not in (200, 204):
                    error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            await asyncio.to_thread(self._record, delivery_id, error)
            if error:
                log.warning("back-channel logout to %s failed: %s", uri, error)
        return len(due)

    def _lease(self) -> list[tuple[int, str, str]]:
        with unit_of_work(self._services.sessions) as db:
            return [(row.id, row.uri, row.logout_token) for row in lease_due(db, self._services.now())]

    def _record(self, delivery_id: int, error: str | None) -> None:
        with unit_of_work(self._services.sessions) as db:
            record_result(db, delivery_id, error, self._services.now(),
                          self._services.settings.logout.backchannel_attempts)

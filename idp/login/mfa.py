"""The second step of a sign-in: what the request needs, what the session has, and recording a method.

Plain functions over the database session; the pages in ``second_factor.py`` call them, and so does the
authorization endpoint when it decides whether the user must act (reasons ``mfa_required``,
``acr_not_met``, ``mfa_enrollment``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from sqlalchemy.orm import Session

from idp.factors import enrolled
from idp.factors.policy import (
    ACR_BY_LEVEL,
    RANK,
    Requirement,
    achieved_level,
    amr_values,
    requirement,
    satisfied,
)
from idp.login.policy import Interaction
from idp.models import Client, SsoSession, User
from idp.services import Services

WEBAUTHN_AMR = {"hwk", "swk", "user"}


def requirement_for(services: Services, user: User, client: Client | None, acr_values: str | None,
                    now: datetime) -> Requirement:
    return requirement(
        services.settings.mfa,
        # Without group policies the groups cannot change the answer: not reading them saves a query a step.
        groups=[group.name for group in user.groups] if services.settings.mfa.groups else [],
        client_require_mfa=client.require_mfa if client else None,
        client_methods=client.mfa_methods if client else None,
        client_trusted_device=client.allow_trusted_device if client else None,
        acr_values=acr_values,
        grace_from=user.mfa_reset_at or user.created_at,
        today=now.date(),
    )


def console_requirement(need: Requirement) -> Requirement:
    """What the admin console asks of a session: at least a second factor proved in it (never a browser
    trusted for the workday), whatever the policy asks of a sign-in; a stricter policy level stays."""
    level = need.level if RANK[need.level] >= RANK["mfa"] else "mfa"
    return replace(need, level=level, trusted_device=False, reason="console", skippable_until=None)


def usable_methods(db: Session, user: User, need: Requirement) -> list[str]:
    """The user's enrolled methods that count for ``need``, in the policy's order, then recovery codes."""
    kinds = enrolled.kinds_of(db, user)
    methods = [m for m in need.methods if m in kinds]
    if methods and enrolled.has_recovery_codes(db, user) and need.level != "phr":
        methods.append("recovery")
    return methods


def reauthentication_requirement(db: Session, user: User, need: Requirement, *,
                                  enrolled_before: datetime | None = None) -> Requirement:
    """What a re-authentication before binding or removing a factor must prove (``/account``).

    NIST SP 800-63B-4 4.1.2.1: a new authenticator is bound only after authenticating at the level it will be
    used at. So a user who has a usable second factor proves one, even where the policy asks only for a
    password, and a browser trusted for the workday never stands in for it (it is not an authenticator). A
    user without one has only the password to prove (binding the first factor, as enrollment at sign-in does).
    ``enrolled_before``: count only factors that existed then (the session's last sign-in), so that a factor
    bound right after it does not make that sign-in too weak for the next step (its recovery codes, a second key).
    """
    kinds = {factor.kind for factor in enrolled.factors_of(db, user)
             if enrolled_before is None or factor.created_at < enrolled_before}
    if not any(method in kinds for method in need.methods):
        return replace(need, level="sfa", trusted_device=False)
    level = need.level if RANK[need.level] >= RANK["mfa"] else "mfa"
    return replace(need, level=level, trusted_device=False)


def second_factor_needed(db: Session, session: SsoSession, need: Requirement, *, skipped: bool,
                         now: datetime) -> Interaction | None:
    if satisfied(session.methods, need):
        return None
    if not usable_methods(db, session.user, need):
        if skipped and need.skippable_until is not None and now.date() < need.skippable_until:
            return None
        return Interaction("enroll", "mfa_enrollment")
    reason = "acr_not_met" if need.reason == "acr_values" else "mfa_required"
    return Interaction("second_factor", reason)


def record_method(session: SsoSession, method: str, now: datetime, *, webauthn_amr: Iterable[str] = ()) -> None:
    """Add a proved method to the session, and keep its RFC 8176 ``amr`` true to what was used."""
    methods = list(dict.fromkeys([*session.methods, method]))
    kept = [value for value in session.amr if value in WEBAUTHN_AMR]
    session.methods = methods
    session.amr = amr_values(methods, webauthn_amr=list(dict.fromkeys([*kept, *webauthn_amr])))
    if method != "password":
        session.factor_at = now
    session.authenticated_at = now


def start_methods(session: SsoSession, methods: list[str], now: datetime, *,
                  webauthn_amr: Iterable[str] = ()) -> None:
    """Replace the session's methods after a fresh sign-in (a password, or a passkey with its ``webauthn_amr``)."""
    session.methods = list(dict.fromkeys(methods))
    session.amr = amr_values(session.methods, webauthn_amr=webauthn_amr)
    if "passkey" in session.methods:
        session.factor_at = now
    session.authenticated_at = now


def acr_for(session: SsoSession, need: Requirement) -> str:
    return ACR_BY_LEVEL[achieved_level(session.methods, need)]


def meets(session: SsoSession, need: Requirement) -> bool:
    return RANK[achieved_level(session.methods, need)] >= RANK[need.level]

"""Why must the user act? Named checks with reason codes, in the order they are asked.

Modelled on node-oidc-provider's interaction policy: each check either passes or names a reason, and the
reason decides the page (login or consent) or, with ``prompt=none``, the error sent back to the client
(OpenID Connect Core 1.0, 3.1.2.6). Pure functions: no HTTP, no database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from idp.accounts.sessions import CurrentSession, SessionState


@dataclass(frozen=True)
class Interaction:
    kind: str
    """``login`` or ``consent``."""
    reason: str
    """``no_session``, ``session_idle``, ``prompt_login``, ``max_age``, ``prompt_consent``, ``consent_missing``."""

    @property
    def error_for_prompt_none(self) -> str:
        return "login_required" if self.kind == "login" else "consent_required"


def login_needed(
    session: CurrentSession | None,
    *,
    prompts: set[str],
    max_age: int | None,
    signed_in_during_request: bool,
    now: datetime,
) -> Interaction | None:
    if signed_in_during_request and session is not None:
        return None
    if session is None:
        return Interaction("login", "no_session")
    if session.state is SessionState.IDLE:
        return Interaction("login", "session_idle")
    if "login" in prompts or "select_account" in prompts:
        return Interaction("login", "prompt_login")
    # max_age=0 is prompt=login (OIDC Core 3.1.2.1, errata 2): a login in this very second is no exception.
    if max_age == 0 or max_age is not None and now - session.row.authenticated_at > timedelta(seconds=max_age):
        return Interaction("login", "max_age")
    return None


def consent_needed(
    *, prompts: set[str], client_trusted: bool, granted_scopes: set[str], requested_scopes: set[str]
) -> Interaction | None:
    if "consent" in prompts:
        return Interaction("consent", "prompt_consent")
    if client_trusted:
        return None
    if not requested_scopes.issubset(granted_scopes):
        return Interaction("consent", "consent_missing")
    return None

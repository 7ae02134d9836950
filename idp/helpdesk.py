"""What the IT service desk does for a user: look at the account, and reset its second factors.

Plain functions behind ``idp users show`` and ``idp users reset-mfa`` (and, later, the console's pages).
The overview holds names, ids and times, never a secret: no TOTP seed, no code, no cookie, phone numbers
masked. A reset is what a user who lost the phone and the codes needs:

    reset-mfa ──► every factor (unconfirmed and blocked ones too), recovery codes, WebAuthn challenges: deleted
              ──► trusted browsers: revoked           (they stood in for the second factor)
              ──► sessions: ended, tokens revoked     (back-channel logout queued; offline tokens too)
              ──► users.mfa_reset_at = now            (enrollment at the next sign-in; a grace period counts
                                                       from here)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp import audit
from idp.accounts.users import roles_of
from idp.factors import enrolled, recovery, trusted_devices
from idp.models import SsoSession, User
from idp.oauth.logout import end_user_sessions
from idp.oauth.tokens import revoke_user_tokens


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def active_sessions(db: Session, user: User, now: datetime) -> list[SsoSession]:
    return list(db.scalars(select(SsoSession).where(
        SsoSession.user_id == user.id, SsoSession.ended_at.is_(None), SsoSession.expires_at > now,
    ).order_by(SsoSession.last_active_at.desc(), SsoSession.id.desc())))


def user_overview(db: Session, user: User, now: datetime) -> dict[str, Any]:
    """The account as the service desk sees it, ready for JSON."""
    return {
        "username": user.username,
        "sub": user.sub,
        "name": user.display_name,
        "email": user.email,
        "source": user.source,
        "active": user.is_active,
        "created_at": _iso(user.created_at),
        "last_login_at": _iso(user.last_login_at),
        "mfa_reset_at": _iso(user.mfa_reset_at),
        "groups": sorted(group.name for group in user.groups),
        "roles": sorted(roles_of(db, user)),
        "factors": [
            {"kind": f.kind, "id": f.id, "name": f.name, "detail": f.detail, "managed_by": f.managed_by,
             "created_at": _iso(f.created_at), "last_used_at": _iso(f.last_used_at)}
            for f in enrolled.factors_of(db, user)
        ],
        "recovery_codes_remaining": recovery.remaining(db, user),
        "sessions": [
            {"id": s.id, "sid": s.sid, "created_at": _iso(s.created_at), "last_active_at": _iso(s.last_active_at),
             "expires_at": _iso(s.expires_at), "ip": s.ip, "user_agent": s.user_agent, "amr": list(s.amr)}
            for s in active_sessions(db, user, now)
        ],
        "trusted_devices": [
            {"id": d.id, "name": d.name, "created_at": _iso(d.created_at), "expires_at": _iso(d.expires_at),
             "last_used_at": _iso(d.last_used_at)}
            for d in trusted_devices.active(db, user, now)
        ],
    }


@dataclass(frozen=True)
class MfaReset:
    removed: dict[str, int]
    """Rows deleted per kind: ``totp``, ``sms``, ``webauthn``, ``recovery_codes``."""
    trusted_devices: int
    sessions: int
    tokens: int


def reset_mfa(db: Session, services: Any, user: User, *, now: datetime, origin: audit.Origin = audit.CLI,
              actor: str | None = None) -> MfaReset:
    """Remove every second factor of ``user`` and end the user's sessions; audited as ``user.mfa_reset``."""
    removed = enrolled.remove_all(db, user)
    devices = trusted_devices.revoke_all(db, user.id, now)
    user.mfa_reset_at = now
    sessions = end_user_sessions(db, services, user.id, reason="mfa_reset", now=now, origin=origin, actor=actor)
    tokens = revoke_user_tokens(db, user.id, "mfa_reset", now)
    result = MfaReset(removed=removed, trusted_devices=devices, sessions=sessions, tokens=tokens)
    audit.record(db, "user.mfa_reset", origin=origin, actor=actor, subject=user.username, removed=removed,
                 trusted_devices_revoked=devices, sessions_ended=sessions, tokens_revoked=tokens, at=now)
    return result

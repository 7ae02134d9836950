"""Which second factors a user has, as one list for the login step and the account page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, delete, literal, null, select, union_all, update
from sqlalchemy.orm import Session

from idp.db import rowcount
from idp.models import RecoveryCode, SmsFactor, TotpFactor, User, WebAuthnChallenge, WebAuthnCredential


@dataclass(frozen=True)
class EnrolledFactor:
    kind: str
    """``totp``, ``sms`` or ``webauthn``."""
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    detail: str | None = None
    """A masked phone number, or whether a key is a synced passkey."""
    managed_by: str | None = None
    """The directory source that maintains this phone (``sms_from_directory``); None for what the user enrolled."""


def _mask(phone: str) -> str:
    return phone[:3] + "•" * max(len(phone) - 6, 0) + phone[-3:]


def factors_of(db: Session, user: User) -> list[EnrolledFactor]:
    """The user's usable factors: security keys and passkeys, then authenticator apps, then phones.

    One query for the three kinds (a UNION): every step of a sign-in asks, so the round trips count."""
    keys = select(
        literal(0).label("rank"), literal("webauthn").label("kind"), WebAuthnCredential.id, WebAuthnCredential.name,
        WebAuthnCredential.created_at, WebAuthnCredential.last_used_at,
        case((WebAuthnCredential.discoverable, "passkey"), else_="security key").label("detail"),
        null().label("managed_by"),
    ).where(WebAuthnCredential.user_id == user.id, WebAuthnCredential.flagged_at.is_(None))
    apps = select(literal(1), literal("totp"), TotpFactor.id, TotpFactor.name, TotpFactor.created_at,
                  TotpFactor.last_used_at, null(), null()).where(TotpFactor.user_id == user.id,
                                                         TotpFactor.confirmed_at.is_not(None))
    phones = select(literal(2), literal("sms"), SmsFactor.id, SmsFactor.name, SmsFactor.created_at,
                    SmsFactor.last_used_at, SmsFactor.phone, SmsFactor.managed_by).where(SmsFactor.user_id == user.id,
                                                                   SmsFactor.confirmed_at.is_not(None))
    rows = db.execute(union_all(keys, apps, phones).order_by("rank", "id"))
    return [EnrolledFactor(row.kind, row.id, row.name, row.created_at, row.last_used_at,
                           _mask(row.detail) if row.kind == "sms" else row.detail, row.managed_by)
            for row in rows]


def kinds_of(db: Session, user: User) -> set[str]:
    return {factor.kind for factor in factors_of(db, user)}


def has_recovery_codes(db: Session, user: User) -> bool:
    return db.scalar(select(RecoveryCode.id).where(RecoveryCode.user_id == user.id,
                                                   RecoveryCode.used_at.is_(None)).limit(1)) is not None


_MODELS: dict[str, type[TotpFactor] | type[SmsFactor] | type[WebAuthnCredential]] = {
    "totp": TotpFactor, "sms": SmsFactor, "webauthn": WebAuthnCredential,
}


def find(db: Session, user: User, kind: str, factor_id: int) -> EnrolledFactor | None:
    """One of the user's enrolled factors by kind and row id; None for another user's or an unknown one."""
    return next((f for f in factors_of(db, user) if f.kind == kind and f.id == factor_id), None)


def rename(db: Session, user: User, kind: str, factor_id: int, name: str) -> bool:
    """Rename one of the user's factors; False when it is not theirs (the user is part of the WHERE clause)."""
    model = _MODELS.get(kind)
    if model is None or not name.strip():
        return False
    return rowcount(db.execute(update(model).where(model.id == factor_id, model.user_id == user.id)
                               .values(name=name.strip()[:64]).execution_options(synchronize_session=False))) == 1


def remove(db: Session, user: User, kind: str, factor_id: int) -> bool:
    """Delete one of the user's factors; False when it is not theirs (or already gone)."""
    model = _MODELS.get(kind)
    if model is None:
        return False
    return rowcount(db.execute(delete(model).where(model.id == factor_id, model.user_id == user.id)
                               .execution_options(synchronize_session=False))) == 1


def remove_all(db: Session, user: User) -> dict[str, int]:
    """Delete every factor of the user (unconfirmed and blocked ones too), open WebAuthn challenges and recovery
    codes; returns how many of each. SMS codes already sent stay: they are the ledger of the send limits."""
    removed = {kind: rowcount(db.execute(delete(model).where(model.user_id == user.id)
                                         .execution_options(synchronize_session=False)))
               for kind, model in _MODELS.items()}
    db.execute(delete(WebAuthnChallenge).where(WebAuthnChallenge.user_id == user.id)
               .execution_options(synchronize_session=False))
    removed["recovery_codes"] = rowcount(db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id)
                                                    .execution_options(synchronize_session=False)))
    return removed

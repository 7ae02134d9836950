"""Which second factors a user has, as one list for the login step and the account page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
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


def _mask(phone: str) -> str:
    return phone[:3] + "•" * max(len(phone) - 6, 0) + phone[-3:]


def factors_of(db: Session, user: User) -> list[EnrolledFactor]:
    found: list[EnrolledFactor] = []
    for cred in db.scalars(select(WebAuthnCredential).where(WebAuthnCredential.user_id == user.id,
                                                            WebAuthnCredential.flagged_at.is_(None))):
        found.append(EnrolledFactor("webauthn", cred.id, cred.name, cred.created_at, cred.last_used_at,
                                    "passkey" if cred.discoverable else "security key"))
    for totp in db.scalars(select(TotpFactor).where(TotpFactor.user_id == user.id,
                                                    TotpFactor.confirmed_at.is_not(None))):
        found.append(EnrolledFactor("totp", totp.id, totp.name, totp.created_at, totp.last_used_at))
    for sms in db.scalars(select(SmsFactor).where(SmsFactor.user_id == user.id, SmsFactor.confirmed_at.is_not(None))):
        found.append(EnrolledFactor("sms", sms.id, sms.name, sms.created_at, sms.last_used_at, _mask(sms.phone)))
    return found


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

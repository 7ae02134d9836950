"""Recovery codes: ten single-use look-up secrets of 80 bits each, shown once, stored hashed (argon2id).

NIST SP 800-63B-4 4.2.1.1: saved recovery codes have at least 64 bits, are hashed, and are throttled like
other guessable secrets (the login flow counts recovery attempts with the second-factor counter).
Generating a new set invalidates the old one.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from idp.accounts.passwords import Passwords
from idp.db import rowcount
from idp.models import RecoveryCode, User

COUNT = 10


def _new_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(10)).decode()  # 80 bits, 16 characters
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def normalize(code: str) -> str:
    compact = "".join(ch for ch in code.upper() if ch.isalnum())
    return "-".join(compact[i:i + 4] for i in range(0, len(compact), 4))


def regenerate(db: Session, passwords: Passwords, user: User, now: datetime) -> list[str]:
    """Replace the user's codes by ten new ones; returns them in clear, to be shown once."""
    db.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [_new_code() for _ in range(COUNT)]
    for code in codes:
        db.add(RecoveryCode(user_id=user.id, code_hash=passwords.hash(code), created_at=now))
    db.flush()
    return codes


def remaining(db: Session, user: User) -> int:
    return len(db.scalars(select(RecoveryCode.id).where(RecoveryCode.user_id == user.id,
                                                        RecoveryCode.used_at.is_(None))).all())


def use(db: Session, passwords: Passwords, user: User, code: str, now: datetime) -> bool:
    """Accept an unused code once (the atomic update decides between two parallel uses)."""
    candidate = normalize(code)
    if len(candidate) != 19:
        return False
    for row in db.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id,
                                                     RecoveryCode.used_at.is_(None))):
        if passwords.verify(row.code_hash, candidate):
            won = rowcount(db.execute(update(RecoveryCode).where(RecoveryCode.id == row.id,
                                                                 RecoveryCode.used_at.is_(None))
                                      .values(used_at=now)))
            return won == 1
    return False

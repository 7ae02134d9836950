"""Authenticator apps: RFC 6238 TOTP with SHA-1, 6 digits and 30-second steps (what every app supports).

A code is accepted for the current step and one step either side (clock drift), and at most once: the
last accepted step is stored and a code for that step or an earlier one is a replay (RFC 6238 5.2). The
check and the update are one atomic ``UPDATE ... WHERE last_step < :step``, so two server processes
cannot both accept the same code. The seed is sealed under the key-encryption key.
"""

from __future__ import annotations

import base64
import io
from datetime import datetime

import pyotp
import qrcode
import qrcode.image.svg
from sqlalchemy import update
from sqlalchemy.orm import Session

from idp.crypto import Sealer, random_token
from idp.db import rowcount
from idp.models import TotpFactor, User

DIGITS = 6
INTERVAL = 30
WINDOW = 1


def _context(factor: TotpFactor) -> str:
    return f"totp:{factor.handle}"


def begin_enrollment(db: Session, sealer: Sealer, user: User, name: str, now: datetime) -> tuple[TotpFactor, str]:
    """Create an unconfirmed factor with a fresh 160-bit seed; returns it and the seed (shown once)."""
    secret = pyotp.random_base32(32)
    factor = TotpFactor(user_id=user.id, name=name[:64] or "Authenticator", handle=random_token(16), created_at=now)
    factor.secret_sealed = sealer.seal(secret.encode(), _context(factor))
    db.add(factor)
    db.flush()
    return factor, secret


def secret_of(sealer: Sealer, factor: TotpFactor) -> str:
    return sealer.open(factor.secret_sealed, _context(factor)).decode()


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """The ``otpauth://`` URI as an inline SVG QR code (no script, no external request)."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    svg = buffer.getvalue().decode()
    return svg[svg.index("<svg"):] if "<svg" in svg else svg


def grouped(secret: str) -> str:
    """The seed in groups of four, for typing it into an app by hand."""
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


def is_well_formed(code: str) -> bool:
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def verify(db: Session, sealer: Sealer, factor: TotpFactor, code: str, now: datetime) -> bool:
    """Accept ``code`` once, within ±1 step; record its step atomically so it can never be used again."""
    code = code.replace(" ", "")
    if not is_well_formed(code):
        return False
    totp = pyotp.TOTP(secret_of(sealer, factor), digits=DIGITS, interval=INTERVAL)
    try:
        step = totp.verify_and_get_timecode(code, for_time=now, valid_window=WINDOW)
    except pyotp.OTPVerificationError:
        return False
    won = rowcount(db.execute(
        update(TotpFactor).where(TotpFactor.id == factor.id, TotpFactor.last_step < step)
        .values(last_step=step, last_used_at=now)
    ))
    if won != 1:
        return False
    db.refresh(factor)
    return True


def qr_data_uri(uri: str) -> str:
    """The QR code as a data: URI (for themes that prefer an <img>)."""
    return "data:image/svg+xml;base64," + base64.b64encode(qr_svg(uri).encode()).decode()

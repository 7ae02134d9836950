"""CSRF tokens for every POST form, bound to what the form acts on.

A token is an itsdangerous signature over ``purpose`` and a *binding*: the sign-in transaction and the
browser for login and consent forms, the session for logout. A token taken from another browser, another
transaction or another form is refused (OWASP ASVS 3.5.1).
"""

from __future__ import annotations

import hashlib
import hmac

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

MAX_AGE_SECONDS = 3600


def _serializer(key: bytes) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(key, salt="idp-csrf")


def _digest(binding: str) -> str:
    return hashlib.sha256(binding.encode()).hexdigest()[:32]


def make_token(key: bytes, purpose: str, binding: str) -> str:
    return _serializer(key).dumps([purpose, _digest(binding)])


def check_token(key: bytes, token: str | None, purpose: str, binding: str) -> bool:
    if not token or len(token) > 512:
        return False
    try:
        data = _serializer(key).loads(token, max_age=MAX_AGE_SECONDS)
    except (BadSignature, SignatureExpired):
        return False
    if not isinstance(data, list) or len(data) != 2:
        return False
    return hmac.compare_digest(str(data[0]), purpose) and hmac.compare_digest(str(data[1]), _digest(binding))

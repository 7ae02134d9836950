"""Small cryptographic helpers: random identifiers, keyed hashes and sealing of stored secrets.

High-entropy secrets (codes, refresh tokens, client secrets, session ids) are looked up by an HMAC-SHA-256
of their value under a server key: fast enough for the token hot path, useless to whoever reads the
database without the key. Human passwords never go through here (see ``idp.accounts.passwords``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def random_token(nbytes: int = 32) -> str:
    """A URL-safe random string with ``nbytes`` bytes of entropy."""
    return secrets.token_urlsafe(nbytes)


def derive_key(master: bytes, purpose: str) -> bytes:
    """A separate 256-bit key per purpose, so that one use of the master key cannot be replayed in another."""
    return hmac.new(master, b"idp-key-derivation:" + purpose.encode(), hashlib.sha256).digest()


class KeyedHasher:
    """HMAC-SHA-256 digests of secrets, compared in constant time."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def hash(self, value: str) -> str:
        return hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def matches(self, value: str, digest: str | None) -> bool:
        return digest is not None and hmac.compare_digest(self.hash(value), digest)


class Sealer:
    """AES-256-GCM encryption of stored secrets (private signing keys) under the key-encryption key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the key-encryption key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], context.encode())


def decode_key_material(text: str) -> bytes:
    """Accept base64 (standard or URL-safe) for binary keys; fall back to the text's bytes for passphrases."""
    stripped = text.strip()
    for decoder in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decoder(stripped + "=" * (-len(stripped) % 4))
        except ValueError:
            continue
        if len(raw) >= 32:
            return raw
    return stripped.encode()


def load_or_create_key_file(path: Path) -> bytes:
    """Read a generated key from ``path``, creating it (mode 0600) on first use."""
    if path.exists():
        return decode_key_material(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = os.urandom(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return decode_key_material(path.read_text())
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(raw).decode() + "\n")
    return raw

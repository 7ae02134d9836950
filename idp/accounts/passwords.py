"""Password hashing with argon2id (RFC 9106) and the checks NIST SP 800-63B asks for.

Passwords are normalised to NFKC before hashing (NIST SP 800-63B-4, 3.1.1.2), so that ``Straße`` typed
composed or decomposed is the same password; nothing is truncated or case-folded. An unknown username
is checked against a dummy hash, so that it costs the same time as a wrong password.
"""

from __future__ import annotations

import os
import threading
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from idp.config import PasswordSettings

MAX_PASSWORD_LENGTH = 1024
"""Longer input is refused before hashing: argon2 would accept it, but it only serves to waste our CPU."""


T = TypeVar("T")
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _on_argon2_threads(work: Callable[[], T]) -> T:
    """Run an argon2 computation on a small pool of its own, one thread per core.

    Each argon2id run allocates its memory cost (19 MiB) at once. Run from any of the server's 40 request threads,
    glibc gives each thread its own heap arena and keeps the freed blocks there, so a worker grew to 400 MB after
    a morning peak (bench/README.md). A few dedicated threads keep a few arenas; more threads than cores would
    not verify faster anyway, since argon2 is bound by the CPU (it releases the GIL)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="argon2")
    return _pool.submit(work).result()


class PasswordRejected(ValueError):
    """A new password does not meet the policy; the message says why, for the person choosing it."""


def normalize_password(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def is_acceptable_input(password: str) -> bool:
    """Whether a typed password may be verified at all (length bound, no NUL byte)."""
    return 0 < len(password) <= MAX_PASSWORD_LENGTH and "\x00" not in password


class Passwords:
    def __init__(self, settings: PasswordSettings) -> None:
        self._settings = settings
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        self._dummy_hash = self._hasher.hash("not a password: equalises the time of unknown usernames")

    def hash(self, password: str) -> str:
        normalized = normalize_password(password)
        return _on_argon2_threads(lambda: self._hasher.hash(normalized))

    def check_new(self, password: str) -> None:
        """Apply the policy for a new password: length only, no composition rules (NIST SP 800-63B)."""
        if "\x00" in password:
            raise PasswordRejected("The password must not contain a NUL character.")
        length = len(normalize_password(password))
        if length < self._settings.min_length:
            raise PasswordRejected(f"The password must have at least {self._settings.min_length} characters.")
        if length > MAX_PASSWORD_LENGTH:
            raise PasswordRejected(f"The password must have at most {MAX_PASSWORD_LENGTH} characters.")

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """Check ``password`` against ``stored_hash``; with no hash, burn the same time and say no."""
        if stored_hash is None:
            _on_argon2_threads(lambda: self._matches(self._dummy_hash, "\x00"))
            return False
        normalized = normalize_password(password)
        return _on_argon2_threads(lambda: self._matches(stored_hash, normalized))

    def _matches(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the stored hash was made with other parameters than the configured ones."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

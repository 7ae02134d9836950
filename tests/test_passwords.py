"""Unit tests of ``idp.accounts.passwords``: argon2id hashing and the NIST SP 800-63B-4 password rules.

No HTTP and no database, except the last tests, which show that ``check_password`` never hands an
unacceptable input (too long, NUL byte) to argon2.
"""

from __future__ import annotations

import unicodedata

import pytest

from idp import audit
from idp.accounts.authenticate import Outcome, check_password
from idp.accounts.passwords import MAX_PASSWORD_LENGTH, PasswordRejected, Passwords, is_acceptable_input
from idp.accounts.users import create_user
from idp.config import PasswordSettings
from idp.db import unit_of_work
from idp.services import Services
from tests.conftest import FakeClock

CHEAP = PasswordSettings(argon2_time_cost=1, argon2_memory_cost=1024, argon2_parallelism=1)


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords(CHEAP)


class RecordingPasswords(Passwords):
    """Passwords that remember which stored hash each ``verify`` was given (``None``: the dummy hash)."""

    def __init__(self, settings: PasswordSettings) -> None:
        super().__init__(settings)
        self.verified: list[str | None] = []

    def verify(self, stored_hash: str | None, password: str) -> bool:
        self.verified.append(stored_hash)
        return super().verify(stored_hash, password)


def test_hash_is_salted_argon2id(passwords: Passwords) -> None:
    """Hashes are argon2id PHC strings with the configured parameters and a fresh salt each time (RFC 9106)."""
    first, second = passwords.hash("correct horse"), passwords.hash("correct horse")
    assert first.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert first != second
    assert passwords.verify(first, "correct horse") and passwords.verify(second, "correct horse")


def test_composed_and_decomposed_unicode_are_the_same_password(passwords: Passwords) -> None:
    """NFKC before hashing: a password typed composed or decomposed verifies alike (NIST SP 800-63B-4 3.1.1.2)."""
    composed = "Straße-Äpfel-Öl"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    stored = passwords.hash(composed)
    assert passwords.verify(stored, decomposed)
    assert passwords.verify(passwords.hash(decomposed), composed)
    assert passwords.verify(passwords.hash("\u00c4rger"), "A\u0308rger")
    # Compatibility characters fold too (NFKC, not NFC): a ligature equals its letters.
    assert passwords.verify(passwords.hash("of\ufb01ce-key"), "office-key")


def test_case_is_not_folded(passwords: Passwords) -> None:
    """The password is verified exactly as typed: no case folding (OWASP ASVS 6.2.8)."""
    stored = passwords.hash("Straße-Sommer")
    assert not passwords.verify(stored, "straße-sommer")
    assert not passwords.verify(stored, "STRASSE-SOMMER")


def test_long_passwords_work_and_are_not_truncated(passwords: Passwords) -> None:
    """Passwords of 64 and more characters work; every character counts (NIST SP 800-63B-4 3.1.1.2, ASVS 6.2.9)."""
    for length in (64, 100, 200, MAX_PASSWORD_LENGTH):
        password = ("Rathaus-" * 200)[: length - 1] + "!"
        assert len(password) == length
        stored = passwords.hash(password)
        assert passwords.verify(stored, password)
        assert not passwords.verify(stored, password + "x"), "one character more must not verify"
        assert not passwords.verify(stored, password[:-1]), "one character less must not verify"
        changed = password[:-1] + "?"
        assert not passwords.verify(stored, changed), "the last character must count"
    # bcrypt would stop after 72 bytes; argon2id must not.
    base = "a" * 80
    assert not passwords.verify(passwords.hash(base + "1"), base + "2")


def test_nul_byte_is_refused_and_never_verifies(passwords: Passwords) -> None:
    """A NUL character is refused for new passwords and is never a way in (no C-string truncation)."""
    with pytest.raises(PasswordRejected, match="NUL"):
        passwords.check_new("correct horse\x00battery")
    assert not is_acceptable_input("correct horse\x00")
    stored = passwords.hash("correct horse")
    assert not passwords.verify(stored, "correct horse\x00")
    assert not passwords.verify(stored, "correct horse\x00anything")
    assert not passwords.verify(stored, "\x00")


def test_overlong_input_is_refused_before_hashing(passwords: Passwords) -> None:
    """More than 1024 characters is refused by the policy and by the input check, before argon2 sees it."""
    assert is_acceptable_input("a" * MAX_PASSWORD_LENGTH)
    assert not is_acceptable_input("a" * (MAX_PASSWORD_LENGTH + 1))
    assert not is_acceptable_input("")
    passwords.check_new("a" * MAX_PASSWORD_LENGTH)
    with pytest.raises(PasswordRejected, match="at most 1024"):
        passwords.check_new("a" * (MAX_PASSWORD_LENGTH + 1))
    with pytest.raises(PasswordRejected, match="at most 1024"):
        passwords.check_new("a" * 1_000_000)


def test_check_new_counts_code_points_after_normalisation() -> None:
    """Length rules only, counted in code points after NFKC; no composition rules (NIST SP 800-63B-4 3.1.1.2)."""
    policy = Passwords(CHEAP)  # min_length 8 (the default)
    with pytest.raises(PasswordRejected, match="at least 8"):
        policy.check_new("1234567")
    with pytest.raises(PasswordRejected, match="at least 8"):
        policy.check_new("")
    policy.check_new("12345678")
    policy.check_new("aaaaaaaa")  # no rules about digits, capitals or symbols
    policy.check_new("🔑" * 8)  # eight code points
    policy.check_new("correct horse battery staple")  # spaces are allowed
    # Seven decomposed umlauts are fourteen code points as typed, but seven after NFKC: too short.
    with pytest.raises(PasswordRejected, match="at least 8"):
        policy.check_new(unicodedata.normalize("NFD", "ä" * 7))
    policy.check_new(unicodedata.normalize("NFD", "ä" * 8))

    strict = Passwords(PasswordSettings(argon2_time_cost=1, argon2_memory_cost=1024, min_length=15))
    with pytest.raises(PasswordRejected, match="at least 15"):
        strict.check_new("fourteen chars")
    strict.check_new("fifteen chars!!")


def test_verify_without_hash_says_no(passwords: Passwords) -> None:
    """With no stored hash (unknown user, account without password) ``verify`` checks the dummy hash and says no."""
    assert passwords.verify(None, "correct horse battery staple") is False
    assert passwords.verify(None, "") is False
    assert passwords.verify(None, "\x00") is False
    # Not even the text the dummy hash was made from opens anything.
    assert passwords.verify(None, "not a password: equalises the time of unknown usernames") is False


def test_verify_with_broken_hash_says_no(passwords: Passwords) -> None:
    """A corrupt or foreign stored hash is a failed check, not an exception."""
    for stored in ("", "plaintext", "$argon2id$v=19$m=1024,t=1,p=1$broken", "$2b$12$" + "a" * 53):
        assert passwords.verify(stored, "plaintext") is False


def test_needs_rehash_when_parameters_change(passwords: Passwords) -> None:
    """A hash made with other argon2 parameters (or another scheme) needs a rehash; a current one does not."""
    stored = passwords.hash("correct horse")
    assert not passwords.needs_rehash(stored)
    stronger = Passwords(PasswordSettings(argon2_time_cost=2, argon2_memory_cost=2048, argon2_parallelism=1))
    assert stronger.needs_rehash(stored)
    assert stronger.verify(stored, "correct horse"), "old hashes must keep verifying until they are rehashed"
    rehashed = stronger.hash("correct horse")
    assert not stronger.needs_rehash(rehashed)
    assert passwords.needs_rehash(rehashed)
    assert passwords.needs_rehash("$2b$12$" + "a" * 53)
    assert passwords.needs_rehash("not a hash")


def _check(services: Services, recorder: Passwords, username: str, password: str, clock: FakeClock) -> Outcome:
    with unit_of_work(services.sessions) as db:
        return check_password(db, recorder, services.settings.throttle, username, password, now=clock(),
                              origin=audit.Origin(ip="192.0.2.10")).outcome


def test_sign_in_never_hashes_unacceptable_input(services: Services, clock: FakeClock) -> None:
    """``check_password`` burns the dummy hash instead of the user's for an overlong or NUL-bearing password."""
    recorder = RecordingPasswords(CHEAP)
    nul_password = "correct horse\x00"
    with unit_of_work(services.sessions) as db:
        # An account whose stored hash holds a NUL (as if set around ``check_new``) still cannot be opened with it.
        create_user(db, "erika", password_hash=recorder.hash(nul_password))
    assert _check(services, recorder, "erika", "x" * (MAX_PASSWORD_LENGTH + 1), clock) is Outcome.INVALID
    assert _check(services, recorder, "erika", nul_password, clock) is Outcome.INVALID
    assert recorder.verified == [None, None]

"""The second-factor policy as a matrix: global default × group × client × acr_values (issue 3, section 3-4)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from idp.config import load_settings
from idp.factors.policy import (
    ACR_MFA,
    ACR_PHR,
    ACR_SFA,
    Requirement,
    achieved_level,
    amr_values,
    requested_level,
    requirement,
)

TODAY = date(2026, 11, 29)
CREATED = datetime(2026, 11, 1, tzinfo=UTC)
GROUPS = ('{"Sozialamt": {"required": true, "methods": ["webauthn", "totp"], "trusted_device": false}, '
          '"Bauamt": {"required": true, "deadline": "2027-01-31"}, '
          '"Kita": {"required": false}}')


def need(default: str = "optional", groups: tuple[str, ...] = (), *, client_require: bool | None = None,
         client_methods: list[str] | None = None, client_trusted: bool | None = None,
         acr_values: str | None = None, grace_days: int = 0) -> Requirement:
    settings = load_settings({"IDP_MFA_DEFAULT": default, "IDP_MFA_GROUPS": GROUPS,
                              "IDP_MFA_GRACE_DAYS": str(grace_days)}).mfa
    return requirement(settings, groups=groups, client_require_mfa=client_require, client_methods=client_methods,
                       client_trusted_device=client_trusted, acr_values=acr_values, grace_from=CREATED,
                       today=TODAY)


@pytest.mark.parametrize(("default", "groups", "client", "acr", "level", "methods", "trusted"), [
    ("required", (), None, None, "mfa", ("webauthn", "totp", "sms"), True),
    ("optional", (), None, None, "sfa", ("webauthn", "totp", "sms"), True),
    ("optional", ("Sozialamt",), None, None, "mfa", ("webauthn", "totp"), False),
    ("optional", ("Kita",), None, None, "sfa", ("webauthn", "totp", "sms"), True),
    ("optional", (), True, None, "mfa", ("webauthn", "totp", "sms"), True),
    ("optional", (), None, ACR_MFA, "mfa", ("webauthn", "totp", "sms"), True),
    ("optional", (), None, ACR_PHR, "phr", ("webauthn",), False),
    ("required", (), None, ACR_SFA, "mfa", ("webauthn", "totp", "sms"), True),
    ("optional", (), None, f"{ACR_PHR} {ACR_MFA}", "mfa", ("webauthn", "totp", "sms"), True),
    ("optional", (), None, "urn:unknown", "sfa", ("webauthn", "totp", "sms"), True),
    ("required", ("Sozialamt",), True, ACR_PHR, "phr", ("webauthn",), False),
])
def test_requirement_matrix(default: str, groups: tuple[str, ...], client: bool | None, acr: str | None,
                            level: str, methods: tuple[str, ...], trusted: bool) -> None:
    """The strictest of default, groups, client and acr_values wins; phr allows only WebAuthn and no trusted
    browser; acr_values naming several levels accept the lowest of them, never less than the policy."""
    result = need(default, groups, client_require=client, acr_values=acr)
    assert (result.level, result.methods, result.trusted_device) == (level, methods, trusted)


def test_client_method_list_and_trusted_device_switch() -> None:
    """A client can forbid SMS and trusted browsers for itself."""
    result = need("required", client_methods=["webauthn", "totp"], client_trusted=False)
    assert result.methods == ("webauthn", "totp") and not result.trusted_device


def test_group_deadline_allows_skipping_until_then() -> None:
    """Before a group's enrollment deadline its members may skip; the client or acr_values can still insist."""
    assert need("optional", ("Bauamt",)).skippable_until == date(2027, 1, 31)
    assert need("required", ("Bauamt",)).skippable_until is None
    assert need("optional", ("Bauamt",), client_require=True).skippable_until is None
    assert need("optional", ("Bauamt",), acr_values=ACR_MFA).skippable_until is None


def test_grace_days_count_from_account_creation() -> None:
    """grace_days after creation (or a reset) a user may still skip enrollment."""
    assert need("required", grace_days=60).skippable_until == date(2026, 12, 31)
    assert need("required", grace_days=10).skippable_until is None


@pytest.mark.parametrize(("methods", "trusted_ok", "level"), [
    (["password"], True, "sfa"),
    (["password", "totp"], True, "mfa"),
    (["password", "sms"], True, "mfa"),
    (["password", "recovery"], True, "mfa"),
    (["password", "webauthn"], True, "phr"),
    (["passkey"], True, "phr"),
    (["password", "trusted_device"], True, "mfa"),
    (["password", "trusted_device"], False, "sfa"),
    (["totp"], True, "sfa"),
])
def test_achieved_level(methods: list[str], trusted_ok: bool, level: str) -> None:
    """What a session's methods are worth; a trusted browser only where the policy accepts it."""
    requirement_ = Requirement(level="mfa", methods=("webauthn", "totp", "sms"), trusted_device=trusted_ok)
    assert achieved_level(methods, requirement_) == level


def test_forbidden_sms_counts_for_nothing() -> None:
    """An SMS proved earlier does not satisfy a client that forbids SMS."""
    requirement_ = Requirement(level="mfa", methods=("webauthn", "totp"), trusted_device=True)
    assert achieved_level(["password", "sms"], requirement_) == "sfa"


@pytest.mark.parametrize(("methods", "webauthn_amr", "amr"), [
    (["password"], [], ["pwd"]),
    (["password", "totp"], [], ["pwd", "otp", "mfa"]),
    (["password", "sms"], [], ["pwd", "sms", "mfa"]),
    (["password", "webauthn"], ["hwk", "user"], ["pwd", "hwk", "user", "mfa"]),
    (["passkey"], ["swk", "user"], ["swk", "user", "mfa"]),
    (["password", "trusted_device"], [], ["pwd", "trusted-device"]),
])
def test_amr_lists_only_what_was_used(methods: list[str], webauthn_amr: list[str], amr: list[str]) -> None:
    """RFC 8176 values for the methods proved, and mfa only with two factors (or a user-verifying passkey)."""
    assert amr_values(methods, webauthn_amr=webauthn_amr) == amr


def test_requested_level_ignores_unknown_values() -> None:
    assert requested_level("urn:x " + ACR_MFA) == "mfa"
    assert requested_level("urn:x") is None
    assert requested_level(None) is None

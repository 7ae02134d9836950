"""What a sign-in needs, and what a session has: assurance levels, allowed methods, trusted browsers.

Three levels, published as ``acr`` values (``acr_values_supported``):

    sfa  https://refeds.org/profile/sfa   password (or a trusted browser where the policy does not accept it)
    mfa  https://refeds.org/profile/mfa   password and any allowed second factor
    phr  phr                              phishing-resistant: WebAuthn (OpenID EAP ACR values)

The requirement of one authorization request is the strictest of: the global default, the policies of the
user's groups, the client's settings, and the ``acr_values`` the client sent (the lowest level it listed,
since it said it accepts any of them; never silently less). SMS is a restricted authenticator (NIST
SP 800-63B 3.1.3.3): it never counts for ``phr`` and a group or client can forbid it. A trusted browser
stands in for the second factor only where every applicable policy accepts that, and never for ``phr``:
that is a deliberate choice for the "log in once in the morning" workday, documented in docs/mfa.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from idp.config import MfaSettings

ACR_SFA = "https://refeds.org/profile/sfa"
ACR_MFA = "https://refeds.org/profile/mfa"
ACR_PHR = "phr"
ACR_BY_LEVEL = {"sfa": ACR_SFA, "mfa": ACR_MFA, "phr": ACR_PHR}
LEVEL_BY_ACR = {acr: level for level, acr in ACR_BY_LEVEL.items()}
RANK = {"sfa": 0, "mfa": 1, "phr": 2}

SECOND_FACTORS = ("webauthn", "totp", "sms")
"""Methods a user enrolls; ``recovery`` codes and ``passkey`` sign-in are ways to use them."""


@dataclass(frozen=True)
class Requirement:
    level: str
    """``sfa``, ``mfa`` or ``phr``."""
    methods: tuple[str, ...]
    """Second factors that count, in order of preference."""
    trusted_device: bool
    """Whether a browser trusted for the workday stands in for the second factor."""
    skippable_until: date | None = None
    """A user without any factor may still skip enrollment until this day (reminded each time)."""
    reason: str = "policy"
    """Why: ``policy`` (default or group), ``client``, ``acr_values``."""

    @property
    def needs_second_factor(self) -> bool:
        return RANK[self.level] >= RANK["mfa"]


def requested_level(acr_values: str | None) -> str | None:
    """The level a client asked for with ``acr_values``: the lowest one it named (it accepts any of them)."""
    levels = [LEVEL_BY_ACR[value] for value in (acr_values or "").split() if value in LEVEL_BY_ACR]
    return min(levels, key=RANK.__getitem__) if levels else None


def requirement(
    settings: MfaSettings,
    *,
    groups: Iterable[str],
    client_require_mfa: bool | None,
    client_methods: Iterable[str] | None,
    client_trusted_device: bool | None,
    acr_values: str | None,
    grace_from: datetime,
    today: date,
) -> Requirement:
    member_of = set(groups)
    policies = [p for p in settings.groups if p.name in member_of]
    methods = [m for m in settings.methods if m in SECOND_FACTORS]
    trusted = settings.trusted_device
    level, reason = ("mfa" if settings.default == "required" else "sfa"), "policy"
    deadlines: list[date] = []
    for policy in policies:
        if policy.required:
            level = "mfa"
            if policy.deadline is not None:
                deadlines.append(policy.deadline)
        if policy.methods is not None:
            methods = [m for m in methods if m in policy.methods]
        if policy.trusted_device is False:
            trusted = False
    skippable_until: date | None = None
    if level == "mfa":
        grace = (grace_from + timedelta(days=settings.grace_days)).date() if settings.grace_days else None
        # A group deadline in the future postpones enforcement for that group's members, unless the default
        # (or another group without a deadline) already requires a second factor now.
        required_without_deadline = settings.default == "required" or any(
            p.required and p.deadline is None for p in policies)
        candidates = [d for d in ([grace] if grace else []) if d > today]
        if not required_without_deadline:
            candidates += [d for d in deadlines if d > today]
        skippable_until = max(candidates) if candidates else None
    if client_require_mfa:
        level, reason, skippable_until = "mfa", "client", None
    if client_methods is not None:
        allowed = set(client_methods)
        methods = [m for m in methods if m in allowed]
    if client_trusted_device is False:
        trusted = False
    asked = requested_level(acr_values)
    if asked is not None and RANK[asked] > RANK[level]:
        level, reason, skippable_until = asked, "acr_values", None
    elif asked is not None and RANK[asked] >= RANK["mfa"]:
        skippable_until = None
    if level == "phr":
        methods = [m for m in methods if m == "webauthn"]
        trusted = False
    return Requirement(level=level, methods=tuple(methods), trusted_device=trusted,
                       skippable_until=skippable_until, reason=reason)


def achieved_level(methods: Iterable[str], requirement: Requirement) -> str:
    """The level a session's proven methods reach *for this requirement* (a forbidden method counts for
    nothing; a trusted browser counts only where accepted)."""
    proved = set(methods)
    # WebAuthn is the strongest method: method lists exist to exclude weaker ones (SMS), so it always counts.
    if "passkey" in proved or ("webauthn" in proved and "password" in proved):
        return "phr"
    if "password" not in proved:
        return "sfa"
    if any(m in proved for m in ("totp", "sms") if m in requirement.methods) or "recovery" in proved:
        return "mfa"
    if "trusted_device" in proved and requirement.trusted_device:
        return "mfa"
    return "sfa"


def satisfied(methods: Iterable[str], requirement: Requirement) -> bool:
    return RANK[achieved_level(methods, requirement)] >= RANK[requirement.level]


def amr_values(methods: Iterable[str], *, webauthn_amr: Iterable[str] = ()) -> list[str]:
    """RFC 8176 ``amr`` for the methods proved: never a method that was not used.

    ``webauthn_amr`` carries what the authenticator said (``hwk`` or ``swk``, and ``user`` when it verified
    the user). A trusted browser is named ``trusted-device``, which is not a registered value: no registered
    value says "a browser remembered by the server", and claiming ``otp`` or ``hwk`` would be untrue.
    """
    proved = list(dict.fromkeys(methods))
    amr: list[str] = []
    names = {"password": ["pwd"], "totp": ["otp"], "recovery": ["otp"], "sms": ["sms"],
             "webauthn": list(webauthn_amr) or ["hwk"], "passkey": list(webauthn_amr) or ["hwk"],
             "trusted_device": ["trusted-device"]}
    for method in proved:
        for value in names.get(method, []):
            if value not in amr:
                amr.append(value)
    factors = {"password"} & set(proved) | {m for m in proved if m in ("totp", "sms", "webauthn", "recovery")}
    if len(factors) >= 2 or ("passkey" in proved and "user" in amr):
        amr.append("mfa")
    return amr

"""Settings: one typed object, read once from a TOML file and the environment.

Every setting is declared here exactly once, with its default and its documentation; the configuration
reference in ``docs/configuration.md`` is generated from these declarations (``idp config reference``), so
the two cannot drift apart. A setting ``key`` of section ``[section]`` is also read from the environment
variable ``IDP_SECTION_KEY`` (top-level settings: ``IDP_KEY``); the environment wins over the file.

Unknown keys, unknown ``IDP_*`` variables and invalid values stop the start with a message naming them,
because a typo in a security setting must never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Variables that are not settings but steer how settings are read.
_META_VARIABLES = {"IDP_CONFIG"}


class ConfigError(ValueError):
    """The configuration cannot be used; the message names every offending key."""


def parse_duration(value: object) -> timedelta:
    """Parse ``"90s"``, ``"5m"``, ``"10h"``, ``"30d"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90s, 5m, 10h or 30d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 90s, 5m, 10h or 30d")
        unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        seconds = float(match.group(1)) * unit
    else:
        raise ValueError("expected a duration such as 90s, 5m, 10h or 30d")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return timedelta(seconds=seconds)


def _format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _parse_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise ValueError(f"{value!r} is not a whole number")


def _parse_positive_int(value: object) -> int:
    number = _parse_int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{value!r} is not true or false")


def _parse_str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"{value!r} is not a string")


def _parse_optional_str(value: object) -> str | None:
    if value is None or value == "":
        return None
    return _parse_str(value)


def _parse_list(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError("expected a list of strings (in the environment: comma-separated)")


def _parse_headers(value: object) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError("expected a JSON object of headers in the environment") from exc
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("expected a table of header names and string values")
    return tuple(value.items())


def _parse_timezone(value: object) -> str:
    name = _parse_str(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{name!r} is not a time zone name such as Europe/Berlin") from exc
    return name


def _choice(*allowed: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _parse_str(value)
        if text not in allowed:
            raise ValueError(f"{text!r} is not one of {', '.join(allowed)}")
        return text

    return parse


def _parse_issuer(value: object) -> str:
    issuer = _parse_str(value)
    parts = urlsplit(issuer)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("the issuer must be an absolute http(s) URL")
    if parts.query or parts.fragment:
        raise ValueError("the issuer must not have a query or fragment (OpenID Connect Discovery 1.0, section 2)")
    if issuer.endswith("/"):
        raise ValueError("the issuer must not end with a slash, so that endpoint URLs join cleanly")
    if parts.scheme == "http" and parts.hostname not in {"localhost", "127.0.0.1", "::1"}:
        # OAuth 2.0 requires TLS (RFC 6749 3.1); plain http is only for a server on this machine.
        raise ValueError("an http issuer is only allowed for localhost, 127.0.0.1 or [::1]; use https")
    return issuer


def setting(default: Any, doc: str, parse: Callable[[object], Any], *, example: str | None = None) -> Any:
    """Declare one setting: its default, its documentation and how to read it from TOML or text."""
    return field(default=default, metadata={"doc": doc, "parse": parse, "example": example})


@dataclass(frozen=True)
class DatabaseSettings:
    url: str | None = setting(
        None,
        "SQLAlchemy URL. Unset: the embedded SQLite database `idp.sqlite3` in `data_dir`. SQLite databases are "
        "migrated on start; for PostgreSQL use `postgresql+psycopg://user@host/db` and run `idp db upgrade` "
        "before starting.",
        _parse_optional_str,
        example="postgresql+psycopg://idp@127.0.0.1/idp",
    )
    pool_size: int = setting(10, "Connections kept open per server process (PostgreSQL only).", _parse_positive_int)


@dataclass(frozen=True)
class ServerSettings:
    host: str = setting("127.0.0.1", "Address `idp serve` listens on.", _parse_str)
    port: int = setting(8000, "Port `idp serve` listens on.", _parse_positive_int)
    workers: int = setting(
        1,
        "Server processes `idp serve` starts on this machine. About one per CPU core: password hashing (argon2id) "
        "and signing use the CPU, and each process keeps its own pool of `[database] pool_size` connections, so "
        "PostgreSQL must allow `workers` times `pool_size` (times two, for overflow) connections per machine. "
        "With the embedded SQLite database the processes take turns writing; for more than one machine use PostgreSQL.",
        _parse_positive_int,
    )
    trusted_proxies: tuple[str, ...] = setting(
        (),
        "Addresses of reverse proxies whose `X-Forwarded-For/-Proto/-Host` headers are trusted. Empty: none are.",
        _parse_list,
        example='["127.0.0.1"]',
    )
    max_body_size: int = setting(
        65536, "Largest request body accepted, in bytes; larger bodies are refused with 413.", _parse_positive_int
    )
    shutdown_timeout: timedelta = setting(
        timedelta(seconds=30),
        "On SIGTERM, `idp serve` stops accepting connections and lets requests in flight finish for at most this "
        "long before it closes them, so that a stuck request cannot hold the stop forever.",
        parse_duration,
    )


@dataclass(frozen=True)
class KeysSettings:
    encryption_key: str | None = setting(
        None,
        "Key-encryption key that protects the private signing keys in the database: 32 random bytes, base64. "
        "Unset outside production: generated once into `data_dir/key-encryption.key`. Required in production.",
        _parse_optional_str,
    )
    encryption_key_file: str | None = setting(
        None, "A file holding `encryption_key` (for systemd credentials or secret mounts).", _parse_optional_str
    )
    rsa_bits: int = setting(3072, "Size of generated RSA signing keys (at least 3072, BSI TR-02102-1).", _parse_int)


@dataclass(frozen=True)
class SessionSettings:
    absolute_lifetime: timedelta = setting(
        timedelta(hours=10),
        "Longest life of a sign-in session (SSO), however active: one working day (NIST SP 800-63B AAL2).",
        parse_duration,
    )
    idle_timeout: timedelta = setting(
        timedelta(hours=1),
        "Inactivity after which the password is asked again (the session resumes while its absolute lifetime lasts).",
        parse_duration,
    )
    login_timeout: timedelta = setting(
        timedelta(minutes=30), "How long a started sign-in (an open authorization request) stays valid.", parse_duration
    )


@dataclass(frozen=True)
class TokenSettings:
    code_lifetime: timedelta = setting(
        timedelta(seconds=60), "Lifetime of an authorization code (at most 60 s).", parse_duration
    )
    access_token_lifetime: timedelta = setting(
        timedelta(minutes=10), "Lifetime of access tokens (JWT, RFC 9068).", parse_duration
    )
    id_token_lifetime: timedelta = setting(timedelta(minutes=10), "Lifetime of ID tokens.", parse_duration)
    refresh_token_lifetime: timedelta = setting(
        timedelta(hours=10),
        "Lifetime of refresh tokens without `offline_access`; they also end with the sign-in session.",
        parse_duration,
    )
    offline_token_lifetime: timedelta = setting(
        timedelta(days=30), "Lifetime of refresh tokens granted with the `offline_access` scope.", parse_duration
    )
    pkce: str = setting(
        "public",
        "`public`: PKCE (S256) is required for public clients and honoured for all; `all`: required for every client.",
        _choice("public", "all"),
    )


@dataclass(frozen=True)
class PasswordSettings:
    argon2_time_cost: int = setting(2, "argon2id iterations (OWASP: 2 with 19 MiB).", _parse_positive_int)
    argon2_memory_cost: int = setting(19456, "argon2id memory in KiB.", _parse_positive_int)
    argon2_parallelism: int = setting(1, "argon2id lanes.", _parse_positive_int)
    min_length: int = setting(8, "Shortest password accepted when one is set (NIST SP 800-63B).", _parse_positive_int)


@dataclass(frozen=True)
class ThrottleSettings:
    free_attempts_per_account: int = setting(
        5, "Failed sign-ins per account before delays start.", _parse_positive_int
    )
    free_attempts_per_ip: int = setting(
        100,
        "Failed sign-ins per client address before delays start (high: a town hall signs in from few addresses).",
        _parse_positive_int,
    )
    first_delay: timedelta = setting(
        timedelta(seconds=2), "First delay; each further failure doubles it.", parse_duration
    )
    max_delay: timedelta = setting(
        timedelta(minutes=5),
        "Longest delay: short, so that a stranger cannot lock an employee out for long.",
        parse_duration,
    )
    forget_after: timedelta = setting(
        timedelta(hours=1), "Failures older than this (with none since) are forgotten.", parse_duration
    )


@dataclass(frozen=True)
class LogoutSettings:
    backchannel_timeout: timedelta = setting(
        timedelta(seconds=5), "Timeout of one back-channel logout delivery.", parse_duration
    )
    backchannel_attempts: int = setting(
        6, "Deliveries tried per logout token before giving up (growing pauses between).", _parse_positive_int
    )


@dataclass(frozen=True)
class BootstrapSettings:
    admin_username: str = setting("admin", "Username of the administrator created on an empty database.", _parse_str)
    admin_password: str | None = setting(
        None,
        "Password of that administrator. Unset: a random one-time password is printed once at the first start.",
        _parse_optional_str,
    )


MFA_METHODS = ("webauthn", "totp", "sms")


def _parse_methods(value: object) -> tuple[str, ...]:
    methods = _parse_list(value)
    unknown = [m for m in methods if m not in MFA_METHODS]
    if unknown:
        raise ValueError(f"unknown second-factor methods {unknown}; known: {', '.join(MFA_METHODS)}")
    return methods


@dataclass(frozen=True)
class MfaGroupPolicy:
    """The second-factor policy of one group (``[mfa.groups."NAME"]``); unset keys follow ``[mfa]``."""

    name: str
    required: bool | None = None
    methods: tuple[str, ...] | None = None
    trusted_device: bool | None = None
    deadline: date | None = None
    """Before this day, members are reminded at every sign-in but may skip enrollment; from it, they must enroll."""


def _parse_group_policies(value: object) -> tuple[MfaGroupPolicy, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError("expected a JSON object of group policies in the environment") from exc
    if not isinstance(value, dict):
        raise ValueError('expected tables [mfa.groups."NAME"]')
    policies = []
    for name, entry in value.items():
        if not isinstance(entry, dict):
            raise ValueError(f"[mfa.groups.{name}] must be a table")
        unknown = set(entry) - {"required", "methods", "trusted_device", "deadline"}
        if unknown:
            raise ValueError(f"unknown keys in [mfa.groups.{name}]: {sorted(unknown)}")
        deadline = entry.get("deadline")
        if isinstance(deadline, str):
            try:
                deadline = date.fromisoformat(deadline)
            except ValueError as exc:
                raise ValueError(f"[mfa.groups.{name}] deadline must be a date like 2027-01-31") from exc
        if deadline is not None and not isinstance(deadline, date):
            raise ValueError(f"[mfa.groups.{name}] deadline must be a date like 2027-01-31")
        policies.append(MfaGroupPolicy(
            name=str(name),
            required=_parse_bool(entry["required"]) if "required" in entry else None,
            methods=_parse_methods(entry["methods"]) if "methods" in entry else None,
            trusted_device=_parse_bool(entry["trusted_device"]) if "trusted_device" in entry else None,
            deadline=deadline,
        ))
    return tuple(policies)


@dataclass(frozen=True)
class MfaSettings:
    default: str = setting(
        "required",
        "`required`: every sign-in needs a second factor (the product's purpose); `optional`: only where a group, "
        "a client or `acr_values` asks for one.",
        _choice("required", "optional"),
    )
    methods: tuple[str, ...] = setting(
        MFA_METHODS, "Second factors offered, in this order of preference.", _parse_methods,
        example='["webauthn", "totp"]',
    )
    trusted_device: bool = setting(
        True,
        "Whether a user may trust a browser for the workday after a second factor, so that later sign-ins there "
        "ask only for the password. Never satisfies phishing-resistant requests.",
        _parse_bool,
    )
    trusted_device_lifetime: timedelta = setting(
        timedelta(hours=12), "How long a trusted browser stays trusted.", parse_duration
    )
    grace_days: int = setting(
        0, "Days a user who must use a second factor may still sign in without one (counted from the account's "
        "creation or the last reset), with a reminder each time.", _parse_int,
    )
    groups: tuple[MfaGroupPolicy, ...] = setting(
        (),
        'Per-group policies: tables `[mfa.groups."Sozialamt"]` with `required`, `methods`, `trusted_device` and '
        "`deadline` (a date: reminders before it, enforcement from it). The strictest policy of a user's groups "
        "applies. In the environment: a JSON object.",
        _parse_group_policies,
    )


@dataclass(frozen=True)
class SmsSettings:
    gateway: str = setting(
        "log", "`log`: the message goes to the server log (development); `http`: POSTed as JSON to `url`.",
        _choice("log", "http"),
    )
    url: str | None = setting(None, "The HTTP gateway's URL (body `{\"to\": \"+49...\", \"text\": \"...\"}`).",
                              _parse_optional_str)
    headers: tuple[tuple[str, str], ...] = setting(
        (), "Headers sent to the gateway, e.g. an API key. In the environment: a JSON object.", _parse_headers,
        example='{"Authorization": "Bearer ..."}',
    )
    timeout: timedelta = setting(timedelta(seconds=5), "Timeout of one request to the gateway.", parse_duration)
    retries: int = setting(1, "Further tries after a failed request to the gateway.", _parse_int)
    default_region: str = setting("DE", "Country assumed for phone numbers written without +country code.",
                                  _parse_str)


@dataclass(frozen=True)
class WebAuthnSettings:
    rp_name: str = setting("Municipal sign-in", "The name authenticators show for this service.", _parse_str)
    user_verification: str = setting(
        "preferred", "`preferred` or `required` (PIN or biometrics on the authenticator).",
        _choice("preferred", "required", "discouraged"),
    )
    allowed_aaguids: tuple[str, ...] = setting(
        (),
        "Accept only authenticators of these models (AAGUIDs), e.g. keys issued by the municipality. Turns on "
        "`direct` attestation, verified against `attestation_roots`.",
        _parse_list,
    )
    attestation_roots: tuple[str, ...] = setting(
        (), "PEM files of the vendors' attestation root certificates (needed with `allowed_aaguids`).", _parse_list
    )


DIRECTORY_PRESETS = ("active-directory", "openldap")
DIRECTORY_ATTRIBUTES = (
    "username", "id", "email", "display_name", "given_name", "family_name", "phone", "disabled", "changed",
    "group_id", "group_name", "group_member", "group_member_uid",
)
"""What a source's ``attributes`` table may override: the IdP's names for the preset's LDAP attributes."""

_SOURCE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def _source_field(default: Any, doc: str, *, required: bool = False, secret: bool = False) -> Any:
    # Secrets stay out of the dataclass repr, so that a logged or printed settings object never shows them.
    return field(default=default, repr=not secret, metadata={"source_doc": doc, "required": required})


@dataclass(frozen=True)
class DirectorySource:
    """One directory that owns accounts: a table ``[[directory.sources]]`` (see ``docs/directory-sync.md``)."""

    name: str = _source_field(
        "", "Short name (`a-z`, `0-9`, `-`, `_`), stored on every account the source owns: never rename it.",
        required=True)
    url: tuple[str, ...] = _source_field(
        (), "`ldap://host[:port]` or `ldaps://host[:port]`, or a list of them tried in order (failover).",
        required=True)
    preset: str = _source_field(
        "", "`active-directory` or `openldap`: the attribute mapping, filters and change tracking to start from.",
        required=True)
    base_dn: str = _source_field("", "Where the accounts are searched (whole subtree).", required=True)
    user_filter: str | None = _source_field(None, "LDAP filter selecting the accounts. Unset: the preset's.")
    group_base_dn: str | None = _source_field(None, "Where the groups are searched. Unset: `base_dn`.")
    group_filter: str | None = _source_field(None, "LDAP filter selecting the groups. Unset: the preset's.")
    start_tls: bool = _source_field(False, "Upgrade `ldap://` connections with StartTLS; failing that, nothing "
                                           "is sent (no fallback to plain text).")
    ca_file: str | None = _source_field(None, "PEM file of the CA that signed the directory's certificate. "
                                              "Unset: the system's trust store.")
    allow_plaintext_bind: bool = _source_field(
        False, "Allow sending passwords (the service account's and, with `authentication = \"bind\"`, the users') "
               "over `ldap://` without StartTLS. Only for a directory on the same host.")
    bind_dn: str | None = _source_field(None, "Service account used to read the directory. Unset: anonymous.")
    bind_password: str | None = _source_field(None, "Its password (prefer `bind_password_file`).", secret=True)
    bind_password_file: str | None = _source_field(None, "A file holding the service account's password.")
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = _source_field(
        (), "Overrides of the preset's attribute mapping, e.g. `{ username = \"mail\", phone = [\"mobile\"] }`; "
            f"keys: {', '.join(DIRECTORY_ATTRIBUTES)}.")
    authentication: str = _source_field(
        "bind", "`bind`: passwords are checked by binding to the directory as the user (none stored here); "
                "`none`: the accounts sign in with passkeys only.")
    interval: timedelta = _source_field(timedelta(minutes=5), "How often `idp serve` runs an incremental sync.")
    full_interval: timedelta = _source_field(timedelta(hours=24), "How often the scheduled run is a full sync.")
    timeout: timedelta = _source_field(timedelta(seconds=5), "Connect and response timeout of every directory "
                                                             "request (sync and sign-in), per URL tried.")
    page_size: int = _source_field(500, "Entries per page of a search (Active Directory returns at most 1000).")
    max_disable_share: float = _source_field(
        0.1, "A run that would disable more than this share of the source's active accounts (more than one) "
             "changes nothing (`idp sync ldap --force` overrides). `0.1` or `\"10%\"`.")
    retention: timedelta = _source_field(timedelta(days=30), "How long an account disabled by the sync is kept "
                                                             "(and restored if it comes back) before deletion.")
    sms_from_directory: bool = _source_field(
        False, "Maintain one SMS second factor per account from the directory's phone attribute (`phone` in the "
               "mapping), confirmed without a code. Off by default: in Active Directory users can often edit "
               "their own `mobile` and `telephoneNumber` (the Personal-Information property set), and trusting "
               "such an attribute lets whoever has a stolen password choose where the second factor goes. Turn "
               "it on only where the directory administrators alone maintain the attribute. A run that would "
               "remove more than `max_disable_share` of these factors at once is refused like mass disables.")

    def read_bind_password(self) -> str | None:
        """The service account's password, read from ``bind_password_file`` at the moment it is needed."""
        if self.bind_password is not None:
            return self.bind_password
        if self.bind_password_file is not None:
            return Path(self.bind_password_file).read_text(encoding="utf-8").rstrip("\r\n")
        return None

    def attribute_overrides(self) -> dict[str, tuple[str, ...]]:
        return dict(self.attributes)


def _source_str_list(value: object, key: str) -> tuple[str, ...]:
    if isinstance(value, str) and value.strip():
        return (value.strip(),)
    if isinstance(value, list) and value and all(isinstance(item, str) and item.strip() for item in value):
        return tuple(item.strip() for item in value)
    raise ValueError(f"{key} must be a string or a non-empty list of strings")


def _parse_share(value: object) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        value = float(value.strip()[:-1]) / 100
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("max_disable_share must be a number between 0 and 1, or a percentage such as \"10%\"")
    if not 0 <= float(value) <= 1:
        raise ValueError("max_disable_share must lie between 0 and 1 (0 % and 100 %)")
    return float(value)


def _parse_source(entry: object, position: int) -> DirectorySource:
    if not isinstance(entry, dict):
        raise ValueError(f"source {position} must be a table [[directory.sources]]")
    label = f"source {entry.get('name')!r}" if isinstance(entry.get("name"), str) else f"source {position}"
    known = {f.name: f for f in dataclasses.fields(DirectorySource)}
    unknown = sorted(set(entry) - set(known))
    if unknown:
        raise ValueError(f"{label}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    missing = [name for name, f in known.items() if f.metadata["required"] and name not in entry]
    if missing:
        raise ValueError(f"{label}: missing {', '.join(missing)}")
    values: dict[str, Any] = {}
    for key, raw in entry.items():
        try:
            if key == "url":
                values[key] = _source_str_list(raw, key)
            elif key == "attributes":
                if not isinstance(raw, dict):
                    raise ValueError("attributes must be a table such as { username = \"uid\" }")
                bad = sorted(set(raw) - set(DIRECTORY_ATTRIBUTES))
                if bad:
                    raise ValueError(f"unknown attribute {', '.join(bad)} (known: {', '.join(DIRECTORY_ATTRIBUTES)})")
                values[key] = tuple((name, _source_str_list(raw[name], f"attributes.{name}")) for name in raw)
            elif key in {"start_tls", "allow_plaintext_bind", "sms_from_directory"}:
                values[key] = _parse_bool(raw)
            elif key in {"interval", "full_interval", "timeout", "retention"}:
                values[key] = parse_duration(raw)
            elif key == "page_size":
                values[key] = _parse_positive_int(raw)
                if values[key] > 10000:
                    raise ValueError("must be at most 10000")
            elif key == "max_disable_share":
                values[key] = _parse_share(raw)
            elif key == "preset":
                values[key] = _choice(*DIRECTORY_PRESETS)(raw)
            elif key == "authentication":
                values[key] = _choice("bind", "none")(raw)
            else:
                text = _parse_str(raw).strip()
                if not text:
                    raise ValueError("must not be empty")
                values[key] = text
        except ValueError as exc:
            raise ValueError(f"{label}: {key}: {exc}") from exc
    source = DirectorySource(**values)
    problems = []
    if not _SOURCE_NAME.fullmatch(source.name) or source.name == "local":
        problems.append("name must be 1-64 characters a-z, 0-9, - or _ (and not \"local\")")
    for url in source.url:
        parts = urlsplit(url)
        if parts.scheme not in {"ldap", "ldaps"} or not parts.hostname or parts.path not in {"", "/"}:
            problems.append(f"url {url!r} is not ldap://host[:port] or ldaps://host[:port]")
        elif parts.scheme == "ldaps" and source.start_tls:
            problems.append(f"url {url!r}: start_tls is for ldap:// URLs (ldaps:// is encrypted already)")
    for key in ("user_filter", "group_filter"):
        text = getattr(source, key)
        if text is not None and not _balanced_filter(text):
            problems.append(f"{key} {text!r} is not an LDAP filter in parentheses (RFC 4515), e.g. (objectClass=user)")
    if source.bind_password is not None and source.bind_password_file is not None:
        problems.append("bind_password and bind_password_file: set only one")
    if source.bind_dn and source.bind_password is None and source.bind_password_file is None:
        problems.append("bind_dn needs bind_password or bind_password_file")
    if source.bind_password_file is not None and not Path(source.bind_password_file).is_file():
        problems.append(f"bind_password_file {source.bind_password_file} does not exist")
    if source.ca_file is not None and not Path(source.ca_file).is_file():
        problems.append(f"ca_file {source.ca_file} does not exist")
    sends_passwords = source.bind_dn is not None or source.authentication == "bind"
    cleartext = [url for url in source.url if url.startswith("ldap://") and not source.start_tls]
    if sends_passwords and cleartext and not source.allow_plaintext_bind:
        # RFC 4513 6.3.1: simple binds only over a protected connection; plaintext must be a visible decision.
        problems.append(f"{cleartext[0]} would send passwords in clear text: use ldaps://, start_tls = true, "
                        "or (only for a directory on the same host) allow_plaintext_bind = true")
    if problems:
        raise ValueError(f"{label}: " + "; ".join(problems))
    return source


def _balanced_filter(text: str) -> bool:
    """A cheap check that catches the usual typos (a missing parenthesis) when the configuration is loaded; the
    directory judges the rest. Escaped parentheses (``\\28``, ``\\29``) are not parentheses (RFC 4515 3)."""
    depth = 0
    for char in text.strip():
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0 and text.strip().startswith("(") and text.strip().endswith(")")


def _parse_sources(value: object) -> tuple[DirectorySource, ...]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError("expected a JSON list of sources in the environment") from exc
    if not isinstance(value, list):
        raise ValueError("expected tables [[directory.sources]]")
    sources = tuple(_parse_source(entry, position) for position, entry in enumerate(value, start=1))
    names = [source.name for source in sources]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"source names must be unique: {', '.join(duplicates)}")
    return sources


@dataclass(frozen=True)
class DirectorySettings:
    sources: tuple[DirectorySource, ...] = setting(
        (),
        "Directories (Active Directory, OpenLDAP) whose accounts and groups are mirrored: one table "
        "`[[directory.sources]]` each, with the keys listed below. In the environment: a JSON list.",
        _parse_sources,
    )
    schedule: bool = setting(
        True,
        "Whether `idp serve` syncs each source on its `interval` (one process at a time, by a lease in the "
        "database). Turn off where `idp sync ldap` runs from cron instead.",
        _parse_bool,
    )

    def source(self, name: str) -> DirectorySource | None:
        return next((source for source in self.sources if source.name == name), None)


def _directory_source_reference() -> list[str]:
    lines = ["### `[[directory.sources]]`", "", "| key | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(DirectorySource):
        default = f.default
        if f.metadata["required"]:
            shown = "(required)"
        elif isinstance(default, timedelta):
            shown = f"`{_format_duration(default)}`"
        elif default is None or default == ():
            shown = "(unset)"
        else:
            shown = f"`{str(default).lower() if isinstance(default, bool) else default}`"
        lines.append(f"| `{f.name}` | {shown} | {f.metadata['source_doc']} |")
    lines.append("")
    return lines


def _parse_sha256_hex(value: object) -> str | None:
    digest = _parse_optional_str(value)
    if digest is not None and not re.fullmatch(r"[0-9a-f]{64}", digest.strip().lower()):
        raise ValueError("expected the SHA-256 of the token as 64 hex digits (printf %s TOKEN | sha256sum)")
    return digest.strip().lower() if digest is not None else None


def _parse_optional_port(value: object) -> int | None:
    if value is None or value == "":
        return None
    port = _parse_positive_int(value)
    if port > 65535:
        raise ValueError("a port is at most 65535")
    return port


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = setting(
        True,
        "Prometheus metrics: sign-ins, tokens, sync runs, request times (docs/operations.md). Served only where "
        "`token_sha256` or `port` says (neither: nowhere); `false`: request times are not measured and nothing "
        "is served.",
        _parse_bool,
    )
    token_sha256: str | None = setting(
        None,
        "SHA-256 (hex) of the Bearer token Prometheus sends to `/metrics` on the main port; only the hash is "
        "stored (what `sha256sum` prints for the token). Unset: `/metrics` on the main port answers 404.",
        _parse_sha256_hex,
    )
    port: int | None = setting(
        None,
        "A separate metrics listener on 127.0.0.1 (no token; only this machine reaches it). Unset: none.",
        _parse_optional_port,
        example="9100",
    )


@dataclass(frozen=True)
class LoggingSettings:
    format: str = setting(
        "auto",
        "`json`: one JSON object per line (time, level, logger, message, request_id, fields), for a log "
        "collector; `text`: for a terminal; `auto`: json in production, text in development.",
        _choice("auto", "json", "text"),
    )
    level: str = setting("info", "Least important messages written.", _choice("debug", "info", "warning", "error"))


@dataclass(frozen=True)
class Settings:
    issuer: str = setting(
        "http://127.0.0.1:8000",
        "The issuer identifier: the public base URL of this server, https in production. Unset: "
        "`http://HOST:PORT` from `[server]`, so `idp serve --port 9000` works without more settings.",
        _parse_issuer,
    )
    env: str = setting(
        "development",
        "`development` or `production`. Production refuses generated secrets and an http issuer.",
        _choice("development", "production"),
    )
    data_dir: str = setting(
        "data", "Folder for the embedded database and generated secrets (development).", _parse_str
    )
    secret_key: str | None = setting(
        None,
        "Key for CSRF tokens and the keyed hashes of codes, tokens, client secrets and session ids (32+ random "
        "bytes, base64 or text). Unset outside production: generated into `data_dir/secret.key`. Changing it "
        "invalidates every client secret, session and token.",
        _parse_optional_str,
    )
    secret_key_file: str | None = setting(None, "A file holding `secret_key`.", _parse_optional_str)
    timezone: str = setting(
        "Europe/Berlin", "The municipality's time zone: dates and times on the pages are shown in it.",
        _parse_timezone,
    )
    theme: str = setting("default", "Theme folder under `themes/` used for every page (a client may have its own: "
                                    "`idp clients update --theme`); see docs/themes.md.", _parse_str)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    keys: KeysSettings = field(default_factory=KeysSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    tokens: TokenSettings = field(default_factory=TokenSettings)
    passwords: PasswordSettings = field(default_factory=PasswordSettings)
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)
    logout: LogoutSettings = field(default_factory=LogoutSettings)
    bootstrap: BootstrapSettings = field(default_factory=BootstrapSettings)
    mfa: MfaSettings = field(default_factory=MfaSettings)
    sms: SmsSettings = field(default_factory=SmsSettings)
    webauthn: WebAuthnSettings = field(default_factory=WebAuthnSettings)
    directory: DirectorySettings = field(default_factory=DirectorySettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{Path(self.data_dir).resolve() / 'idp.sqlite3'}"

    @property
    def is_embedded_database(self) -> bool:
        """SQLite, the default or another file: one machine, migrated by the server itself at start."""
        return self.database_url.startswith("sqlite")

    @property
    def is_https(self) -> bool:
        return self.issuer.startswith("https://")


def _sections() -> dict[str, type]:
    return {
        f.name: f.type if isinstance(f.type, type) else globals()[str(f.type)]
        for f in dataclasses.fields(Settings)
        if f.metadata.get("doc") is None
    }


def _section_fields(section: str) -> list[dataclasses.Field[Any]]:
    cls = Settings if section == "" else _sections()[section]
    return [f for f in dataclasses.fields(cls) if "doc" in f.metadata]


def env_name(section: str, key: str) -> str:
    return f"IDP_{section.upper()}_{key.upper()}" if section else f"IDP_{key.upper()}"


def load_settings(
    environ: Mapping[str, str] | None = None,
    path: str | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Read settings from the TOML file (``path`` or ``IDP_CONFIG``), the environment and command-line
    ``overrides`` (``{"server": {"port": 9000}}``, ``""`` for top-level keys), later ones winning."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("IDP_CONFIG")
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from exc

    errors: list[str] = []
    sections = _sections()
    known_env = set(_META_VARIABLES)
    values: dict[str, dict[str, Any]] = {name: {} for name in ["", *sections]}

    for key, value in raw.items():
        if key in sections:
            if not isinstance(value, dict):
                errors.append(f"[{key}] must be a table")
                continue
            known = {f.name for f in _section_fields(key)}
            for sub_key, sub_value in value.items():
                if sub_key not in known:
                    errors.append(f"unknown setting [{key}] {sub_key}")
                else:
                    values[key][sub_key] = sub_value
        elif key in {f.name for f in _section_fields("")}:
            values[""][key] = value
        else:
            errors.append(f"unknown setting {key}")

    for section in values:
        for f in _section_fields(section):
            name = env_name(section, f.name)
            known_env.add(name)
            if name in environ:
                values[section][f.name] = environ[name]

    for name in environ:
        if name.startswith("IDP_") and name not in known_env:
            errors.append(f"unknown environment variable {name}")
    for section, entries in (overrides or {}).items():
        values[section].update({key: value for key, value in entries.items() if value is not None})
    if "issuer" not in values[""]:
        host = values["server"].get("host", ServerSettings.host)
        host = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
        port = values["server"].get("port", ServerSettings.port)
        # An IPv6 literal needs brackets in a URL (RFC 3986 3.2.2): http://[::1]:8000, not http://::1:8000.
        host = f"[{host}]" if isinstance(host, str) and ":" in host and not host.startswith("[") else host
        values[""]["issuer"] = f"http://{host}:{port}"

    parsed: dict[str, dict[str, Any]] = {name: {} for name in values}
    for section, entries in values.items():
        for f in _section_fields(section):
            if f.name not in entries:
                continue
            label = f"[{section}] {f.name}" if section else f.name
            try:
                parsed[section][f.name] = f.metadata["parse"](entries[f.name])
            except ValueError as exc:
                errors.append(f"invalid value for {label} ({env_name(section, f.name)}): {exc}")

    if errors:
        raise ConfigError("; ".join(errors))
    settings = Settings(
        **parsed[""], **{name: cls(**parsed[name]) for name, cls in sections.items()}
    )
    _check_consistency(settings)
    return settings


def _check_consistency(settings: Settings) -> None:
    errors = []
    if settings.tokens.code_lifetime > timedelta(seconds=60):
        errors.append("[tokens] code_lifetime must be at most 60s")
    if settings.keys.rsa_bits < 3072:
        errors.append("[keys] rsa_bits must be at least 3072")
    if settings.session.idle_timeout > settings.session.absolute_lifetime:
        errors.append("[session] idle_timeout must not exceed absolute_lifetime")
    if settings.sms.gateway == "http" and urlsplit(settings.sms.url or "").scheme not in {"http", "https"}:
        errors.append("[sms] url (IDP_SMS_URL) must be an http(s) URL when gateway is http")
    if settings.sms.retries < 0:
        errors.append("[sms] retries must not be negative")
    if settings.metrics.port is not None and settings.metrics.port == settings.server.port:
        errors.append("[metrics] port must differ from [server] port")
    if settings.env == "production":
        if not settings.is_https:
            errors.append("issuer must be https in production")
        if not (settings.secret_key or settings.secret_key_file):
            errors.append("secret_key (IDP_SECRET_KEY) is required in production")
        if not (settings.keys.encryption_key or settings.keys.encryption_key_file):
            errors.append("[keys] encryption_key (IDP_KEYS_ENCRYPTION_KEY) is required in production")
    if errors:
        raise ConfigError("; ".join(errors))


def reference_markdown() -> str:
    """The configuration reference table, generated from the declarations above."""
    lines = [
        "# Configuration reference",
        "",
        "Generated by `idp config reference` from `idp/config.py`; do not edit by hand.",
        "",
        "Settings come from a TOML file named by `IDP_CONFIG` and from the environment: `key` in section",
        "`[section]` is also `IDP_SECTION_KEY` (top-level keys: `IDP_KEY`); the environment wins. Durations",
        "are written `90s`, `5m`, `10h` or `30d`; lists in the environment are comma-separated. Unknown keys,",
        "unknown `IDP_*` variables and invalid values stop the start with a message naming them.",
        "",
    ]
    for section in ["", *_sections()]:
        lines += [f"## {'[' + section + ']' if section else 'Top level'}", ""]
        lines += ["| key | environment | default | meaning |", "|---|---|---|---|"]
        for f in _section_fields(section):
            default = f.default
            if isinstance(default, timedelta):
                shown = _format_duration(default)
            elif default is None:
                shown = "(unset)"
            elif isinstance(default, tuple):
                shown = "[" + ", ".join(default) + "]"
            else:
                shown = str(default).lower() if isinstance(default, bool) else str(default)
            doc = f.metadata["doc"]
            if f.metadata.get("example"):
                doc += f" Example: `{f.metadata['example']}`."
            lines.append(f"| `{f.name}` | `{env_name(section, f.name)}` | `{shown}` | {doc} |")
        lines.append("")
        if section == "directory":
            lines += _directory_source_reference()
    return "\n".join(lines)

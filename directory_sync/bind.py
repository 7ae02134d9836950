"""Checking a directory account's password by binding to the directory as that account.

The IdP stores no password for such accounts. A check

1. refuses an empty or whitespace-only password before anything is sent: an LDAP simple bind with a DN and
   an empty password is an *unauthenticated* bind that servers answer with success (RFC 4513 5.1.2;
   security case 36);
2. looks the entry up again by its immutable id with the service account, so that a move since the last
   sync does not matter and an entry disabled since then is refused at once;
3. binds as the entry's DN with the password, on the URL that just answered (failover happens in step 2).

A directory that cannot be reached (or whose TLS fails, or whose service bind is refused) is
``UNAVAILABLE``, which the caller must not count as a wrong password (security case 53).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from directory_sync.entries import id_filter, is_disabled, lower_keys
from directory_sync.ldap import DirectoryClient, DirectoryError, InvalidCredentials, connect, describe
from directory_sync.presets import mapping_for
from idp.config import DirectorySource


class BindOutcome(enum.Enum):
    OK = "ok"
    WRONG_PASSWORD = "wrong_password"
    EMPTY_PASSWORD = "empty_password"
    NOT_IN_DIRECTORY = "not_in_directory"
    DISABLED_IN_DIRECTORY = "disabled_in_directory"
    UNAVAILABLE = "directory_unavailable"


@dataclass(frozen=True)
class BindResult:
    outcome: BindOutcome
    detail: str | None = None
    """Why, for the audit trail and logs (never shown to the person signing in)."""


def is_blank(password: str) -> bool:
    return not password.strip()


def verify_password(source: DirectorySource, external_id: str, password: str) -> BindResult:
    if is_blank(password):
        return BindResult(BindOutcome.EMPTY_PASSWORD)
    mapping = mapping_for(source)
    user_filter = mapping.user_filter.strip()
    user_filter = user_filter if user_filter.startswith("(") else f"({user_filter})"
    search_filter = f"(&{user_filter}{id_filter(mapping.id_attribute, external_id)})"
    try:
        with DirectoryClient(source) as client:
            entries = list(client.search(source.base_dn, search_filter,
                                         [mapping.id_attribute, *mapping.attr("disabled")]))
            url = client.url
    except DirectoryError as exc:
        return BindResult(BindOutcome.UNAVAILABLE, describe(exc))
    if len(entries) != 1:
        return BindResult(BindOutcome.NOT_IN_DIRECTORY)
    dn, raw = entries[0]
    try:
        if is_disabled(dn, lower_keys(raw), mapping.attr("disabled")):
            return BindResult(BindOutcome.DISABLED_IN_DIRECTORY)
    except ValueError as exc:
        return BindResult(BindOutcome.DISABLED_IN_DIRECTORY, str(exc))
    try:
        connection, _ = connect(source, dn, password, prefer=url)
    except InvalidCredentials:
        return BindResult(BindOutcome.WRONG_PASSWORD)
    except DirectoryError as exc:
        return BindResult(BindOutcome.UNAVAILABLE, describe(exc))
    try:
        connection.unbind()
    except Exception:  # the bind succeeded; a failing unbind changes nothing about that
        pass
    return BindResult(BindOutcome.OK)

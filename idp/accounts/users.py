"""Users and groups: creation, lookup and search, and what the service desk does to an account (disable,
enable, unlock, end its sessions); shared by the CLI, the login, directory sync and the console.

    disable ──► users.disabled_at = now
            ──► every SSO session ended (tokens revoked, back-channel logout queued: ``end_user_sessions``)
            ──► every other token revoked (offline refresh tokens too)
    enable  ──► users.disabled_at = None (factors were never touched, so they work again)
    unlock  ──► the password and second-factor failure counters of the account forgotten

A directory account disabled here keeps ``directory_accounts.disabled_reason`` empty, which is what the sync
reads as "an administrator disabled it": the sync never re-enables it (``directory_sync.plan``). One that the
sync disabled (the directory says so) cannot be enabled here: the next run would disable it again, so the
directory is where it is enabled.
"""

from __future__ import annotations

import hashlib
import unicodedata
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from idp import audit
from idp.accounts import throttle
from idp.models import AttemptCounter, DirectoryAccount, Group, RoleGrant, SsoSession, User
from idp.oauth.logout import end_session, end_user_sessions
from idp.oauth.tokens import revoke_user_tokens

MAX_USERNAME_LENGTH = 255


class UserError(ValueError):
    """A user cannot be created or changed as asked; the message says why."""


def normalize_username(username: str) -> str:
    """Usernames compare case-insensitively and independent of Unicode composition."""
    return unicodedata.normalize("NFKC", username).strip().casefold()


def find_user(db: Session, username: str) -> User | None:
    return db.scalar(select(User).where(User.username == normalize_username(username)))


def ensure_group(db: Session, name: str) -> Group:
    group = db.scalar(select(Group).where(Group.name == name))
    if group is None:
        group = Group(name=name)
        db.add(group)
        db.flush()
    return group


def create_user(
    db: Session,
    username: str,
    *,
    password_hash: str | None = None,
    email: str | None = None,
    display_name: str | None = None,
    given_name: str | None = None,
    family_name: str | None = None,
    groups: Iterable[str] = (),
) -> User:
    normalized = normalize_username(username)
    if not normalized or len(normalized) > MAX_USERNAME_LENGTH or any(ch.isspace() for ch in normalized):
        raise UserError("A username must be 1 to 255 characters without spaces.")
    if find_user(db, normalized) is not None:
        raise UserError(f"The username {normalized!r} is taken.")
    user = User(
        sub=str(uuid.uuid4()),
        username=normalized,
        password_hash=password_hash,
        email=email,
        email_verified=False,
        display_name=display_name,
        given_name=given_name,
        family_name=family_name,
    )
    user.groups = [ensure_group(db, name) for name in dict.fromkeys(groups)]
    db.add(user)
    db.flush()
    return user


def grant_role(db: Session, user: User, role: str) -> None:
    if db.scalar(select(RoleGrant).where(RoleGrant.role == role, RoleGrant.user_id == user.id)) is None:
        db.add(RoleGrant(role=role, user_id=user.id))


def roles_of(db: Session, user: User) -> set[str]:
    group_ids = [group.id for group in user.groups]
    rows = db.scalars(
        select(RoleGrant.role).where((RoleGrant.user_id == user.id) | (RoleGrant.group_id.in_(group_ids)))
    )
    return set(rows)


def _matching(query: str) -> ColumnElement[bool] | None:
    words = query.strip()[:255]
    if not words:
        return None
    # autoescape: a % or _ typed into the search box is a character, not a wildcard.
    needle = words.lower()
    return or_(*(func.lower(column).contains(needle, autoescape=True) for column in (
        User.username, User.display_name, User.email, User.given_name, User.family_name)))


def count_users(db: Session, query: str) -> int:
    """How many users ``search_users`` finds for ``query``."""
    counted = select(func.count()).select_from(User)
    condition = _matching(query)
    return db.scalar(counted if condition is None else counted.where(condition)) or 0


def search_users(db: Session, query: str, *, offset: int, limit: int) -> list[User]:
    """Users whose username, name or email contains ``query`` (all users for an empty one), by username."""
    listed = select(User).order_by(User.username).offset(offset).limit(limit)
    condition = _matching(query)
    return list(db.scalars(listed if condition is None else listed.where(condition)))


def throttle_keys(user: User) -> list[str]:
    """The failure counters that can block this account: the password counter of its username (keyed as in
    ``idp.accounts.authenticate``), its second-factor counter and its SMS-code counter. Address counters are
    not the account's: unlocking one user must not lift the brake on an address that tries many accounts."""
    name_key = hashlib.sha256(normalize_username(user.username).encode()).hexdigest()[:32]
    return [f"password:account:{name_key}", f"factor:user:{user.id}", f"sms:user:{user.id}"]


def lock_state(db: Session, user: User, now: datetime) -> list[AttemptCounter]:
    """The account's counters that hold failures, for the service desk's view (blocked or not)."""
    return [row for row in throttle.counters(db, throttle_keys(user))
            if row.failures or (row.blocked_until is not None and row.blocked_until > now)]


def directory_disabled(db: Session, user: User) -> str | None:
    """Why the directory sync disabled this account (``disabled_in_directory``, ``removed_from_directory``), or
    None when it did not (a local account, an enabled one, or one an administrator disabled)."""
    link = db.get(DirectoryAccount, user.id)
    return link.disabled_reason if link is not None and user.disabled_at is not None else None


@dataclass(frozen=True)
class Disabled:
    sessions: int
    tokens: int


def disable_user(db: Session, services: Any, user: User, *, now: datetime, origin: audit.Origin = audit.CLI,
                 actor: str | None = None) -> Disabled:
    """Disable ``user``: no sign-in, every session ended and every token revoked; audited as ``user.disabled``.
    The caller wakes the back-channel sender after the transaction (``ctx.sender.wake()``) where it runs one."""
    if not user.is_active:
        raise UserError(f"The account {user.username!r} is already disabled.")
    user.disabled_at = now
    sessions = end_user_sessions(db, services, user.id, reason="account_disabled", now=now, origin=origin,
                                 actor=actor)
    tokens = revoke_user_tokens(db, user.id, "account_disabled", now)
    audit.record(db, "user.disabled", origin=origin, actor=actor, subject=user.username, source=user.source,
                 before={"active": True}, after={"active": False}, sessions_ended=sessions, tokens_revoked=tokens,
                 at=now)
    return Disabled(sessions=sessions, tokens=tokens)


def enable_user(db: Session, user: User, *, now: datetime, origin: audit.Origin = audit.CLI,
                actor: str | None = None) -> None:
    """Enable ``user`` again; refused for an account its directory disabled (see the module docstring)."""
    if user.is_active:
        raise UserError(f"The account {user.username!r} is already enabled.")
    reason = directory_disabled(db, user)
    if reason is not None:
        raise UserError(f"The directory {user.source!r} disabled {user.username!r} ({reason}); enable it there, "
                        "the next sync enables it here.")
    user.disabled_at = None
    audit.record(db, "user.enabled", origin=origin, actor=actor, subject=user.username, source=user.source,
                 before={"active": False}, after={"active": True}, at=now)


def unlock_user(db: Session, user: User, *, now: datetime, origin: audit.Origin = audit.CLI,
                actor: str | None = None) -> int:
    """Forget the account's failed attempts (password, second factor, SMS codes); audited as ``user.unlocked``.
    Returns how many counters held failures."""
    keys = throttle_keys(user)
    before = {row.key.split(":", 1)[0]: row.failures for row in throttle.counters(db, keys) if row.failures}
    cleared = throttle.clear(db, keys)
    audit.record(db, "user.unlocked", origin=origin, actor=actor, subject=user.username, counters_cleared=cleared,
                 before={"failures": before}, after={"failures": {}}, at=now)
    return cleared


def end_sessions(db: Session, services: Any, user: User, *, now: datetime, origin: audit.Origin = audit.CLI,
                 actor: str | None = None, session_id: int | None = None) -> int:
    """End one session of ``user`` (``session_id``) or all of them; each ended session has its ``logout`` row
    (reason ``ended_by_admin``). Returns how many ended; a session of another user counts as none."""
    if session_id is None:
        return end_user_sessions(db, services, user.id, reason="ended_by_admin", now=now, origin=origin, actor=actor)
    row = db.get(SsoSession, session_id)
    if row is None or row.user_id != user.id or row.ended_at is not None:
        return 0
    end_session(db, services, row, reason="ended_by_admin", now=now, origin=origin, actor=actor)
    return 1

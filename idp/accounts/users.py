"""Users and groups: creation and lookup, shared by the CLI, the login and (later) directory sync."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import Group, RoleGrant, User

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

"""Granting and revoking console roles, to users and to groups; shared by ``/admin/groups`` and ``idp roles``.

Only administrators call these (``Action.MANAGE_ROLES``); the CLI is the operator's. One rule protects against
locking everybody out: a revocation that would leave no enabled account holding ``admin`` (directly or through
a group) is refused, whoever asks. Disabling an account is guarded the same way (``leaves_an_admin``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from idp import audit
from idp.accounts.users import roles_of
from idp.admin.roles import ADMIN, ROLES
from idp.models import Group, GroupMember, RoleGrant, User


class RoleError(ValueError):
    """A grant or revocation cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class GrantView:
    """One grant as the console and ``idp roles list`` show it."""

    id: int
    role: str
    username: str | None
    group: str | None
    created_at: datetime

    def as_json(self) -> dict[str, str | int | None]:
        return {"id": self.id, "role": self.role, "username": self.username, "group": self.group,
                "created_at": self.created_at.isoformat()}


def check_role(role: str) -> str:
    if role not in ROLES:
        raise RoleError(f"Unknown role {role!r}; the roles are {', '.join(ROLES)}.")
    return role


def list_grants(db: Session) -> list[GrantView]:
    rows = db.execute(
        select(RoleGrant, User.username, Group.name)
        .outerjoin(User, User.id == RoleGrant.user_id)
        .outerjoin(Group, Group.id == RoleGrant.group_id)
        .order_by(RoleGrant.role, Group.name, User.username, RoleGrant.id)
    ).all()
    return [GrantView(grant.id, grant.role, username, group, grant.created_at) for grant, username, group in rows]


def _target(user: User | None, group: Group | None) -> tuple[str, dict[str, str]]:
    if (user is None) == (group is None):
        raise RoleError("A role is granted to exactly one user or one group.")
    if user is not None:
        return user.username, {"target": "user"}
    assert group is not None
    return group.name, {"target": "group"}


def _holder(user: User | None, group: Group | None) -> ColumnElement[bool]:
    if user is not None:
        return RoleGrant.user_id == user.id
    assert group is not None
    return RoleGrant.group_id == group.id


def _roles_of_target(db: Session, user: User | None, group: Group | None) -> list[str]:
    if user is not None:
        return sorted(roles_of(db, user))
    assert group is not None
    return sorted(db.scalars(select(RoleGrant.role).where(RoleGrant.group_id == group.id)))


def grant(db: Session, role: str, *, user: User | None = None, group: Group | None = None, now: datetime,
          origin: audit.Origin = audit.CLI, actor: str | None = None) -> RoleGrant:
    """Grant ``role`` to ``user`` or ``group``; granting one it already holds directly is refused."""
    check_role(role)
    name, details = _target(user, group)
    if db.scalar(select(RoleGrant).where(RoleGrant.role == role, _holder(user, group))) is not None:
        raise RoleError(f"{name!r} already holds the role {role!r}.")
    before = _roles_of_target(db, user, group)
    row = RoleGrant(role=role, user_id=user.id if user else None, group_id=group.id if group else None,
                    created_at=now)
    db.add(row)
    db.flush()
    audit.record(db, "role.granted", origin=origin, actor=actor, subject=name, role=role, grant=row.id,
                 before=before, after=_roles_of_target(db, user, group), at=now, **details)
    return row


def active_admins(db: Session, *, without_grant: int | None = None, without_user: int | None = None) -> set[int]:
    """The ids of enabled users holding ``admin``, directly or through a group, leaving out one grant or one
    user (to ask "would anybody be left?")."""
    grants = select(RoleGrant.user_id, RoleGrant.group_id).where(RoleGrant.role == ADMIN)
    if without_grant is not None:
        grants = grants.where(RoleGrant.id != without_grant)
    user_ids: set[int] = set()
    group_ids: set[int] = set()
    for user_id, group_id in db.execute(grants):
        if user_id is not None:
            user_ids.add(user_id)
        if group_id is not None:
            group_ids.add(group_id)
    if group_ids:
        user_ids |= set(db.scalars(select(GroupMember.user_id).where(GroupMember.group_id.in_(group_ids))))
    if without_user is not None:
        user_ids.discard(without_user)
    if not user_ids:
        return set()
    return set(db.scalars(select(User.id).where(User.id.in_(user_ids), User.disabled_at.is_(None))))


def leaves_an_admin(db: Session, user: User) -> bool:
    """Whether an enabled administrator remains if ``user`` is disabled."""
    return bool(active_admins(db, without_user=user.id))


def revoke(db: Session, row: RoleGrant, *, now: datetime, origin: audit.Origin = audit.CLI,
           actor: str | None = None) -> None:
    """Revoke one grant; refused when it is what keeps the last enabled administrator."""
    if row.role == ADMIN and active_admins(db) and not active_admins(db, without_grant=row.id):
        raise RoleError("This is the last grant that gives an enabled account the role 'admin'; grant it to "
                        "someone else first.")
    user = db.get(User, row.user_id) if row.user_id is not None else None
    group = db.get(Group, row.group_id) if row.group_id is not None else None
    name, details = _target(user, group)
    before = _roles_of_target(db, user, group)
    db.delete(row)
    db.flush()
    audit.record(db, "role.revoked", origin=origin, actor=actor, subject=name, role=row.role, grant=row.id,
                 before=before, after=_roles_of_target(db, user, group), at=now, **details)


def find_grant(db: Session, role: str, *, user: User | None = None, group: Group | None = None) -> RoleGrant:
    check_role(role)
    name, _ = _target(user, group)
    row = db.scalar(select(RoleGrant).where(RoleGrant.role == role, _holder(user, group)))
    if row is None:
        raise RoleError(f"{name!r} does not hold the role {role!r} directly.")
    return row


def groups_with_counts(db: Session) -> list[tuple[Group, int]]:
    """Every group with its number of members, by name."""
    counts = (select(GroupMember.group_id, func.count().label("members")).group_by(GroupMember.group_id)
              .subquery())
    rows = db.execute(select(Group, func.coalesce(counts.c.members, 0))
                      .outerjoin(counts, counts.c.group_id == Group.id).order_by(Group.name)).all()
    return [(group, int(members)) for group, members in rows]

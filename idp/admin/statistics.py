"""The numbers behind the console's overview: sign-ins per hour, and who has a second factor, per group.

Both queries are bounded whatever the size of the town hall: sign-ins are counted in the database, one
``COUNT`` per hour of a fixed window over the indexed ``audit_events.at`` (no rows are fetched), and the
groups are the largest ``MAX_GROUPS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, exists, func, or_, select
from sqlalchemy.orm import Session

from idp.models import AuditEvent, Group, GroupMember, SmsFactor, TotpFactor, User, WebAuthnCredential

HOURS = 72
MAX_GROUPS = 20


@dataclass(frozen=True)
class HourCount:
    start: datetime
    """The hour's start (UTC)."""
    count: int


def signins_per_hour(db: Session, now: datetime, hours: int = HOURS) -> list[HourCount]:
    """Successful sign-ins (``login`` audit rows: a session began or was resumed with a password or passkey)
    in each of the last ``hours`` whole hours, the current one included, oldest first."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    starts = [end - timedelta(hours=hours - index) for index in range(hours)]
    columns = [func.count(case((and_(AuditEvent.at >= start, AuditEvent.at < start + timedelta(hours=1)), 1)))
               for start in starts]
    row = db.execute(select(*columns).where(AuditEvent.event == "login", AuditEvent.outcome == "success",
                                            AuditEvent.at >= starts[0], AuditEvent.at < end)).one()
    return [HourCount(start, int(count or 0)) for start, count in zip(starts, row, strict=True)]


@dataclass(frozen=True)
class FactorShare:
    group: str
    """A group's name; empty for "all users"."""
    members: int
    with_factor: int

    @property
    def percent(self) -> float:
        return 100.0 * self.with_factor / self.members if self.members else 0.0


def _has_factor() -> ColumnElement[bool]:
    # The factors that count at sign-in: confirmed apps and phones, security keys not blocked as cloned.
    return or_(
        exists().where(TotpFactor.user_id == User.id, TotpFactor.confirmed_at.is_not(None)),
        exists().where(SmsFactor.user_id == User.id, SmsFactor.confirmed_at.is_not(None)),
        exists().where(WebAuthnCredential.user_id == User.id, WebAuthnCredential.flagged_at.is_(None)),
    )


def factor_shares(db: Session, limit: int = MAX_GROUPS) -> list[FactorShare]:
    """All enabled users, then the ``limit`` largest groups: how many enabled members have a second factor."""
    has_factor = _has_factor()
    with_factor = func.count(case((has_factor, User.id)))
    total, covered = db.execute(select(func.count(User.id), with_factor).where(User.disabled_at.is_(None))).one()
    shares = [FactorShare("", int(total or 0), int(covered or 0))]
    members = func.count(User.id)
    rows = db.execute(
        select(Group.name, members, with_factor)
        .join(GroupMember, GroupMember.group_id == Group.id).join(User, User.id == GroupMember.user_id)
        .where(User.disabled_at.is_(None)).group_by(Group.id, Group.name)
        .order_by(members.desc(), Group.name).limit(limit)
    ).all()
    shares.extend(FactorShare(name, int(count), int(factor or 0)) for name, count, factor in rows)
    return shares

"""Small helpers for the directory tests: run a sync, read back accounts, groups and history."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from sqlalchemy import func, select

from directory_sync.engine import SyncReport, run_sync
from idp.config import DirectorySource
from idp.db import unit_of_work
from idp.models import AuditEvent, DirectoryAccount, DirectorySyncRun, Group, GroupMember, User
from idp.services import Services


def toml_value(value: Any) -> str:
    """A TOML literal for the values a source table holds (JSON strings, arrays and booleans are TOML too)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }"
    return json.dumps(value, ensure_ascii=False)


def toml_sources(sources: list[dict[str, Any]]) -> str:
    lines = []
    for source in sources:
        lines.append("[[directory.sources]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in source.items()]
        lines.append("")
    return "\n".join(lines)


def source_of(services: Services, **changes: Any) -> DirectorySource:
    source = services.settings.directory.sources[0]
    return dataclasses.replace(source, **changes) if changes else source


def sync(services: Services, **options: Any) -> SyncReport:
    source = options.pop("source", None) or source_of(services)
    return run_sync(services, source, **options)


def synced(services: Services, **options: Any) -> SyncReport:
    """A sync that must succeed."""
    report = sync(services, **options)
    assert report.status == "success", (report.status, report.message, report.errors)
    return report


@dataclasses.dataclass
class Account:
    id: int
    sub: str
    username: str
    display_name: str | None
    email: str | None
    source: str
    disabled: bool
    password_hash: str | None
    dn: str | None
    phone: str | None
    disabled_reason: str | None
    groups: set[str]


def account(services: Services, username: str) -> Account | None:
    with unit_of_work(services.sessions) as db:
        user = db.scalar(select(User).where(User.username == username))
        if user is None:
            return None
        link = db.get(DirectoryAccount, user.id)
        groups = set(db.scalars(select(Group.name).join(GroupMember, GroupMember.group_id == Group.id)
                                .where(GroupMember.user_id == user.id)))
        return Account(user.id, user.sub, user.username, user.display_name, user.email, user.source,
                       user.disabled_at is not None, user.password_hash, link.dn if link else None,
                       link.phone if link else None, link.disabled_reason if link else None, groups)


def get(services: Services, username: str) -> Account:
    found = account(services, username)
    assert found is not None, f"no account {username}"
    return found


def usernames(services: Services, *, active: bool | None = None) -> set[str]:
    with unit_of_work(services.sessions) as db:
        query = select(User.username)
        if active is not None:
            query = query.where(User.disabled_at.is_(None) if active else User.disabled_at.is_not(None))
        return set(db.scalars(query))


def users_table(services: Services) -> list[tuple[Any, ...]]:
    """Every user row with the columns a sync may change, to compare before and after."""
    with unit_of_work(services.sessions) as db:
        return [tuple(row) for row in db.execute(
            select(User.id, User.sub, User.username, User.email, User.display_name, User.disabled_at)
            .order_by(User.id))]


def memberships_table(services: Services) -> set[tuple[int, int]]:
    with unit_of_work(services.sessions) as db:
        return {(row.group_id, row.user_id) for row in db.execute(select(GroupMember.group_id, GroupMember.user_id))}


def runs(services: Services) -> list[DirectorySyncRun]:
    with unit_of_work(services.sessions) as db:
        return list(db.scalars(select(DirectorySyncRun).order_by(DirectorySyncRun.id)))


def audit_events(services: Services, event: str) -> list[AuditEvent]:
    with unit_of_work(services.sessions) as db:
        return list(db.scalars(select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)))


def count(services: Services, model: Any) -> int:
    with unit_of_work(services.sessions) as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)

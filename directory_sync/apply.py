"""Writing a plan to the database, inside the run's one transaction.

Disabling goes through the one way the IdP ends access: every SSO session of the account ends
(``idp.oauth.logout.end_user_sessions``: its tokens are revoked and back-channel logout is queued for its
relying parties), and every other token of the account is revoked (``revoke_user_tokens``), so that a
departed employee keeps nothing, not even an ``offline_access`` refresh token (security case 51).
Re-enabling only clears ``disabled_at``: second factors were never touched, so they work again as before.

Bulk steps use Core statements (INSERT ... RETURNING in batches, executemany UPDATEs): a first sync of a
town hall creates thousands of rows, and the ORM's per-object bookkeeping would dominate the run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from directory_sync.phones import apply_phones
from directory_sync.plan import Plan, released_name
from directory_sync.snapshot import Progress
from idp import audit
from idp.models import DirectoryAccount, Group, GroupMember, User
from idp.models import DirectoryGroup as DirectoryGroupLink
from idp.oauth.logout import end_user_sessions
from idp.oauth.tokens import revoke_user_tokens

USER_FIELDS = ("email", "display_name", "given_name", "family_name")


def _chunks(items: list[Any], size: int = 1000) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def apply_plan(db: Session, services: Any, plan: Plan, *, now: datetime, progress: Progress) -> None:
    """Write ``plan``; ``services`` is the IdP's services container (keys for logout tokens, settings)."""
    source = plan.source
    progress.phase("applying", total=len(plan.creates) + len(plan.updates) + len(plan.disables) + len(plan.enables)
                   + len(plan.deletes) + plan.memberships_changed)

    for account in plan.deletes:
        # ON DELETE CASCADE removes the directory link, memberships, sessions, tokens and factors with it.
        db.execute(delete(User).where(User.id == account.user_id))
        audit.record(db, "directory.account_deleted", subject=account.username, source=source,
                     disabled_since=account.disabled_at.isoformat() if account.disabled_at else None, at=now)
        progress.advance()

    for account in plan.releases:
        db.execute(update(User).where(User.id == account.user_id).values(username=released_name(account),
                                                                         updated_at=now))
        audit.record(db, "directory.username_released", subject=account.username, source=source,
                     new_username=released_name(account), at=now)

    renames = [item for item in plan.updates if "username" in item.changes]
    if renames:
        # Two steps, so that two accounts may swap usernames in one run without hitting the unique index.
        db.connection().execute(update(User).where(User.id == bindparam("uid")).values(username=bindparam("temporary")),
                   [{"uid": item.account.user_id, "temporary": f"~directory-rename~{item.account.user_id}"}
                    for item in renames])
    if plan.updates:
        db.connection().execute(
            update(User).where(User.id == bindparam("uid")).values(
                username=bindparam("new_username"), email=bindparam("new_email"),
                display_name=bindparam("new_display_name"), given_name=bindparam("new_given_name"),
                family_name=bindparam("new_family_name"), updated_at=now),
            [{"uid": item.account.user_id,
              "new_username": item.entry.username if "username" in item.changes else item.account.username,
              **{f"new_{name}": getattr(item.entry, name) for name in USER_FIELDS}} for item in plan.updates],
        )
        for item in renames:
            audit.record(db, "directory.account_renamed", subject=item.entry.username, source=source,
                         old_username=item.account.username, at=now)
        progress.advance(len(plan.updates))
    links = [(item.account.user_id, item.entry) for item in plan.updates] + \
        [(account.user_id, entry) for account, entry in plan.touches]
    if links:
        db.connection().execute(
            update(DirectoryAccount).where(DirectoryAccount.user_id == bindparam("uid")).values(
                dn=bindparam("new_dn"), marker=bindparam("new_marker"), phone=bindparam("new_phone"), synced_at=now),
            [{"uid": user_id, "new_dn": entry.dn, "new_marker": entry.marker, "new_phone": entry.phone}
             for user_id, entry in links],
        )

    _create_accounts(db, plan, now, progress)

    for account in plan.enables:
        db.execute(update(User).where(User.id == account.user_id).values(disabled_at=None, updated_at=now))
        db.execute(update(DirectoryAccount).where(DirectoryAccount.user_id == account.user_id)
                   .values(disabled_reason=None))
        audit.record(db, "directory.account_enabled", subject=account.username, source=source, at=now)
        progress.advance()

    for disable in plan.disables:
        account = disable.account
        db.execute(update(User).where(User.id == account.user_id).values(disabled_at=now, updated_at=now))
        db.execute(update(DirectoryAccount).where(DirectoryAccount.user_id == account.user_id)
                   .values(disabled_reason=disable.reason))
        sessions = end_user_sessions(db, services, account.user_id, reason=disable.reason, now=now, origin=audit.CLI)
        tokens = revoke_user_tokens(db, account.user_id, disable.reason, now)
        audit.record(db, "directory.account_disabled", subject=account.username, source=source,
                     reason=disable.reason, sessions_ended=sessions, tokens_revoked=tokens, at=now)
        progress.advance()

    for account, reason in plan.reasons:
        db.execute(update(DirectoryAccount).where(DirectoryAccount.user_id == account.user_id)
                   .values(disabled_reason=reason))

    _apply_groups(db, plan, now, progress)
    apply_phones(db, plan, now)


def _create_accounts(db: Session, plan: Plan, now: datetime, progress: Progress) -> None:
    for batch in _chunks(plan.creates):
        rows = db.connection().execute(
            insert(User).returning(User.id, User.external_id),
            [{"sub": str(uuid.uuid4()), "username": entry.username, "email": entry.email, "email_verified": False,
              "display_name": entry.display_name, "given_name": entry.given_name, "family_name": entry.family_name,
              "password_hash": None, "source": plan.source, "external_id": entry.external_id, "created_at": now,
              "updated_at": now} for entry in batch],
        ).all()
        user_ids = {external_id: user_id for user_id, external_id in rows}
        db.connection().execute(insert(DirectoryAccount), [
            {"user_id": user_ids[entry.external_id], "source": plan.source, "external_id": entry.external_id,
             "dn": entry.dn, "marker": entry.marker, "phone": entry.phone, "disabled_reason": None,
             "synced_at": now} for entry in batch])
        for entry in batch:
            audit.record(db, "directory.account_created", subject=entry.username, source=plan.source,
                         external_id=entry.external_id, at=now)
        progress.advance(len(batch))


def _apply_groups(db: Session, plan: Plan, now: datetime, progress: Progress) -> None:
    source = plan.source
    for state in plan.group_deletes:
        # ON DELETE CASCADE removes the link and the memberships with it.
        db.execute(delete(Group).where(Group.id == state.group_id))
    for state in plan.group_empties:
        # Kept for its role grants; unlinked, so that it is linked again if the directory lists it again.
        db.execute(delete(DirectoryGroupLink).where(DirectoryGroupLink.group_id == state.group_id))
    for state, name in plan.group_renames:
        db.execute(update(Group).where(Group.id == state.group_id).values(name=name, display_name=name))
    if plan.group_creates:
        rows = db.connection().execute(insert(Group).returning(Group.id, Group.external_id), [
            {"name": group.name, "display_name": group.name, "source": source, "external_id": group.external_id,
             "created_at": now} for group in plan.group_creates]).all()
        created = {external_id: group_id for group_id, external_id in rows}
        db.connection().execute(insert(DirectoryGroupLink), [
            _group_link(created[group.external_id], source, group, plan) for group in plan.group_creates])
    relinks = [(state, group) for state, group in plan.group_refreshes if not state.linked]
    if relinks:
        db.connection().execute(insert(DirectoryGroupLink), [
            _group_link(state.group_id, source, group, plan) for state, group in relinks])
    refreshes = [(state, group) for state, group in plan.group_refreshes if state.linked]
    if refreshes:
        db.connection().execute(
            update(DirectoryGroupLink).where(DirectoryGroupLink.group_id == bindparam("gid")).values(
                dn=bindparam("new_dn"), marker=bindparam("new_marker"), member_dns=bindparam("new_member_dns"),
                member_uids=bindparam("new_member_uids")),
            [{"gid": state.group_id, "new_dn": group.dn, "new_marker": plan.group_markers.get(group.external_id),
              "new_member_dns": list(group.member_dns), "new_member_uids": list(group.member_uids)}
             for state, group in refreshes])
    if not (plan.member_adds or plan.member_removes):
        return
    group_ids = {external_id: group_id for external_id, group_id in
                 db.execute(select(DirectoryGroupLink.external_id, DirectoryGroupLink.group_id)
                            .where(DirectoryGroupLink.source == source))}
    group_ids.update({state.external_id: state.group_id for state in plan.group_empties})
    user_ids = {external_id: user_id for external_id, user_id in
                db.execute(select(DirectoryAccount.external_id, DirectoryAccount.user_id)
                           .where(DirectoryAccount.source == source))}
    removes = [{"gid": group_ids[g], "uid": user_ids[u]} for g, u in plan.member_removes
               if g in group_ids and u in user_ids]
    for batch in _chunks(removes):
        db.connection().execute(delete(GroupMember).where(GroupMember.group_id == bindparam("gid"),
                                                          GroupMember.user_id == bindparam("uid")), batch)
    adds = [{"group_id": group_ids[g], "user_id": user_ids[u]} for g, u in sorted(plan.member_adds)
            if g in group_ids and u in user_ids]
    for batch in _chunks(adds):
        db.connection().execute(insert(GroupMember), batch)
    progress.advance(plan.memberships_changed)


def _group_link(group_id: int, source: str, group: Any, plan: Plan) -> dict[str, Any]:
    return {"group_id": group_id, "source": source, "external_id": group.external_id, "dn": group.dn,
            "marker": plan.group_markers.get(group.external_id), "member_dns": list(group.member_dns),
            "member_uids": list(group.member_uids)}

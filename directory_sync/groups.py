"""Planning the groups of a run: which to create, rename, refresh, empty or delete, and which memberships change.

Groups are matched by the directory's id, like accounts. Their direct members are stored
(``directory_groups``), so that an incremental run re-reads only the groups whose marker moved and still
resolves nesting over all of them; it recomputes effective memberships only for the groups a change can reach
(``membership.affected_groups``).
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from directory_sync.changes import AccountState, GroupState, Plan
from directory_sync.entries import DirectoryGroup, normalize_dn
from directory_sync.membership import affected_groups, effective_members
from directory_sync.snapshot import Snapshot
from idp.models import DirectoryAccount, Group, GroupMember, RoleGrant, User
from idp.models import DirectoryGroup as DirectoryGroupLink


def load_groups(db: Session, source: str) -> dict[str, GroupState]:
    """The source's groups by external id: linked ones with their stored members, and unlinked ones (the
    directory stopped listing them while a role was granted to them) so that they are linked again when
    they come back."""
    with_roles = set(db.scalars(select(RoleGrant.group_id).where(RoleGrant.group_id.is_not(None))))
    rows = db.connection().execute(
        select(Group.id, Group.name, Group.external_id.label("group_external_id"), DirectoryGroupLink.external_id,
               DirectoryGroupLink.dn, DirectoryGroupLink.marker, DirectoryGroupLink.member_dns,
               DirectoryGroupLink.member_uids)
        .outerjoin(DirectoryGroupLink, DirectoryGroupLink.group_id == Group.id)
        .where(Group.source == source)
    )
    groups = {}
    for row in rows:
        linked = row.external_id is not None
        external_id = row.external_id if linked else row.group_external_id
        if not external_id:
            continue
        groups[external_id] = GroupState(
            group_id=row.id, external_id=external_id, name=row.name, has_roles=row.id in with_roles,
            entry=DirectoryGroup(external_id=external_id, dn=row.dn or "", name=row.name,
                                 member_dns=tuple(row.member_dns or ()), member_uids=tuple(row.member_uids or ())),
            marker=row.marker, linked=linked)
    return groups


def load_memberships(db: Session, source: str, only: set[str] | None = None) -> dict[str, set[str]]:
    """Current memberships: group external id → user external ids (with ``only``, of those groups)."""
    # The accounts' source is checked here rather than in SQL: with it in the WHERE clause, PostgreSQL's estimate
    # for "accounts of this source" (stale right after a first sync) can make it join every account with every
    # selected group; without it, the plan goes group → members → account by primary key.
    query = (
        select(DirectoryGroupLink.external_id, DirectoryAccount.external_id, DirectoryAccount.source)
        .select_from(GroupMember)
        .join(DirectoryGroupLink, DirectoryGroupLink.group_id == GroupMember.group_id)
        .join(DirectoryAccount, DirectoryAccount.user_id == GroupMember.user_id)
        .where(DirectoryGroupLink.source == source)
    )
    selections = [query] if only is None else [
        query.where(DirectoryGroupLink.external_id.in_(chunk)) for chunk in _chunked(sorted(only), 500)]
    members: dict[str, set[str]] = {}
    for selection in selections:
        for group_id, user_id, user_source in db.connection().execute(selection):
            if user_source == source:
                members.setdefault(group_id, set()).add(user_id)
    return members


def _chunked(items: list[str], size: int) -> list[list[str]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def name_holders(db: Session, model: type[User] | type[Group], names: set[str]) -> dict[str, tuple[int, str]]:
    """Who holds each of ``names`` now: name → (row id, source)."""
    found: dict[str, tuple[int, str]] = {}
    ordered = sorted(names)
    column = model.username if model is User else model.name  # type: ignore[union-attr]
    for start in range(0, len(ordered), 500):
        chunk = ordered[start:start + 500]
        for row_id, name, source in db.execute(select(model.id, column, model.source).where(column.in_(chunk))):
            found[name] = (row_id, source)
    return found


def plan_groups(db: Session, plan: Plan, source: str, accounts: dict[str, AccountState], snapshot: Snapshot,
                final_usernames: dict[str, str]) -> None:
    """Add the group changes and the membership differences to ``plan`` (whose account changes are planned and
    whose usernames are resolved: ``final_usernames`` maps every account that will exist to its username)."""
    current = load_groups(db, source)
    plan.groups_before = sum(1 for state in current.values() if state.linked)
    plan.groups_listed = len(snapshot.group_listing)
    plan.group_markers = {key: presence.marker for key, presence in snapshot.group_listing.items()}
    read = snapshot.groups
    holders = name_holders(db, Group, {group.name for group in read.values()}) if read else {}
    # Entries that moved in this run, old DN → new DN. Active Directory shows a moved member under its new DN
    # without changing the group (links point at objects, not names), so a group that is not re-read keeps
    # the old DN in its stored members: it is rewritten here, as the directory itself would show it.
    moved = {normalize_dn(update.changes["dn"][0] or ""): normalize_dn(update.entry.dn)
             for update in plan.updates if "dn" in update.changes}
    moved.update({normalize_dn(current[key].entry.dn): normalize_dn(group.dn) for key, group in read.items()
                  if key in current and current[key].linked and current[key].entry.dn
                  and normalize_dn(current[key].entry.dn) != normalize_dn(group.dn)})
    graph: dict[str, DirectoryGroup] = {}
    for external_id in snapshot.group_listing:
        state = current.get(external_id)
        if external_id not in read:
            if state is not None and state.linked:
                entry = state.entry
                if moved and any(dn in moved for dn in entry.member_dns):
                    entry = replace(entry, member_dns=tuple(moved.get(dn, dn) for dn in entry.member_dns))
                    plan.group_refreshes.append((state, entry))
                graph[external_id] = entry
            continue
        group = read[external_id]
        holder = holders.get(group.name)
        if holder is not None and (state is None or holder[0] != state.group_id):
            # Held by a local group, another source's, or (until it is renamed) another of this source's.
            plan.errors.append(f"group {group.name}: the name belongs to another group ({holder[1]}); "
                               + ("not mirrored" if state is None else f"kept as {state.name}"))
            if state is None:
                continue
            group = DirectoryGroup(group.external_id, group.dn, state.name, group.member_dns, group.member_uids)
        graph[external_id] = group
        if state is None:
            plan.group_creates.append(group)
            holders[group.name] = (-1, source)
            continue
        if state.name != group.name:
            plan.group_renames.append((state, group.name))
        if not state.linked or state.entry != group or state.marker != snapshot.group_listing[external_id].marker:
            plan.group_refreshes.append((state, group))
    for external_id, state in current.items():
        if external_id not in snapshot.group_listing and state.linked:
            (plan.group_empties if state.has_roles else plan.group_deletes).append(state)
    plan.group_names = {external_id: group.name for external_id, group in graph.items()}
    plan.group_names.update({state.external_id: state.name for state in current.values()})
    plan.user_names = dict(final_usernames)

    if snapshot.mode == "full":
        targets: set[str] | None = None
    else:
        targets = _targets(plan, graph, moved, final_usernames, accounts)
        if not targets:
            return
    plan.memberships_checked = True
    deleted = {account.external_id for account in plan.deletes}
    existing = {external_id for external_id in accounts if external_id not in deleted}
    existing |= {entry.external_id for entry in plan.creates}
    user_by_dn = {normalize_dn(presence.dn): external_id for external_id, presence in snapshot.present.items()
                  if external_id in existing}
    user_by_username = {name: external_id for external_id, name in final_usernames.items() if external_id in existing}
    desired = effective_members(graph, user_by_dn, user_by_username, only=targets)
    have = load_memberships(db, source, only=targets)
    gone_groups = {state.external_id for state in plan.group_deletes}
    empty: set[str] = set()
    # Compared group by group as sets of ids: only the differences become (group, user) pairs.
    for group_id in desired.keys() | have.keys():
        wanted, current_members = desired.get(group_id, empty), have.get(group_id, empty)
        if wanted == current_members:
            continue
        plan.member_adds.update((group_id, user_id) for user_id in wanted - current_members)
        if group_id not in gone_groups:
            plan.member_removes.update((group_id, user_id) for user_id in current_members - wanted
                                       if user_id not in deleted)


def _targets(plan: Plan, graph: dict[str, DirectoryGroup], moved: dict[str, str], final_usernames: dict[str, str],
             accounts: dict[str, AccountState]) -> set[str]:
    """The groups an incremental run must recompute (see ``membership.affected_groups``)."""
    changed_groups = {group.external_id for group in plan.group_creates}
    for state, group in plan.group_refreshes:
        same_members = (state.entry.member_dns, state.entry.member_uids) == (group.member_dns, group.member_uids)
        if not state.linked or not same_members or normalize_dn(state.entry.dn) != normalize_dn(group.dn):
            changed_groups.add(state.external_id)
    gone = plan.group_deletes + plan.group_empties
    changed_dns = {normalize_dn(state.entry.dn) for state in gone if state.entry.dn}
    changed_dns |= set(moved) | set(moved.values())
    changed_dns |= {normalize_dn(entry.dn) for entry in plan.creates}
    changed_dns |= {normalize_dn(account.dn) for account in plan.deletes}
    changed_uids = {entry.username for entry in plan.creates} | {account.username for account in plan.deletes}
    for update in plan.updates:
        if "username" in update.changes:
            changed_uids |= {update.account.username, final_usernames.get(update.account.external_id, "")}
    changed_uids |= {account.username for account in plan.releases}
    return affected_groups(graph, changed_groups, changed_dns, changed_uids) | {state.external_id for state in gone}

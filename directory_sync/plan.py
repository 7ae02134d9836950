"""The difference between what the directory says and what the database holds, as plain data.

A plan is computed inside the run's transaction and then either shown (``--dry-run``), refused by the
safety guard, or applied. Rules it encodes:

- an account is matched by the directory's immutable id only; a new username or DN is a rename or a move of
  the same account (same ``sub``);
- an account missing from the listing, or disabled in the directory, is disabled; one disabled by the sync
  comes back when the directory lists it as enabled again; one an administrator disabled stays disabled;
- an account disabled by the sync is deleted once ``retention`` has passed since it was disabled;
- entries that are disabled in the directory are not created (so that a deleted account is not re-created);
- a username held by a local account or another source's is never taken over (the entry is reported as an
  error); one held by an account of this source that the directory no longer lists is released;
- groups are matched by id as well; a group a role is granted to is emptied rather than deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from directory_sync.entries import DirectoryGroup, DirectoryUser, normalize_dn
from directory_sync.membership import affected_groups, effective_members
from directory_sync.snapshot import Snapshot
from idp.models import DirectoryAccount, Group, GroupMember, RoleGrant, User
from idp.models import DirectoryGroup as DirectoryGroupLink

REMOVED = "removed_from_directory"
DISABLED = "disabled_in_directory"

VISIBLE_FIELDS = ("username", "email", "display_name", "given_name", "family_name", "phone", "dn")
"""The fields whose change counts as an update (a new change marker alone does not)."""


@dataclass(slots=True)
class AccountState:
    """One account of the source as the database holds it."""

    user_id: int
    external_id: str
    username: str
    dn: str
    marker: str | None
    phone: str | None
    disabled_reason: str | None
    disabled_at: datetime | None
    email: str | None
    display_name: str | None
    given_name: str | None
    family_name: str | None

    def value(self, name: str) -> str | None:
        value: str | None = getattr(self, name)
        return value


@dataclass(frozen=True)
class Update:
    account: AccountState
    entry: DirectoryUser
    changes: dict[str, tuple[str | None, str | None]]


@dataclass(frozen=True)
class Disable:
    account: AccountState
    reason: str


@dataclass(frozen=True)
class GroupState:
    """One group of the source as the database holds it, with its stored direct members."""

    group_id: int
    external_id: str
    name: str
    has_roles: bool
    entry: DirectoryGroup
    marker: str | None
    linked: bool = True
    """False for a group the directory stopped listing that was kept because a role is granted to it."""


@dataclass
class Plan:
    source: str
    mode: str
    listed: int = 0
    """Entries the user search listed."""
    read: int = 0
    """Entries read with every attribute (an incremental run: only those that changed)."""
    active_before: int = 0
    groups_before: int = 0
    groups_listed: int = 0
    creates: list[DirectoryUser] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    touches: list[tuple[AccountState, DirectoryUser]] = field(default_factory=list)
    """Accounts whose entry changed only in ways that are not mirrored: the new marker is stored."""
    disables: list[Disable] = field(default_factory=list)
    reasons: list[tuple[AccountState, str]] = field(default_factory=list)
    """Accounts already disabled whose reason changes (say, an administrator-disabled one left the directory)."""
    enables: list[AccountState] = field(default_factory=list)
    deletes: list[AccountState] = field(default_factory=list)
    releases: list[AccountState] = field(default_factory=list)
    """Accounts the directory no longer lists whose username a new or renamed entry takes."""
    unchanged: int = 0
    group_creates: list[DirectoryGroup] = field(default_factory=list)
    group_refreshes: list[tuple[GroupState, DirectoryGroup]] = field(default_factory=list)
    """Groups re-read from the directory: their stored DN, marker and direct members are replaced."""
    group_renames: list[tuple[GroupState, str]] = field(default_factory=list)
    group_deletes: list[GroupState] = field(default_factory=list)
    group_empties: list[GroupState] = field(default_factory=list)
    member_adds: set[tuple[str, str]] = field(default_factory=set)
    """(group external id, user external id) pairs to add."""
    member_removes: set[tuple[str, str]] = field(default_factory=set)
    skipped: dict[str, list[str | None]] = field(default_factory=dict)
    """Listed entries that are not mirrored, id → (DN, marker): kept so that incremental runs do not re-read them."""
    group_markers: dict[str, str | None] = field(default_factory=dict)
    """The change marker of every listed group, stored with the group's link."""
    memberships_checked: bool = False
    """Whether effective memberships were recomputed (skipped when no group and no account's DN, name or
    existence changed, as they cannot have changed then)."""
    errors: list[str] = field(default_factory=list)
    user_names: dict[str, str] = field(default_factory=dict)
    """Username of every account by external id (to show memberships in a dry run)."""
    group_names: dict[str, str] = field(default_factory=dict)

    @property
    def groups_changed(self) -> int:
        return len(self.group_creates) + len(self.group_renames) + len(self.group_deletes) + len(self.group_empties)

    @property
    def memberships_changed(self) -> int:
        return len(self.member_adds) + len(self.member_removes)

    def is_empty(self) -> bool:
        return not (self.creates or self.updates or self.disables or self.enables or self.deletes or self.releases
                    or self.reasons or self.groups_changed or self.memberships_changed)


def load_accounts(db: Session, source: str) -> dict[str, AccountState]:
    # Core rows, not ORM entities: an incremental run reads every account of the source, and this is its
    # largest database read.
    rows = db.connection().execute(
        select(DirectoryAccount.user_id, DirectoryAccount.external_id, User.username, DirectoryAccount.dn,
               DirectoryAccount.marker, DirectoryAccount.phone, DirectoryAccount.disabled_reason, User.disabled_at,
               User.email, User.display_name, User.given_name, User.family_name)
        .join(User, User.id == DirectoryAccount.user_id)
        .where(DirectoryAccount.source == source)
    )
    return {
        row.external_id: AccountState(
            user_id=row.user_id, external_id=row.external_id, username=row.username, dn=row.dn, marker=row.marker,
            phone=row.phone, disabled_reason=row.disabled_reason, disabled_at=row.disabled_at, email=row.email,
            display_name=row.display_name, given_name=row.given_name, family_name=row.family_name)
        for row in rows
    }


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
    query = (
        select(DirectoryGroupLink.external_id, DirectoryAccount.external_id)
        .select_from(GroupMember)
        .join(DirectoryGroupLink, DirectoryGroupLink.group_id == GroupMember.group_id)
        .join(DirectoryAccount, DirectoryAccount.user_id == GroupMember.user_id)
        .where(DirectoryGroupLink.source == source, DirectoryAccount.source == source)
    )
    selections = [query] if only is None else [
        query.where(DirectoryGroupLink.external_id.in_(chunk)) for chunk in _chunked(sorted(only), 500)]
    members: dict[str, set[str]] = {}
    for selection in selections:
        for group_id, user_id in db.connection().execute(selection):
            members.setdefault(group_id, set()).add(user_id)
    return members


def _chunked(items: list[str], size: int) -> list[list[str]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def _holders(db: Session, model: type[User] | type[Group], names: set[str]) -> dict[str, tuple[int, str]]:
    """Who holds each of ``names`` now: name → (row id, source)."""
    found: dict[str, tuple[int, str]] = {}
    ordered = sorted(names)
    column = model.username if model is User else model.name  # type: ignore[union-attr]
    for start in range(0, len(ordered), 500):
        chunk = ordered[start:start + 500]
        for row_id, name, source in db.execute(select(model.id, column, model.source).where(column.in_(chunk))):
            found[name] = (row_id, source)
    return found


def _expired(account: AccountState, retention: timedelta, now: datetime) -> bool:
    return account.disabled_reason is not None and account.disabled_at is not None \
        and account.disabled_at + retention <= now


def build_plan(db: Session, source: str, retention: timedelta, snapshot: Snapshot, now: datetime) -> Plan:
    plan = Plan(source=source, mode=snapshot.mode, listed=len(snapshot.present), read=len(snapshot.users))
    plan.errors.extend(snapshot.errors)
    accounts = load_accounts(db, source)
    plan.active_before = sum(1 for account in accounts.values() if account.disabled_at is None)
    _plan_accounts(plan, accounts, snapshot, retention, now)
    absent = {external_id for external_id in accounts if external_id not in snapshot.present}
    final_usernames = _resolve_usernames(db, plan, accounts, absent)
    mirrored = set(accounts) - {account.external_id for account in plan.deletes}
    mirrored |= {entry.external_id for entry in plan.creates}
    # Lists, not tuples: the value is stored as JSON and compared with what was loaded from it.
    plan.skipped = {key: [presence.dn, presence.marker] for key, presence in snapshot.present.items()
                    if key not in mirrored}
    _plan_groups(db, plan, source, accounts, snapshot, final_usernames)
    return plan


def _plan_accounts(plan: Plan, accounts: dict[str, AccountState], snapshot: Snapshot, retention: timedelta,
                   now: datetime) -> None:
    for external_id, account in accounts.items():
        entry = snapshot.users.get(external_id)
        if external_id not in snapshot.present:
            if account.disabled_at is None:
                plan.disables.append(Disable(account, REMOVED))
            elif _expired(account, retention, now):
                plan.deletes.append(account)
            elif account.disabled_reason != REMOVED:
                plan.reasons.append((account, REMOVED))
            else:
                plan.unchanged += 1
            continue
        if entry is None:
            # Listed, not re-read: unchanged since the last run (incremental).
            if _expired(account, retention, now):
                plan.deletes.append(account)
            else:
                plan.unchanged += 1
            continue
        state_changed = True
        if entry.disabled:
            if account.disabled_at is None:
                plan.disables.append(Disable(account, DISABLED))
            elif _expired(account, retention, now):
                plan.deletes.append(account)
                continue
            elif account.disabled_reason == REMOVED:
                plan.reasons.append((account, DISABLED))
            else:
                state_changed = False
        elif account.disabled_reason is not None:
            plan.enables.append(account)
        else:
            state_changed = False
        changes = {
            name: (account.value(name), getattr(entry, name))
            for name in VISIBLE_FIELDS
            if (normalize_dn(account.dn) != normalize_dn(entry.dn) if name == "dn"
                else account.value(name) != getattr(entry, name))
        }
        if changes:
            plan.updates.append(Update(account, entry, changes))
        else:
            plan.unchanged += 0 if state_changed else 1
            if entry.marker != account.marker or entry.dn != account.dn or entry.phone != account.phone:
                plan.touches.append((account, entry))
    for external_id, entry in snapshot.users.items():
        if external_id not in accounts and not entry.disabled:
            plan.creates.append(entry)


def _resolve_usernames(db: Session, plan: Plan, accounts: dict[str, AccountState], absent: set[str]
                       ) -> dict[str, str]:
    """Check the usernames that creates and renames want; drop those that cannot be had. Returns the final
    username of every account that will exist, by external id."""
    renames = {update.account.external_id: update for update in plan.updates if "username" in update.changes}
    wanted = {entry.username for entry in plan.creates} | {u.entry.username for u in renames.values()}
    holders = _holders(db, User, wanted) if wanted else {}
    by_username = {account.username: account for account in accounts.values()}
    leaving = {account.external_id for account in plan.deletes} | set(renames)
    claimed: dict[str, str] = {}

    def available(username: str, claimant: str) -> bool:
        if username in claimed:
            plan.errors.append(f"{username}: two directory entries have this username; only one gets it")
            return False
        holder = holders.get(username)
        if holder is None:
            return True
        owner = by_username.get(username)
        if owner is None or holder[1] != plan.source:
            plan.errors.append(f"{username}: the username belongs to a {'local' if holder[1] == 'local' else holder[1]}"
                               " account; the directory entry is not mirrored until one of them is renamed")
            return False
        if owner.external_id == claimant or owner.external_id in leaving:
            return True
        if owner.external_id in absent:
            plan.releases.append(owner)
            leaving.add(owner.external_id)
            return True
        plan.errors.append(f"{username}: the username is still used by another account of this source")
        return False

    for update in list(plan.updates):
        if update.account.external_id in renames:
            if available(update.entry.username, update.account.external_id):
                claimed[update.entry.username] = update.account.external_id
            else:
                changes = {k: v for k, v in update.changes.items() if k != "username"}
                plan.updates.remove(update)
                if changes:
                    plan.updates.append(Update(update.account, update.entry, changes))
    for entry in list(plan.creates):
        if available(entry.username, entry.external_id):
            claimed[entry.username] = entry.external_id
        else:
            plan.creates.remove(entry)

    deleted = {account.external_id for account in plan.deletes}
    final = {external_id: account.username for external_id, account in accounts.items() if external_id not in deleted}
    for username, external_id in claimed.items():
        final[external_id] = username
    for account in plan.releases:
        final[account.external_id] = released_name(account)
    return final


def released_name(account: AccountState) -> str:
    """The username an account gives up its name for: recognisable, unique, within 255 characters."""
    suffix = f"~{account.user_id}"
    return account.username[: 255 - len(suffix)] + suffix


def _plan_groups(db: Session, plan: Plan, source: str, accounts: dict[str, AccountState], snapshot: Snapshot,
                 final_usernames: dict[str, str]) -> None:
    current = load_groups(db, source)
    plan.groups_before = sum(1 for state in current.values() if state.linked)
    plan.groups_listed = len(snapshot.group_listing)
    plan.group_markers = {key: presence.marker for key, presence in snapshot.group_listing.items()}
    read = snapshot.groups
    holders = _holders(db, Group, {group.name for group in read.values()}) if read else {}
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

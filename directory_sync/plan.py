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
- groups are matched by id as well; a group a role is granted to is emptied rather than deleted;
- with ``sms_from_directory``, each account's directory-managed SMS factor follows its number
  (``directory_sync.phones``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from directory_sync.changes import (
    DISABLED,
    REMOVED,
    VISIBLE_FIELDS,
    AccountState,
    Disable,
    Plan,
    Update,
    released_name,
)
from directory_sync.entries import normalize_dn
from directory_sync.groups import name_holders, plan_groups
from directory_sync.phones import plan_phones
from directory_sync.snapshot import Snapshot
from idp.models import DirectoryAccount, User

__all__ = ["DISABLED", "REMOVED", "Plan", "build_plan", "load_accounts", "released_name"]


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


def _expired(account: AccountState, retention: timedelta, now: datetime) -> bool:
    return account.disabled_reason is not None and account.disabled_at is not None \
        and account.disabled_at + retention <= now


def build_plan(db: Session, source: str, retention: timedelta, snapshot: Snapshot, now: datetime, *,
               sms_from_directory: bool = False, sms_region: str = "DE") -> Plan:
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
    plan_groups(db, plan, source, accounts, snapshot, final_usernames)
    plan_phones(db, plan, accounts, snapshot, enabled=sms_from_directory, region=sms_region)
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
    creates = {entry.external_id: entry for entry in plan.creates}
    wanted = {entry.username for entry in creates.values()} | {u.entry.username for u in renames.values()}
    holders = name_holders(db, User, wanted) if wanted else {}
    by_username = {account.username: account for account in accounts.values()}
    deleted = {account.external_id for account in plan.deletes}

    def verdict(username: str, claimant: str, leaving: set[str]) -> tuple[bool, AccountState | None, str | None]:
        """(may have it, account to release for it, why not)."""
        holder = holders.get(username)
        if holder is None:
            return True, None, None
        owner = by_username.get(username)
        if owner is None or holder[1] != plan.source:
            kind = "local" if holder[1] == "local" else holder[1]
            return False, None, (f"{username}: the username belongs to a {kind} account; the directory entry is not "
                                 "mirrored until one of them is renamed")
        if owner.external_id == claimant or owner.external_id in leaving:
            return True, None, None
        if owner.external_id in absent:
            return True, owner, None
        return False, None, f"{username}: the username is still used by another account of this source"

    # A rename frees the old username only if it happens itself: repeat until the set of accepted renames is
    # stable, so that a blocked rename never leaves its old name to another entry (which would break the run).
    accepted = set(renames)
    while True:
        leaving = deleted | accepted
        now_accepted = {key for key, update in renames.items() if verdict(update.entry.username, key, leaving)[0]}
        if now_accepted == accepted:
            break
        accepted = now_accepted

    leaving = deleted | accepted
    claimed: dict[str, str] = {}
    claimants = [(key, renames[key].entry.username) for key in sorted(renames, key=lambda k: renames[k].entry.dn)]
    claimants += [(key, creates[key].username) for key in sorted(creates, key=lambda k: creates[k].dn)]
    refused: set[str] = set()
    for claimant, username in claimants:
        ok, release, reason = verdict(username, claimant, leaving) if claimant not in renames or claimant in accepted \
            else (False, None, f"{username}: the username is still used by another account of this source")
        if ok and username in claimed:
            ok, reason = False, f"{username}: two directory entries have this username; only one gets it"
        if not ok:
            plan.errors.append(reason or username)
            refused.add(claimant)
            continue
        claimed[username] = claimant
        if release is not None and release not in plan.releases:
            plan.releases.append(release)
            leaving.add(release.external_id)

    for claimant in refused:
        if claimant in renames:
            update = renames[claimant]
            plan.updates.remove(update)
            changes = {k: v for k, v in update.changes.items() if k != "username"}
            if changes:
                plan.updates.append(Update(update.account, update.entry, changes))
        else:
            plan.creates.remove(creates[claimant])

    final = {external_id: account.username for external_id, account in accounts.items() if external_id not in deleted}
    for username, external_id in claimed.items():
        final[external_id] = username
    for account in plan.releases:
        final[account.external_id] = released_name(account)
    return final



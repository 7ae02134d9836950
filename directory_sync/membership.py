"""Nested groups: from the groups' direct members to every user's effective groups.

A user is a member of group G if G lists the user (by DN in ``member``, or by username in ``memberUid``),
or lists a group that has the user as an effective member. Tokens carry the effective groups, so that a
relying party that checks ``Bauamt`` also admits the members of ``Bauamt-Leitung`` nested in it, as Active
Directory's own access checks do. Cycles (A in B in A) are allowed and end the walk.
"""

from __future__ import annotations

from collections.abc import Mapping

from directory_sync.entries import DirectoryGroup, normalize_dn


def affected_groups(groups: Mapping[str, DirectoryGroup], changed_groups: set[str], changed_dns: set[str],
                    changed_uids: set[str]) -> set[str]:
    """The groups whose effective members may have changed, so that an incremental run recomputes only those:
    groups whose direct members changed, groups that list an entry that appeared, left, moved or was renamed
    (by DN, or by uid for ``memberUid``), and every group that nests one of them, however deep."""
    group_by_dn = {normalize_dn(group.dn): group_id for group_id, group in groups.items()}
    parents: dict[str, set[str]] = {}
    dirty = {group_id for group_id in changed_groups if group_id in groups}
    for group_id, group in groups.items():
        for dn in group.member_dns:
            child = group_by_dn.get(dn)
            if child is not None and child != group_id:
                parents.setdefault(child, set()).add(group_id)
            elif dn in changed_dns:
                dirty.add(group_id)
        if changed_uids and not changed_uids.isdisjoint(group.member_uids):
            dirty.add(group_id)
    stack = list(dirty)
    while stack:
        for parent in parents.get(stack.pop(), ()):
            if parent not in dirty:
                dirty.add(parent)
                stack.append(parent)
    return dirty


def effective_members(
    groups: Mapping[str, DirectoryGroup],
    user_by_dn: Mapping[str, str],
    user_by_username: Mapping[str, str],
    only: set[str] | None = None,
) -> dict[str, set[str]]:
    """For each group (by external id; with ``only``, for those), the external ids of its effective members.

    ``user_by_dn`` maps normalised DNs and ``user_by_username`` normalised usernames to user external ids.
    Member DNs that are neither a known user nor a group of this source (say, a computer, or an entry outside
    the search base) are ignored.
    """
    group_by_dn = {normalize_dn(group.dn): group_id for group_id, group in groups.items()}
    direct_users: dict[str, set[str]] = {}
    subgroups: dict[str, set[str]] = {}
    for group_id, group in groups.items():
        users = direct_users.setdefault(group_id, set())
        nested = subgroups.setdefault(group_id, set())
        for dn in group.member_dns:
            if dn in user_by_dn:
                users.add(user_by_dn[dn])
            elif dn in group_by_dn and group_by_dn[dn] != group_id:
                nested.add(group_by_dn[dn])
        for uid in group.member_uids:
            if uid in user_by_username:
                users.add(user_by_username[uid])

    result: dict[str, set[str]] = {}
    for group_id in groups if only is None else only & groups.keys():
        # An explicit stack rather than recursion: nesting depth is up to the directory, not to us.
        members: set[str] = set()
        seen = {group_id}
        stack = [group_id]
        while stack:
            current = stack.pop()
            members |= direct_users[current]
            for child in subgroups[current]:
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        result[group_id] = members
    return result


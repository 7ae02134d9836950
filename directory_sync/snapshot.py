"""What one run reads from the directory, before anything in the database is touched.

A *full* read lists every account and every group with all mapped attributes. An *incremental* read

1. notes Active Directory's ``highestCommittedUSN`` (the next high-water mark, taken before searching),
2. reads the accounts changed since the stored high-water mark, ``(&(user_filter)(uSNChanged>=mark))``,
3. lists every account with only its id and change marker: this is how removals, moves out of the filter
   and changes the mark missed are seen, at a fraction of the cost of reading every attribute,
4. reads in full, in small batches, the listed accounts whose marker differs from the one stored, and
5. lists the groups the same way and reads in full only those whose marker moved (the direct members of
   the others are stored, so nesting is resolved over all of them).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from directory_sync.entries import (
    DirectoryGroup,
    DirectoryUser,
    EntryError,
    Presence,
    id_filter,
    lower_keys,
    next_high_water_mark,
    read_group,
    read_group_presence,
    read_marker,
    read_presence,
    read_user,
)
from directory_sync.ldap import DirectoryClient
from directory_sync.presets import SourceMapping

FETCH_BATCH = 50
"""Entries read per search when fetching listed entries by id (one OR filter each)."""

Entries = Iterator[tuple[str, dict[str, list[bytes]]]]


class Progress(Protocol):
    """Where a run reports what it is doing (the CLI draws a progress bar from it)."""

    def phase(self, name: str, total: int | None = None) -> None: ...

    def advance(self, count: int = 1) -> None: ...


class NoProgress:
    def phase(self, name: str, total: int | None = None) -> None:
        pass

    def advance(self, count: int = 1) -> None:
        pass


@dataclass
class Snapshot:
    mode: str
    """``full`` or ``incremental``."""
    server: str
    users: dict[str, DirectoryUser] = field(default_factory=dict)
    """Accounts read with every attribute, by external id (full: all of them; incremental: the changed ones)."""
    present: dict[str, Presence] = field(default_factory=dict)
    """Every entry the user search lists whose id could be read, by external id."""
    groups: dict[str, DirectoryGroup] = field(default_factory=dict)
    """Groups read with their members (full: all; incremental: those whose marker moved)."""
    group_listing: dict[str, Presence] = field(default_factory=dict)
    """Every group the group search lists, by external id."""
    high_water_mark: str | None = None
    errors: list[str] = field(default_factory=list)


def _committed_usn(client: DirectoryClient, mapping: SourceMapping) -> int | None:
    marker = mapping.marker_attribute
    if marker is None or marker.lower() != "usnchanged":
        return None
    value = client.root_dse(["highestCommittedUSN"]).get("highestcommittedusn")
    return int(value[0]) if value and value[0].isdigit() else None


def _read_users(snapshot: Snapshot, mapping: SourceMapping, entries: Entries) -> None:
    for dn, attributes in entries:
        raw = lower_keys(attributes)
        try:
            user = read_user(mapping, dn, raw)
        except EntryError as exc:
            snapshot.errors.append(str(exc))
            try:
                # Listed but unreadable: the account stays as it is (neither updated nor disabled).
                presence = read_presence(mapping, dn, raw)
            except EntryError:
                continue
            snapshot.present.setdefault(presence.external_id, presence)
            continue
        snapshot.users[user.external_id] = user
        snapshot.present[user.external_id] = Presence(user.external_id, dn, user.marker, user.stamp)


def _read_groups(snapshot: Snapshot, mapping: SourceMapping, entries: Entries) -> None:
    for dn, attributes in entries:
        raw = lower_keys(attributes)
        try:
            group = read_group(mapping, dn, raw)
            marker = read_marker(dn, raw, mapping.marker_attributes)
        except EntryError as exc:
            snapshot.errors.append(str(exc))
            try:
                # Listed but unreadable: the group stays as it is (its stored members still count).
                presence = read_group_presence(mapping, dn, raw)
            except EntryError:
                continue
            snapshot.group_listing.setdefault(presence.external_id, presence)
            continue
        snapshot.groups[group.external_id] = group
        snapshot.group_listing[group.external_id] = Presence(group.external_id, dn, marker)


def _by_id(client: DirectoryClient, base: str, search_filter: str, id_attribute: str, ids: list[str],
           attributes: list[str], progress: Progress) -> Entries:
    for start in range(0, len(ids), FETCH_BATCH):
        batch = ids[start:start + FETCH_BATCH]
        wanted = "".join(id_filter(id_attribute, external_id) for external_id in batch)
        yield from client.search(base, f"(&{wrap(search_filter)}(|{wanted}))", attributes)
        progress.advance(len(batch))


def read_full(client: DirectoryClient, mapping: SourceMapping, progress: Progress) -> Snapshot:
    snapshot = Snapshot(mode="full", server=client.url)
    committed = _committed_usn(client, mapping)
    progress.phase("reading accounts")
    _read_users(snapshot, mapping, client.search(mapping.source.base_dn, mapping.user_filter,
                                                 mapping.user_attributes(), on_page=progress.advance))
    progress.phase("reading groups")
    _read_groups(snapshot, mapping, client.search(mapping.group_base_dn, mapping.group_filter,
                                                  mapping.group_attributes(), on_page=progress.advance))
    snapshot.high_water_mark = next_high_water_mark(snapshot.present.values(), committed)
    return snapshot


def read_incremental(client: DirectoryClient, mapping: SourceMapping, bound: str,
                     known_markers: Mapping[str, str | None], known_group_markers: Mapping[str, str | None],
                     progress: Progress) -> Snapshot:
    """``known_markers`` / ``known_group_markers``: the stored marker of every entry the last runs saw (accounts
    and entries seen but not mirrored) / of every group, by id; None forces a re-read once the entry is listed."""
    snapshot = Snapshot(mode="incremental", server=client.url)
    committed = _committed_usn(client, mapping)
    marker = mapping.marker_attribute
    assert marker is not None, "an incremental run needs a change marker attribute"
    base = mapping.source.base_dn
    progress.phase("reading changed accounts")
    _read_users(snapshot, mapping, client.search(base, f"(&{wrap(mapping.user_filter)}({marker}>={bound}))",
                                                 mapping.user_attributes(), on_page=progress.advance))

    progress.phase("listing accounts")
    listed: dict[str, Presence] = {}
    for dn, attributes in client.search(base, mapping.user_filter, mapping.presence_attributes(),
                                        on_page=progress.advance):
        try:
            presence = read_presence(mapping, dn, lower_keys(attributes))
        except EntryError as exc:
            snapshot.errors.append(str(exc))
            continue
        listed[presence.external_id] = presence
    # The listing is the truth about who exists now; what the changed search saw may have left since.
    snapshot.users = {key: user for key, user in snapshot.users.items() if key in listed}
    snapshot.present = listed
    missed = [key for key, presence in listed.items()
              if key not in snapshot.users and (key not in known_markers or known_markers[key] != presence.marker)]
    if missed:
        progress.phase("reading accounts the mark missed", total=len(missed))
        _read_users(snapshot, mapping, _by_id(client, base, mapping.user_filter, mapping.id_attribute, missed,
                                              mapping.user_attributes(), progress))

    progress.phase("listing groups")
    group_base, group_filter = mapping.group_base_dn, mapping.group_filter
    for dn, attributes in client.search(group_base, group_filter, mapping.group_presence_attributes(),
                                        on_page=progress.advance):
        try:
            presence = read_group_presence(mapping, dn, lower_keys(attributes))
        except EntryError as exc:
            snapshot.errors.append(str(exc))
            continue
        snapshot.group_listing[presence.external_id] = presence
    changed = [key for key, presence in snapshot.group_listing.items()
               if key not in known_group_markers or known_group_markers[key] != presence.marker]
    if changed:
        progress.phase("reading changed groups", total=len(changed))
        _read_groups(snapshot, mapping, _by_id(client, group_base, group_filter, mapping.group_id_attribute,
                                               changed, mapping.group_attributes(), progress))
    # Entries not read in full have not changed since the last run: their stamps lie below ``bound``.
    read = (Presence(user.external_id, user.dn, user.marker, user.stamp) for user in snapshot.users.values())
    snapshot.high_water_mark = next_high_water_mark(read, committed, floor=bound)
    return snapshot


def wrap(search_filter: str) -> str:
    """A filter as a parenthesised component, so that it can be ANDed with others (RFC 4515 3)."""
    text = search_filter.strip()
    return text if text.startswith("(") else f"({text})"


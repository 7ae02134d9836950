"""The attribute mappings of the two presets, and the resolved mapping of one configured source.

``active-directory``: ``sAMAccountName``, ``objectGUID``, disabled by ``userAccountControl`` bit 0x2 (ACCOUNTDISABLE,
[MS-ADTS] 2.2.16), groups by ``member`` (nested groups resolved here), changes by ``uSNChanged``.
``openldap``: ``uid``, ``entryUUID`` (RFC 4530), disabled by ``pwdAccountLockedTime`` (draft-behera-ldap-password-
policy) or ``nsAccountLock``, groups by ``groupOfNames``/``member`` and ``posixGroup``/``memberUid`` (RFC 2307),
changes by ``modifyTimestamp`` (RFC 4512 3.4) for the high-water mark and ``entryCSN`` entry by entry.

Group membership is read from the groups' ``member`` values, not from the users' ``memberOf``: a membership
change bumps the group's ``uSNChanged``/``modifyTimestamp`` but not the user's (``memberOf`` is a back-link), and
only the group side shows nesting.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from idp.config import DirectorySource


@dataclass(frozen=True)
class Preset:
    name: str
    user_filter: str
    group_filter: str
    attributes: Mapping[str, tuple[str, ...]]
    fine_marker: str | None = None
    """An operational attribute that changes with every modification, finer than ``changed`` (OpenLDAP's
    ``entryCSN``: microseconds and a change count, where ``modifyTimestamp`` has whole seconds). Compared
    entry by entry, it catches a second change within the same second as the previous read."""


ACTIVE_DIRECTORY = Preset(
    name="active-directory",
    # Computers are users too in AD (objectClass computer derives from user).
    user_filter="(&(objectClass=user)(!(objectClass=computer)))",
    group_filter="(objectClass=group)",
    attributes={
        "username": ("sAMAccountName",),
        "id": ("objectGUID",),
        "email": ("mail",),
        "display_name": ("displayName",),
        "given_name": ("givenName",),
        "family_name": ("sn",),
        "phone": ("mobile", "telephoneNumber"),
        "disabled": ("userAccountControl",),
        "changed": ("uSNChanged",),
        "group_id": ("objectGUID",),
        "group_name": ("cn",),
        "group_member": ("member",),
        "group_member_uid": (),
    },
)

OPENLDAP = Preset(
    name="openldap",
    user_filter="(objectClass=inetOrgPerson)",
    group_filter="(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))",
    attributes={
        "username": ("uid",),
        "id": ("entryUUID",),
        "email": ("mail",),
        "display_name": ("displayName", "cn"),
        "given_name": ("givenName",),
        "family_name": ("sn",),
        "phone": ("mobile", "telephoneNumber"),
        "disabled": ("pwdAccountLockedTime", "nsAccountLock"),
        "changed": ("modifyTimestamp",),
        "group_id": ("entryUUID",),
        "group_name": ("cn",),
        "group_member": ("member", "uniqueMember"),
        "group_member_uid": ("memberUid",),
    },
    fine_marker="entryCSN",
)

PRESETS = {preset.name: preset for preset in (ACTIVE_DIRECTORY, OPENLDAP)}


@dataclass(frozen=True)
class SourceMapping:
    """A source's settings with the preset filled in: what to search and which attribute means what."""

    source: DirectorySource
    preset: Preset
    attributes: Mapping[str, tuple[str, ...]]
    user_filter: str
    group_filter: str
    group_base_dn: str
    fine_marker: str | None = None

    def attr(self, key: str) -> tuple[str, ...]:
        return self.attributes.get(key, ())

    @property
    def id_attribute(self) -> str:
        return self.attr("id")[0]

    @property
    def marker_attribute(self) -> str | None:
        """The attribute the incremental search compares with the high-water mark."""
        changed = self.attr("changed")
        return changed[0] if changed else None

    @property
    def marker_attributes(self) -> tuple[str, ...]:
        """Where an entry's own change marker is read from, finest first."""
        changed = self.attr("changed")
        return ((self.fine_marker,) if self.fine_marker and changed else ()) + changed

    @property
    def group_id_attribute(self) -> str:
        return self.attr("group_id")[0]

    def user_attributes(self) -> list[str]:
        keys = ("username", "id", "email", "display_name", "given_name", "family_name", "phone", "disabled")
        return _unique([*(name for key in keys for name in self.attr(key)), *self.marker_attributes])

    def presence_attributes(self) -> list[str]:
        return _unique([self.id_attribute, *self.marker_attributes[:1]])

    def group_presence_attributes(self) -> list[str]:
        return _unique([self.group_id_attribute, *self.marker_attributes[:1]])

    def group_attributes(self) -> list[str]:
        keys = ("group_id", "group_name", "group_member", "group_member_uid")
        return _unique([*(name for key in keys for name in self.attr(key)), *self.marker_attributes])

    def fingerprint(self) -> str:
        """A hash of everything that decides what a run reads: when it changes, the next run must be full."""
        decisive: dict[str, object] = {
            "preset": self.preset.name, "base_dn": self.source.base_dn, "user_filter": self.user_filter,
            "group_base_dn": self.group_base_dn, "group_filter": self.group_filter,
            "attributes": {key: list(value) for key, value in sorted(self.attributes.items())},
            "fine_marker": self.fine_marker,
        }
        if self.source.sms_from_directory:
            # Turning it on or off makes the next run full, so that every number is checked (and a number that
            # makes no SMS factor is reported) at once. Off adds nothing: fingerprints from before stay valid.
            decisive["sms_from_directory"] = True
        return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()


def _unique(names: Iterable[str]) -> list[str]:
    # LDAP attribute names compare case-insensitively (RFC 4512 2.5); ask for each once.
    seen: dict[str, str] = {}
    for name in names:
        seen.setdefault(name.lower(), name)
    return list(seen.values())


def mapping_for(source: DirectorySource) -> SourceMapping:
    preset = PRESETS[source.preset]
    attributes = dict(preset.attributes)
    attributes.update(source.attribute_overrides())
    return SourceMapping(
        source=source,
        preset=preset,
        attributes=attributes,
        user_filter=source.user_filter or preset.user_filter,
        group_filter=source.group_filter or preset.group_filter,
        group_base_dn=source.group_base_dn or source.base_dn,
        # A source that names its own `changed` attribute (say, for a server without entryCSN) gets exactly that.
        fine_marker=None if "changed" in source.attribute_overrides() else preset.fine_marker,
    )

"""What a run would change, as plain data: the plan that ``--dry-run`` prints, the guard judges and ``apply``
writes, and the database state it was computed against."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from directory_sync.entries import DirectoryGroup, DirectoryUser

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
class PhoneChange:
    """One change to an account's directory-managed SMS factor (``sms_from_directory``)."""

    external_id: str
    username: str
    user_id: int | None
    """None for an account this run creates (its id is known only once it is written)."""
    phone: str | None = None
    """The new number (E.164) for a factor created or changed."""
    factor_id: int | None = None
    """The managed factor changed or removed."""
    previous: str | None = None
    """The number the factor had (changed or removed)."""
    reason: str | None = None
    """Why a factor is removed: ``number_removed``, ``invalid_number``, ``same_as_own`` (the user enrolled this
    number themselves) or ``option_off``."""


@dataclass(frozen=True)
class PhoneRefusal:
    """A directory number that makes no SMS factor, reported once per read of the entry."""

    username: str
    problem: str


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
    sms_creates: list[PhoneChange] = field(default_factory=list)
    sms_updates: list[PhoneChange] = field(default_factory=list)
    sms_removes: list[PhoneChange] = field(default_factory=list)
    sms_refusals: list[PhoneRefusal] = field(default_factory=list)
    sms_managed_before: int = 0
    """SMS factors the source had made before the run (what the safety guard compares removals with)."""
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

    @property
    def sms_changed(self) -> int:
        return len(self.sms_creates) + len(self.sms_updates) + len(self.sms_removes)

    def is_empty(self) -> bool:
        return not (self.creates or self.updates or self.disables or self.enables or self.deletes or self.releases
                    or self.reasons or self.groups_changed or self.memberships_changed or self.sms_changed)


def released_name(account: AccountState) -> str:
    """The username an account gives up its name for: recognisable, unique, within 255 characters."""
    suffix = f"~{account.user_id}"
    return account.username[: 255 - len(suffix)] + suffix

"""Directory sync: which accounts a directory owns, where each sync stands, and the history of runs.

An account mirrored from a directory is an ordinary ``users`` row (``source`` = the source's name) plus one
``directory_accounts`` row that binds it to the directory's *immutable* id (``objectGUID``, ``entryUUID``),
so that a rename or a move to another OU keeps the same account and the same ``sub``. Groups mirrored from a
directory are ``groups`` rows with ``source`` and ``external_id`` set; their members are the effective
(nested) memberships, so tokens need no directory lookups.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from idp.db import Base, UTCDateTime, utcnow


class DirectoryAccount(Base):
    """The link from a user to its entry in a directory source."""

    __tablename__ = "directory_accounts"
    __table_args__ = (UniqueConstraint("source", "external_id"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), index=True)
    external_id: Mapped[str] = mapped_column(String(255))
    """The directory's immutable id: AD ``objectGUID`` as a UUID string, OpenLDAP ``entryUUID``."""
    dn: Mapped[str] = mapped_column(Text)
    """The entry's current DN (changes on rename and move; the sign-in bind looks it up again by id)."""
    marker: Mapped[str | None] = mapped_column(String(64))
    """The entry's change marker when last read (``uSNChanged`` or ``modifyTimestamp``)."""
    phone: Mapped[str | None] = mapped_column(String(64))
    """``mobile`` or ``telephoneNumber`` from the directory, for SMS codes."""
    disabled_reason: Mapped[str | None] = mapped_column(String(32))
    """Set when the sync disabled the account: ``disabled_in_directory`` or ``removed_from_directory``. Only
    accounts the sync disabled are re-enabled or deleted by it; one an administrator disabled stays so."""
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DirectoryGroup(Base):
    """The link from a group to its entry in a directory source, with the entry's *direct* members.

    Keeping the direct members lets an incremental run re-read only the groups whose change marker moved and
    still resolve nesting over all of them.
    """

    __tablename__ = "directory_groups"
    __table_args__ = (UniqueConstraint("source", "external_id"),)

    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), index=True)
    external_id: Mapped[str] = mapped_column(String(255))
    dn: Mapped[str] = mapped_column(Text)
    marker: Mapped[str | None] = mapped_column(String(64))
    member_dns: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Normalised DNs of the direct members (users and nested groups)."""
    member_uids: Mapped[list[str]] = mapped_column(JSON, default=list)
    """``memberUid`` values (posixGroup), normalised like usernames."""


class DirectorySyncState(Base):
    """Per source: the high-water mark of incremental runs and the lease that lets one process sync at a time."""

    __tablename__ = "directory_sync_state"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    high_water_mark: Mapped[str | None] = mapped_column(String(64))
    """Lower bound of the next incremental search (``uSNChanged`` or ``modifyTimestamp``)."""
    high_water_server: Mapped[str | None] = mapped_column(Text)
    """The URL the mark came from: USNs are per domain controller, so another server means a full run."""
    config_fingerprint: Mapped[str | None] = mapped_column(String(64))
    """Hash of the settings that decide what is read; a changed mapping or filter forces a full run."""
    skipped: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Entries listed but not mirrored (disabled in the directory before they were ever mirrored, unreadable,
    or in conflict), id → change marker: an incremental run re-reads them only when they change."""
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_full_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DirectorySyncRun(Base):
    """One sync run, kept as history: what it did, or why it changed nothing."""

    __tablename__ = "directory_sync_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(64), index=True)
    mode: Mapped[str] = mapped_column(String(16))
    """``full`` or ``incremental``."""
    trigger: Mapped[str] = mapped_column(String(16))
    """``cli`` or ``schedule``."""
    forced: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16))
    """``success``, ``refused`` (safety guard: nothing changed) or ``failed`` (nothing changed)."""
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(default=0)
    server: Mapped[str | None] = mapped_column(Text)
    created: Mapped[int] = mapped_column(default=0)
    updated: Mapped[int] = mapped_column(default=0)
    disabled: Mapped[int] = mapped_column(default=0)
    enabled: Mapped[int] = mapped_column(default=0)
    deleted: Mapped[int] = mapped_column(default=0)
    unchanged: Mapped[int] = mapped_column(default=0)
    errors: Mapped[int] = mapped_column(default=0)
    groups_changed: Mapped[int] = mapped_column(default=0)
    memberships_changed: Mapped[int] = mapped_column(default=0)
    message: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The first entry errors and, for a refused run, the numbers the guard compared."""

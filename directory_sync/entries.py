"""Raw LDAP entries in the IdP's terms: users, groups, immutable ids, DNs and change markers.

Values are read from ldap3's ``raw_attributes`` (bytes), never from its schema-driven formatting, so that a
directory without readable schema (or the AD stand-in in the tests) gives the same result as a real one.
An entry that cannot be read (no id, no username, a value that is not UTF-8) raises ``EntryError``; the
engine counts it as an error and leaves the account it may belong to untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ldap3.utils.conv import escape_filter_chars

from directory_sync.presets import SourceMapping
from idp.accounts.users import MAX_USERNAME_LENGTH, normalize_username

Raw = Mapping[str, list[bytes]]
"""An entry's attributes with lower-cased names (LDAP attribute names are case-insensitive, RFC 4512 2.5)."""

ACCOUNTDISABLE = 0x2
"""``userAccountControl`` flag of a disabled account ([MS-ADTS] 2.2.16)."""


class EntryError(ValueError):
    """An entry cannot be mirrored; the message names it (by DN) and says why."""


@dataclass(frozen=True)
class DirectoryUser:
    external_id: str
    dn: str
    username: str
    email: str | None
    display_name: str | None
    given_name: str | None
    family_name: str | None
    phone: str | None
    disabled: bool
    marker: str | None
    """The entry's own change marker (``entryCSN``, ``uSNChanged`` or ``modifyTimestamp``)."""
    stamp: str | None
    """The value the incremental search compares with the high-water mark (``uSNChanged``, ``modifyTimestamp``)."""


@dataclass(frozen=True)
class DirectoryGroup:
    external_id: str
    dn: str
    name: str
    member_dns: tuple[str, ...]
    """Normalised DNs of the direct members (users and groups)."""
    member_uids: tuple[str, ...]
    """``memberUid`` values (RFC 2307 posixGroup): usernames, normalised like the IdP's usernames."""


@dataclass(slots=True)
class Presence:
    """What an incremental run lists of every account: enough to see removals, moves and missed changes."""

    external_id: str
    dn: str
    marker: str | None
    stamp: str | None = None


def lower_keys(raw: Mapping[str, list[bytes]]) -> Raw:
    return {name.lower(): values for name, values in raw.items()}


def normalize_dn(dn: str) -> str:
    """A DN in the form used to match ``member`` values: lower-cased, no spaces around the RDN separators.

    Attribute types and the usual naming attributes (cn, ou, uid, dc) compare case-insensitively, so this
    is how both presets' directories compare DNs too.
    """
    return ",".join(part.strip() for part in dn.lower().split(","))


def _text(dn: str, name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EntryError(f"{dn}: {name} is not UTF-8 text") from exc


def first_text(dn: str, raw: Raw, names: Iterable[str], limit: int = 255) -> str | None:
    """The first non-empty value among the attributes ``names``, in that order of preference."""
    for name in names:
        for value in raw.get(name.lower(), ()):
            text = _text(dn, name, value).strip()
            if text:
                return text[:limit]
    return None


def format_id(dn: str, attribute: str, value: bytes) -> str:
    """The immutable id as text: ``objectGUID`` (16 bytes, little-endian fields) as AD writes it, other ids as
    their UTF-8 text, or hex if they are binary."""
    if attribute.lower() == "objectguid":
        if len(value) != 16:
            raise EntryError(f"{dn}: objectGUID is not 16 bytes")
        return str(uuid.UUID(bytes_le=value))
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        return value.hex()
    if not text:
        raise EntryError(f"{dn}: {attribute} is empty")
    return text[:255]


def id_filter(attribute: str, external_id: str) -> str:
    """An equality filter that finds the entry with this id (bytes escaped as ``\\xx``, RFC 4515 3)."""
    if attribute.lower() == "objectguid":
        raw = uuid.UUID(external_id).bytes_le
        return f"({attribute}=" + "".join(f"\\{byte:02x}" for byte in raw) + ")"
    return f"({attribute}={escape_filter_chars(external_id)})"


def read_id(dn: str, raw: Raw, attribute: str) -> str:
    values = raw.get(attribute.lower())
    if not values:
        raise EntryError(f"{dn}: no {attribute} (the immutable id)")
    return format_id(dn, attribute, values[0])


def is_disabled(dn: str, raw: Raw, names: Iterable[str]) -> bool:
    for name in names:
        values = raw.get(name.lower())
        if not values:
            continue
        if name.lower() == "useraccountcontrol":
            try:
                flags = int(values[0])
            except ValueError as exc:
                raise EntryError(f"{dn}: userAccountControl is not a number") from exc
            if flags & ACCOUNTDISABLE:
                return True
        elif name.lower() == "nsaccountlock":
            if values[0].strip().lower() in {b"true", b"1", b"yes"}:
                return True
        else:
            # pwdAccountLockedTime and any other configured attribute: present means disabled.
            return True
    return False


def read_marker(dn: str, raw: Raw, attributes: Iterable[str]) -> str | None:
    """The first present value among ``attributes`` (finest first)."""
    for attribute in attributes:
        values = raw.get(attribute.lower())
        if values:
            return _text(dn, attribute, values[0]).strip()[:64]
    return None


def _stamp(mapping: SourceMapping, dn: str, raw: Raw) -> str | None:
    attribute = mapping.marker_attribute
    return read_marker(dn, raw, (attribute,)) if attribute else None


def read_user(mapping: SourceMapping, dn: str, raw: Raw) -> DirectoryUser:
    external_id = read_id(dn, raw, mapping.id_attribute)
    name = first_text(dn, raw, mapping.attr("username"), limit=1024)
    if not name:
        raise EntryError(f"{dn}: no {'/'.join(mapping.attr('username'))} (the username)")
    username = normalize_username(name)
    if len(username) > MAX_USERNAME_LENGTH or any(ch.isspace() for ch in username):
        raise EntryError(f"{dn}: the username {name!r} is longer than 255 characters or contains spaces")
    return DirectoryUser(
        external_id=external_id,
        dn=dn,
        username=username,
        email=first_text(dn, raw, mapping.attr("email"), limit=320),
        display_name=first_text(dn, raw, mapping.attr("display_name")),
        given_name=first_text(dn, raw, mapping.attr("given_name")),
        family_name=first_text(dn, raw, mapping.attr("family_name")),
        phone=first_text(dn, raw, mapping.attr("phone"), limit=64),
        disabled=is_disabled(dn, raw, mapping.attr("disabled")),
        marker=read_marker(dn, raw, mapping.marker_attributes),
        stamp=_stamp(mapping, dn, raw),
    )


def read_presence(mapping: SourceMapping, dn: str, raw: Raw) -> Presence:
    return Presence(read_id(dn, raw, mapping.id_attribute), dn, read_marker(dn, raw, mapping.marker_attributes),
                    _stamp(mapping, dn, raw))


def read_group_presence(mapping: SourceMapping, dn: str, raw: Raw) -> Presence:
    return Presence(read_id(dn, raw, mapping.group_id_attribute), dn,
                    read_marker(dn, raw, mapping.marker_attributes), _stamp(mapping, dn, raw))


def _member_dn(value: str) -> str:
    # uniqueMember may carry an optional "#'0101'B" uid suffix (RFC 4517 3.3.21).
    if value.endswith("'B") and "#'" in value:
        value = value[: value.rindex("#'")]
    return normalize_dn(value)


def read_group(mapping: SourceMapping, dn: str, raw: Raw) -> DirectoryGroup:
    external_id = read_id(dn, raw, mapping.group_id_attribute)
    name = first_text(dn, raw, mapping.attr("group_name"))
    if not name:
        raise EntryError(f"{dn}: no {'/'.join(mapping.attr('group_name'))} (the group name)")
    members = tuple(
        _member_dn(_text(dn, attribute, value))
        for attribute in mapping.attr("group_member")
        for value in raw.get(attribute.lower(), ())
    )
    uids = tuple(
        normalize_username(_text(dn, attribute, value))
        for attribute in mapping.attr("group_member_uid")
        for value in raw.get(attribute.lower(), ())
    )
    return DirectoryGroup(external_id=external_id, dn=dn, name=name, member_dns=members, member_uids=uids)


def _parse_time(stamp: str) -> datetime | None:
    # Generalized time (RFC 4517 3.3.13): YYYYMMDDHHMMSS[.fraction]Z.
    digits = stamp[:14]
    if len(digits) != 14 or not digits.isdigit():
        return None
    try:
        return datetime.strptime(digits, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def next_high_water_mark(entries: Iterable[Presence], committed_usn: int | None,
                         floor: str | None = None) -> str | None:
    """The inclusive lower bound of the next incremental search for changed accounts.

    Active Directory: ``highestCommittedUSN`` read *before* this run's searches, plus one. Otherwise just past
    the highest stamp seen, when every entry also carried a finer marker (a USN, an ``entryCSN``): an entry
    that changed while this run was reading may then fall below the mark, but the next run's listing compares
    every entry's marker with the stored one and reads it anyway. With only whole-second timestamps, a second
    change within the same second would look unchanged to that comparison, so the bound stays at that second.
    ``floor``: the current mark, which an incremental run (seeing only the entries that changed) never lowers.
    """
    if committed_usn is not None:
        return str(committed_usn + 1)
    highest: str | None = None
    fine = True
    for entry in entries:
        if entry.stamp is None:
            continue
        if not entry.stamp.isdigit() and entry.marker == entry.stamp:
            fine = False
        if highest is None or _order(entry.stamp) > _order(highest):
            highest = entry.stamp
    if highest is None:
        return floor
    if highest.isdigit():
        mark = str(int(highest) + 1)
    else:
        moment = _parse_time(highest)
        mark = highest if moment is None or not fine else (moment + timedelta(seconds=1)).strftime("%Y%m%d%H%M%SZ")
    return mark if floor is None or _order(mark) >= _order(floor) else floor


def _order(stamp: str) -> tuple[int, int, str]:
    return (0, int(stamp), "") if stamp.isdigit() else (1, 0, stamp[:14])

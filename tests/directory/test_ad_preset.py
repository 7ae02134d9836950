"""The ``active-directory`` preset against slapd with the AD stand-in schema (``ad-standin.schema``):
objectGUID identity, userAccountControl, uSNChanged as high-water mark, groups by ``member`` (issue 4, §1-2).

The stand-in is not Active Directory: the tests assign objectGUID and bump uSNChanged as a domain controller
would. What it does check is that the preset reads AD's attribute names and encodings correctly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from ldap3 import BASE
from sqlalchemy import select

from directory_sync.bind import BindOutcome, verify_password
from idp.db import unit_of_work
from idp.models import DirectoryAccount, DirectorySyncState, SmsFactor, User
from idp.services import Services
from tests.directory.slapd import USER_PASSWORD, Directory, Person, Slapd
from tests.directory.support import account, get, source_of, synced, usernames


@pytest.fixture
def directory(running_slapd: Slapd) -> Iterator[Directory]:
    built = Directory(running_slapd, "active-directory").build()
    built.add_user(Person("ausgeschieden", "Aus", "Geschieden", "Ehemalige"), disabled=True)
    yield built
    built.close()


def guid_of(directory: Directory, username: str) -> str:
    directory.conn.search(directory.users[username], "(objectClass=*)", search_scope=BASE,
                          attributes=["objectGUID", "memberOf"])
    raw = directory.conn.response[0]["raw_attributes"]
    return str(uuid.UUID(bytes_le=raw["objectGUID"][0]))


def test_full_sync_reads_the_ad_attributes(services: Services, directory: Directory) -> None:
    """sAMAccountName is the username, objectGUID (binary) the identity, userAccountControl 0x2 a disabled
    entry; groups come from ``member`` with nesting resolved."""
    report = synced(services)
    assert report.created == 13 and report.errors == []
    assert "ausgeschieden" not in usernames(services)
    jürgen = get(services, "jürgen.gross")
    with unit_of_work(services.sessions) as db:
        link = db.get(DirectoryAccount, jürgen.id)
        assert link is not None and link.external_id == guid_of(directory, "jürgen.groß")
    assert jürgen.display_name == "Jürgen Groß"
    assert jürgen.groups == {"Bauamt", "Bauamt-Leitung", "Alle Mitarbeitenden"}
    directory.conn.search(directory.users["anna.weiß"], "(objectClass=*)", search_scope=BASE, attributes=["memberOf"])
    assert directory.conn.response[0]["attributes"]["memberOf"], "the stand-in keeps memberOf, as AD does"


def test_usn_is_the_high_water_mark(services: Services, directory: Directory) -> None:
    """The mark is a uSNChanged value; an incremental run reads only entries above it."""
    synced(services)
    with unit_of_work(services.sessions) as db:
        mark = db.get(DirectorySyncState, "rathaus").high_water_mark  # type: ignore[union-attr]
    assert mark is not None and mark.isdigit()
    directory.set_user("klaus.straßburger", mobile="+49 170 1234567")
    report = synced(services)
    assert (report.mode, report.read, report.updated) == ("incremental", 1, 1)
    assert get(services, "klaus.strassburger").phone == "+49 170 1234567"


def test_account_disable_flag_disables_and_enables(services: Services, directory: Directory) -> None:
    """userAccountControl 514 (ACCOUNTDISABLE set) disables the account; 512 brings it back, same sub."""
    synced(services)
    before = get(services, "maria.müller")
    directory.disable("maria.müller")
    assert synced(services).disabled == 1
    assert get(services, "maria.müller").disabled_reason == "disabled_in_directory"
    directory.enable("maria.müller")
    assert synced(services).enabled == 1
    assert get(services, "maria.müller").sub == before.sub


def test_new_logon_name_and_move_keep_the_account(services: Services, directory: Directory) -> None:
    """A new sAMAccountName and a move to another OU are the same object (same objectGUID): same account, and
    memberships stay although the groups were not re-read (AD shows members by their new DN)."""
    synced(services)
    before = get(services, "petra.schäfer")
    directory.rename("petra.schäfer", "p.schaefer")
    directory.move("p.schaefer", "Kämmerei")
    report = synced(services)
    assert report.mode == "incremental" and report.created == 0 and report.disabled == 0
    after = get(services, "p.schaefer")
    assert after.sub == before.sub and after.dn == directory.users["p.schaefer"]
    assert after.groups == before.groups == {"Bauamt", "Alle Mitarbeitenden"}
    assert account(services, "petra.schäfer") is None


def test_deleted_object_is_disabled(services: Services, directory: Directory) -> None:
    """An object deleted in AD (its group links removed with it) disables the account at the next run."""
    synced(services)
    directory.delete("günther.kühn")
    report = synced(services)
    assert report.disabled == 1
    assert get(services, "günther.kühn").groups == set()


def test_sign_in_binds_with_the_entry_found_by_objectguid(services: Services, directory: Directory) -> None:
    """The bind looks the entry up by its binary objectGUID (escaped byte by byte, RFC 4515) and binds as it."""
    synced(services)
    guid = guid_of(directory, "özlem.yilmaz")
    source = source_of(services)
    assert verify_password(source, guid, USER_PASSWORD).outcome is BindOutcome.OK
    assert verify_password(source, guid, "falsch").outcome is BindOutcome.WRONG_PASSWORD
    directory.disable("özlem.yilmaz")
    assert verify_password(source, guid, USER_PASSWORD).outcome is BindOutcome.DISABLED_IN_DIRECTORY
    assert verify_password(source, str(uuid.uuid4()), USER_PASSWORD).outcome is BindOutcome.NOT_IN_DIRECTORY


def test_lean_entry_decoding_matches_ldap3(services: Services, directory: Directory) -> None:
    """The connection's lean entry decoder yields the same DNs and raw values as ldap3's own (binary objectGUID,
    umlauts in DNs and values included)."""
    from directory_sync.ldap import DirectoryClient
    from directory_sync.presets import mapping_for

    source = source_of(services)
    mapping = mapping_for(source)
    with DirectoryClient(source) as client:
        lean = {dn: {k.lower(): v for k, v in raw.items()}
                for dn, raw in client.search(directory.base, mapping.user_filter, mapping.user_attributes())}
        client.connection.strategy.decode_response_fast = type(client.connection.strategy).decode_response_fast.__get__(
            client.connection.strategy)
        plain = {dn: {k.lower(): list(v) for k, v in raw.items()}
                 for dn, raw in client.search(directory.base, mapping.user_filter, mapping.user_attributes())}
    assert lean == plain and len(lean) == 14
    assert any("Groß" in dn for dn in lean)


def test_sms_factor_from_mobile_else_telephone_number(services: Services, directory: Directory) -> None:
    """With ``sms_from_directory``, the preset's phone (``mobile``, else ``telephoneNumber``) becomes the
    account's SMS factor in E.164; without ``mobile`` the office number is used."""
    source = source_of(services, sms_from_directory=True)
    directory.set_user("jürgen.groß", mobile="+49 151 23456781", telephoneNumber="+49 30 1234-5678")
    directory.set_user("hans.meier", mobile=None, telephoneNumber="030 1234-5679")
    synced(services, source=source)
    with unit_of_work(services.sessions) as db:
        rows = db.execute(select(User.username, SmsFactor.phone, SmsFactor.managed_by)
                          .join(User, User.id == SmsFactor.user_id))
        factors = {row.username: (row.phone, row.managed_by) for row in rows}
    assert factors["jürgen.gross"] == ("+4915123456781", "rathaus")
    assert factors["hans.meier"] == ("+493012345679", "rathaus")

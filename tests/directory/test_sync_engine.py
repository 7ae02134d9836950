"""The sync engine against a real slapd with the openldap preset: creating, renaming, moving, disabling,
deleting after retention, restoring, groups (nested, posixGroup) and the high-water mark (issue 4, §2)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from idp.accounts.users import create_user
from idp.db import unit_of_work
from idp.models import DirectoryAccount, DirectoryGroup, DirectorySyncState, Group, RoleGrant, TotpFactor
from idp.services import Services
from tests.conftest import FakeClock
from tests.directory.slapd import Directory, Person
from tests.directory.support import account, audit_events, get, runs, source_of, synced, usernames
from tests.helpers import add_user

ALL = {"jürgen.gross", "erika.mustermann", "hans.meier", "petra.schäfer", "björn.öhler", "anna.weiss",
       "özlem.yilmaz", "klaus.strassburger", "maria.müller", "günther.kühn", "stefan.bäcker", "lena.fuss",
       "tobias.koch"}


def test_full_sync_mirrors_the_municipal_directory(services: Services, directory: Directory) -> None:
    """A first run creates every account with its names (umlauts and ß intact), mail and phone, and mirrors
    groups with nesting resolved and posixGroup members matched by uid."""
    report = synced(services)
    assert (report.mode, report.created, report.disabled, report.errors) == ("full", 13, 0, [])
    assert usernames(services) == ALL
    jürgen = get(services, "jürgen.gross")  # ß folds to ss in the username (NFKC + casefold), not in the name
    assert jürgen.display_name == "Jürgen Groß" and jürgen.email == "juergen.gross@stadt.example"
    assert jürgen.source == "rathaus" and jürgen.password_hash is None and not jürgen.disabled
    assert jürgen.phone == "+49 151 1000001"
    assert jürgen.dn == directory.users["jürgen.groß"]
    assert jürgen.groups == {"Bauamt", "Bauamt-Leitung", "Alle Mitarbeitenden"}
    assert get(services, "anna.weiss").groups == {"Bürgeramt", "Alle Mitarbeitenden"}
    assert get(services, "hans.meier").groups == {"Bauamt", "Alle Mitarbeitenden", "VPN-Nutzer"}
    [run] = runs(services)
    assert (run.status, run.mode, run.created, run.trigger) == ("success", "full", 13, "cli")
    assert len(audit_events(services, "directory.account_created")) == 13
    [event] = audit_events(services, "directory.sync")
    assert event.outcome == "success" and event.details["created"] == 13


def test_second_run_is_incremental_and_changes_nothing(services: Services, directory: Directory) -> None:
    """With nothing changed, the next run is incremental, reads no account in full and changes nothing."""
    synced(services)
    report = synced(services)
    assert (report.mode, report.created, report.updated, report.disabled, report.unchanged) == (
        "incremental", 0, 0, 0, 13)
    assert report.read == 0 and report.memberships_changed == 0


def test_incremental_run_reads_only_what_changed(services: Services, directory: Directory) -> None:
    """The incremental search starts at the stored high-water mark: one changed entry is one entry read."""
    synced(services)
    with unit_of_work(services.sessions) as db:
        mark = db.get(DirectorySyncState, "rathaus").high_water_mark  # type: ignore[union-attr]
    assert mark
    directory.set_user("maria.müller", mail="maria.mueller@kaemmerei.stadt.example",
                       displayName="Maria Müller-Lüdenscheidt")
    report = synced(services)
    assert (report.mode, report.read, report.updated, report.unchanged) == ("incremental", 1, 1, 12)
    maria = get(services, "maria.müller")
    assert maria.email == "maria.mueller@kaemmerei.stadt.example"
    assert maria.display_name == "Maria Müller-Lüdenscheidt"


def test_change_the_mark_misses_is_found_by_the_listing(services: Services, directory: Directory) -> None:
    """An entry whose change lies below the high-water mark (a change made while the last run was reading) is
    still found: the listing compares each entry's marker with the stored one."""
    synced(services)
    with unit_of_work(services.sessions) as db:
        state = db.get(DirectorySyncState, "rathaus")
        assert state is not None
        state.high_water_mark = "29991231235959Z"
    directory.set_user("günther.kühn", mobile="+49 160 5550000")
    report = synced(services)
    assert report.mode == "incremental" and report.read == 1
    assert get(services, "günther.kühn").phone == "+49 160 5550000"


def test_rename_keeps_the_account_and_its_sub(services: Services, directory: Directory) -> None:
    """Identity is the immutable entryUUID: a new uid (and so a new DN) renames the same account."""
    synced(services)
    before = get(services, "petra.schäfer")
    directory.rename("petra.schäfer", "petra.schäfer-wolf")
    report = synced(services)
    assert report.updated == 1 and report.created == 0 and report.disabled == 0
    assert account(services, "petra.schäfer") is None
    after = get(services, "petra.schäfer-wolf")
    assert after.sub == before.sub and after.id == before.id and not after.disabled
    assert after.groups == before.groups
    [event] = audit_events(services, "directory.account_renamed")
    assert event.subject == "petra.schäfer-wolf" and event.details["old_username"] == "petra.schäfer"


def test_two_accounts_may_swap_usernames_in_one_run(services: Services, directory: Directory) -> None:
    """Renames are applied in two steps, so that two entries can exchange their usernames."""
    synced(services)
    hans, tobias = get(services, "hans.meier"), get(services, "tobias.koch")
    directory.rename("hans.meier", "swap.tmp")
    directory.rename("tobias.koch", "hans.meier")
    directory.rename("swap.tmp", "tobias.koch")
    synced(services)
    assert get(services, "hans.meier").sub == tobias.sub
    assert get(services, "tobias.koch").sub == hans.sub


def test_move_to_another_department_keeps_account_and_groups(services: Services, directory: Directory) -> None:
    """A move to another OU changes only the DN; the account, its sub and its memberships stay."""
    synced(services)
    before = get(services, "björn.öhler")
    directory.move("björn.öhler", "Kämmerei")
    directory.add_member("Kämmerei", directory.users["björn.öhler"])
    synced(services)
    after = get(services, "björn.öhler")
    assert after.sub == before.sub and after.dn == directory.users["björn.öhler"]
    assert after.groups == {"Bürgeramt", "Kämmerei", "Alle Mitarbeitenden"}


def test_disabled_in_directory_is_disabled_and_returns_with_its_factors(
        services: Services, directory: Directory) -> None:
    """A locked entry (pwdAccountLockedTime) disables the account; unlocked, it is enabled again, same sub,
    second factors untouched."""
    synced(services)
    lena = get(services, "lena.fuss")
    with unit_of_work(services.sessions) as db:
        db.add(TotpFactor(user_id=lena.id, name="Diensthandy", secret_sealed=b"sealed", handle="h-lena"))
    directory.disable("lena.fuß")
    report = synced(services)
    assert report.disabled == 1
    locked = get(services, "lena.fuss")
    assert locked.disabled and locked.disabled_reason == "disabled_in_directory"
    [event] = audit_events(services, "directory.account_disabled")
    assert event.subject == "lena.fuss" and event.details["reason"] == "disabled_in_directory"
    directory.enable("lena.fuß")
    report = synced(services)
    assert report.enabled == 1
    back = get(services, "lena.fuss")
    assert not back.disabled and back.sub == lena.sub and back.disabled_reason is None
    with unit_of_work(services.sessions) as db:
        assert db.scalar(select(TotpFactor.name).where(TotpFactor.user_id == lena.id)) == "Diensthandy"
    assert len(audit_events(services, "directory.account_enabled")) == 1


def test_removed_account_is_disabled_then_deleted_after_retention(
        services: Services, directory: Directory, clock: FakeClock) -> None:
    """An entry deleted from the directory disables the account at once (incremental run) and deletes it only
    when the retention (30 days by default) is over."""
    synced(services)
    directory.delete("tobias.koch")
    report = synced(services)
    assert (report.mode, report.disabled) == ("incremental", 1)
    assert get(services, "tobias.koch").disabled_reason == "removed_from_directory"
    clock.advance(days=29, hours=23)
    assert synced(services).deleted == 0
    clock.advance(hours=2)
    report = synced(services)
    assert report.deleted == 1
    assert account(services, "tobias.koch") is None
    [event] = audit_events(services, "directory.account_deleted")
    assert event.subject == "tobias.koch"


def test_entry_back_within_retention_is_restored(services: Services, directory: Directory) -> None:
    """An entry moved out of the searched subtree and back again (same entryUUID) restores the same account."""
    synced(services)
    before = get(services, "özlem.yilmaz")
    outside = f"ou=Archiv-{directory.base.split(',')[0].split('=')[1]},dc=stadt,dc=example"
    directory.conn.add(outside, ["organizationalUnit"], {"ou": outside.split(",")[0].split("=")[1]})
    dn = directory.users["özlem.yilmaz"]
    directory.conn.modify_dn(dn, dn.split(",")[0], new_superior=outside)
    assert synced(services).disabled == 1
    assert get(services, "özlem.yilmaz").disabled
    directory.conn.modify_dn(f"{dn.split(',')[0]},{outside}", dn.split(",")[0],
                             new_superior=f"ou=Bürgeramt,{directory.base}")
    report = synced(services)
    assert report.enabled == 1
    after = get(services, "özlem.yilmaz")
    assert not after.disabled and after.sub == before.sub


def test_disabled_entries_are_not_created(services: Services, directory: Directory) -> None:
    """An entry that is already disabled in the directory gets no account (and a deleted one is not revived)."""
    directory.add_user(Person("ehemalig.person", "Ehemalige", "Person", "Ehemalige"), disabled=True)
    report = synced(services)
    assert report.created == 13
    assert account(services, "ehemalig.person") is None
    assert synced(services).read == 0, "a skipped entry is re-read only when it changes"
    directory.enable("ehemalig.person")
    report = synced(services)
    assert report.read == 1 and report.created == 1


def test_group_membership_changes_are_mirrored(services: Services, directory: Directory) -> None:
    """Memberships follow the directory, nested ones included: a group removed from a parent group takes its
    members out of the parent."""
    synced(services)
    directory.remove_member("Alle Mitarbeitenden", directory.groups["Ordnungsamt"])
    directory.add_member("Kämmerei", directory.users["hans.meier"])
    report = synced(services)
    assert report.memberships_changed == 4
    assert get(services, "stefan.bäcker").groups == {"Ordnungsamt"}
    assert get(services, "hans.meier").groups == {"Bauamt", "Kämmerei", "Alle Mitarbeitenden", "VPN-Nutzer"}


def test_deleted_group_goes_unless_a_role_is_granted_to_it(services: Services, directory: Directory) -> None:
    """A group removed from the directory is deleted; one a console role is granted to is emptied and kept,
    and linked again when the directory lists it again."""
    synced(services)
    with unit_of_work(services.sessions) as db:
        vpn = db.scalar(select(Group).where(Group.name == "VPN-Nutzer"))
        assert vpn is not None
        db.add(RoleGrant(role="helpdesk", group_id=vpn.id))
    directory.conn.delete(directory.groups["Bauamt-Leitung"])
    vpn_dn = directory.groups["VPN-Nutzer"]
    directory.conn.modify_dn(vpn_dn, "cn=VPN-Nutzer", new_superior=f"ou=Ehemalige,{directory.base}")
    directory.conn.delete(f"cn=VPN-Nutzer,ou=Ehemalige,{directory.base}")
    synced(services)
    with unit_of_work(services.sessions) as db:
        names = set(db.scalars(select(Group.name)))
        assert "Bauamt-Leitung" not in names and "VPN-Nutzer" in names
        assert db.scalar(select(DirectoryGroup).where(DirectoryGroup.group_id == vpn.id)) is None
    assert get(services, "hans.meier").groups == {"Bauamt", "Alle Mitarbeitenden"}
    assert get(services, "jürgen.gross").groups == {"Bauamt", "Alle Mitarbeitenden"}


def test_local_accounts_are_never_touched(services: Services, directory: Directory) -> None:
    """A local account keeps its username, password and state: a directory entry with the same username is
    reported and not mirrored, and no run disables or changes a local account."""
    add_user(services, "erika.mustermann", display_name="Erika (lokal)")
    add_user(services, "admin", display_name="Administrator")
    before = get(services, "erika.mustermann")
    report = synced(services)
    assert report.created == 12
    assert any("erika.mustermann" in error and "local" in error for error in report.errors)
    directory.delete("erika.mustermann")
    synced(services, full=True)
    after = get(services, "erika.mustermann")
    assert (after.source, after.display_name, after.password_hash, after.disabled) == (
        "local", "Erika (lokal)", before.password_hash, False)
    assert not get(services, "admin").disabled
    with unit_of_work(services.sessions) as db:
        assert db.get(DirectoryAccount, after.id) is None


def test_local_group_name_is_not_taken_over(services: Services, directory: Directory) -> None:
    """A local group with the name of a directory group keeps its members; the directory group is reported."""
    with unit_of_work(services.sessions) as db:
        create_user(db, "lokal.user", groups=["Kämmerei"])
    report = synced(services)
    assert any("Kämmerei" in error for error in report.errors)
    assert get(services, "lokal.user").groups == {"Kämmerei"}
    assert "Kämmerei" not in get(services, "maria.müller").groups


def test_username_of_a_removed_account_is_released(services: Services, directory: Directory) -> None:
    """A new entry may take the username of an account the directory no longer lists; that account keeps its
    sub under a changed username until its retention ends."""
    synced(services)
    old = get(services, "tobias.koch")
    directory.delete("tobias.koch")
    directory.add_user(Person("tobias.koch", "Tobias", "Koch", "Bauamt"))
    report = synced(services)
    assert report.created == 1 and report.disabled == 1
    new = get(services, "tobias.koch")
    assert new.sub != old.sub and not new.disabled
    released = get(services, f"tobias.koch~{old.id}")
    assert released.sub == old.sub and released.disabled


def test_entry_without_username_is_an_error(services: Services, directory: Directory) -> None:
    """An entry the mapping cannot read is counted as an error; the others are mirrored."""
    directory.conn.add(f"cn=Ohne Kennung,ou=Bauamt,{directory.base}", ["inetOrgPerson"],
                       {"cn": "Ohne Kennung", "sn": "Kennung"})
    report = synced(services)
    assert report.created == 13
    assert any("Ohne Kennung" in error and "username" in error for error in report.errors)
    assert runs(services)[-1].errors == 1


def test_changed_mapping_forces_a_full_run(services: Services, directory: Directory) -> None:
    """A new attribute mapping changes what a run must read, so the next run is full."""
    synced(services)
    report = synced(services, source=source_of(services, attributes=(("display_name", ("cn",)),)))
    assert report.mode == "full"


def test_runs_are_kept_as_history(services: Services, directory: Directory, clock: FakeClock) -> None:
    """Every run is stored with its mode, outcome and counts."""
    synced(services)
    directory.disable("klaus.straßburger")
    clock.advance(minutes=5)
    synced(services)
    first, second = runs(services)
    assert (first.mode, first.created) == ("full", 13)
    assert (second.mode, second.disabled, second.unchanged, second.status) == ("incremental", 1, 12, "success")
    assert second.started_at - first.started_at >= timedelta(minutes=5)


def test_incremental_run_recomputes_nested_parents(services: Services, directory: Directory) -> None:
    """A newcomer put into a deeply nested group is a member of every group above it after an incremental run,
    and a rename seen through posixGroup ``memberUid`` moves that membership along."""
    synced(services)
    directory.add_user(Person("neu.leitung", "Nora", "Neumann", "Bauamt"))
    directory.add_member("Bauamt-Leitung", directory.users["neu.leitung"])
    report = synced(services)
    assert report.mode == "incremental" and report.created == 1
    assert get(services, "neu.leitung").groups == {"Bauamt-Leitung", "Bauamt", "Alle Mitarbeitenden"}
    directory.rename("tobias.koch", "Tobias.Koch-Neu")
    synced(services)
    assert "VPN-Nutzer" not in get(services, "tobias.koch-neu").groups
    directory.conn.modify(directory.groups["VPN-Nutzer"], {"memberUid": [("MODIFY_ADD", ["tobias.koch-neu"])]})
    synced(services)
    assert "VPN-Nutzer" in get(services, "tobias.koch-neu").groups


def test_blocked_rename_keeps_its_old_name_for_itself(services: Services, directory: Directory) -> None:
    """A rename to a username a local account holds is refused, and so is a second rename that wanted the first
    one's old name; everything else in the run is applied."""
    synced(services)
    add_user(services, "chef", display_name="Lokaler Chef")
    directory.rename("hans.meier", "chef")
    directory.rename("tobias.koch", "hans.meier")
    directory.set_user("anna.weiß", mail="anna.weiss@buergeramt.stadt.example")
    report = synced(services)
    assert report.status == "success" and len(report.errors) == 2
    assert get(services, "hans.meier").email == "hans.meier@stadt.example"
    assert get(services, "tobias.koch").source == "rathaus"
    assert get(services, "chef").source == "local"
    assert get(services, "anna.weiss").email == "anna.weiss@buergeramt.stadt.example"


def test_bulk_change_refreshes_planner_statistics(services: Services, directory: Directory,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that changes many rows ANALYZEs the tables on PostgreSQL, inside its transaction (a no-op on
    SQLite); the run commits normally."""
    import directory_sync.engine

    monkeypatch.setattr(directory_sync.engine, "BULK_CHANGE", 1)
    assert synced(services).created == 13

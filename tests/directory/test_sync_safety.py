"""The safety guard and failures: a suspicious or failing run changes nothing (issue 4, §3; security case 53)."""

from __future__ import annotations

from typing import Any

import pytest

from directory_sync.state import take_lease
from idp.services import Services
from tests.conftest import FakeClock
from tests.directory.slapd import Directory, Slapd, free_port
from tests.directory.support import (
    audit_events,
    get,
    memberships_table,
    runs,
    source_of,
    sync,
    synced,
    usernames,
    users_table,
)


def test_disabling_more_than_the_allowed_share_is_refused(services: Services, directory: Directory) -> None:
    """Two of thirteen (15 %) exceeds the default 10 %: nothing changes, the run says why; --force applies it."""
    synced(services)
    directory.disable("hans.meier")
    directory.disable("anna.weiß")
    directory.set_user("maria.müller", mail="maria@neu.stadt.example")
    before = users_table(services)
    report = sync(services)
    assert report.status == "refused" and report.disabled == 2
    assert "2 of 13 active accounts" in (report.message or "")
    assert users_table(services) == before
    assert runs(services)[-1].status == "refused"
    assert audit_events(services, "directory.sync")[-1].outcome == "failure"
    forced = sync(services, force=True)
    assert forced.status == "success" and forced.forced and forced.disabled == 2
    assert get(services, "hans.meier").disabled and get(services, "maria.müller").email == "maria@neu.stadt.example"
    assert "forced" in (forced.message or "")


@pytest.mark.parametrize("source_overrides", [{"max_disable_share": "0%"}])
def test_one_disable_passes_even_a_zero_share(services: Services, directory: Directory) -> None:
    """A single leaver is never suspicious: the guard counts from the second disable."""
    synced(services)
    directory.disable("hans.meier")
    assert synced(services).disabled == 1
    directory.disable("anna.weiß")
    directory.disable("lena.fuß")
    assert sync(services).status == "refused"


def test_search_that_finds_nobody_is_refused(services: Services, directory: Directory) -> None:
    """A filter that matches no entry (a typo) would disable everyone: refused, nothing changed."""
    synced(services)
    before = users_table(services)
    report = sync(services, source=source_of(services, user_filter="(objectClass=inetOrgPersn)"))
    assert report.status == "refused" and "returned no entries" in (report.message or "")
    assert users_table(services) == before and usernames(services, active=True) == usernames(services)


def test_first_run_with_empty_result_is_refused_too(services: Services, directory: Directory) -> None:
    """Even with nothing to lose, an empty answer is reported rather than taken as success."""
    report = sync(services, source=source_of(services, base_dn=f"ou=Ehemalige,{directory.base}"))
    assert report.status == "refused"


def test_group_search_that_finds_nothing_is_refused(services: Services, directory: Directory) -> None:
    """A group filter that matches nothing would strip every membership: refused."""
    synced(services)
    before = memberships_table(services)
    report = sync(services, source=source_of(services, group_filter="(objectClass=groupOfNamez)"))
    assert report.status == "refused" and "group search returned no groups" in (report.message or "")
    assert memberships_table(services) == before


def test_invalid_filter_fails_and_changes_nothing(services: Services, directory: Directory) -> None:
    """A filter that is not LDAP syntax fails the run; nothing is written but the history row."""
    synced(services)
    before = users_table(services)
    report = sync(services, source=source_of(services, user_filter="(&(objectClass=inetOrgPerson)"))
    assert report.status == "failed" and report.created == 0
    assert users_table(services) == before
    assert runs(services)[-1].status == "failed"


def test_missing_base_dn_fails(services: Services, directory: Directory) -> None:
    """A base DN that does not exist is an error of the directory (noSuchObject), not an empty result."""
    synced(services)
    report = sync(services, source=source_of(services, base_dn=f"ou=Gibtsnicht,{directory.base}"))
    assert report.status == "failed" and "noSuchObject" in (report.message or "")
    assert usernames(services, active=True) == usernames(services)


def test_unreachable_directory_changes_nothing(services: Services, directory: Directory) -> None:
    """A directory that does not answer fails the run with a clear reason; every account stays as it was."""
    synced(services)
    before = users_table(services)
    report = sync(services, source=source_of(services, url=(f"ldap://127.0.0.1:{free_port()}",)), full=True)
    assert report.status == "failed" and "cannot be reached" in (report.message or "")
    assert users_table(services) == before
    [event] = [e for e in audit_events(services, "directory.sync") if e.outcome == "failure"]
    assert event.details["status"] == "failed"


def test_wrong_service_password_fails(services: Services, directory: Directory) -> None:
    """A refused service bind is reported as such and changes nothing."""
    report = sync(services, source=source_of(services, bind_password="falsch"))
    assert report.status == "failed" and "refused" in (report.message or "")
    assert usernames(services) == set()


def test_slapd_killed_mid_sync_changes_nothing(services: Services, directory: Directory, slapd: Slapd) -> None:
    """slapd killed after the first page of a full run: the run fails and the database is exactly as before
    (one transaction, opened only after the directory was read); the next run applies everything."""
    synced(services)
    directory.disable("hans.meier")
    directory.set_user("erika.mustermann", mail="erika@neu.stadt.example")
    before, memberships = users_table(services), memberships_table(services)

    class KillAfterFirstPage:
        def phase(self, name: str, total: int | None = None) -> None:
            pass

        def advance(self, count: int = 1) -> None:
            slapd.kill()

    report = sync(services, full=True, progress=KillAfterFirstPage())
    assert report.status == "failed" and not slapd.running
    assert users_table(services) == before and memberships_table(services) == memberships
    slapd.start()
    directory.connect()
    report = synced(services)
    assert report.disabled == 1 and get(services, "erika.mustermann").email == "erika@neu.stadt.example"


def test_dry_run_shows_the_difference_and_writes_nothing(services: Services, directory: Directory) -> None:
    """--dry-run computes the plan, even one the guard would refuse, and writes nothing, not even history."""
    synced(services)
    directory.disable("hans.meier")
    directory.disable("anna.weiß")
    before = users_table(services)
    report = sync(services, dry_run=True)
    assert report.status == "dry_run" and report.disabled == 2
    assert "guard would refuse" in (report.message or "")
    assert report.plan is not None and {d.account.username for d in report.plan.disables} == {"hans.meier",
                                                                                              "anna.weiss"}
    assert users_table(services) == before and len(runs(services)) == 1


def test_one_process_syncs_a_source_at_a_time(services: Services, directory: Directory, clock: FakeClock) -> None:
    """While another process holds the source's lease, a run does nothing ("busy"); a lease left by a crashed
    process expires."""
    assert take_lease(services.sessions, "rathaus", "other-host:4242:abc", services.now())
    report = sync(services)
    assert report.status == "busy" and usernames(services) == set()
    clock.advance(minutes=31)
    assert synced(services).created == 13


def test_searches_are_paged(services: Services, running_slapd: Slapd, tmp_path: Any) -> None:
    """The service account may read 50 entries per page (like AD's MaxPageSize of 1000): a directory of 73
    accounts syncs completely in pages, while a page size above the server's limit fails rather than
    returning part of the directory."""
    big = Directory(running_slapd, "openldap").build(extra_users=60)
    try:
        source = source_of(services, base_dn=big.base, page_size=20)
        assert synced(services, source=source).created == 73
        report = sync(services, source=source_of(services, base_dn=big.base, page_size=500), full=True)
        assert report.status == "failed" and "adminLimitExceeded" in (report.message or "")
    finally:
        big.close()

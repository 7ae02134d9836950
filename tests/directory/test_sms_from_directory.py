"""SMS factors from the directory's phone attribute (``sms_from_directory``, issue 4: the AD preset's
``mobile``/``telephoneNumber`` "for SMS"): made, changed and removed by the sync, confirmed because the
directory vouches for the number, off by default, never touching a phone the user enrolled, and fixed in
/account (the server refuses renaming or removing it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from starlette.testclient import TestClient

from idp.config import Settings
from idp.db import unit_of_work
from idp.factors import enrolled, sms
from idp.helpdesk import reset_mfa
from idp.models import SmsChallenge, SmsFactor, User
from idp.services import Services
from tests.conftest import FakeClock
from tests.directory.conftest import directory_settings
from tests.directory.slapd import USER_PASSWORD, Directory
from tests.directory.support import audit_events, get, source_of, sync, synced
from tests.helpers import LOGIN_PAGE, csrf_of, submit_login

NUMBERS = {"jürgen.groß": "+49 151 23456781", "hans.meier": "0151 23456783", "anna.weiß": "+49 (0)30 1234566",
           "lena.fuß": "+49 160 98765412"}
"""Valid numbers for the four people the test directory lists with a ``mobile``, written as people write them."""
E164 = {"jürgen.gross": "+4915123456781", "hans.meier": "+4915123456783", "anna.weiss": "+49301234566",
        "lena.fuss": "+4916098765412"}


@pytest.fixture
def settings(backend: tuple[str, Engine], tmp_path: Path, directory: Directory) -> Settings:
    """The source with the option on, and the shipped policy: every sign-in needs a second factor."""
    return directory_settings(tmp_path, backend[0], [directory.source(sms_from_directory=True)],
                              IDP_MFA_DEFAULT="required")


@pytest.fixture
def numbered(directory: Directory) -> Directory:
    for username, number in NUMBERS.items():
        directory.set_user(username, mobile=number)
    return directory


def phones(services: Services) -> dict[str, tuple[str, str | None, bool]]:
    """username → (number, managing source, confirmed) of every SMS factor, by user."""
    with unit_of_work(services.sessions) as db:
        rows = db.execute(select(User.username, SmsFactor.phone, SmsFactor.managed_by, SmsFactor.confirmed_at)
                          .join(User, User.id == SmsFactor.user_id).order_by(SmsFactor.id))
        return {row.username: (row.phone, row.managed_by, row.confirmed_at is not None) for row in rows}


def managed_id(services: Services, username: str) -> int:
    with unit_of_work(services.sessions) as db:
        factor_id = db.scalar(select(SmsFactor.id).join(User, User.id == SmsFactor.user_id)
                              .where(User.username == username, SmsFactor.managed_by.is_not(None)))
        assert factor_id is not None
        return factor_id


def own_phone(services: Services, username: str, number: str) -> int:
    """A phone the user enrolled and confirmed themselves."""
    with unit_of_work(services.sessions) as db:
        user = db.scalar(select(User).where(User.username == username))
        assert user is not None
        factor = sms.add_phone(db, user, number, "Privat", services.settings.sms, services.now())
        sms.confirm(db, factor, services.now())
        return factor.id


def test_off_by_default(services: Services, numbered: Directory) -> None:
    """Without the option the numbers are stored (directory_accounts.phone) but make no factor."""
    report = synced(services, source=source_of(services, sms_from_directory=False))
    assert report.created == 13 and report.sms_factors_changed == 0
    assert get(services, "jürgen.gross").phone == NUMBERS["jürgen.groß"]
    assert phones(services) == {}


def test_factor_made_confirmed_with_the_e164_number_and_audited(services: Services, numbered: Directory) -> None:
    """The first run makes one confirmed factor per number, normalised as a typed number would be
    ([sms] default_region DE for national ones), marked as the source's, and audits each (masked)."""
    report = synced(services)
    assert report.sms_factors_changed == 4 and report.errors == []
    assert phones(services) == {name: (number, "rathaus", True) for name, number in E164.items()}
    events = audit_events(services, "directory.sms_factor_created")
    assert {event.subject for event in events} == set(E164)
    jürgen = next(event for event in events if event.subject == "jürgen.gross")
    assert jürgen.details["source"] == "rathaus" and jürgen.details["phone"] == sms.masked(E164["jürgen.gross"])
    assert "+4915123456781" not in str(jürgen.details)
    assert audit_events(services, "directory.sync")[-1].details["sms_factors_changed"] == 4
    # A second run changes nothing.
    again = synced(services)
    assert (again.mode, again.sms_factors_changed) == ("incremental", 0)


def test_changed_number_updates_the_factor(services: Services, numbered: Directory) -> None:
    """A new number in the directory becomes the factor's number (same factor); a code already sent to the old
    number stops working."""
    synced(services)
    factor_id = managed_id(services, "hans.meier")
    with unit_of_work(services.sessions) as db:
        factor = db.get(SmsFactor, factor_id)
        assert factor is not None
        challenge = sms.send_code(db, services.hasher, sms.LogGateway(), factor, "login:tx", services.now()).id
    numbered.set_user("hans.meier", mobile="+49 170 5550123")
    report = synced(services)
    assert report.mode == "incremental" and report.sms_factors_changed == 1
    assert phones(services)["hans.meier"] == ("+491705550123", "rathaus", True)
    assert managed_id(services, "hans.meier") == factor_id
    [event] = audit_events(services, "directory.sms_factor_updated")
    assert event.subject == "hans.meier" and event.details["previous_phone"] == sms.masked("+4915123456783")
    with unit_of_work(services.sessions) as db:
        sent = db.get(SmsChallenge, challenge)
        assert sent is not None and sent.expires_at <= services.now()


def test_removed_attribute_removes_the_factor(services: Services, numbered: Directory) -> None:
    synced(services)
    numbered.set_user("lena.fuß", mobile=None)
    report = synced(services)
    assert report.sms_factors_changed == 1
    assert "lena.fuss" not in phones(services)
    [event] = audit_events(services, "directory.sms_factor_removed")
    assert event.subject == "lena.fuss" and event.details["reason"] == "number_removed"


def test_turning_the_option_off_removes_the_managed_factors(services: Services, numbered: Directory) -> None:
    """Off again: the next run (a full one: the option is part of what decides a run) removes every factor
    the source made, and only those."""
    synced(services)
    own = own_phone(services, "erika.mustermann", "+49 171 2223334")
    report = synced(services, source=source_of(services, sms_from_directory=False))
    assert report.mode == "full" and report.sms_factors_changed == 4
    assert phones(services) == {"erika.mustermann": ("+491712223334", None, True)}
    events = audit_events(services, "directory.sms_factor_removed")
    assert len(events) == 4 and {event.details["reason"] for event in events} == {"option_off"}
    with unit_of_work(services.sessions) as db:
        assert db.get(SmsFactor, own) is not None


def test_phones_the_users_enrolled_are_never_touched(services: Services, numbered: Directory) -> None:
    """A user's own phone stays through every change of the directory's number; a directory number the user
    already enrolled makes no second factor for the same phone."""
    synced(services)
    own_hans = own_phone(services, "hans.meier", "+49 171 2223334")
    own_anna = own_phone(services, "anna.weiss", "+49 172 9998887")
    numbered.set_user("hans.meier", mobile=None)
    numbered.set_user("anna.weiß", mobile="+49 172 9998887")  # the directory now says her own number
    synced(services)
    found = phones(services)
    assert found["hans.meier"] == ("+491712223334", None, True)
    assert found["anna.weiss"] == ("+491729998887", None, True)
    with unit_of_work(services.sessions) as db:
        assert {f.id for f in db.scalars(select(SmsFactor).where(SmsFactor.managed_by.is_(None)))} == {own_hans,
                                                                                                       own_anna}
        assert len(db.scalars(select(SmsFactor).where(SmsFactor.managed_by == "rathaus")).all()) == 2
    removed = {e.subject: e.details["reason"] for e in audit_events(services, "directory.sms_factor_removed")}
    assert removed == {"hans.meier": "number_removed", "anna.weiss": "same_as_own"}


def test_unusable_number_makes_no_factor_and_the_run_succeeds(services: Services, numbered: Directory) -> None:
    """A number that is not one (too short, letters) is an entry error in the run's summary and audit trail,
    not a failure of the run; a managed factor whose number turned bad is removed."""
    numbered.set_user("erika.mustermann", mobile="Durchwahl 12")
    numbered.set_user("petra.schäfer", mobile="12")
    report = sync(services)
    assert report.status == "success" and report.created == 13 and report.sms_factors_changed == 4
    assert set(phones(services)) == set(E164)
    assert any(error.startswith("erika.mustermann: the phone number 'Durchwahl 12' makes no SMS factor")
               for error in report.errors)
    assert any(error.startswith("petra.schäfer: the phone number '12'") for error in report.errors)
    refused = audit_events(services, "directory.sms_factor_refused")
    assert {event.subject for event in refused} == {"erika.mustermann", "petra.schäfer"}
    assert all(event.outcome == "failure" and event.details["reason"] == "invalid_number" for event in refused)
    assert audit_events(services, "directory.sync")[-1].details["errors"] == 2

    numbered.set_user("lena.fuß", mobile="0000")
    later = synced(services)
    assert later.sms_factors_changed == 1 and len(later.errors) == 1  # only the entry read in this run
    assert "lena.fuss" not in phones(services)
    assert audit_events(services, "directory.sms_factor_removed")[-1].details["reason"] == "invalid_number"


def test_helpdesk_reset_removes_it_and_the_next_sync_makes_it_again(services: Services,
                                                                    numbered: Directory) -> None:
    synced(services)
    with unit_of_work(services.sessions) as db:
        user = db.scalar(select(User).where(User.username == "jürgen.gross"))
        assert user is not None
        result = reset_mfa(db, services, user, now=services.now())
        assert result.removed["sms"] == 1
    assert "jürgen.gross" not in phones(services)
    report = synced(services)
    assert report.mode == "incremental" and report.sms_factors_changed == 1
    assert phones(services)["jürgen.gross"] == (E164["jürgen.gross"], "rathaus", True)


def test_dry_run_lists_the_factor_changes(services: Services, numbered: Directory) -> None:
    from directory_sync.cli import describe_plan

    report = sync(services, dry_run=True)
    assert report.plan is not None
    lines = [line for line in describe_plan(report.plan) if line.startswith("+ sms")]
    assert lines == [f"+ sms      {name}  {sms.masked(number)}" for name, number in sorted(E164.items())]
    assert phones(services) == {}


# --- sign-in and /account -----------------------------------------------------------------------------------


def sign_in_by_sms(client: TestClient, path: str, username: str, caplog: pytest.LogCaptureFixture) -> tuple[Any, str]:
    """Open ``path``, sign in with the directory password and an SMS code from the log gateway; returns the
    page and the number the code went to."""
    response = client.get(path)
    login, sent_to = "", ""
    for _ in range(12):
        if response.status_code not in (302, 303):
            return response, sent_to
        location = response.headers["location"]
        if LOGIN_PAGE.fullmatch(location):
            login = location
            response = submit_login(client, location, username, USER_PASSWORD)
        elif location.endswith("/factor"):
            page = client.get(location)
            assert 'id="sms-send-form"' in page.text, page.text
            caplog.clear()
            with caplog.at_level("DEBUG", logger="idp.sms"):
                sent = client.post(login + "/sms/send", data={"csrf_token": csrf_of(page.text)})
            assert sent.status_code == 200, sent.text
            message = next(r.getMessage() for r in caplog.records if r.name == "idp.sms" and r.levelname == "DEBUG")
            matched = re.fullmatch(r"SMS to (\+\d+): .*?\b(\d{6})\b.*", message)
            assert matched, message
            sent_to = matched[1]
            response = client.post(location, data={"method": "sms", "code": matched[2],
                                                   "csrf_token": csrf_of(sent.text)})
            assert response.status_code == 303, response.text
        else:
            response = client.get(location)
    raise AssertionError("too many redirects")


def test_sign_in_with_a_code_sent_to_the_directory_number(client: TestClient, services: Services,
                                                          numbered: Directory,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The managed factor is an ordinary confirmed phone to the second step: the code goes to the directory's
    number and completes the sign-in."""
    synced(services)
    page, sent_to = sign_in_by_sms(client, "/account", "lena.fuss", caplog)
    assert page.status_code == 200 and page.url.path == "/account"
    assert sent_to == E164["lena.fuss"]
    event = audit_events(services, "login.second_factor")[-1]
    assert event.outcome == "success" and event.subject == "lena.fuss" and event.details["method"] == "sms"


def test_account_shows_it_from_the_directory_and_refuses_changes(client: TestClient, services: Services,
                                                                 numbered: Directory,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """/account marks the factor as the directory's and offers no rename or remove; the server refuses both
    whatever is posted (audited), and the factor stays."""
    synced(services)
    factor_id = managed_id(services, "anna.weiss")
    page, _ = sign_in_by_sms(client, "/account", "anna.weiss", caplog)
    assert 'data-from-directory="true"' in page.text and "Phone from the directory" in page.text
    detail = client.get(f"/account/factors/sms/{factor_id}")
    assert detail.status_code == 200
    assert 'id="factor-from-directory"' in detail.text
    assert 'id="rename-form"' not in detail.text and 'id="remove-form"' not in detail.text
    token = csrf_of(page.text)
    renamed = client.post(f"/account/factors/sms/{factor_id}/rename", data={"csrf_token": token, "name": "Mein"})
    removed = client.post(f"/account/factors/sms/{factor_id}/remove", data={"csrf_token": token})
    assert renamed.status_code == removed.status_code == 409
    assert 'id="factor-error"' in removed.text
    with unit_of_work(services.sessions) as db:
        user = db.scalar(select(User).where(User.username == "anna.weiss"))
        assert user is not None
        [factor] = enrolled.factors_of(db, user)
        assert (factor.kind, factor.id, factor.name) == ("sms", factor_id, "Directory")
    refusals = [e for e in audit_events(services, "factor.renamed") + audit_events(services, "factor.removed")
                if e.outcome == "failure"]
    assert {e.event for e in refusals} == {"factor.renamed", "factor.removed"}
    assert {e.details["reason"] for e in refusals} == {"managed_by_directory"}


def test_a_phone_the_user_enrolled_is_still_theirs_to_remove(client: TestClient, services: Services,
                                                             numbered: Directory,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    synced(services)
    own = own_phone(services, "anna.weiss", "+49 172 9998887")
    page, _ = sign_in_by_sms(client, f"/account/factors/sms/{own}", "anna.weiss", caplog)
    assert 'id="remove-form"' in page.text
    removed = client.post(f"/account/factors/sms/{own}/remove", data={"csrf_token": csrf_of(page.text)})
    assert removed.status_code == 303
    assert phones(services)["anna.weiss"] == (E164["anna.weiss"], "rathaus", True)


def test_a_full_run_leaves_an_unchanged_factor_as_it_is(services: Services, clock: FakeClock,
                                                        numbered: Directory) -> None:
    """A full run checks every number again and changes only what differs: same row, same creation time."""
    synced(services)
    factor_id = managed_id(services, "lena.fuss")
    with unit_of_work(services.sessions) as db:
        created = db.scalar(select(SmsFactor.created_at).where(SmsFactor.id == factor_id))
    clock.advance(hours=1)
    report = synced(services, full=True)
    assert report.mode == "full" and report.sms_factors_changed == 0
    assert managed_id(services, "lena.fuss") == factor_id
    with unit_of_work(services.sessions) as db:
        assert db.scalar(select(SmsFactor.created_at).where(SmsFactor.id == factor_id)) == created


def test_losing_many_numbers_at_once_is_refused_by_the_guard(services: Services, numbered: Directory) -> None:
    """Numbers vanishing from many entries at once looks like a service account that can no longer read the
    attribute: the run changes nothing (a user left without a factor would enroll one with the password alone),
    until --force after a look at --dry-run."""
    synced(services)
    numbered.set_user("jürgen.groß", mobile=None)
    numbered.set_user("hans.meier", mobile=None)
    refused = sync(services)
    assert refused.status == "refused" and "remove 2 of 4 SMS factors" in (refused.message or "")
    assert len(phones(services)) == 4
    forced = sync(services, force=True)
    assert forced.status == "success" and set(phones(services)) == {"anna.weiss", "lena.fuss"}

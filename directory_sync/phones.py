"""SMS factors from the directory's phone attribute (``sms_from_directory``): planned with the run, written in it.

With the option on, each account of the source has at most one SMS factor with ``managed_by`` = the source,
confirmed when it is made (the directory vouches for the number, no code is sent), its number the directory's
``phone`` in E.164, normalised exactly as a number a user types (``idp.factors.sms.normalize_phone`` with
``[sms] default_region``)::

    directory number  ─ none ──────────────────────────► no factor (an existing one is removed)
                      ─ not a valid number ────────────► no factor; an entry error in the run (the run succeeds)
                      ─ the user enrolled it themselves ► no factor (their own one is already there)
                      ─ valid ─────────────────────────► the factor, created or given the new number

With the option off, every factor the source manages is removed. Factors the users enrolled themselves
(``managed_by`` NULL) are never read for change, only to avoid a duplicate. A number is normalised when its
entry was read in this run (every entry in a full run) or when the account has no managed factor (so that
one removed by the helpdesk reset, or an option just turned on, is made at the next run); an entry an
incremental run did not re-read keeps its factor unchanged. Refused numbers are reported only when the
entry was read, like every other entry error.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from directory_sync.changes import AccountState, PhoneChange, PhoneRefusal, Plan
from directory_sync.snapshot import Snapshot
from idp import audit
from idp.factors.sms import PhoneNumberInvalid, masked, normalize_phone
from idp.models import DirectoryAccount, SmsChallenge, SmsFactor

FACTOR_NAME = "Directory"
"""The stored name of a managed factor; pages show "from the directory" instead (the user cannot rename it)."""


def plan_phones(db: Session, plan: Plan, accounts: dict[str, AccountState], snapshot: Snapshot, *,
                enabled: bool, region: str) -> None:
    """Add the SMS factor changes to ``plan``; run after the accounts' creates and deletes are settled."""
    managed: dict[int, tuple[int, str]] = {}
    for factor_id, user_id, phone in db.execute(
            select(SmsFactor.id, SmsFactor.user_id, SmsFactor.phone)
            .where(SmsFactor.managed_by == plan.source).order_by(SmsFactor.id.desc())):
        # One per account (one run at a time makes them, under the lease); were there two, the oldest counts.
        managed[user_id] = (factor_id, phone)
    plan.sms_managed_before = len(managed)
    by_user = {account.user_id: account for account in accounts.values()}
    if not enabled:
        for user_id, (factor_id, phone) in managed.items():
            account = by_user.get(user_id)
            plan.sms_removes.append(PhoneChange(account.external_id if account else "",
                                                account.username if account else "", user_id, factor_id=factor_id,
                                                previous=phone, reason="option_off"))
        return

    own = _own_numbers(db, plan.source)
    cache: dict[str, str | PhoneNumberInvalid] = {}

    def wanted(username: str, raw: str | None, user_id: int | None, report: bool) -> tuple[str | None, str]:
        """The number the factor should have (or None, and why not)."""
        if raw is None or not raw.strip():
            return None, "number_removed"
        if raw not in cache:
            try:
                cache[raw] = normalize_phone(raw, region)
            except PhoneNumberInvalid as exc:
                cache[raw] = exc
        number = cache[raw]
        if isinstance(number, PhoneNumberInvalid):
            if report:
                problem = _problem(number)
                plan.errors.append(f"{username}: the phone number {raw!r} makes no SMS factor: {problem}")
                plan.sms_refusals.append(PhoneRefusal(username, problem))
            return None, "invalid_number"
        if user_id is not None and (user_id, number) in own:
            return None, "same_as_own"
        return number, ""

    deleted = {account.external_id for account in plan.deletes}
    full = snapshot.mode == "full"
    for external_id, account in accounts.items():
        if external_id in deleted:
            continue  # the account goes, and its factors with it
        entry = snapshot.users.get(external_id)
        current = managed.get(account.user_id)
        read = entry is not None
        if current is not None and not read and not full:
            continue  # not re-read: the directory's number did not change
        raw = entry.phone if entry is not None else account.phone
        number, why = wanted(account.username, raw, account.user_id, read)
        _compare(plan, account.external_id, account.username, account.user_id, current, number, why)
    for created in plan.creates:
        number, _ = wanted(created.username, created.phone, None, True)
        if number is not None:
            plan.sms_creates.append(PhoneChange(created.external_id, created.username, None, phone=number))


def _problem(exc: PhoneNumberInvalid) -> str:
    """The English text of a refusal (its message id), for the sync's error list."""
    return str(exc.args[0]) if exc.args else "not a valid phone number"


def _compare(plan: Plan, external_id: str, username: str, user_id: int, current: tuple[int, str] | None,
             number: str | None, why: str) -> None:
    if current is None:
        if number is not None:
            plan.sms_creates.append(PhoneChange(external_id, username, user_id, phone=number))
        return
    factor_id, phone = current
    if number is None:
        plan.sms_removes.append(PhoneChange(external_id, username, user_id, factor_id=factor_id, previous=phone,
                                            reason=why))
    elif number != phone:
        plan.sms_updates.append(PhoneChange(external_id, username, user_id, phone=number, factor_id=factor_id,
                                            previous=phone))


def _own_numbers(db: Session, source: str) -> set[tuple[int, str]]:
    """(user id, number) of the confirmed phones the source's users enrolled themselves."""
    rows = db.execute(select(SmsFactor.user_id, SmsFactor.phone)
                      .join(DirectoryAccount, DirectoryAccount.user_id == SmsFactor.user_id)
                      .where(DirectoryAccount.source == source, SmsFactor.managed_by.is_(None),
                             SmsFactor.confirmed_at.is_not(None)))
    return {(user_id, phone) for user_id, phone in rows}


def apply_phones(db: Session, plan: Plan, now: datetime) -> None:
    """Write the planned SMS factor changes and audit each; after the run's accounts were created."""
    source = plan.source
    for change in plan.sms_removes:
        db.execute(delete(SmsFactor).where(SmsFactor.id == change.factor_id, SmsFactor.managed_by == source))
        audit.record(db, "directory.sms_factor_removed", subject=change.username or None, source=source,
                     factor=change.factor_id, phone=masked(change.previous or ""), reason=change.reason, at=now)
    for change in plan.sms_updates:
        db.execute(update(SmsFactor).where(SmsFactor.id == change.factor_id, SmsFactor.managed_by == source)
                   .values(phone=change.phone, confirmed_at=now))
        # A code already sent to the old number must not complete a sign-in after the number changed.
        db.execute(update(SmsChallenge).where(SmsChallenge.factor_id == change.factor_id,
                                              SmsChallenge.consumed_at.is_(None), SmsChallenge.expires_at > now)
                   .values(expires_at=now))
        audit.record(db, "directory.sms_factor_updated", subject=change.username, source=source,
                     factor=change.factor_id, phone=masked(change.phone or ""),
                     previous_phone=masked(change.previous or ""), at=now)
    if plan.sms_creates:
        user_ids = _user_ids(db, source, [c.external_id for c in plan.sms_creates if c.user_id is None])
        for change in plan.sms_creates:
            user_id = change.user_id if change.user_id is not None else user_ids.get(change.external_id)
            if user_id is None:
                continue
            factor = SmsFactor(user_id=user_id, name=FACTOR_NAME, phone=change.phone, created_at=now,
                               confirmed_at=now, managed_by=source)
            db.add(factor)
            db.flush()
            audit.record(db, "directory.sms_factor_created", subject=change.username, source=source,
                         factor=factor.id, phone=masked(change.phone or ""), at=now)
    for refusal in plan.sms_refusals:
        audit.record(db, "directory.sms_factor_refused", outcome="failure", subject=refusal.username,
                     source=source, reason="invalid_number", problem=refusal.problem, at=now)


def _user_ids(db: Session, source: str, external_ids: Iterable[str]) -> dict[str, int]:
    wanted = list(external_ids)
    if not wanted:
        return {}
    found: dict[str, int] = {}
    for start in range(0, len(wanted), 1000):
        found.update({external_id: user_id for external_id, user_id in db.execute(
            select(DirectoryAccount.external_id, DirectoryAccount.user_id)
            .where(DirectoryAccount.source == source,
                   DirectoryAccount.external_id.in_(wanted[start:start + 1000])))})
    return found

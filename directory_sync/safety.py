"""The safety guard: a plan that looks like a broken filter or an empty answer is not applied.

A run changes nothing, and says why, when

- the user search lists no entries at all (a wrong base DN or filter, a service account that lost its read
  rights: directories answer such searches with success and zero entries);
- it would disable more than ``max_disable_share`` of the source's active accounts, and more than one
  (one leaver is never suspicious, even in a source of five);
- the group search lists no groups while the source has mirrored groups (every membership would go);
- with ``sms_from_directory``, it would remove more than ``max_disable_share`` of the SMS factors made from the
  directory (and more than one) because their numbers are gone or unusable: a service account that lost read
  access to the phone attribute would otherwise take every user's phone away, and a user without a factor
  enrolls a new one with the password alone.

``--force`` applies such a plan anyway, after a person has looked at it (``--dry-run`` shows it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from directory_sync.plan import Plan


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


LOSSES = frozenset({"number_removed", "invalid_number"})
"""Reasons of SMS factor removals that leave the user without the phone (turning the option off is a decision
of the configuration, not a symptom)."""


def check(plan: Plan, max_disable_share: float) -> Verdict:
    if plan.listed == 0:
        return Verdict(False, "the user search returned no entries; check base_dn, user_filter and the service "
                              "account's read rights", {"listed": 0})
    disables = len(plan.disables)
    limit = max_disable_share * plan.active_before
    if disables > 1 and disables > limit:
        share = disables / plan.active_before if plan.active_before else 1.0
        return Verdict(
            False,
            f"the run would disable {disables} of {plan.active_before} active accounts ({share:.0%}, more than the "
            f"allowed {max_disable_share:.0%})",
            {"disables": disables, "active": plan.active_before, "max_disable_share": max_disable_share},
        )
    lost = sum(1 for change in plan.sms_removes if change.reason in LOSSES)
    if lost > 1 and lost > max_disable_share * plan.sms_managed_before:
        return Verdict(
            False,
            f"the run would remove {lost} of {plan.sms_managed_before} SMS factors made from the directory's "
            "numbers; check that the service account can still read the phone attribute",
            {"sms_removes": lost, "sms_managed": plan.sms_managed_before, "max_disable_share": max_disable_share},
        )
    if plan.groups_listed == 0 and plan.groups_before > 0:
        return Verdict(False, f"the group search returned no groups, but {plan.groups_before} are mirrored; check "
                              "group_base_dn and group_filter", {"groups_before": plan.groups_before})
    return Verdict(True)

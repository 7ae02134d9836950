"""The safety guard: a plan that looks like a broken filter or an empty answer is not applied.

A run changes nothing, and says why, when

- the user search lists no entries at all (a wrong base DN or filter, a service account that lost its read
  rights: directories answer such searches with success and zero entries);
- it would disable more than ``max_disable_share`` of the source's active accounts, and more than one
  (one leaver is never suspicious, even in a source of five);
- the group search lists no groups while the source has mirrored groups (every membership would go).

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
    if plan.groups_listed == 0 and plan.groups_before > 0:
        return Verdict(False, f"the group search returned no groups, but {plan.groups_before} are mirrored; check "
                              "group_base_dn and group_filter", {"groups_before": plan.groups_before})
    return Verdict(True)

"""The auto-refill policy without I/O (obol-buy-x402.md §13): what `buy` writes to `spec.autoRefill`
from its flags, and when `process` signs more. The spend caps it stores (maxTotal, maxSpendPerDay) are
accounted for in `caps.py`; the refill itself (shared by `process` and `refill`) is `refilling.py`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import UsageError

MAX_REFILL_COUNT = 1000     # buy.py MAX_AUTH_COUNT: the largest batch one refill signs
DEFAULT_REFILL_COUNT = 100
REFILL_THRESHOLD_DIVISOR = 5


def _threshold_default(count: int) -> int:
    return 0 if count <= 1 else max(1, count // REFILL_THRESHOLD_DIVISOR)


_CAP_FLAGS = (("maxTotal", "--max-total"), ("maxSpendPerDay", "--max-spend-per-day"))


def resolve_auto_refill(*, auto_refill: bool | None, threshold: int | None, count: int | None,
                        cost_cap: int | None, desired_count: int,
                        existing: dict[str, Any] | None, max_total: int | None = None,
                        max_spend_per_day: int | None = None) -> dict[str, Any] | None:
    """`spec.autoRefill` from the flags and the existing policy (§13.1); None means "no policy".

    Deliberate fix: an explicit (or existing) threshold of 0 is honoured, where upstream's `or`
    chain silently replaced it with the default. The spend caps (atomic units; `caps.py`) are kept
    from the existing policy unless given, also when auto-refill is switched off: `refill NAME` can
    still top such a purchase up, and a cap must not vanish with a flag that says nothing about it.
    """
    existing = existing or None
    if threshold is not None and threshold < 0:
        raise UsageError(f"--refill-threshold must be 0 or more (got {threshold})")
    if count is not None and not 1 <= count <= MAX_REFILL_COUNT:
        raise UsageError(f"--refill-count must be between 1 and {MAX_REFILL_COUNT} (got {count})")
    if cost_cap is not None and cost_cap <= 0:
        raise UsageError(f"--cost-cap must be greater than 0 (got {cost_cap})")
    existing_enabled = bool(existing and existing.get("enabled"))
    not_enabled = auto_refill is False or (
        auto_refill is None and threshold is None and count is None and not existing_enabled)
    if cost_cap is not None and not_enabled:
        raise UsageError("--cost-cap requires --auto-refill because it only applies to future auto-refill",
                         hint="add --auto-refill, or drop --cost-cap")
    new_caps = {"maxTotal": max_total, "maxSpendPerDay": max_spend_per_day}
    for key, flag in _CAP_FLAGS:
        if new_caps[key] is not None and new_caps[key] <= 0:
            raise UsageError(f"{flag} must be greater than 0 (got {new_caps[key]})")
        if new_caps[key] is not None and not_enabled:
            raise UsageError(f"{flag} requires --auto-refill: it caps what auto-refill (and `refill`) may sign",
                             hint=f"add --auto-refill, or drop {flag}")
    prev = existing or {}
    kept_caps = {key: new_caps[key] if new_caps[key] is not None else prev.get(key) for key, _ in _CAP_FLAGS}
    cap_fields = {key: (int(value) if key == "maxTotal" else str(value))
                  for key, value in kept_caps.items() if value not in (None, "")}
    if (auto_refill is None and threshold is None and count is None and cost_cap is None
            and max_total is None and max_spend_per_day is None):
        return dict(existing) if existing else None
    enabled = auto_refill if auto_refill is not None else (
        existing_enabled or threshold is not None or count is not None)
    if not enabled:
        return {"enabled": False, **cap_fields}
    final_count = count or prev.get("count") or desired_count or DEFAULT_REFILL_COUNT
    if not 1 <= int(final_count) <= MAX_REFILL_COUNT:
        raise UsageError(
            f"auto-refill count must be between 1 and {MAX_REFILL_COUNT} (would be {final_count}, "
            f"the pool size)", hint=f"pass --refill-count N with N from 1 to {MAX_REFILL_COUNT}")
    if threshold is not None:
        final_threshold = threshold
    elif prev.get("threshold") is not None:
        final_threshold = int(prev["threshold"])
    else:
        final_threshold = _threshold_default(desired_count or int(final_count))
    policy: dict[str, Any] = {"enabled": True, "threshold": int(final_threshold), "count": int(final_count)}
    cap = str(cost_cap) if cost_cap is not None else prev.get("maxUnitPrice")
    if cap:
        policy["maxUnitPrice"] = str(cap)
    policy.update(cap_fields)
    return policy


@dataclass(frozen=True)
class RefillPlan:
    refill: bool
    count: int
    reason: str


def plan_refill(live_remaining: int, policy: dict[str, Any] | None) -> RefillPlan:
    """Whether `process` should sign more now (§13.2 step 1), with the reason it prints."""
    if not policy or not policy.get("enabled"):
        return RefillPlan(False, 0, "auto-refill disabled")
    count = int(policy.get("count") or 0)
    if count <= 0:
        return RefillPlan(False, 0, "auto-refill count is not configured")
    threshold = int(policy.get("threshold") or 0)
    if live_remaining > threshold:
        return RefillPlan(False, 0, f"remaining {live_remaining} above threshold {threshold}")
    return RefillPlan(True, count, f"remaining {live_remaining} at or below threshold {threshold}")


__all__ = ["resolve_auto_refill", "plan_refill", "RefillPlan", "MAX_REFILL_COUNT"]

"""Unit tests of the auto-refill policy (buy_x402.refill): pure functions, no stack needed."""
from __future__ import annotations

import pytest

from buy_x402 import refill
from buy_x402.errors import ExitCode, UsageError


def resolve(**kw):
    args = dict(auto_refill=None, threshold=None, count=None, cost_cap=None, desired_count=100, existing=None)
    args.update(kw)
    return refill.resolve_auto_refill(**args)


def test_resolve_no_flags_keeps_existing_unchanged():
    existing = {"enabled": True, "threshold": 7, "count": 30, "maxUnitPrice": "1500"}
    assert resolve(existing=existing) == existing
    assert resolve() is None


def test_resolve_defaults_threshold_from_pool_size():
    assert resolve(auto_refill=True) == {"enabled": True, "threshold": 20, "count": 100}
    assert resolve(auto_refill=True, desired_count=3) == {"enabled": True, "threshold": 1, "count": 3}
    assert resolve(auto_refill=True, desired_count=1) == {"enabled": True, "threshold": 0, "count": 1}
    assert resolve(auto_refill=True, desired_count=0) == {"enabled": True, "threshold": 20, "count": 100}
    assert resolve(auto_refill=True, desired_count=200, count=50) == {"enabled": True, "threshold": 40, "count": 50}


def test_resolve_threshold_or_count_alone_enable_and_explicit_zero_is_kept():
    assert resolve(threshold=0) == {"enabled": True, "threshold": 0, "count": 100}
    assert resolve(count=10, desired_count=10) == {"enabled": True, "threshold": 2, "count": 10}


def test_resolve_uses_existing_policy_values_and_cap():
    existing = {"enabled": True, "threshold": 7, "count": 30, "maxUnitPrice": "1500"}
    assert resolve(existing=existing, count=40) == {"enabled": True, "threshold": 7, "count": 40,
                                                    "maxUnitPrice": "1500"}
    assert resolve(existing=existing, cost_cap=2000) == {"enabled": True, "threshold": 7, "count": 30,
                                                         "maxUnitPrice": "2000"}
    assert resolve(auto_refill=True, cost_cap=1500, desired_count=10) == {
        "enabled": True, "threshold": 2, "count": 10, "maxUnitPrice": "1500"}


def test_resolve_disable():
    assert resolve(auto_refill=False, existing={"enabled": True, "threshold": 1, "count": 2}) == {"enabled": False}


@pytest.mark.parametrize("kw", [dict(cost_cap=1000), dict(cost_cap=1000, auto_refill=False),
                                dict(cost_cap=1000, existing={"enabled": False, "count": 5})])
def test_resolve_cost_cap_without_auto_refill_is_a_usage_error(kw):
    with pytest.raises(UsageError) as err:
        resolve(**kw)
    assert err.value.message == "--cost-cap requires --auto-refill because it only applies to future auto-refill"
    assert err.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("kw,text", [(dict(count=0), "--refill-count must be between 1 and 1000"),
                                     (dict(count=1001), "--refill-count must be between 1 and 1000"),
                                     (dict(threshold=-1), "--refill-threshold must be 0 or more"),
                                     (dict(auto_refill=True, cost_cap=0), "--cost-cap must be greater than 0"),
                                     (dict(auto_refill=True, desired_count=1500),
                                      "auto-refill count must be between 1 and 1000")])
def test_resolve_rejects_out_of_range(kw, text):
    with pytest.raises(UsageError, match=text):
        resolve(**kw)


def test_plan_refill_reasons_verbatim():
    policy = {"enabled": True, "threshold": 20, "count": 50}
    assert refill.plan_refill(5, None) == refill.RefillPlan(False, 0, "auto-refill disabled")
    assert refill.plan_refill(5, {"enabled": False, "count": 5}) == refill.RefillPlan(False, 0, "auto-refill disabled")
    assert refill.plan_refill(5, {"enabled": True}) == refill.RefillPlan(False, 0, "auto-refill count is not configured")
    assert refill.plan_refill(21, policy) == refill.RefillPlan(False, 0, "remaining 21 above threshold 20")
    assert refill.plan_refill(20, policy) == refill.RefillPlan(True, 50, "remaining 20 at or below threshold 20")
    assert refill.plan_refill(0, {"enabled": True, "count": 3}) == \
        refill.RefillPlan(True, 3, "remaining 0 at or below threshold 0")

"""`list` and `status` against the devstack; `list --json` is a contract the host parses (§16).

`list --json` is the one exception to the JSON envelope: the host's `obol model status` decodes it as a
bare array of rows. The purchase these tests read has a cost cap, so the module runs with the CRD
variant that declares spec.autoRefill.maxUnitPrice (the upstream CRD would prune it).
"""
from __future__ import annotations

import json

import pytest

from conftest import run_buy, stack_env
from helpers import (CAPPED, closed_port, config_bytes, cost_cap_schema, ensure_purchase, hermes_default, kube,
                     live, settled)

# The exact keys `obol model status` on the host reads from `list --json` (obol-buy-x402.md §16).
LIST_JSON_FIELDS = {"name", "alias", "model", "remaining", "spent", "totalSigned", "expired", "price", "chain",
                    "endpoint", "autoRefill", "assetSymbol", "assetDecimals"}


@pytest.fixture(scope="module", autouse=True)
def cost_caps_kept(stack):
    with cost_cap_schema(stack):
        yield


def _capped(stack) -> dict:
    return ensure_purchase(stack, CAPPED, "mistral-large-3", "--count", "3", "--auto-refill",
                           "--refill-threshold", "1", "--refill-count", "2", "--cost-cap", "0.001 USDC")


def test_list_json_rows_have_exactly_the_contract_fields(stack):
    _capped(stack)
    res = run_buy(["list", "--json"], stack_env(stack))
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert isinstance(data, list) and data  # the bare array, not the envelope
    rows = {r["name"]: r for r in data}
    for row in rows.values():
        assert set(row) == LIST_JSON_FIELDS
        assert isinstance(row["autoRefill"], bool) and isinstance(row["remaining"], int)
    row = rows[CAPPED]
    entry = live(stack)[CAPPED]
    assert row["alias"] == "paid/mistral-large-3" and row["model"] == "mistral-large-3"
    assert (row["remaining"], row["spent"]) == (entry["remaining"], entry["spent"])
    assert row["price"] == "1500" and row["chain"] == entry["network"] == "base-sepolia"
    assert (row["assetSymbol"], row["assetDecimals"], row["autoRefill"], row["expired"]) == ("USDC", 6, True, 0)
    assert row["endpoint"].endswith("/services/mistral/v1/chat/completions")
    assert row["totalSigned"] >= 3


def test_list_table_shows_price_with_symbol_and_expired_count(stack):
    _capped(stack)
    res = run_buy(["list"], stack_env(stack))
    assert res.returncode == 0, res.stderr
    header, *lines = res.stdout.splitlines()
    assert header.split() == ["NAME", "ALIAS", "PRICE", "CHAIN", "REMAINING", "SPENT", "AUTO-REFILL"]
    line = next(line for line in lines if line.startswith(CAPPED + " "))
    remaining = live(stack)[CAPPED]["remaining"]
    assert "0.0015 USDC (1500 atomic)" in line and f"{remaining} (0 expired)" in line and line.endswith("on")


def test_list_without_purchases_says_so(stack):
    env = stack_env(stack, AGENT_NAMESPACE="buy-x402-empty")
    res = run_buy(["list"], env)
    assert (res.returncode, res.stdout.strip()) == (0, "No purchased x402 providers.")
    res = run_buy(["list", "--json"], env)
    assert (res.returncode, json.loads(res.stdout)) == (0, [])


def test_list_json_failure_leaves_stdout_empty_and_says_why_on_stderr(stack, tmp_path):
    env = stack_env(stack, KUBECONFIG=str(tmp_path / "missing-kubeconfig"))
    res = run_buy(["list", "--json"], env)
    assert (res.returncode, res.stdout) == (1, "")
    assert "no Kubernetes credentials" in res.stderr and "missing-kubeconfig" in res.stderr


def test_list_with_the_buyer_down_shows_rows_from_status_and_warns(stack):
    obj = _capped(stack)
    res = run_buy(["list", "--json"], stack_env(stack, X402_BUYER_URL=f"http://127.0.0.1:{closed_port()}"))
    assert res.returncode == 0, res.stderr
    row = next(r for r in json.loads(res.stdout) if r["name"] == CAPPED)
    status = kube(stack).get(CAPPED)["status"]
    assert row["remaining"] == status["remaining"] and row["chain"] == "base-sepolia"  # the spec's, no live value
    assert "warning: x402-buyer status is unavailable" in res.stderr
    assert obj["metadata"]["name"] == CAPPED


def test_status_shows_the_pool_the_buyer_and_the_agent_default(stack):
    _capped(stack)
    env = stack_env(stack)
    res = run_buy(["status", CAPPED], env)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    entry = live(stack)[CAPPED]
    assert "Alias:           paid/mistral-large-3" in out
    assert f"Auths remaining: {entry['remaining']} (0 expired)" in out
    assert f"Auths spent:     {entry['spent']}" in out
    assert "Earliest auth expiry: " in out and "Ready=True" in out
    assert "Auto-refill:     on (threshold 1, count 2, cost cap 1000 atomic)" in out
    assert "Buyer: running" in out
    assert f"Agent default:   {hermes_default(stack)} (not this purchase)" in out
    data = run_buy(["status", CAPPED, "--json"], env).json
    assert data["purchase"]["name"] == CAPPED and data["serving"] is True
    assert data["default"]["is_this_purchase"] is False and data["buyer"] == {"running": True, "live": True}
    assert data["expiry"]["expired"] == 0 and data["expiry"]["earliest_in_s"] > 29 * 86400


def test_status_with_the_buyer_down_says_not_running(stack):
    _capped(stack)
    res = run_buy(["status", CAPPED], stack_env(stack, X402_BUYER_URL=f"http://127.0.0.1:{closed_port()}"))
    assert res.returncode == 0, res.stderr
    assert "Buyer: NOT RUNNING" in res.stdout


def test_status_of_an_unknown_purchase_fails_listing_the_names(stack):
    _capped(stack)
    bytes_before = config_bytes(stack)
    rv = settled(stack, CAPPED)["metadata"]["resourceVersion"]
    res = run_buy(["status", "no-such-purchase"], stack_env(stack))
    assert res.returncode == 1
    assert res.stdout == ""
    assert "no purchase named 'no-such-purchase'; existing purchases: " in res.stderr and CAPPED in res.stderr
    res = run_buy(["status", "no-such-purchase", "--json"], stack_env(stack))
    assert res.returncode == 1 and CAPPED in res.json["error"]["data"]["purchases"]
    assert kube(stack).get(CAPPED)["metadata"]["resourceVersion"] == rv
    assert config_bytes(stack) == bytes_before

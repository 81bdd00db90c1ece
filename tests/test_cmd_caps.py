"""Spend caps (`--max-total`, `--max-spend-per-day`) and `refill NAME`, against the devstack.

Each purchase here owns a model no other test buys (config.OFFERS: olmo-3, granite-4, nova-3; zephyr-2
for the refusals). The upstream CRD has spec.autoRefill.maxTotal and maxSpendPerDay, so no CRD variant
is needed. "The wallet moved" means: the agent's USDC balance on anvil, read before the purchase and
after every voucher was spent through the x402-buyer (a voucher moves money when the seller settles it,
not when it is signed); `spend` also checks the seller's balance moved by exactly price × calls.
The 24 h window is driven through the signing record's timestamps, never by sleeping.
"""
from __future__ import annotations

from collections import Counter

import json
import os
import re
import time
from pathlib import Path

import pytest
from eth_account import Account

from buy_x402 import caps
from buy_x402.errors import KubeApiError
from conftest import run_buy, stack_env
from devstack import config
from devstack.parts import chain as chain_part
from helpers import (closed_port, config_bytes, drained_wallet, hermes_default, kube, kube_get, kube_names, live,
                     offer, ready_for_its_generation, settled, spend, usdc_balance, wait)

TOTAL, DAILY, REFILLED = "cap-total", "cap-daily", "refill-nova"
PRICE = 1000
DAY = caps.WINDOW_S


def record_path(stack) -> Path:
    return Path(stack.env["HERMES_HOME"]) / "buy-x402" / "signings.json"


def record_of(stack, name: str) -> dict | None:
    path = record_path(stack)
    if not path.exists():
        return None
    return json.loads(path.read_text())["purchases"].get(f"{config.AGENT_NAMESPACE}/{name}")


def buy(stack, name: str, model: str, *flags: str):
    return run_buy(["buy", name, "--endpoint", offer(stack, model)["url"], "--model", model, *flags],
                   stack_env(stack))


def live_pool(stack, name: str, remaining: int) -> None:
    wait(lambda: (live(stack).get(name) or {}).get("remaining") == remaining, what=f"{name} live with {remaining}")
    wait(lambda: ready_for_its_generation(kube(stack).get(name)), what=f"{name} Ready")


def process(stack, name: str):
    res = run_buy(["process", name, "--json"], stack_env(stack))
    assert res.returncode == 0, res.stderr
    return res, res.json["purchases"][0]


def replace_annotation(stack, name: str, value: str | None) -> None:
    """Set (or remove) the signing annotation: a metadata change, not a new generation."""
    for _ in range(5):
        obj = kube(stack).get(name)
        annotations = obj["metadata"].setdefault("annotations", {})
        if value is None:
            annotations.pop(caps.ANNOTATION, None)
        else:
            annotations[caps.ANNOTATION] = value
        try:
            kube(stack).replace(obj)
            return
        except KubeApiError as err:
            assert err.reason == "Conflict", err
    raise AssertionError("could not write the annotation")


# ------------------------------------------------------------------------------ maxTotal, guardian

def test_max_total_of_three_refills_stops_after_the_third_and_the_wallet_moved_by_exactly_that(stack):
    env = stack_env(stack)
    agent, pay_to = stack.info["signer"]["address"], stack.info["seller"]["pay_to"]
    free = hermes_default(stack)
    assert not free.startswith("paid/")
    wallet_before, seller_before = usdc_balance(stack, agent), usdc_balance(stack, pay_to)
    # First batch 2 + three refills of 2 = 8 vouchers at 0.001 USDC.
    res = buy(stack, TOTAL, "olmo-3", "--count", "2", "--auto-refill", "--refill-threshold", "0",
              "--refill-count", "2", "--max-total", "0.008 USDC", "--json")
    assert res.returncode == 0, res.stderr
    assert res.json["autoRefill"] == {"enabled": True, "threshold": 0, "count": 2, "maxTotal": 8000}
    assert kube(stack).get(TOTAL)["spec"]["autoRefill"]["maxTotal"] == 8000  # the CRD's integer, as stored
    assert res.json["caps"]["maxTotal"]["used"] == "2000" and res.json["caps"]["maxTotal"]["left"] == "6000"
    live_pool(stack, TOTAL, 2)
    adopted = run_buy(["default", "set", "paid/olmo-3", "--no-canary"], env)
    assert adopted.returncode == 0, adopted.stderr
    try:
        for refill_number in (1, 2, 3):
            spend(stack, "olmo-3", 2)
            res, action = process(stack, TOTAL)
            assert action["action"] == "refilled" and action["count"] == 2 and action["capped"] is None
            assert action["caps"]["maxTotal"]["used"] == str(2000 * (refill_number + 1))
            assert res.json["guardian"] is None
            live_pool(stack, TOTAL, 2)
        spend(stack, "olmo-3", 2)
        before = settled(stack, TOTAL)
        res, action = process(stack, TOTAL)
        reason = "maxTotal 0.008 USDC (8000 atomic) reached: 0.008 USDC (8000 atomic) signed so far; no voucher signed"
        assert action["action"] == "skipped" and action["capped"] is True and action["reason"] == reason
        assert f"{TOTAL}: {reason}\n" in res.stderr and "signed 2/2" not in res.stderr
        # The adopted model's pool ran dry because of the cap: the guardian restores the previous default.
        guardian = res.json["guardian"]
        assert guardian["action"] == "restored" and guardian["model"] == free and guardian["purchase"] == TOTAL
        assert guardian["reason"] == f"paid/olmo-3 had no spendable vouchers (its pool is spent: remaining 0; " \
                                     f"no refill: {reason})"
        assert hermes_default(stack) == free
        after = kube(stack).get(TOTAL)
        assert after["spec"] == before["spec"] and after["metadata"]["generation"] == before["metadata"]["generation"]
        # Every voucher signed was spent and settled: the wallet moved by exactly maxTotal, the seller got it.
        assert wallet_before - usdc_balance(stack, agent) == 8000
        assert usdc_balance(stack, pay_to) - seller_before == 8000
        signed = caps.annotation_of(after)
        assert (signed.count, signed.atomic) == (8, 8000)
        assert (record_of(stack, TOTAL)["count"], record_of(stack, TOTAL)["atomic"]) == (8, "8000")
        # And it stays so: the next run signs nothing and says why again.
        res, action = process(stack, TOTAL)
        assert action["reason"] == reason and res.json["guardian"] is None
        assert kube(stack).get(TOTAL)["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]
        assert wallet_before - usdc_balance(stack, agent) == 8000
    finally:
        if hermes_default(stack) != free:
            run_buy(["default", "restore"], env)


def test_list_and_status_show_each_cap_and_how_much_of_it_is_used(stack):
    env = stack_env(stack)
    assert kube_get(stack, TOTAL) is not None, "runs after the maxTotal test"
    res = run_buy(["status", TOTAL, "--json"], env)
    assert res.returncode == 0, res.stderr
    facts = res.json["caps"]
    assert facts["maxTotal"] == {"atomic": "8000", "display": "0.008 USDC (8000 atomic)", "used": "8000",
                                 "usedDisplay": "0.008 USDC (8000 atomic)", "left": "0",
                                 "leftDisplay": "0 USDC (0 atomic)"}
    assert facts["signed"]["source"] == "record+annotation" and facts["signed"]["total"] == "8000"
    assert res.json["autoRefill"]["maxTotal"] == 8000
    text = run_buy(["status", TOTAL], env).stdout
    assert ("Spend caps:      maxTotal 0.008 USDC (8000 atomic): 0.008 USDC (8000 atomic) signed, "
            "0 USDC (0 atomic) left") in text
    listed = run_buy(["list"], env).stdout
    assert f"  {TOTAL}: maxTotal 0.008 USDC (8000 atomic): 0.008 USDC (8000 atomic) signed" in listed
    # `list --json` stays the host's rows, exactly: the caps are not in it (they are in `status --json`).
    rows = {r["name"]: r for r in json.loads(run_buy(["list", "--json"], env).stdout)}
    assert set(rows[TOTAL]) == {"name", "alias", "model", "remaining", "spent", "totalSigned", "expired", "price",
                                "chain", "endpoint", "autoRefill", "assetSymbol", "assetDecimals"}
    assert rows[TOTAL]["autoRefill"] is True


# ------------------------------------------------------------------------------- maxSpendPerDay

@pytest.fixture(scope="module")
def daily(stack):
    """A purchase at its daily cap: 2 bought + 2 refilled at once (threshold 2) = 0.004 USDC in the window."""
    if kube_get(stack, DAILY) is None:
        res = buy(stack, DAILY, "granite-4", "--count", "2", "--auto-refill", "--refill-threshold", "2",
                  "--refill-count", "2", "--max-spend-per-day", "0.004 USDC")
        assert res.returncode == 0, res.stderr
        live_pool(stack, DAILY, 2)
        _, action = process(stack, DAILY)
        assert action["action"] == "refilled" and action["count"] == 2
        live_pool(stack, DAILY, 4)
        spend(stack, "granite-4", 2)
    return DAILY


def at_daily_cap(stack, res, action) -> None:
    assert action["action"] == "skipped" and action["capped"] is True, action
    assert action["reason"].startswith("maxSpendPerDay 0.004 USDC (4000 atomic) reached: 0.004 USDC (4000 atomic) "
                                       "signed in the last 24 h; more from ")
    assert f"{DAILY}: {action['reason']}\n" in res.stderr


def test_a_daily_cap_stops_refills_within_the_window(stack, daily):
    before = settled(stack, DAILY)
    wallet = usdc_balance(stack, stack.info["signer"]["address"])
    res, action = process(stack, DAILY)
    at_daily_cap(stack, res, action)
    assert kube(stack).get(DAILY)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert usdc_balance(stack, stack.info["signer"]["address"]) == wallet
    # `refill` is held by the same cap: a refusal, exit 1, nothing signed.
    res = run_buy(["refill", DAILY, "--json"], stack_env(stack))
    assert res.returncode == 1 and res.json["error"]["code"] == "cap_reached"
    assert res.json["error"]["message"].startswith(f"{DAILY} was not refilled: maxSpendPerDay 0.004 USDC")
    assert res.json["error"]["message"].endswith("; nothing was signed") and "Signing" not in res.stderr
    assert kube(stack).get(DAILY)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_a_lost_signing_record_does_not_reset_the_daily_window(stack, daily):
    env = stack_env(stack)
    path, annotation = record_path(stack), kube(stack).get(DAILY)["metadata"]["annotations"][caps.ANNOTATION]
    lost = path.with_name("signings.json.lost")
    os.replace(path, lost)
    try:
        rv = settled(stack, DAILY)["metadata"]["resourceVersion"]
        res, action = process(stack, DAILY)  # the PurchaseRequest's own annotation still holds the window
        at_daily_cap(stack, res, action)
        facts = run_buy(["status", DAILY, "--json"], env).json["caps"]
        assert facts["signed"]["source"] == "annotation" and facts["maxSpendPerDay"]["used"] == "4000"
        assert kube(stack).get(DAILY)["metadata"]["resourceVersion"] == rv

        replace_annotation(stack, DAILY, None)  # and without the annotation: the vouchers date themselves
        rv = settled(stack, DAILY)["metadata"]["resourceVersion"]
        res, action = process(stack, DAILY)
        at_daily_cap(stack, res, action)
        facts = run_buy(["status", DAILY, "--json"], env).json["caps"]
        assert facts["signed"]["source"] == "vouchers" and facts["maxSpendPerDay"]["used"] == "4000"
        assert kube(stack).get(DAILY)["metadata"]["resourceVersion"] == rv
        assert not path.exists()  # a skipped refill records nothing
    finally:
        replace_annotation(stack, DAILY, annotation)
        os.replace(lost, path)


def test_the_vouchers_carry_their_signing_time_as_valid_after(stack, daily):
    pool = kube(stack).get(DAILY)["spec"]["preSignedAuths"]
    signings = record_of(stack, DAILY)["signings"]
    assert [s["count"] for s in signings] == [2, 2]  # the first batch and the refill
    recorded = Counter()
    for s in signings:  # both may fall in the same second on a fast machine: count vouchers per time
        recorded[caps.parse_time(s["at"])] += s["count"]
    dated = Counter(int(a["payment"]["payload"]["authorization"]["validAfter"]) + 300 for a in pool)
    assert dated == recorded  # every voucher carries the time its own batch was signed


def test_the_window_moves_and_refills_resume_then_stop_again(stack, daily):
    path = record_path(stack)
    state = json.loads(path.read_text())
    for entry in state["purchases"][f"{config.AGENT_NAMESPACE}/{DAILY}"]["signings"]:
        entry["at"] = caps.iso(caps.parse_time(entry["at"]) - DAY - 60)  # as if signed more than a day ago
    path.write_text(json.dumps(state))
    res, action = process(stack, DAILY)
    assert action["action"] == "refilled" and action["count"] == 2 and action["capped"] is None, res.stderr
    assert action["caps"]["maxSpendPerDay"]["used"] == "2000"
    live_pool(stack, DAILY, 4)
    spend(stack, "granite-4", 2)
    _, action = process(stack, DAILY)  # room for exactly one more refill in the new window
    assert action["action"] == "refilled" and action["caps"]["maxSpendPerDay"]["used"] == "4000"
    live_pool(stack, DAILY, 4)
    spend(stack, "granite-4", 2)
    res, action = process(stack, DAILY)
    at_daily_cap(stack, res, action)


# ----------------------------------------------------------------------------- bad cap values

def snapshot(stack) -> tuple:
    specs = {name: json.dumps((kube_get(stack, name) or {}).get("spec"), sort_keys=True) for name in kube_names(stack)}
    path = record_path(stack)
    return (specs, usdc_balance(stack, stack.info["signer"]["address"]), config_bytes(stack),
            path.read_bytes() if path.exists() else None)


@pytest.mark.parametrize("flags, message", [
    (["--max-total", "-1"], "argument --max-total: amount '-1' is not an amount"),
    (["--max-total", "0"], "--max-total must be positive, got '0'"),
    (["--max-total", "nan"], "argument --max-total: amount 'nan' is not an amount"),
    (["--max-spend-per-day", "NaN USDC"], "argument --max-spend-per-day: amount 'NaN USDC' is not an amount"),
    (["--max-spend-per-day", "0 USDC"], "--max-spend-per-day must be positive, got '0 USDC'"),
    (["--max-spend-per-day", "0.0005 USDC"], "--max-spend-per-day 0.0005 USDC (500 atomic) is less than one "
                                              "request's price 0.001 USDC (1000 atomic)"),
    (["--max-total", "999"], "--max-total 0.000999 USDC (999 atomic) is less than one request's price"),
    (["--max-total", "0.001 USDC"], "--max-total 0.001 USDC (1000 atomic) is less than the first batch of 2 "
                                     "vouchers (0.002 USDC (2000 atomic)), which counts against it"),
    (["--max-total", "10000000000000 USDC"], "is more than spec.autoRefill.maxTotal can hold"),
    (["--max-total", "1 USDC", "--no-auto"], "--max-total requires --auto-refill"),
    (["--max-spend-per-day", "1 USDC", "--auto-refill=false"], "--max-spend-per-day requires --auto-refill"),
], ids=["negative", "zero", "nan", "nan-usdc", "zero-usdc", "below-price-day", "below-price-total",
        "below-first-batch", "beyond-int64", "no-auto-refill", "auto-refill-false"])
def test_bad_cap_values_are_usage_errors_and_nothing_is_signed(stack, flags, message):
    auto = [] if "--no-auto" in flags or "--auto-refill=false" in flags else ["--auto-refill"]
    flags = [f for f in flags if f != "--no-auto"]
    before = snapshot(stack)
    res = buy(stack, "t-zephyr-caps", "zephyr-2", "--count", "2", *auto, *flags, "--json")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.json["error"]["code"] == "usage" and message in res.json["error"]["message"]
    assert "Signing" not in res.stderr and not re.search(r"signed \d+/\d+", res.stderr)  # no signing progress
    assert snapshot(stack) == before and kube_get(stack, "t-zephyr-caps") is None


# ------------------------------------------------------------------------------------- refill

def test_refill_tops_up_now_within_the_cap_and_the_wallet_pays_exactly_what_was_signed(stack):
    env = stack_env(stack)
    agent, pay_to = stack.info["signer"]["address"], stack.info["seller"]["pay_to"]
    wallet_before, seller_before = usdc_balance(stack, agent), usdc_balance(stack, pay_to)
    res = buy(stack, REFILLED, "nova-3", "--count", "2", "--auto-refill", "--refill-threshold", "0",
              "--refill-count", "3", "--max-total", "0.006 USDC")
    assert res.returncode == 0, res.stderr
    live_pool(stack, REFILLED, 2)

    res = run_buy(["refill", REFILLED], env)  # 2 left, above the threshold: `refill` does not wait for it
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == (f"{REFILLED}: refilled 3 vouchers at 0.001 USDC (1000 atomic) each; "
                                          "5 active")
    assert "Spend caps: maxTotal 0.006 USDC (6000 atomic): 0.005 USDC (5000 atomic) signed" in res.stdout
    obj = kube(stack).get(REFILLED)
    assert len(obj["spec"]["preSignedAuths"]) == obj["spec"]["count"] == 5
    refill_signing = record_of(stack, REFILLED)["signings"][-1]
    assert refill_signing["by"] == "refill" and refill_signing["count"] == 3
    assert {int(a["payment"]["payload"]["authorization"]["validAfter"]) + 300
            for a in obj["spec"]["preSignedAuths"][2:]} == {caps.parse_time(refill_signing["at"])}
    live_pool(stack, REFILLED, 5)

    res = run_buy(["refill", REFILLED, "--count", "2", "--json"], env)  # room for one more only
    assert res.returncode == 0, res.stderr
    assert (res.json["count"], res.json["wanted"], res.json["pool"]) == (1, 2, 6)
    assert res.json["capped"] == "maxTotal 0.006 USDC (6000 atomic) nearly reached: 0.005 USDC (5000 atomic) signed so far"
    assert f"{REFILLED}: {res.json['capped']}; signing 1 of 2 vouchers" in res.stderr
    live_pool(stack, REFILLED, 6)

    before = settled(stack, REFILLED)
    res = run_buy(["refill", REFILLED, "--json"], env)  # at the cap: refused, nothing signed or written
    assert res.returncode == 1 and res.json["error"]["code"] == "cap_reached"
    assert res.json["error"]["message"] == (f"{REFILLED} was not refilled: maxTotal 0.006 USDC (6000 atomic) reached: "
                                            "0.006 USDC (6000 atomic) signed so far; nothing was signed")
    assert "--max-total AMOUNT" in res.json["error"]["hint"]
    assert kube(stack).get(REFILLED)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    spend(stack, "nova-3", 6)  # every voucher signed, spent through the buyer and settled on anvil
    assert wallet_before - usdc_balance(stack, agent) == 6000
    assert usdc_balance(stack, pay_to) - seller_before == 6000


def test_refill_refusals_say_why_and_change_nothing(stack):
    env = stack_env(stack)
    name = "refill-zephyr"
    if kube_get(stack, name) is None:  # no auto-refill and no caps: `refill` needs --count
        res = buy(stack, name, "zephyr-2", "--count", "1")
        assert res.returncode == 0, res.stderr
        live_pool(stack, name, 1)
    before = settled(stack, name)
    wallet = usdc_balance(stack, stack.info["signer"]["address"])

    def unchanged() -> bool:
        return (kube(stack).get(name)["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
                and usdc_balance(stack, stack.info["signer"]["address"]) == wallet)

    res = run_buy(["refill", name], env)
    assert res.returncode == 2 and f"error: {name} has no auto-refill count to refill with" in res.stderr
    assert f"buy.py refill {name} --count N" in res.stderr and unchanged()
    for bad in ("0", "1001", "x"):
        res = run_buy(["refill", name, "--count", bad], env)
        assert res.returncode == 2 and "--count" in res.stderr and unchanged()
    res = run_buy(["refill", "no-such-purchase"], env)
    assert res.returncode == 1 and "no purchase named 'no-such-purchase'; existing purchases: " in res.stderr
    res = run_buy(["refill", name, "--count", "1"], stack_env(stack, X402_BUYER_URL=f"http://127.0.0.1:{closed_port()}"))
    assert res.returncode == 1 and "x402-buyer status is unavailable" in res.stderr and unchanged()
    with drained_wallet(stack, keep=500):
        wallet = 500
        res = run_buy(["refill", name, "--count", "2", "--json"], env)
        assert res.returncode == 1, res.stderr
        assert res.json["error"]["message"] == (
            f"{name} was not refilled: wallet balance 0.0005 USDC (500 atomic) below refill cost 0.002 USDC "
            "(2000 atomic) (2 × 0.001 USDC (1000 atomic)); nothing was signed")
        assert "Signing" not in res.stderr and unchanged()
    # Without auto-refill or caps, a refill asked for is made (and recorded).
    res = run_buy(["refill", name, "--count", "1", "--json"], env)
    assert res.returncode == 0, res.stderr
    assert res.json["action"] == "refilled" and res.json["count"] == 1 and "caps" not in res.json
    assert record_of(stack, name)["signings"][-1]["by"] == "refill"


# ------------------------------------------------------- validAfter in the past, the SDK facilitator

def test_the_sdk_facilitator_accepts_vouchers_dated_in_the_past_for_both_schemes(stack):
    """EIP-3009 vouchers dated `signing time − 300 s` settle through the devstack in every test above; here
    the x402 SDK's own facilitator verifies both schemes with such a validAfter (and refuses one in the
    future), on the stack's anvil, for a wallet that approved Permit2."""
    from x402 import x402FacilitatorSync
    from x402.mechanisms.evm import FacilitatorWeb3Signer
    from x402.mechanisms.evm.exact import register_exact_evm_facilitator
    from x402.mechanisms.evm.exact.permit2_utils import verify_permit2
    from x402.schemas import PaymentPayload, PaymentRequirements

    from buy_x402.schemes import SigningPlan, eip3009, permit2, valid_after_for
    from buy_x402.x402 import parse_payment_required

    key = "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba"  # anvil dev account #5
    payer = Account.from_key(key).address
    rpc = stack.env["ANVIL_RPC_URL"]
    chain_part.mint(rpc, config.USDC_ADDRESS, payer, 10_000)
    tx = chain_part.rpc(rpc, "eth_sendTransaction", [{"from": payer, "to": config.USDC_ADDRESS, "data":
                        chain_part.calldata("approve(address,uint256)", permit2.PERMIT2_ADDRESS, 2 ** 256 - 1)}])
    assert int(chain_part.wait_receipt(rpc, tx)["status"], 16) == 1
    signer = FacilitatorWeb3Signer(private_key=config.FACILITATOR_KEY, rpc_url=rpc)
    facilitator = x402FacilitatorSync()
    register_exact_evm_facilitator(facilitator, signer, config.CAIP2)

    def sign(_address: str, typed: dict) -> str:
        return "0x" + bytes(Account.sign_typed_data(key, full_message=typed).signature).hex()

    now = int(time.time())
    for method, verify in (("eip3009", lambda p, r: facilitator.verify(p, r)),
                           ("permit2", lambda p, r: verify_permit2(signer, p, r))):
        entry = {"scheme": "exact", "network": config.CAIP2, "asset": config.USDC_ADDRESS, "amount": "1000",
                 "payTo": stack.info["seller"]["pay_to"], "maxTimeoutSeconds": 60,
                 "extra": {"name": "USDC", "version": "2", "assetTransferMethod": method}}
        option = parse_payment_required(402, {}, json.dumps({"x402Version": 2, "accepts": [entry]}).encode()).accepts[0]
        scheme = eip3009.SCHEME if method == "eip3009" else permit2.SCHEME
        outcomes = {}
        for label, after in (("past", valid_after_for(now)), ("future", now + 600)):
            auth = scheme.sign(sign, option, payer=payer, deadline=now + 3600, index=0, plan=SigningPlan(),
                               extensions=None, valid_after=after)
            answer = verify(PaymentPayload.model_validate(auth["payment"]), PaymentRequirements.model_validate(entry))
            outcomes[label] = (answer.is_valid, answer.invalid_reason)
        assert outcomes["past"] == (True, None), (method, outcomes)
        assert outcomes["future"][0] is False and "valid" in outcomes["future"][1], (method, outcomes)

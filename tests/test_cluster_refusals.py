"""`buy` never signs what the cluster cannot spend (issue 8), against the devstack.

The cluster's x402-buyer reads a 402's requirements only from the JSON body, pays only with
`X-PAYMENT` and forwards the voucher as signed (obol-wire.md §1); the controller validates only the
body's first option (§3); the API server serves the upstream PurchaseRequest CRD (no cost cap).
Every refusal here exits 1 before signing and leaves the wallet, the cluster's objects and the
Hermes config exactly as they were. The last tests place a foreign seller's vouchers in a
PurchaseRequest by hand and watch the cluster fail the way obol-wire.md's "mismatch cases" say.
"""
from __future__ import annotations

import json
import time

import pytest
import requests

from buy_x402 import purchases, settings as settings_mod, x402
from buy_x402.http import make_session
from buy_x402.kube import KubeClient
from buy_x402.signer import SignerClient
from conftest import run_buy, stack_env
from helpers import (buyer_status, config_path, cost_cap_schema, file_state, kube_get, kube_names, offer,
                     usdc_balance, wait_until)


def snapshot(stack) -> tuple:
    """What a refused buy must leave exactly as it was: the purchases (which exist, each one's spec and
    generation, byte for byte; the controller may still write the status of one converging from an
    earlier test), the wallet, the Hermes config."""
    objects = {}
    for name in kube_names(stack):
        obj = kube_get(stack, name) or {}
        meta = obj.get("metadata") or {}
        objects[name] = (meta.get("generation"), meta.get("deletionTimestamp"), json.dumps(obj.get("spec"),
                                                                                          sort_keys=True))
    return objects, usdc_balance(stack, stack.info["signer"]["address"]), file_state(config_path(stack))


@pytest.mark.parametrize("model, words", [
    ("sdk-model", "no `accepts` in its JSON body"),
    ("legacy-model", "speaks only x402 v1"),
], ids=["header-only-v2", "v1-only"])
def test_buy_refuses_a_foreign_seller_before_signing(stack, model, words):
    url = offer(stack, model)["url"]
    before = snapshot(stack)
    res = run_buy(["buy", "t-foreign", "--endpoint", url, "--model", model, "--count", "2", "--set-default",
                   "--json"], stack_env(stack))
    assert res.returncode == 1, res.stdout + res.stderr
    error = res.json["error"]
    assert error["code"] == "cluster_cannot_pay" and words in error["message"]
    assert "Nothing was signed" in error["message"]
    assert f"buy.py pay {url}/v1/chat/completions" in error["hint"] and "buy.py pay-agent" in error["hint"]
    assert "Signing" not in res.stderr
    assert snapshot(stack) == before and kube_get(stack, "t-foreign") is None


def test_the_refused_seller_can_still_be_paid_per_request(stack):
    """What the refusal points to works: `pay` speaks the seller's version on each request."""
    legacy = offer(stack, "legacy-model")
    pay_to, agent = stack.info["foreign"]["pay_to"], stack.info["signer"]["address"]
    before = usdc_balance(stack, pay_to), usdc_balance(stack, agent)
    res = run_buy(["pay", legacy["url"], "--type", "inference", "--message", "hi", "--json"], stack_env(stack))
    assert res.returncode == 0, res.stderr
    assert res.json["paymentHeader"] == "X-PAYMENT" and res.json["x402Version"] == 1
    price = int(legacy["price"])
    assert (usdc_balance(stack, pay_to), usdc_balance(stack, agent)) == (before[0] + price, before[1] - price)


def test_buy_refuses_an_option_the_controller_would_never_validate(stack):
    multi = offer(stack, "multi-model")
    before = snapshot(stack)
    res = run_buy(["buy", "t-multi", "--endpoint", multi["url"], "--model", "multi-model", "--count", "1",
                   "--payment-option", "2", "--json"], stack_env(stack))
    assert res.returncode == 1
    error = res.json["error"]
    assert error["code"] == "cluster_cannot_pay"
    assert "checks only the price of the seller's first payment option (3000 atomic)" in error["message"]
    assert "--payment-option 1" in error["hint"]
    assert snapshot(stack) == before and kube_get(stack, "t-multi") is None


def test_the_dry_run_refuses_a_cost_cap_the_crd_would_prune_and_a_crd_with_the_field_keeps_it(stack):
    multi = offer(stack, "multi-model")
    args = ["buy", "t-capped", "--endpoint", multi["url"], "--model", "multi-model", "--count", "1",
            "--auto-refill", "--cost-cap", "0.005 USDC", "--json"]
    before = snapshot(stack)
    res = run_buy(args, stack_env(stack))
    assert res.returncode == 1, res.stdout + res.stderr
    error = res.json["error"]
    assert error["code"] == "schema"
    assert "spec.autoRefill.maxUnitPrice (set by --cost-cap)" in error["message"]
    assert error["hint"].startswith("drop --cost-cap")
    assert "Signing" not in res.stderr and "signed 1/1" not in res.stderr  # no signature was asked for
    assert snapshot(stack) == before and kube_get(stack, "t-capped") is None

    with cost_cap_schema(stack):
        res = run_buy(args, stack_env(stack))
        assert res.returncode == 0, res.stderr
        assert kube_get(stack, "t-capped")["spec"]["autoRefill"]["maxUnitPrice"] == "5000"


# -- a foreign seller's vouchers placed in a PurchaseRequest by hand ---------------------------------

def place_by_hand(stack, name: str, model: str, auto_refill: dict | None = None) -> dict:
    """Vouchers exactly as `buy` would sign them for the seller's first option, in a PurchaseRequest
    written directly (what `buy` now refuses to do)."""
    settings = settings_mod.load(stack_env(stack))
    session = make_session("test")
    url = offer(stack, model)["url"]
    offered = x402.probe(session, url, model)
    option = offered.accepts[0]
    signer = SignerClient(session, settings.remote_signer_url)
    auths = signer.presign(option, address=stack.info["signer"]["address"], count=1,
                           deadline=int(time.time()) + 86400, extensions=offered.extensions)
    payment = purchases.build_payment_spec(option, chain_name=option.chain.name, symbol=option.symbol,
                                           decimals=option.decimals)
    kube = KubeClient.from_settings(settings)
    return kube.create(purchases.build_purchase(name, kube.namespace, endpoint=url, model=model, payment=payment,
                                                auths=auths, auto_refill=auto_refill))


def test_a_v1_sellers_vouchers_get_ready_and_the_canary_refuses_the_default(stack):
    """The probe is satisfied by the v1 body's accepts[0]; every payment is refused (the voucher is a v2
    envelope) and released to the head of the pool; `default set` turns that into exit 4."""
    place_by_hand(stack, "byhand-v1", "legacy-model", auto_refill={"enabled": True, "threshold": 5, "count": 2})
    wait_until(lambda: purchases.is_serving(kube_get(stack, "byhand-v1")), timeout=90, what="byhand-v1 Ready")
    pay_to = stack.info["foreign"]["pay_to"]
    before_config, seller_before = file_state(config_path(stack)), usdc_balance(stack, pay_to)
    res = run_buy(["default", "set", "paid/legacy-model", "--json"], stack_env(stack))
    assert res.returncode == 4, res.stdout + res.stderr
    assert res.json["error"]["code"] == "default_not_changed" and res.json["error"]["data"]["step"] == "canary"
    assert file_state(config_path(stack)) == before_config
    assert (buyer_status(stack)["byhand-v1"]["remaining"], buyer_status(stack)["byhand-v1"]["spent"]) == (1, 0)
    again = requests.post(stack.env["X402_BUYER_URL"] + "/v1/chat/completions", timeout=60,
                          json={"model": "paid/legacy-model", "messages": [{"role": "user", "content": "hi"}]})
    assert again.status_code == 402 and again.json()["x402Version"] == 1  # the same voucher, refused again
    assert buyer_status(stack)["byhand-v1"]["remaining"] == 1
    assert usdc_balance(stack, pay_to) == seller_before

    # A refill is due (1 voucher, threshold 5): `process` applies buy's rule and signs nothing.
    before = snapshot(stack)
    try:
        res = run_buy(["process", "byhand-v1", "--json"], stack_env(stack))
        assert res.returncode == 1, res.stdout + res.stderr
        action = res.json["purchases"][0]
        assert action["action"] == "failed" and action["error"]["code"] == "cluster_cannot_pay"
        assert "speaks only x402 v1" in action["reason"] and "Signing" not in res.stderr
        assert snapshot(stack) == before
    finally:  # later `process --all` runs must not keep failing on this purchase
        kube = KubeClient.from_settings(settings_mod.load(stack_env(stack)))
        obj = kube.get("byhand-v1")
        obj["spec"]["autoRefill"] = {"enabled": False}
        kube.replace(obj)


def test_a_header_only_sellers_vouchers_never_get_past_the_probe_and_the_default_is_refused(stack):
    place_by_hand(stack, "byhand-sdk", "sdk-model")
    probed = wait_until(lambda: next((c for c in (kube_get(stack, "byhand-sdk").get("status") or {}).get(
        "conditions") or [] if c["type"] == "Probed"), None), what="byhand-sdk probed")
    assert (probed["status"], probed["reason"], probed["message"]) == ("False", "InvalidPricing",
                                                                       "402 body missing accepts")
    assert "byhand-sdk" not in buyer_status(stack)
    before_config = file_state(config_path(stack))
    res = run_buy(["default", "set", "paid/sdk-model", "--json"], stack_env(stack))
    assert res.returncode == 4 and res.json["error"]["data"]["step"] == "selectable"
    assert "no PurchaseRequest in this namespace publishes paid/sdk-model" in res.json["error"]["message"]
    assert file_state(config_path(stack)) == before_config
    KubeClient.from_settings(settings_mod.load(stack_env(stack))).delete("byhand-sdk")  # never served: gone at once
    wait_until(lambda: kube_get(stack, "byhand-sdk") is None, what="byhand-sdk deleted")

"""Unit tests of the PurchaseRequest logic (buy_x402.purchases): pure functions, no stack needed."""
from __future__ import annotations

import copy

import pytest

from buy_x402 import purchases as pr
from buy_x402.errors import ExitCode, PurchaseError, SellerError
from buy_x402.offer import CHAINS, PaymentOption

USDC = CHAINS["base-sepolia"].usdc
PAY_TO = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def option(**overrides) -> PaymentOption:
    fields = dict(index=1, scheme="exact", network="eip155:84532", chain=CHAINS["base-sepolia"], amount=1000,
                  asset=USDC, pay_to=PAY_TO, extra={"name": "USDC", "version": "2"}, symbol="USDC", decimals=6)
    fields.update(overrides)
    return PaymentOption(**fields)


def auth(i: int, valid_before: int = 2_000_000_000) -> dict:
    return {"id": f"0x{i:064x}", "payment": {"x402Version": 2, "payload": {
        "signature": "0xsig", "authorization": {"from": "0xabc", "to": PAY_TO, "value": "1000",
                                                "validAfter": "0", "validBefore": str(valid_before),
                                                "nonce": f"0x{i:064x}"}}}}


def permit2_auth(i: int, deadline: int) -> dict:
    return {"id": str(i), "payment": {"payload": {"signature": "0xsig", "permit2Authorization": {
        "from": "0xabc", "nonce": str(i), "deadline": str(deadline)}}}}


PAYMENT = pr.build_payment_spec(option(), chain_name="base-sepolia", symbol="USDC", decimals=6)


def live_object(name="remote-qwen", model="qwen3.6-35b", n=5, *, generation=1, ready="True",
                remaining=None, auto_refill=None) -> dict:
    obj = pr.build_purchase(name, "hermes-obol-agent", endpoint="http://127.0.0.1:9/services/qwen",
                            model=model, payment=PAYMENT, auths=[auth(i) for i in range(n)],
                            auto_refill=auto_refill)
    obj["metadata"].update(generation=generation, resourceVersion="42", finalizers=[pr.FINALIZER],
                           uid="u-1")
    obj["status"] = {"observedGeneration": generation, "remaining": n if remaining is None else remaining,
                     "spent": 0, "totalSigned": n, "publicModel": f"paid/{model}",
                     "conditions": [{"type": "Probed", "status": "True", "reason": "Validated", "message": "ok"},
                                    {"type": "Ready", "status": ready, "reason": "Reconciled",
                                     "message": f"Sidecar: {n} remaining, 0 spent"}]}
    return obj


# ------------------------------------------------------------------------------- spec building

def test_constants_name_the_crd():
    assert (pr.GROUP, pr.VERSION, pr.PLURAL, pr.KIND) == ("obol.org", "v1alpha1", "purchaserequests",
                                                          "PurchaseRequest")
    assert pr.FINALIZER == "obol.org/purchase-finalizer" and pr.MAX_POOL == 2500


def test_alias_for():
    assert pr.alias_for("qwen3.5:9b") == "paid/qwen3.5:9b"


def test_payment_spec_uses_chain_name_not_caip2_and_atomic_string_price():
    assert PAYMENT == {"network": "base-sepolia", "payTo": PAY_TO, "price": "1000", "asset": USDC,
                       "assetSymbol": "USDC", "assetDecimals": 6, "assetTransferMethod": "eip3009",
                       "eip712Name": "USDC", "eip712Version": "2"}


def test_payment_spec_prefers_eip712_domain_and_keeps_permit2():
    extra = {"name": "Display", "version": "9", "eip712Domain": {"name": "USD Coin", "version": "2"},
             "assetTransferMethod": "permit2"}
    spec = pr.build_payment_spec(option(extra=extra, transfer_method="permit2"), chain_name="base",
                                 symbol=None, decimals=None)
    assert (spec["eip712Name"], spec["eip712Version"], spec["assetTransferMethod"]) == ("USD Coin", "2", "permit2")
    assert "assetSymbol" not in spec and "assetDecimals" not in spec and spec["network"] == "base"


def test_payment_spec_without_pay_to_is_a_seller_error():
    with pytest.raises(SellerError, match="no payTo"):
        pr.build_payment_spec(option(pay_to=""), chain_name="base-sepolia", symbol="USDC", decimals=6)


def test_build_purchase_full_object():
    auths = [auth(i) for i in range(3)]
    obj = pr.build_purchase("remote-qwen", "ns", endpoint="http://h:1/services/qwen/v1/chat/completions/",
                            model="qwen", payment=PAYMENT, auths=auths, auto_refill=None)
    assert obj == {"apiVersion": "obol.org/v1alpha1", "kind": "PurchaseRequest",
                   "metadata": {"name": "remote-qwen", "namespace": "ns"},
                   "spec": {"endpoint": "http://h:1/services/qwen/v1/chat/completions", "model": "qwen",
                            "count": 3, "payment": PAYMENT, "preSignedAuths": auths}}
    with_policy = pr.build_purchase("a", "ns", endpoint="http://h:1", model="m", payment=PAYMENT,
                                    auths=auths, auto_refill={"enabled": True, "threshold": 1, "count": 3})
    assert with_policy["spec"]["autoRefill"] == {"enabled": True, "threshold": 1, "count": 3}
    assert with_policy["spec"]["endpoint"] == "http://h:1/v1/chat/completions"


def test_build_purchase_refuses_empty_or_oversized_pool():
    with pytest.raises(PurchaseError):
        pr.build_purchase("a", "ns", endpoint="http://h", model="m", payment=PAYMENT, auths=[], auto_refill=None)
    with pytest.raises(PurchaseError, match="2500"):
        pr.build_purchase("a", "ns", endpoint="http://h", model="m", payment=PAYMENT,
                          auths=[{"id": str(i)} for i in range(2501)], auto_refill=None)


# ------------------------------------------------------------------------------ pool math / top-up

def test_active_tail_keeps_the_unspent_end():
    pool = [auth(i) for i in range(5)]
    assert pr.active_tail(pool, 2) == pool[3:]
    assert pr.active_tail(pool, 5) == pool
    assert pr.active_tail(pool, 0) == []
    with pytest.raises(PurchaseError, match="6 unspent auths but the PurchaseRequest holds 5"):
        pr.active_tail(pool, 6)


def test_topup_keeps_exactly_the_active_tail_plus_new_and_metadata():
    existing = live_object(n=5, remaining=2, auto_refill={"enabled": True, "threshold": 1, "count": 5})
    before = copy.deepcopy(existing)
    new = [auth(100 + i) for i in range(3)]
    obj = pr.topup_object(existing, new_auths=new, live_remaining=2, payment=PAYMENT, auto_refill=None)
    assert existing == before  # the input is not mutated
    assert "status" not in obj
    assert obj["metadata"] == existing["metadata"]  # resourceVersion and finalizers travel with the PUT
    assert [a["id"] for a in obj["spec"]["preSignedAuths"]] == [auth(i)["id"] for i in (3, 4, 100, 101, 102)]
    assert obj["spec"]["count"] == 5
    assert obj["spec"]["autoRefill"] == {"enabled": True, "threshold": 1, "count": 5}
    replaced = pr.topup_object(existing, new_auths=new, live_remaining=0, payment=PAYMENT,
                               auto_refill={"enabled": False})
    assert replaced["spec"]["preSignedAuths"] == new and replaced["spec"]["autoRefill"] == {"enabled": False}


def test_topup_payment_merge_keeps_existing_signing_metadata_unless_set():
    existing = live_object()
    existing["spec"]["payment"].update(assetTransferMethod="permit2", eip712Name="Old", eip712Version="1")
    new_payment = dict(PAYMENT, price="2000", assetTransferMethod="", eip712Name="", eip712Version="3")
    obj = pr.topup_object(existing, new_auths=[auth(9)], live_remaining=5, payment=new_payment, auto_refill=None)
    payment = obj["spec"]["payment"]
    assert (payment["price"], payment["assetTransferMethod"], payment["eip712Name"], payment["eip712Version"]) \
        == ("2000", "permit2", "Old", "3")


def test_topup_refuses_to_mix_payments_while_vouchers_are_unspent():
    existing = live_object(n=5, remaining=2)
    other = dict(PAYMENT, payTo="0x00000000000000000000000000000000000000aa", network="base")
    with pytest.raises(PurchaseError) as err:
        pr.topup_object(existing, new_auths=[auth(9)], live_remaining=2, payment=other, auto_refill=None)
    assert err.value.message.startswith("PurchaseRequest remote-qwen still holds 2 unspent vouchers paying ")
    assert err.value.data["changes"] == ["network base-sepolia → base",
                                         f"payTo {PAY_TO} → 0x00000000000000000000000000000000000000aa"]
    assert "--payment-option" in err.value.hint
    pr.check_same_payment(existing, [auth(1)], dict(PAYMENT, payTo=PAY_TO.lower(), price="5"))  # same payee
    emptied = pr.topup_object(existing, new_auths=[auth(9)], live_remaining=0, payment=other, auto_refill=None)
    assert emptied["spec"]["payment"]["payTo"] == other["payTo"]  # nothing unspent: the pool simply changes
    assert [a["id"] for a in emptied["spec"]["preSignedAuths"]] == [auth(9)["id"]]


def test_topup_takes_a_moved_endpoint_and_keeps_it_otherwise():
    existing = live_object()
    kept = pr.topup_object(existing, new_auths=[auth(9)], live_remaining=5, payment=PAYMENT, auto_refill=None)
    assert kept["spec"]["endpoint"] == "http://127.0.0.1:9/services/qwen/v1/chat/completions"
    moved = pr.topup_object(existing, new_auths=[auth(9)], live_remaining=5, payment=PAYMENT, auto_refill=None,
                            endpoint="http://127.0.0.1:9/services/qwen-v2")
    assert moved["spec"]["endpoint"] == "http://127.0.0.1:9/services/qwen-v2/v1/chat/completions"


def test_topup_over_the_crd_maximum_says_how_many_are_active():
    existing = live_object(n=2000)
    with pytest.raises(PurchaseError) as err:
        pr.topup_object(existing, new_auths=[auth(i) for i in range(501)], live_remaining=2000,
                        payment=PAYMENT, auto_refill=None)
    assert "2000 active auths" in err.value.message and "2500" in err.value.message
    assert "500" in (err.value.hint or "")


def test_topup_with_more_remaining_than_pool_is_refused():
    with pytest.raises(PurchaseError):
        pr.topup_object(live_object(n=3), new_auths=[auth(9)], live_remaining=4, payment=PAYMENT,
                        auto_refill=None)
    with pytest.raises(PurchaseError, match="no authorizations to keep or add"):
        pr.topup_object(live_object(n=3), new_auths=[], live_remaining=0, payment=PAYMENT, auto_refill=None)


# ------------------------------------------------------------------------------ guards

def test_check_topup_allowed_passes_for_a_ready_live_purchase():
    assert pr.check_topup_allowed(live_object(), {"remaining": 5, "spent": 0}) is None


def test_check_topup_refuses_draining():
    obj = live_object()
    obj["metadata"]["deletionTimestamp"] = "2026-11-25T00:00:00Z"
    with pytest.raises(PurchaseError, match="is draining for deletion") as err:
        pr.check_topup_allowed(obj, {"remaining": 5})
    assert "buy.py status remote-qwen" in err.value.message
    assert err.value.exit_code == ExitCode.FAILED


def test_check_topup_refuses_converging_generation_and_not_ready():
    obj = live_object(generation=2)
    obj["status"]["observedGeneration"] = 1
    with pytest.raises(PurchaseError, match="is still converging: waiting for observedGeneration 2 "
                                            r"\(have 1\)") as err:
        pr.check_topup_allowed(obj, {"remaining": 5})
    assert "buy.py status remote-qwen" in err.value.message
    syncing = live_object(ready="False")
    syncing["status"]["conditions"][-1]["message"] = "waiting for runtime auth pool to reach 5 active auths"
    with pytest.raises(PurchaseError, match="still converging: waiting for runtime auth pool"):
        pr.check_topup_allowed(syncing, {"remaining": 5})


def test_check_topup_refuses_not_live_and_other_model():
    with pytest.raises(PurchaseError, match="is not live in x402-buyer status yet") as err:
        pr.check_topup_allowed(live_object(), None)
    assert "buy.py status remote-qwen" in err.value.message
    with pytest.raises(PurchaseError, match="buys model qwen3.6-35b, not glm-5"):
        pr.check_topup_allowed(live_object(), {"remaining": 5}, model="glm-5")


def test_model_owner_conflict_finds_another_name_even_draining():
    draining = live_object(name="old-qwen")
    draining["metadata"]["deletionTimestamp"] = "2026-11-25T00:00:00Z"
    items = [live_object(name="remote-glm", model="glm-5"), draining]
    assert pr.model_owner_conflict(items, "remote-qwen", "qwen3.6-35b") == "old-qwen"
    assert pr.model_owner_conflict(items, "old-qwen", "qwen3.6-35b") is None  # its own purchase: a top-up
    assert pr.model_owner_conflict(items, "x", "phi-5") is None
    assert pr.model_owner_conflict([], "x", "phi-5") is None


# ------------------------------------------------------------------------------ readiness

def test_readiness_transitions():
    fresh = pr.build_purchase("p", "ns", endpoint="http://h", model="m", payment=PAYMENT,
                              auths=[auth(0), auth(1)], auto_refill=None)
    fresh["metadata"]["generation"] = 1
    state = pr.readiness(fresh)
    assert (state.ready, state.message, state.conditions) == (False, "", [])

    fresh["status"] = {"observedGeneration": 0}
    assert pr.readiness(fresh).message == "waiting for observedGeneration 1 (have 0)"

    fresh["status"] = {"observedGeneration": 1, "remaining": 0,
                       "conditions": [{"type": "Probed", "status": "True", "reason": "Validated"}]}
    assert pr.readiness(fresh).message == "waiting for runtime auth pool to reach 2 active auths"

    fresh["status"]["remaining"] = 2
    state = pr.readiness(fresh)
    assert not state.ready and state.message == ""  # no Ready condition yet

    fresh["status"]["conditions"].append({"type": "Ready", "status": "False", "reason": "RuntimeSyncing",
                                          "message": "syncing"})
    assert (pr.readiness(fresh).ready, pr.readiness(fresh).message) == (False, "syncing")

    fresh["status"].update(publicModel="paid/m")
    fresh["status"]["conditions"][-1].update(status="True", reason="Reconciled", message="Sidecar: 2 remaining")
    state = pr.readiness(fresh)
    assert state == pr.Readiness(True, 2, "paid/m", "Sidecar: 2 remaining",
                                 [("Probed", "True", "Validated", ""),
                                  ("Ready", "True", "Reconciled", "Sidecar: 2 remaining")])


def test_readiness_is_false_after_spending_but_is_serving_stays_true():
    spent = live_object(n=5, remaining=3)
    assert not pr.readiness(spent).ready
    assert pr.is_serving(spent)
    spent["metadata"]["deletionTimestamp"] = "now"
    assert not pr.is_serving(spent)


def test_condition_summary_lists_each_condition():
    assert pr.condition_summary(live_object(n=1)) == [("Probed", "True", "Validated", "ok"),
                                                      ("Ready", "True", "Reconciled", "Sidecar: 1 remaining, 0 spent")]
    assert pr.condition_summary({}) == []


@pytest.mark.parametrize("ctype,reason", [("Probed", "PricingMismatch"), ("Probed", "NotPaymentGated"),
                                          ("Probed", "InvalidPricing"), ("AuthsLoaded", "NoAuths"),
                                          ("Configured", "DuplicateModel")])
def test_failed_reason_reports_terminal_conditions(ctype, reason):
    obj = live_object(ready="False")
    obj["status"]["conditions"].append({"type": ctype, "status": "False", "reason": reason, "message": "why"})
    assert pr.failed_reason(obj) == f"{reason}: why"


def test_failed_reason_ignores_transient_and_stale_failures():
    assert pr.failed_reason(live_object()) is None
    probing = live_object(ready="False")
    probing["status"]["conditions"][0].update(status="False", reason="ProbeError", message="timeout")
    assert pr.failed_reason(probing) is None  # a probe error can heal
    stale = live_object(generation=2)
    stale["status"]["observedGeneration"] = 1
    stale["status"]["conditions"][0].update(status="False", reason="PricingMismatch", message="old spec")
    assert pr.failed_reason(stale) is None


# ------------------------------------------------------------------------------ expiry and list rows

def test_pool_expiry_counts_eip3009_permit2_and_legacy_deadlines():
    now = 1_000_000
    pool = [auth(0, now - 1), auth(1, now), permit2_auth(2, now + 10), {"id": "x", "validBefore": str(now + 5)},
            auth(3, pr.NEVER_DEADLINE), {"id": "no-deadline"}]
    assert pr.pool_expiry(pool, now) == (2, now - 1)
    assert pr.pool_expiry([auth(3, pr.NEVER_DEADLINE)], now) == (0, None)
    assert pr.pool_expiry([], now) == (0, None)


def test_list_row_field_names_are_the_host_contract():
    row = pr.list_row(live_object(), None, now=0)
    assert set(row) == {"name", "alias", "model", "remaining", "spent", "totalSigned", "expired", "price",
                        "chain", "endpoint", "autoRefill", "assetSymbol", "assetDecimals"}
    assert tuple(row) == pr.LIST_FIELDS


def test_list_row_prefers_live_values_and_counts_expired_in_active_pool():
    obj = live_object(n=4, auto_refill={"enabled": True, "threshold": 1, "count": 4})
    obj["spec"]["preSignedAuths"] = [auth(0, 100), auth(1, 100), auth(2, 100), auth(3, 10_000)]
    live = {"remaining": 2, "spent": 2, "public_model": "paid/live-name"}
    row = pr.list_row(obj, live, now=500)
    assert row == {"name": "remote-qwen", "alias": "paid/live-name", "model": "qwen3.6-35b", "remaining": 2,
                   "spent": 2, "totalSigned": 4, "expired": 1, "price": "1000", "chain": "base-sepolia",
                   "endpoint": "http://127.0.0.1:9/services/qwen/v1/chat/completions", "autoRefill": True,
                   "assetSymbol": "USDC", "assetDecimals": 6}


def test_list_row_without_live_entry_or_status_falls_back():
    obj = live_object(n=3)
    assert pr.list_row(obj, None, now=0)["alias"] == "paid/qwen3.6-35b"
    assert pr.list_row(obj, None, now=0)["remaining"] == 3
    del obj["status"]
    row = pr.list_row(obj, None, now=0)
    assert (row["alias"], row["remaining"], row["spent"], row["totalSigned"], row["autoRefill"]) == \
        ("paid/qwen3.6-35b", 0, 0, 3, False)


def test_list_row_takes_the_chain_from_the_buyer_and_the_token_from_the_table():
    obj = live_object(n=1)
    for key in ("assetSymbol", "assetDecimals"):
        obj["spec"]["payment"].pop(key, None)
    row = pr.list_row(obj, {"remaining": 1, "spent": 0, "network": "base-sepolia-live"}, now=0)
    assert (row["chain"], row["assetSymbol"], row["assetDecimals"]) == ("base-sepolia-live", "USDC", 6)
    obj["spec"]["payment"]["asset"] = "0x" + "77" * 20  # a token the table does not know stays unknown
    row = pr.list_row(obj, None, now=0)
    assert (row["chain"], row["assetSymbol"], row["assetDecimals"]) == ("base-sepolia", None, None)
    obj["spec"]["payment"].update(network="nowhere")
    assert pr.list_row(obj, None, now=0)["assetSymbol"] is None


def test_topup_drops_unspent_vouchers_signed_at_a_price_the_seller_no_longer_asks():
    existing = live_object(n=3, remaining=2)
    tail = existing["spec"]["preSignedAuths"][1:]
    moved = dict(PAYMENT, price="1500")
    assert pr.stale_vouchers(tail, PAYMENT) == [] and pr.stale_vouchers(tail, moved) == tail
    new = [{"id": "0xnew", "payment": {"x402Version": 2, "accepted": {"amount": "1500"},
                                       "payload": {"signature": "0xsig", "authorization": {"value": "1500"}}}}]
    obj = pr.topup_object(existing, new_auths=new, live_remaining=2, payment=moved, auto_refill=None)
    assert obj["spec"]["preSignedAuths"] == new and obj["spec"]["count"] == 1
    same = pr.topup_object(existing, new_auths=[auth(9)], live_remaining=2, payment=PAYMENT, auto_refill=None)
    assert same["spec"]["preSignedAuths"] == tail + [auth(9)]
    flat = {"signature": "0x", "from": "0x1", "to": "0x2", "value": "1000", "nonce": "0x3"}
    assert pr.voucher_price(flat) == "1000" and pr.stale_vouchers([flat], moved) == [flat]

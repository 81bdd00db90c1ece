"""`buy_x402.cluster`: which sellers the in-cluster x402-buyer can pay, and the schema dry run's reading.

Pure: 402s are built here, in the shapes obol-wire.md describes (Obol: body and header, CAIP-2 then
alias; reference SDK: header only; v1: body only, x402Version 1).
"""
from __future__ import annotations

import base64
import json

import pytest

from buy_x402 import cluster
from buy_x402.errors import KubeApiError, PurchaseError, SellerError
from buy_x402.x402 import parse_payment_required

USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
URL = "http://seller/services/x/v1/chat/completions"


def entry(network="eip155:84532", amount="1000", **extra) -> dict:
    return {"scheme": "exact", "network": network, "asset": USDC, "amount": amount, "payTo": PAY_TO,
            "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2", **extra}}


def obol(*entries: dict) -> tuple[dict, bytes]:
    """An Obol 402: the JSON body, and the header carrying the same bytes; each entry then its alias."""
    accepts = []
    for e in entries:
        accepts += [e, dict(e, network="base-sepolia")] if e["network"] == "eip155:84532" else [e]
    body = json.dumps({"x402Version": 2, "accepts": accepts}).encode()
    return {"PAYMENT-REQUIRED": base64.b64encode(body).decode()}, body


def check(headers: dict, body: bytes, option: int = 1, network: str | None = None) -> None:
    offer = parse_payment_required(402, headers, body)
    chosen = offer.accepts[option - 1]
    cluster.check_spendable(offer, chosen, network=network or chosen.chain.name, url=URL)


def test_an_obol_seller_can_be_bought_from_and_its_alias_copies_are_one_option():
    headers, body = obol(entry(), entry(amount="1000", assetTransferMethod="eip3009"))
    offer = parse_payment_required(402, headers, body)
    assert [(o.index, o.network, o.also_as) for o in offer.accepts] == [
        (1, "eip155:84532", ["base-sepolia"]), (2, "eip155:84532", ["base-sepolia"])]
    assert offer.body["accepts"][1]["network"] == "base-sepolia"  # what the buyer reads, kept as sent
    check(headers, body)


def test_requirements_only_in_the_header_are_refused_naming_pay():
    _, body = obol(entry())
    headers = {"PAYMENT-REQUIRED": base64.b64encode(body).decode()}
    with pytest.raises(SellerError) as caught:
        check(headers, b"{}")
    err = caught.value
    assert err.code == "cluster_cannot_pay" and err.exit_code == 1
    assert "no `accepts` in its JSON body" in err.message and "PAYMENT-REQUIRED header" in err.message
    assert "Nothing was signed" in err.message
    assert f"buy.py pay {URL}" in err.hint and f"buy.py pay-agent {URL}" in err.hint


def test_a_v1_seller_is_refused_naming_pay():
    v1_entry = {k: v for k, v in entry(network="base-sepolia").items() if k != "amount"}
    body = json.dumps({"x402Version": 1, "accepts": [dict(v1_entry, maxAmountRequired="1000")]}).encode()
    with pytest.raises(SellerError) as caught:
        check({}, body)
    assert "speaks only x402 v1" in caught.value.message and "never re-wraps" in caught.value.message
    assert "pay-agent" in caught.value.hint


def test_an_option_priced_unlike_the_first_is_refused_naming_the_one_that_works():
    headers, body = obol(entry(amount="3000"), entry(amount="1000"))
    check(headers, body, option=1)
    with pytest.raises(SellerError) as caught:
        check(headers, body, option=2)
    assert "checks only the price of the seller's first payment option (3000 atomic)" in caught.value.message
    assert "option [2] costs 1000" in caught.value.message and "--payment-option 1" in caught.value.message
    assert caught.value.data["works"] == [1]


def test_a_network_the_buyers_table_does_not_know_is_refused():
    """hoodi is a chain this skill can sign for, but the x402-buyer's alias table has no entry for it: the
    spec would say `hoodi` and the seller `eip155:560048`, which it compares as written."""
    e = entry(network="eip155:560048")
    body = json.dumps({"x402Version": 2, "accepts": [e]}).encode()
    with pytest.raises(SellerError) as caught:
        check({}, body)
    assert "alias table" in caught.value.message and "'hoodi'" in caught.value.message
    # The same offer spelled with the name the buyer compares as written is payable.
    check({}, json.dumps({"x402Version": 2, "accepts": [dict(e, network="hoodi")]}).encode())


def test_refusal_says_in_advance_what_buy_would_refuse_and_why():
    """What `probe` shows per option: the reason check_spendable would give, or None when buy would sign."""
    headers, body = obol(entry(amount="3000"), entry(amount="1000"))
    offer = parse_payment_required(402, headers, body)
    assert cluster.refusal(offer, offer.accepts[0]) is None
    assert "--payment-option 1" in cluster.refusal(offer, offer.accepts[1])
    header_only = parse_payment_required(402, headers, b"{}")
    assert "no `accepts` in its JSON body" in cluster.refusal(header_only, header_only.accepts[0])
    unknown = parse_payment_required(402, {}, json.dumps({"x402Version": 2, "accepts": [
        entry(network="eip155:999999")]}).encode())
    assert not unknown.accepts[0].payable
    assert "cannot sign for this option" in cluster.refusal(unknown, unknown.accepts[0])


def test_the_buyer_wire_is_one_table():
    assert cluster.BUYER.requirements_from == ("body",) and cluster.BUYER.payment_header == "X-PAYMENT"
    assert cluster.BUYER.x402_versions == (2,)
    assert cluster.buyer_network("Base-Sepolia") == "eip155:84532" == cluster.buyer_network("eip155:84532")


class FakeKube:
    """Answers a dry run the way the API server did in the devstack (tests/test_kube.py pins the real one)."""

    def __init__(self, error: KubeApiError | None = None, answer: dict | None = None) -> None:
        self.error, self.answer, self.calls = error, answer, []

    def create(self, obj, *, dry_run=False):
        self.calls.append(("create", dry_run))
        if self.error:
            raise self.error
        return self.answer or obj

    replace = create


def purchase(**auto_refill) -> dict:
    return {"metadata": {"name": "p"}, "spec": {"count": 1, "autoRefill": {"enabled": True, **auto_refill}}}


def test_a_field_the_schema_does_not_declare_names_the_field_and_the_flag():
    error = KubeApiError('Kubernetes API POST x: PurchaseRequest in version "v1alpha1" cannot be handled as a '
                         'PurchaseRequest: strict decoding error: unknown field "spec.autoRefill.maxUnitPrice"',
                         status_code=400, reason="BadRequest")
    kube = FakeKube(error)
    with pytest.raises(PurchaseError) as caught:
        cluster.check_schema(kube, purchase(maxUnitPrice="5"), replace=False)
    assert kube.calls == [("create", True)]
    assert "spec.autoRefill.maxUnitPrice (set by --cost-cap)" in caught.value.message
    assert caught.value.hint.startswith("drop --cost-cap") and caught.value.exit_code == 1


def test_a_replace_that_lost_a_race_with_a_status_write_is_checked_again_at_the_fresh_version():
    class Racing(FakeKube):
        def replace(self, obj, *, dry_run=False):
            self.calls.append(obj["metadata"].get("resourceVersion"))
            if len(self.calls) == 1:
                raise KubeApiError("conflict", status_code=409, reason="Conflict")
            return obj

        def get(self, name):
            return {"metadata": {"name": name, "resourceVersion": "8"}}

    kube = Racing()
    cluster.check_schema(kube, dict(purchase(), metadata={"name": "p", "resourceVersion": "7"}), replace=True)
    assert kube.calls == ["7", "8"]


def test_a_pruned_field_is_refused_and_other_rejections_name_their_field():
    with pytest.raises(PurchaseError) as caught:
        cluster.check_schema(FakeKube(answer=purchase()), purchase(maxUnitPrice="5"), replace=True)
    assert "would prune spec.autoRefill.maxUnitPrice (set by --cost-cap)" in caught.value.message
    invalid = KubeApiError("Kubernetes API POST x: spec.count: Invalid value: 3000", status_code=422, reason="Invalid",
                           data={"details": {"causes": [{"field": "spec.count"}]}})
    with pytest.raises(PurchaseError) as caught:
        cluster.check_schema(FakeKube(invalid), purchase(), replace=False)
    assert "would refuse PurchaseRequest p" in caught.value.message and "--count/--budget" in caught.value.hint
    cluster.check_schema(FakeKube(answer=purchase(maxUnitPrice="5")), purchase(maxUnitPrice="5"), replace=False)

"""`buy` end to end on the devstack: probe, pre-sign through the signer, PurchaseRequest, Ready.

The seller is the Obol-shaped one and every paid call goes through the faithful x402-buyer; the
refusals of sellers the cluster cannot pay are in tests/test_cluster_refusals.py.
"""
from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass

import pytest
import requests
from eth_account import Account
from eth_account.messages import encode_typed_data

from conftest import Result, run_buy, stack_env
from devstack import config
from helpers import buyer_status, drained_wallet, kube_get, kube_names, litellm_chat, offer, usdc_balance

MODEL = "qwen3.6-35b"
NAME = "t-qwen"


def buy(stack, name, model, *extra, env=None):
    return run_buy(["buy", name, "--endpoint", offer(stack, model)["url"], "--model", model, *extra, "--json"],
                   env or stack_env(stack))


def recover(auth: dict) -> str:
    """The address that signed an ERC-3009 voucher, recovered from its EIP-712 signature."""
    payment = auth["payment"]
    accepted, authorization = payment["accepted"], payment["payload"]["authorization"]
    typed = {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"}]},
        "primaryType": "TransferWithAuthorization",
        "domain": {"name": "USDC", "version": "2", "chainId": config.CHAIN_ID,
                   "verifyingContract": accepted["asset"]},
        "message": {k: (int(v) if k in ("value", "validAfter", "validBefore") else v)
                    for k, v in authorization.items()},
    }
    return Account.recover_message(encode_typed_data(full_message=typed),
                                   signature=payment["payload"]["signature"])


@dataclass
class Bought:
    result: Result    # what `buy` printed
    pr: dict          # the PurchaseRequest as that buy left it


@pytest.fixture(scope="module")
def qwen(stack) -> Bought:
    """The purchase NAME of MODEL with 3 vouchers, bought once for this module (tests that change it
    later, e.g. a top-up, do not change what this records)."""
    result = buy(stack, NAME, MODEL, "--count", "3")
    assert result.returncode == 0, result.stderr
    return Bought(result, kube_get(stack, NAME))


def spend_one(stack) -> None:
    """One paid chat through LiteLLM as paid/MODEL: the buyer spends the oldest voucher."""
    resp = litellm_chat(stack, f"paid/{MODEL}")
    assert resp.status_code == 200, resp.text


def test_buy_reaches_ready_and_the_model_is_paid_through_litellm(stack, qwen):
    agent = stack.info["signer"]["address"]
    pay_to = stack.info["chain"]["pay_to"]
    price = int(offer(stack, MODEL)["price"])

    result = qwen.result
    out = result.json
    assert out["exit_code"] == 0 and "error" not in out
    assert out["alias"] == f"paid/{MODEL}" and out["count"] == 3 and out["pool"] == 3
    assert out["price"]["atomic"] == str(price) and out["price"]["symbol"] == "USDC"
    assert out["chain"] == "base-sepolia"
    assert out["status"]["ready"] is True and out["status"]["publicModel"] == f"paid/{MODEL}"
    assert "Probing" in result.stderr and "Ready=True" in result.stderr

    pr = qwen.pr
    auths = pr["spec"]["preSignedAuths"]
    assert pr["spec"]["count"] == 3 and len(auths) == 3
    assert pr["spec"]["model"] == MODEL and pr["spec"]["endpoint"].endswith("/services/qwen/v1/chat/completions")
    assert pr["spec"]["payment"]["network"] == "base-sepolia" and pr["spec"]["payment"]["price"] == str(price)
    assert len({a["id"] for a in auths}) == 3
    for auth in auths:  # every voucher was signed by the agent's wallet, for exactly the price, to the seller
        assert set(auth) == {"id", "payment"} and auth["payment"]["x402Version"] == 2
        assert recover(auth) == agent
        authorization = auth["payment"]["payload"]["authorization"]
        assert authorization["value"] == str(price) and authorization["to"].lower() == pay_to.lower()
        assert authorization["nonce"] == auth["id"]

    before_seller, before_agent = usdc_balance(stack, pay_to), usdc_balance(stack, agent)
    spent_before = buyer_status(stack)[NAME]["spent"]
    resp = litellm_chat(stack, f"paid/{MODEL}")
    assert resp.status_code == 200, resp.text
    assert f"paid answer from {MODEL}" in resp.json()["choices"][0]["message"]["content"]
    assert buyer_status(stack)[NAME]["spent"] == spent_before + 1
    assert usdc_balance(stack, pay_to) - before_seller == price
    assert before_agent - usdc_balance(stack, agent) == price


def test_vouchers_pass_the_x402_sdk_verifier(stack, qwen):
    from x402.mechanisms.evm.eip712 import hash_eip3009_authorization
    from x402.mechanisms.evm.types import ExactEIP3009Payload
    from x402.mechanisms.evm.verify import verify_eoa_signature

    for auth in qwen.pr["spec"]["preSignedAuths"]:
        payment = auth["payment"]
        payload = ExactEIP3009Payload.from_dict(payment["payload"])
        digest = hash_eip3009_authorization(payload.authorization, config.CHAIN_ID, payment["accepted"]["asset"],
                                            "USDC", "2")
        signature = bytes.fromhex(payment["payload"]["signature"][2:])
        assert verify_eoa_signature(digest, signature, payload.authorization.from_address)
        assert not verify_eoa_signature(digest, signature, stack.info["chain"]["pay_to"])


def test_topup_keeps_the_active_tail(stack, qwen):
    before = kube_get(stack, NAME)["spec"]["preSignedAuths"]
    if buyer_status(stack)[NAME]["remaining"] == len(before):
        spend_one(stack)  # a spent head, so the top-up must drop it and keep only the unspent tail
    remaining = buyer_status(stack)[NAME]["remaining"]
    assert 0 < remaining < len(before)
    result = buy(stack, NAME, MODEL, "--count", "2")
    assert result.returncode == 0, result.stderr
    assert result.json["topup"] is True and result.json["pool"] == remaining + 2
    after = kube_get(stack, NAME)["spec"]["preSignedAuths"]
    assert [a["id"] for a in after[:remaining]] == [a["id"] for a in before[-remaining:]]
    assert not {a["id"] for a in after[remaining:]} & {a["id"] for a in before}
    assert buyer_status(stack)[NAME]["remaining"] == remaining + 2


def test_topup_follows_a_seller_that_moved_its_offer_url(stack):
    """A top-up naming a new --endpoint (same payee, token and chain) moves the purchase there, and the
    unspent vouchers signed for the old URL still pay at the new one."""
    name, model, pay_to = "t-moved", "hidden-model", stack.info["chain"]["pay_to"]
    first = buy(stack, name, model, "--count", "2")
    assert first.returncode == 0, first.stderr
    moved_to = offer(stack, "llama-4-scout")["url"]  # same seller wallet, another offer URL
    result = run_buy(["buy", name, "--endpoint", moved_to, "--model", model, "--count", "1", "--json"],
                     stack_env(stack))
    assert result.returncode == 0, result.stderr
    assert f"{name} moves from {offer(stack, model)['url']}/v1/chat/completions to {moved_to}" in result.stderr
    pr = kube_get(stack, name)
    assert pr["spec"]["endpoint"] == f"{moved_to}/v1/chat/completions"
    assert pr["spec"]["count"] == 3 and buyer_status(stack)[name]["remaining"] == 3
    before = usdc_balance(stack, pay_to)
    resp = requests.post(stack.env["X402_BUYER_URL"] + "/v1/chat/completions", timeout=60,
                         json={"model": f"paid/{model}", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200, resp.text  # the oldest voucher, signed before the move
    assert resp.json()["choices"][0]["message"]["content"] == "paid answer from llama-4-scout via x402"
    assert usdc_balance(stack, pay_to) - before == int(offer(stack, model)["price"])
    assert buyer_status(stack)[name]["remaining"] == 2


def _unchanged(stack):
    """What a failed buy must leave exactly as it was: the purchases (which exist, each one's spec and
    generation, byte for byte) and the wallet. Not resourceVersions: the controller writes a purchase's
    status whenever an event makes it reconcile, which a buy that writes nothing does not cause."""
    objects = {}
    for name in kube_names(stack):
        obj = kube_get(stack, name) or {}
        objects[name] = (obj.get("metadata", {}).get("generation"), json.dumps(obj.get("spec"), sort_keys=True))
    return objects, usdc_balance(stack, stack.info["signer"]["address"])


def test_a_second_purchase_name_for_the_same_model_is_refused(stack, qwen):
    before = _unchanged(stack)
    result = buy(stack, "t-qwen-again", MODEL, "--count", "1")
    assert result.returncode == 1
    assert f"model {MODEL} is already owned by PurchaseRequest {NAME}" in result.json["error"]["message"]
    assert _unchanged(stack) == before and kube_get(stack, "t-qwen-again") is None


# Refusals that need no seller (a bad --count, a bad name or URL, --no-canary alone) are in test_cli.py.
@pytest.mark.parametrize("args,code,message", [
    (["--count", "2", "--budget", "1000"], 2, "budget"),
    (["--budget", "1 OBOL"], 1, "OBOL"),
    (["--network", "mainnet"], 1, "mainnet"),
    (["--network", "nowhere"], 1, "nowhere"),
    (["--payment-option", "7"], 1, "7"),
    (["--auth-ttl", "soon"], 2, "soon"),
    (["--cost-cap", "2000"], 2, "--cost-cap requires --auto-refill"),
])
def test_bad_arguments_are_refused_before_anything_is_signed(stack, args, code, message):
    """multi-model is bought by no test, so another test's purchase of the model (refused first, as a
    second owner) cannot stand in for the refusal asked here."""
    before = _unchanged(stack)
    result = buy(stack, "t-bad", "multi-model", *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert result.json["exit_code"] == code
    assert message in result.json["error"]["message"] + result.json["error"].get("hint", "")
    assert _unchanged(stack) == before and kube_get(stack, "t-bad") is None


@pytest.mark.parametrize("endpoint_of,message", [
    (lambda s: s.info["litellm"]["url"], "402"),                    # answers, but not with 402
    (lambda s: "http://127.0.0.1:9", "cannot reach"),              # nothing listens
])
def test_bad_endpoints(stack, endpoint_of, message):
    before = _unchanged(stack)
    result = run_buy(["buy", "t-bad", "--endpoint", endpoint_of(stack), "--model", "deepseek-v4-pro", "--json"],
                     stack_env(stack))
    assert result.returncode in (1, 2)
    assert message in result.json["error"]["message"]
    assert _unchanged(stack) == before


def test_signer_down_fails_cleanly(stack):
    before = _unchanged(stack)
    result = buy(stack, "t-bad", "deepseek-v4-pro", "--count", "1",
                 env=stack_env(stack, REMOTE_SIGNER_URL="http://127.0.0.1:9"))
    assert result.returncode == 1
    assert "remote-signer" in result.json["error"]["message"] or "signer" in result.json["error"]["message"]
    assert _unchanged(stack) == before


def test_short_balance_is_refused_without_force(stack):
    price = int(offer(stack, "deepseek-v4-pro")["price"])
    with drained_wallet(stack, keep=price * 2):   # the wallet can pay for 2 vouchers, 3 are asked
        before = _unchanged(stack)
        result = buy(stack, "t-bad", "deepseek-v4-pro", "--count", "3")
        assert result.returncode == 1
        assert "holds 0.004 USDC" in result.json["error"]["message"]
        assert "--force" in result.json["error"]["hint"]
        assert _unchanged(stack) == before


def test_not_ready_in_time_exits_3_and_says_the_purchase_exists(stack):
    controller = stack.pid("controller")
    os.kill(controller, signal.SIGSTOP)  # the controller cannot reconcile: the purchase stays not Ready
    try:
        result = buy(stack, "t-phi", "phi-5", "--count", "1", "--timeout", "2", "--set-default")
    finally:
        os.kill(controller, signal.SIGCONT)
    assert result.returncode == 3, result.stderr
    err = result.json["error"]
    assert err["code"] == "not_ready"
    assert "exists and is funded" in err["message"] and "top it up" in err["message"]
    assert "buy.py status t-phi" in err["hint"] and "default set paid/phi-5" in err["hint"]
    assert result.json["set_default"] is None
    assert kube_get(stack, "t-phi") is not None

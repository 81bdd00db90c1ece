"""`remove [--revoke] [--force]` and `audit` against the devstack: the agent never left on a dead model,
cancelled vouchers that can never be charged (replayed on chain and through the seller), and money truth
from the chain. Balances are read from anvil; every refusal leaves config, cluster and wallet as they were.

Each test owns one model no other test buys (config.OFFERS: aya, dbrx, falcon, jamba, nemo).
"""
from __future__ import annotations

import base64
import json
import subprocess

import pytest
import requests

from buy_x402 import abi
from conftest import run_buy, stack_env
from devstack import config
from devstack.parts import chain as chain_part
from helpers import (agent_chat, assert_no_reprs, buyer_files, closed_port, config_bytes, hermes_default, kube, kube_get, kube_names,
                     live, offer, settled, spend, usdc_balance, wait)

no_reprs = assert_no_reprs


def buy(stack, name: str, model: str, *flags: str, json_out: bool = True):
    args = ["buy", name, "--endpoint", offer(stack, model)["url"], "--model", model, *flags]
    return run_buy(args + (["--json"] if json_out else []), stack_env(stack))


def rpc(stack, method: str, params: list | None = None):
    return chain_part.rpc(stack.env["ANVIL_RPC_URL"], method, params)


def authorization_state(stack, authorizer: str, nonce: str) -> bool:
    data = abi.call_data(abi.AUTHORIZATION_STATE, abi.address_word(authorizer), abi.bytes32_word(nonce))
    return int(rpc(stack, "eth_call", [{"to": config.USDC_ADDRESS, "data": data}, "latest"]), 16) == 1


def transfer_call(auth: dict) -> str:
    """transferWithAuthorization(from, to, value, validAfter, validBefore, nonce, v, r, s) of a stored voucher."""
    payload = auth["payment"]["payload"]
    a = payload["authorization"]
    v, r, s = abi.split_signature(payload["signature"])
    return abi.call_data(abi.TRANSFER_WITH_AUTHORIZATION, abi.address_word(a["from"]), abi.address_word(a["to"]),
                         abi.uint_word(int(a["value"])), abi.uint_word(int(a["validAfter"])),
                         abi.uint_word(int(a["validBefore"])), abi.bytes32_word(a["nonce"]), abi.uint_word(v), r, s)


def settle_by_hand(stack, auth: dict) -> dict:
    """Redeem a voucher straight on the token, as a seller (or anyone holding a copy) could."""
    sender = chain_part.address_of(config.FACILITATOR_KEY)
    tx = rpc(stack, "eth_sendTransaction", [{"from": sender, "to": config.USDC_ADDRESS, "data": transfer_call(auth)}])
    return chain_part.wait_receipt(stack.env["ANVIL_RPC_URL"], tx)


def agent(stack) -> str:
    return stack.info["signer"]["address"]


def eth_balance(stack, address: str) -> int:
    return int(rpc(stack, "eth_getBalance", [address, "latest"]), 16)


def tx_count(stack, address: str) -> int:
    return int(rpc(stack, "eth_getTransactionCount", [address, "latest"]), 16)


def cluster_view(stack, name: str) -> tuple:
    obj = kube_get(stack, name)
    return (None if obj is None else (obj["spec"], obj["metadata"].get("deletionTimestamp")), kube_names(stack))


def unchanged_snapshot(stack, name: str) -> tuple:
    """What a refused `remove` must not touch: the agent's config, the purchase, the wallet (tokens, ETH, nonce)."""
    return (config_bytes(stack), cluster_view(stack, name), usdc_balance(stack, agent(stack)),
            eth_balance(stack, agent(stack)), tx_count(stack, agent(stack)))


def hermes_set(stack, model: str) -> None:
    res = subprocess.run([stack.env["HERMES_BIN"], "config", "set", "model.default", model], capture_output=True,
                         text=True, timeout=60, env=stack_env(stack))
    assert res.returncode == 0, res.stderr


# --- remove -----------------------------------------------------------------------------------------

def test_remove_of_the_adopted_purchase_puts_the_previous_model_back_and_the_next_chat_is_free(stack):
    name, model = "rm-aya", "aya-32b"
    assert hermes_default(stack) == config.FREE_MODEL
    bought = buy(stack, name, model, "--count", "3", "--set-default", json_out=False)
    assert bought.returncode == 0, bought.stderr
    no_reprs(bought.stdout, bought.stderr)
    assert f"The agent now uses paid/{model} (it used {config.FREE_MODEL})" in bought.stdout
    assert "Roll back: buy.py default restore" in bought.stdout
    assert f"paid answer from {model}" in agent_chat(stack, "who answers?")
    shown = run_buy(["default"], stack_env(stack))
    assert shown.returncode == 0 and f"from purchase {name}" in shown.stdout
    no_reprs(shown.stdout, shown.stderr)
    pay_to = stack.info["chain"]["pay_to"]
    seller_before, wallet_before = usdc_balance(stack, pay_to), usdc_balance(stack, agent(stack))

    res = run_buy(["remove", name], stack_env(stack))
    assert res.returncode == 0, res.stdout + res.stderr
    no_reprs(res.stdout, res.stderr)
    assert f"Agent default: {config.FREE_MODEL} again (it was paid/{model})" in res.stdout
    assert "Removed purchase rm-aya (paid/aya-32b): the PurchaseRequest is gone" in res.stdout
    # Two vouchers were spent (canary, chat) and settled; one was never sent: it stays valid, and the
    # output says so with its value and expiry.
    assert "1 signed voucher worth 0.001 USDC (1000 atomic)" in res.stdout
    assert "only `remove --revoke` (before removal) cancels them" in res.stdout

    assert hermes_default(stack) == config.FREE_MODEL
    assert "free answer" in agent_chat(stack, "and now?")
    assert kube_get(stack, name) is None
    assert name not in live(stack)
    assert buyer_files(stack, name) == (None, None)
    # Removing moves no money.
    assert (usdc_balance(stack, pay_to), usdc_balance(stack, agent(stack))) == (seller_before, wallet_before)


def test_remove_revoke_cancels_every_unspent_voucher_and_a_replay_fails_on_chain_and_at_the_seller(stack):
    name, model = "rm-dbrx", "dbrx-2"
    bought = buy(stack, name, model, "--count", "4")
    assert bought.returncode == 0, bought.stderr
    spend(stack, model, 1)
    pool = kube(stack).get(name)["spec"]["preSignedAuths"]
    spent_one, kept = pool[0], pool[-1]   # a copy of a voucher never spent, as a seller or a leak could keep it
    wallet = agent(stack)
    assert authorization_state(stack, wallet, spent_one["id"]) is True
    assert authorization_state(stack, wallet, kept["id"]) is False

    # A peer --revoke needs is down: refused, naming it, before anything changes.
    for variable, peer in (("ERPC_URL", "chain RPC"), ("REMOTE_SIGNER_URL", "remote signer")):
        before = unchanged_snapshot(stack, name)
        down = run_buy(["remove", name, "--revoke", "--json"],
                       stack_env(stack, **{variable: f"http://127.0.0.1:{closed_port()}"}))
        assert down.returncode == 1, down.stdout + down.stderr
        assert peer in down.json["error"]["message"]
        assert "rm-dbrx was not removed and nothing changed" in down.json["error"]["message"]
        assert unchanged_snapshot(stack, name) == before

    # The wallet cannot pay the gas: refused before anything is sent, signed or deleted.
    eth = eth_balance(stack, wallet)
    rpc(stack, "anvil_setBalance", [wallet, "0x0"])
    try:
        before = unchanged_snapshot(stack, name)
        refused = run_buy(["remove", name, "--revoke", "--json"], stack_env(stack))
        assert refused.returncode == 1, refused.stdout + refused.stderr
        err = refused.json["error"]
        assert err["code"] == "insufficient_gas"
        assert "holds 0 ETH" in err["message"] and "nothing was sent" in err["message"]
        assert "send at least" in err["hint"]
        assert unchanged_snapshot(stack, name) == before
    finally:
        rpc(stack, "anvil_setBalance", [wallet, hex(eth)])

    tokens_before, eth_before = usdc_balance(stack, wallet), eth_balance(stack, wallet)
    res = run_buy(["remove", name, "--revoke", "--json"], stack_env(stack))
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.json
    assert out["gone"] is True and out["state"] == "gone"
    revoked = out["revoked"]
    assert sorted(revoked["cancelled"]) == sorted(a["id"] for a in pool[1:])
    assert all(t["status"] == "mined" for t in revoked["transactions"]) and len(revoked["transactions"]) == 3
    assert out["vouchers"]["still_valid"]["count"] == 0
    assert out["vouchers"]["counts"]["settled"] == 1 and out["vouchers"]["counts"]["cancelled"] == 3
    # Every nonce of the purchase is used up on chain; cancelling moved no tokens, only gas.
    assert all(authorization_state(stack, wallet, a["id"]) for a in pool)
    assert usdc_balance(stack, wallet) == tokens_before
    gas_paid = eth_before - eth_balance(stack, wallet)
    assert gas_paid > 0

    # Replay the kept copy on chain: the token refuses it.
    with pytest.raises(RuntimeError, match="authorization is used or canceled"):
        rpc(stack, "eth_estimateGas", [{"from": chain_part.address_of(config.FACILITATOR_KEY),
                                        "to": config.USDC_ADDRESS, "data": transfer_call(kept)}])
    # Replay it through the seller, as a buyer would send it: refused, nothing moves.
    pay_to = stack.info["chain"]["pay_to"]
    seller_before = usdc_balance(stack, pay_to)
    header = base64.b64encode(json.dumps(kept["payment"]).encode()).decode()
    resp = requests.post(offer(stack, model)["url"] + "/v1/chat/completions", headers={"X-PAYMENT": header},
                         json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert resp.status_code == 402, resp.text
    assert (usdc_balance(stack, pay_to), usdc_balance(stack, wallet)) == (seller_before, tokens_before)

    # Human text of a revocation.
    text = run_buy(["audit"], stack_env(stack))
    no_reprs(text.stdout, text.stderr)


def test_remove_refuses_with_exit_4_when_the_default_cannot_be_put_back_and_force_goes_on(stack):
    name, model = "rm-falcon", "falcon-h2"
    bought = buy(stack, name, model, "--count", "2")
    assert bought.returncode == 0, bought.stderr
    hermes_set(stack, f"paid/{model}")   # set by hand: buy-x402 recorded no previous default to put back
    try:
        before = unchanged_snapshot(stack, name)
        res = run_buy(["remove", name, "--json"], stack_env(stack))
        assert res.returncode == 4, res.stdout + res.stderr
        err = res.json["error"]
        assert err["code"] == "default_not_changed"
        assert f"paid/{model} is the agent's default" in err["message"] and "nothing changed" in err["message"]
        assert "--force" in err["hint"]
        assert unchanged_snapshot(stack, name) == before
        human = run_buy(["remove", name], stack_env(stack))
        assert human.returncode == 4 and "error:" in human.stderr
        no_reprs(human.stdout, human.stderr)
        assert unchanged_snapshot(stack, name) == before

        forced = run_buy(["remove", name, "--force"], stack_env(stack))
        assert forced.returncode == 0, forced.stdout + forced.stderr
        no_reprs(forced.stdout, forced.stderr)
        assert f"warning: --force: the agent's default stays paid/{model}" in forced.stderr
        assert f"Agent default: still paid/{model}, which stops answering now" in forced.stdout
        assert kube_get(stack, name) is None
        assert hermes_default(stack) == f"paid/{model}"   # --force does not pretend
    finally:
        hermes_set(stack, config.FREE_MODEL)


def test_remove_says_when_the_purchase_is_still_draining_and_a_rerun_finishes(stack):
    """With the x402-buyer unreachable to `remove`, nothing stops it spending the pool, so the controller keeps
    the deleted purchase Deleting/Draining: exit 3, never "gone". A re-run that reaches the buyer finishes."""
    name, model = "rm-jamba", "jamba-2"
    bought = buy(stack, name, model, "--count", "2")
    assert bought.returncode == 0, bought.stderr
    settled(stack, name)
    env = stack_env(stack, X402_BUYER_URL=f"http://127.0.0.1:{closed_port()}")
    res = run_buy(["remove", name, "--timeout", "8", "--json"], env)
    assert res.returncode == 3, res.stdout + res.stderr
    assert res.json["gone"] is False and res.json["state"] == "draining"
    assert res.json["error"]["code"] == "not_gone"
    assert "Draining" in res.json["error"]["message"] and f"re-run `buy.py remove {name}`" in res.json["error"]["hint"]
    obj = wait(lambda: kube_get(stack, name), what="the draining purchase")
    assert obj["metadata"].get("deletionTimestamp")
    assert name in live(stack) and live(stack)[name]["remaining"] == 2   # still served, still unspent
    human = run_buy(["remove", name, "--timeout", "2"], env)
    assert human.returncode == 3 and "is deleted but still draining" in human.stdout
    no_reprs(human.stdout, human.stderr)

    again = run_buy(["remove", name, "--json"], stack_env(stack))
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.json["gone"] is True and again.json["was_deleting"] is True
    assert again.json["buyer_removals"] >= 1
    assert kube_get(stack, name) is None and name not in live(stack)


def test_remove_of_an_unknown_purchase_names_the_ones_that_exist_and_changes_nothing(stack):
    before = (config_bytes(stack), kube_names(stack))
    res = run_buy(["remove", "no-such-purchase", "--json"], stack_env(stack))
    assert res.returncode == 1
    assert "no purchase named 'no-such-purchase'" in res.json["error"]["message"]
    assert (config_bytes(stack), kube_names(stack)) == before


# --- audit ------------------------------------------------------------------------------------------

def test_audit_reports_a_voucher_the_seller_settled_that_the_buyer_did_not_count(stack):
    name, model = "au-nemo", "nemo-3"
    bought = buy(stack, name, model, "--count", "4")
    assert bought.returncode == 0, bought.stderr
    spend(stack, model, 1)
    clean = run_buy(["audit", name, "--json"], stack_env(stack))
    assert clean.returncode == 0, clean.stderr
    row = clean.json["purchases"][0]
    assert row["ok"] is True and row["discrepancies"] == []
    assert row["counts"]["settled"] == 1 and row["counts"]["unused"] == 3
    assert row["remaining"] == 3 and row["remaining_source"] == "x402-buyer"

    # The seller settles a voucher of the buyer's pool by hand: money moves, the buyer never spent it.
    pool = kube(stack).get(name)["spec"]["preSignedAuths"]
    wallet, pay_to = agent(stack), stack.info["chain"]["pay_to"]
    seller_before, buyer_spent = usdc_balance(stack, pay_to), live(stack)[name]["spent"]
    receipt = settle_by_hand(stack, pool[2])
    assert receipt["status"] == "0x1"
    assert usdc_balance(stack, pay_to) - seller_before == int(offer(stack, model)["price"])

    res = run_buy(["audit", name, "--json"], stack_env(stack))
    assert res.returncode == 0, res.stderr
    row = res.json["purchases"][0]
    assert res.json["ok"] is False and res.json["discrepancies"] == 1
    assert row["counts"]["settled"] == 2 and row["counts"]["unused"] == 2
    assert row["values"]["settled"] == str(2 * int(offer(stack, model)["price"]))
    [flag] = row["discrepancies"]
    assert flag["kind"] == "settled_not_counted" and flag["index"] == 2 and flag["id"] == pool[2]["id"]
    assert live(stack)[name]["spent"] == buyer_spent   # the buyer's word, which the audit does not take
    text = run_buy(["audit", name], stack_env(stack))
    assert text.returncode == 0
    no_reprs(text.stdout, text.stderr)
    assert "au-nemo (paid/nemo-3): MISMATCH" in text.stdout
    assert "money moved without the buyer" in text.stdout

    # Cleaned up by remove --revoke: the remaining unused vouchers are cancelled.
    gone = run_buy(["remove", name, "--revoke", "--json"], stack_env(stack))
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert all(authorization_state(stack, wallet, a["id"]) for a in pool)


def test_audit_of_an_unknown_purchase_fails_naming_it(stack):
    res = run_buy(["audit", "nope-nope", "--json"], stack_env(stack))
    assert res.returncode == 1 and "no purchase named 'nope-nope'" in res.json["error"]["message"]


def test_audit_without_a_chain_fails_instead_of_taking_anyone_s_word(stack):
    ensure = buy(stack, "au-down", "nemo-3", "--count", "1") if kube_get(stack, "au-down") is None else None
    assert ensure is None or ensure.returncode == 0, ensure.stderr
    res = run_buy(["audit", "--json"], stack_env(stack, ERPC_URL=f"http://127.0.0.1:{closed_port()}"))
    assert res.returncode == 1
    assert "cannot reach the chain RPC" in res.json["error"]["message"]
    assert run_buy(["remove", "au-down", "--revoke"], stack_env(stack)).returncode == 0


def test_human_output_of_the_everyday_commands_has_no_python_reprs(stack):
    env = stack_env(stack)
    for args in (["default"], ["default", "show"], ["list"], ["audit"], ["balance"], ["env"],
                 ["probe", offer(stack, "aya-32b")["url"]],
                 ["default", "set", f"paid/{config.OFFERS[0]['model']}-not-bought", "--no-canary"]):
        res = run_buy(args, env)
        assert res.returncode in (0, 4), (args, res.stdout, res.stderr)
        no_reprs(res.stdout, res.stderr)


@pytest.mark.parametrize("argv, words", [
    (["remove"], "the following arguments are required: name"),
    (["remove", "x", "--timeout", "0"], "expected seconds above 0"),
    (["remove", "x", "--timeout", "soon"], "expected seconds"),
    (["audit", "a", "b"], "unrecognized arguments: b"),
])
def test_usage_errors_exit_2_before_any_peer_is_asked(run_cli, offline, argv, words):
    res = run_cli(argv + ["--json"])
    assert res.returncode == 2, res.stdout + res.stderr
    assert words in res.json["error"]["message"]
    assert offline.attempts == []

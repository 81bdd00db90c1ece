"""go, and what paying directly checks: the cheapest option, the payment identifier, required extensions,
the model a chat names, and settlement by the chain's word. Balances are read from anvil."""
from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from x402.extensions.payment_identifier import is_valid_payment_id

from buy_x402 import payment
from buy_x402.http import make_session
from buy_x402.signer import SignerClient
from buy_x402.x402 import probe
from conftest import run_buy, stack_env
from devstack import config
from devstack.parts import chain as chain_part
from helpers import SINK, closed_port, kube_get, usdc_balance


def offer(stack, name: str) -> dict:
    return next(o for o in stack.info["seller"]["offers"] + stack.info["foreign"]["offers"] if o["offer"] == name)


def balances(stack) -> tuple[int, int]:
    return usdc_balance(stack, stack.info["signer"]["address"]), usdc_balance(stack, stack.info["seller"]["pay_to"])


def moved(stack, before: tuple[int, int], price: int) -> bool:
    return balances(stack) == (before[0] - price, before[1] + price)


# ------------------------------------------------------------------------------------------------ go

def test_go_on_a_chat_offer_without_a_message_pays_nothing_and_says_what_to_run(stack):
    qwen = offer(stack, "qwen")
    before = balances(stack)
    res = run_buy(["go", qwen["url"], "--json"], stack_env(stack))
    assert res.returncode == 0, res.stderr
    doc = res.json
    assert (doc["kind"], doc["paid"], doc["model"]) == ("chat", False, qwen["model"])
    assert doc["next"] == f"buy.py go {qwen['url']} --message 'your question'"
    assert doc["buy"] == f"buy.py buy qwen3-6-35b --endpoint {qwen['url']} --model {qwen['model']} --count 10"
    assert [o["price"]["atomic"] for o in doc["options"]] == [qwen["price"]]
    text = run_buy(["go", qwen["url"]], stack_env(stack))
    assert text.returncode == 0 and "nothing was paid" in text.stdout and doc["next"] in text.stdout
    assert "{" not in text.stdout and "'price'" not in text.stdout   # a summary, no Python/JSON dump
    assert balances(stack) == before


def test_go_asks_a_chat_offer_with_the_model_it_advertises_and_the_chain_confirms_the_payment(stack):
    qwen = offer(stack, "qwen")
    before = balances(stack)
    res = run_buy(["go", qwen["url"], "--message", "hello", "--json"], stack_env(stack))
    assert res.returncode == 0, res.stderr
    doc = res.json
    assert (doc["kind"], doc["paid"], doc["model"], doc["streamed"]) == ("chat", True, qwen["model"], False)
    assert doc["content"] == f"paid answer from {qwen['model']} via x402"
    # The Obol gateway sends its receipt of a streamed answer as HTTP trailers, which requests cannot read:
    # the chain's own word (the voucher's EIP-3009 nonce) says it was paid.
    assert doc["settlement"]["header"] is None
    assert (doc["settlement"]["verified"], doc["settlement"]["how"]) == (True, "authorizationState")
    assert moved(stack, before, int(qwen["price"]))

    text = run_buy(["go", qwen["url"], "--message", "hello"], stack_env(stack))
    assert text.returncode == 0, text.stderr
    assert text.stdout == f"paid answer from {qwen['model']} via x402\n"   # the answer as it streamed, nothing else
    assert "Settlement: verified on chain by the voucher's nonce (authorizationState)" in text.stderr


def test_go_on_an_agent_offer_names_its_agent_model_unless_told(stack):
    agent = offer(stack, "agent")
    before = balances(stack)
    plain = run_buy(["go", agent["url"], "--json"], stack_env(stack)).json
    assert (plain["kind"], plain["paid"], plain["buy"]) == ("agent", False, None)
    doc = run_buy(["go", agent["url"], "--message", "gas price?", "--json"], stack_env(stack)).json
    assert doc["exit_code"] == 0 and (doc["kind"], doc["model"]) == ("agent", "agent-model")
    told = run_buy(["go", agent["url"], "--message", "hi", "--model", "other-model", "--json"], stack_env(stack)).json
    assert told["exit_code"] == 0 and told["model"] == "other-model"
    assert moved(stack, before, 2 * int(agent["price"]))


def test_go_pays_an_http_offer_with_the_request_as_given(stack):
    weather = offer(stack, "weather")
    before = balances(stack)
    doc = run_buy(["go", weather["url"] + "/today", "--json"], stack_env(stack)).json
    assert doc["exit_code"] == 0 and (doc["kind"], doc["method"], doc["status"]) == ("http", "GET", 200)
    assert json.loads(doc["body"]) == {"offer": "weather", "method": "GET", "path": "/today",
                                       "content": "paid data from weather-api"}
    assert (doc["settlement"]["verified"], doc["settlement"]["how"], doc["settlement"]["sellerClaim"]) == \
        (True, "receipt", "confirmed")
    posted = run_buy(["go", weather["url"] + "/report", "--data", '{"city": "Lisbon"}', "--json"], stack_env(stack)).json
    assert posted["exit_code"] == 0 and posted["method"] == "POST"
    assert moved(stack, before, 2 * int(weather["price"]))


def test_go_finds_a_header_only_chat_seller_by_its_chat_probe_and_offers_no_buy(stack):
    sdk = offer(stack, "sdk")
    doc = run_buy(["go", sdk["url"], "--json"], stack_env(stack)).json
    assert doc["exit_code"] == 0 and doc["kind"] == "chat" and doc["foundBy"].startswith("POST ")
    assert doc["buy"] is None   # the cluster's x402-buyer cannot pay a header-only seller
    before = balances(stack)
    paid = run_buy(["go", sdk["url"], "--message", "hi", "--json"], stack_env(stack)).json
    assert paid["exit_code"] == 0 and paid["model"] == "auto"   # it advertises none: upstream's fallback
    assert paid["settlement"]["verified"] is True and moved(stack, before, int(sdk["price"]))


@pytest.mark.parametrize("args, code, message", [
    (["--message", "hi"], 2, "is a plain HTTP offer, not a chat: --message does not apply"),
])
def test_go_bad_input_on_a_live_offer_pays_nothing(stack, args, code, message):
    before = balances(stack)
    res = run_buy(["go", offer(stack, "weather")["url"], *args, "--json"], stack_env(stack))
    assert res.returncode == code and message in res.json["error"]["message"]
    assert balances(stack) == before


def test_go_on_what_is_not_an_offer_exits_1(stack):
    before = balances(stack)
    res = run_buy(["go", stack.info["foreign"]["url"] + "/healthz", "--json"], stack_env(stack))
    assert res.returncode == 1 and res.json["error"]["code"] == "seller"
    assert "without asking for payment" in res.json["error"]["message"]
    down = run_buy(["go", f"http://127.0.0.1:{closed_port()}/services/qwen", "--json"], stack_env(stack))
    assert down.returncode == 1 and down.json["error"]["code"] == "unreachable"
    assert balances(stack) == before


# ----------------------------------------------------------------------------- cheapest, pay-agent model

def test_pay_takes_the_cheapest_option_and_buy_the_cheapest_the_cluster_can_spend(stack):
    multi = offer(stack, "multi")   # 0.003 and 0.001 USDC
    before = balances(stack)
    doc = run_buy(["pay", multi["url"], "--type", "inference", "--message", "hi", "--json"], stack_env(stack)).json
    assert doc["exit_code"] == 0 and doc["option"]["index"] == 2
    assert doc["optionReason"].startswith("cheapest the wallet can afford of 2 options")
    assert moved(stack, before, 1000)
    # buy: the controller validates only the first option's price, so its cheapest spendable one is [1].
    # (A later check refuses this buy, before signing: the cost cap this CRD prunes, or the model already owned
    # by another test's purchase; the choice is announced before either.)
    res = run_buy(["buy", "t-cheap", "--endpoint", multi["url"], "--model", "multi-model", "--count", "1",
                   "--auto-refill", "--cost-cap", "0.005 USDC", "--json"], stack_env(stack))
    assert res.returncode == 1 and res.json["error"]["code"] in ("schema", "purchase")
    assert "Signing" not in res.stderr and kube_get(stack, "t-cheap") is None
    assert "using [1] (cheapest the wallet can afford of the 1 of 2 options the cluster can spend" in res.stderr


def test_pay_agent_names_the_offers_model_else_auto(stack):
    agent, sdk = offer(stack, "agent"), offer(stack, "sdk")
    assert run_buy(["pay-agent", agent["url"], "--message", "hi", "--json"], stack_env(stack)).json["model"] == "agent-model"
    assert run_buy(["pay-agent", sdk["url"], "--message", "hi", "--json"], stack_env(stack)).json["model"] == "auto"
    assert run_buy(["pay-agent", sdk["url"], "--message", "hi", "--model", "m1", "--json"],
                   stack_env(stack)).json["model"] == "m1"


# ------------------------------------------------------------------------------ x402 extensions

def test_a_required_payment_identifier_is_supplied_and_paid(stack):
    pid = offer(stack, "pid")
    before = balances(stack)
    doc = run_buy(["pay", pid["url"], "--type", "inference", "--message", "hi", "--json"], stack_env(stack)).json
    assert doc["exit_code"] == 0 and is_valid_payment_id(doc["paymentId"])
    assert doc["settlement"]["verified"] is True and moved(stack, before, int(pid["price"]))
    again = run_buy(["pay", pid["url"], "--type", "inference", "--message", "hi", "--json"], stack_env(stack)).json
    assert again["exit_code"] == 0 and again["paymentId"] != doc["paymentId"]


def test_the_seller_really_requires_it(stack):
    """A voucher without the identifier (what the skill signed before) is refused, and nothing moves."""
    pid = offer(stack, "pid")
    session = make_session("test")
    offered = probe(session, pid["url"], "m")
    signer = SignerClient(session, stack.env["REMOTE_SIGNER_URL"])
    wallet = signer.address()
    option = offered.accepts[0]
    voucher = payment.sign_voucher(signer, option, wallet=wallet, valid_before=int(time.time()) + 300)
    assert "extensions" not in voucher["payment"]
    name, value, _ = payment.payment_header(offered, option, voucher)
    before = balances(stack)
    resp = requests.post(pid["url"] + "/v1/chat/completions", json={"model": "m", "messages": []},
                         headers={name: value}, timeout=30)
    assert resp.status_code == 402
    assert "payment_identifier_required" in payment.rejection_reason(402, resp.headers, resp.content)
    assert balances(stack) == before


def test_an_unknown_required_extension_is_refused_before_anything_is_signed(stack):
    future = offer(stack, "future")
    before = balances(stack)
    res = run_buy(["pay", future["url"], "--type", "inference", "--message", "hi", "--json"], stack_env(stack))
    assert res.returncode == 1 and res.json["error"]["code"] == "extension_unsupported"
    assert "x-escrow-receipt" in res.json["error"]["message"] and "Paying" not in res.stderr
    # The refusal comes before the remote signer is even asked for the wallet: with no signer, same answer.
    blind = run_buy(["go", future["url"], "--message", "hi", "--json"],
                    stack_env(stack, REMOTE_SIGNER_URL=f"http://127.0.0.1:{closed_port()}"))
    assert blind.returncode == 1 and blind.json["error"]["code"] == "extension_unsupported"
    assert balances(stack) == before


# ---------------------------------------------------------------------------- settlement by the chain

class _Seller(BaseHTTPRequestHandler):
    """A seller that takes the devstack's USDC but lies about settling: it never redeems the voucher and
    answers 200, with a settlement header naming `transaction` (or none)."""
    requirement: dict
    transaction: str | None = None

    def _send(self, status: int, body: bytes, headers: dict) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if not self.headers.get("PAYMENT-SIGNATURE"):
            doc = json.dumps({"x402Version": 2, "resource": {"url": "http://liar/"}, "accepts": [self.requirement]})
            self._send(402, doc.encode(), {"PAYMENT-REQUIRED": base64.b64encode(doc.encode()).decode()})
            return
        headers = {}
        if self.transaction:
            receipt = {"success": True, "transaction": self.transaction, "network": config.CAIP2}
            headers["PAYMENT-RESPONSE"] = base64.b64encode(json.dumps(receipt).encode()).decode()
        self._send(200, b'{"data": "free lunch"}', headers)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def liar(stack):
    requirement = {"scheme": "exact", "network": config.CAIP2, "asset": config.USDC_ADDRESS, "amount": "700",
                   "payTo": stack.info["seller"]["pay_to"], "maxTimeoutSeconds": 60,
                   "extra": {"name": "USDC", "version": "2"}}
    handler = type("Liar", (_Seller,), {"requirement": requirement})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{server.server_port}/data"
    server.shutdown()
    server.server_close()


def test_a_settlement_whose_transaction_moved_no_tokens_is_not_paid(stack, liar):
    handler, url = liar
    rpc = stack.env["ANVIL_RPC_URL"]
    handler.transaction = chain_part.rpc(rpc, "eth_sendTransaction", [{"from": SINK, "to": SINK, "value": "0x0"}])
    chain_part.wait_receipt(rpc, handler.transaction)
    before = balances(stack)
    res = run_buy(["pay", url, "--json"], stack_env(stack))
    assert res.returncode == 1, res.stderr
    doc = res.json
    assert doc["error"]["code"] == "settlement_unverified"
    settled = doc["settlement"]
    assert (settled["success"], settled["verified"], settled["sellerClaim"], settled["moved"]) == \
        (True, False, "contradicted", [])
    assert f"the seller's transaction {handler.transaction} moved no USDC from the wallet" in settled["detail"]
    assert json.loads(doc["body"]) == {"data": "free lunch"}
    assert balances(stack) == before
    text = run_buy(["pay", url], stack_env(stack))
    assert text.returncode == 1 and "Settlement: NOT verified on chain" in text.stdout


def test_an_answer_without_any_settlement_is_reported_unpaid(stack, liar):
    handler, url = liar
    handler.transaction = None
    before = balances(stack)
    res = run_buy(["pay", url, "--json"], stack_env(stack))
    assert res.returncode == 0, res.stderr
    settled = res.json["settlement"]
    assert (settled["header"], settled["verified"], settled["how"], settled["sellerClaim"]) == \
        (None, False, "authorizationState", "absent")
    assert any(w.startswith("answered but not paid (yet): the voucher is unused on chain") for w in res.json["warnings"])
    assert balances(stack) == before

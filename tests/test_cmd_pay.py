"""probe, balance, pay and pay-agent against the devstack's sellers, settling on anvil.

`pay`/`pay-agent` speak both x402 versions per request, so they are tested against the Obol-shaped
seller (the devstack's main seller: body and header, X-PAYMENT or PAYMENT-SIGNATURE) and against the
foreign ones the cluster cannot pay (the reference SDK's header-only v2 offer and a v1 offer).

Every paid test reads the balances back from the chain (not from the seller's word) and checks the
settlement transaction's receipt. Bad inputs assert the message, the exit code and that no money moved.
"""
from __future__ import annotations

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from eth_abi import encode
from eth_utils import keccak

from buy_x402 import payment
from buy_x402.http import make_session
from devstack import config
from devstack.parts.chain import rpc, token_balance
from conftest import run_buy, stack_env

PINNED_OPTION_FIELDS = {"index", "scheme", "network", "chain", "chainId", "payable", "price", "asset", "payTo",
                        "transferMethod", "signingDomain", "maxTimeoutSeconds", "extra"}
PINNED_PROBE_OPTION_FIELDS = PINNED_OPTION_FIELDS | {"clusterCanSpend", "clusterRefusal"}
PINNED_PROBE_FIELDS = {"command", "exit_code", "url", "type", "x402Version", "source", "resource", "sellerMessage",
                       "extensions", "options", "warnings"}
PINNED_PAY_FIELDS = {"status", "settlement", "body", "bodyTruncated", "bodyBytes", "x402Version", "paymentHeader",
                     "option", "price", "wallet", "url", "method", "type", "content"}


# ------------------------------------------------------------------------------------------ helpers

def offer(stack, name: str) -> dict:
    offers = stack.info["seller"]["offers"] + stack.info["foreign"]["offers"]
    return next(o for o in offers if o["offer"] == name)


def usdc(stack, owner: str) -> int:
    return token_balance(stack.env["ANVIL_RPC_URL"], config.USDC_ADDRESS, owner)


def balances(stack) -> tuple[int, int]:
    """(agent wallet, seller payTo) USDC balances, read from anvil directly."""
    return usdc(stack, stack.info["chain"]["agent_address"]), usdc(stack, stack.info["chain"]["pay_to"])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def domain_separator(domain: dict) -> bytes:
    typehash = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
    return keccak(encode(["bytes32", "bytes32", "bytes32", "uint256", "address"],
                         [typehash, keccak(text=domain["name"]), keccak(text=domain["version"]),
                          domain["chainId"], domain["verifyingContract"]]))


def assert_settled_on_chain(stack, settlement: dict) -> None:
    assert settlement["success"] is True
    assert settlement["payer"].lower() == stack.info["chain"]["agent_address"].lower()
    receipt = rpc(stack.env["ANVIL_RPC_URL"], "eth_getTransactionReceipt", [settlement["transaction"]])
    assert receipt is not None and receipt["status"] == "0x1"
    assert receipt["to"].lower() == config.USDC_ADDRESS.lower()


# -------------------------------------------------------------------------------------------- probe

def test_probe_v2_offer_lists_price_symbol_and_the_domain_the_token_uses(stack):
    qwen = offer(stack, "qwen")
    result = run_buy(["probe", qwen["url"], "--model", qwen["model"], "--json"], stack_env(stack))
    assert result.returncode == 0, result.stderr
    doc = result.json
    assert set(doc) == PINNED_PROBE_FIELDS
    assert (doc["x402Version"], doc["source"], doc["type"]) == (2, "header", "inference")
    assert doc["url"] == qwen["url"] + "/v1/chat/completions"
    [option] = doc["options"]
    assert set(option) == PINNED_PROBE_OPTION_FIELDS
    assert (option["clusterCanSpend"], option["clusterRefusal"]) == (True, None)
    assert option["price"] == {"atomic": qwen["price"], "display": "0.001 USDC (1000 atomic)", "symbol": "USDC",
                               "decimals": 6}
    assert (option["index"], option["scheme"], option["network"], option["chain"], option["chainId"]) == \
        (1, "exact", config.CAIP2, config.CHAIN_NAME, config.CHAIN_ID)
    assert option["payTo"] == stack.info["chain"]["pay_to"]
    assert option["asset"] == config.USDC_ADDRESS
    assert (option["transferMethod"], option["maxTimeoutSeconds"], option["payable"]) == ("eip3009", 300, True)
    # The domain shown is the one the token itself hashes: a wrong name/version would fail here.
    on_chain = rpc(stack.env["ANVIL_RPC_URL"], "eth_call",
                   [{"to": config.USDC_ADDRESS, "data": "0x" + keccak(text="DOMAIN_SEPARATOR()")[:4].hex()}, "latest"])
    assert "0x" + domain_separator(option["signingDomain"]).hex() == on_chain

    text = run_buy(["probe", qwen["url"]], stack_env(stack))
    assert text.returncode == 0
    assert "0.001 USDC (1000 atomic)" in text.stdout and "x402 v2" in text.stdout and "eip3009" in text.stdout
    # The Obol seller advertises the option twice (CAIP-2, then base-sepolia): one option for the user.
    assert "[2]" not in text.stdout
    assert "buy    yes: the cluster's x402-buyer can spend vouchers for it" in text.stdout


def test_probe_reference_sdk_offer_reads_the_header(stack):
    sdk = offer(stack, "sdk")
    doc = run_buy(["probe", sdk["url"], "--json"], stack_env(stack)).json
    assert (doc["x402Version"], doc["source"]) == (2, "header")
    [option] = doc["options"]
    assert option["network"] == config.CAIP2 and option["price"]["atomic"] == sdk["price"]
    # What `buy` would refuse (tests/test_cluster_refusals.py), said before anyone tries it.
    assert option["clusterCanSpend"] is False
    assert "no `accepts` in its JSON body" in option["clusterRefusal"]
    text = run_buy(["probe", sdk["url"]], stack_env(stack)).stdout
    assert "buy    no: the seller's 402 has no `accepts` in its JSON body" in text
    assert "pay per request with `pay` or `pay-agent`" in text


def test_probe_legacy_v1_offer_reads_the_body(stack):
    legacy = offer(stack, "legacy")
    doc = run_buy(["probe", legacy["url"], "--json"], stack_env(stack)).json
    assert (doc["x402Version"], doc["source"]) == (1, "body")
    [option] = doc["options"]
    assert option["network"] == config.CHAIN_NAME and option["chain"] == config.CHAIN_NAME
    assert option["price"]["atomic"] == legacy["price"]
    assert option["signingDomain"]["name"] == "USDC"
    assert option["clusterCanSpend"] is False and "speaks only x402 v1" in option["clusterRefusal"]


def test_probe_multi_offer_lists_both_options(stack):
    multi = offer(stack, "multi")
    doc = run_buy(["probe", multi["url"], "--json"], stack_env(stack)).json
    assert [(o["index"], o["price"]["atomic"]) for o in doc["options"]] == [(1, multi["prices"][0]),
                                                                           (2, multi["prices"][1])]
    # The controller validates only the first option's price: `buy` can take option 1 and not 2.
    first, second = doc["options"]
    assert first["clusterCanSpend"] is True and second["clusterCanSpend"] is False
    assert "--payment-option 1" in second["clusterRefusal"]


def test_probe_of_an_http_resource_does_not_ask_whether_the_cluster_could_spend(stack):
    """`buy` buys chat models only: for an HTTP resource the question does not arise (null, no line)."""
    weather = offer(stack, "weather")
    result = run_buy(["probe", weather["url"], "--type", "http", "--json"], stack_env(stack))
    assert result.returncode == 0, result.stderr
    [option] = result.json["options"]
    assert (option["clusterCanSpend"], option["clusterRefusal"]) == (None, None)
    assert "buy    " not in run_buy(["probe", weather["url"], "--type", "http"], stack_env(stack)).stdout


def test_probe_of_a_url_that_is_not_x402_names_what_came_back(stack):
    healthz = stack.info["foreign"]["url"] + "/healthz"
    result = run_buy(["probe", healthz, "--type", "http", "--json"], stack_env(stack))
    assert result.returncode == 1
    error = result.json["error"]
    assert error["code"] == "seller"
    assert "HTTP 200 without asking for payment" in error["message"] and '"status":"ok"' in error["message"]

    litellm = run_buy(["probe", stack.env["LITELLM_URL"]], stack_env(stack))
    assert litellm.returncode == 1
    assert "expected 402 Payment Required" in litellm.stderr and "HTTP 4" in litellm.stderr


# ------------------------------------------------------------------------------------------ balance

def test_balance_shows_the_funded_usdc(stack):
    result = run_buy(["balance", "--json"], stack_env(stack))
    assert result.returncode == 0, result.stderr
    doc = result.json
    assert doc["wallet"] == stack.info["chain"]["agent_address"]
    assert (doc["chain"], doc["chainId"]) == (config.CHAIN_NAME, config.CHAIN_ID)
    [token] = doc["tokens"]
    assert (token["symbol"], token["decimals"], token["address"]) == ("USDC", 6, config.USDC_ADDRESS)
    assert int(token["atomic"]) == usdc(stack, doc["wallet"]) > 0
    text = run_buy(["balance"], stack_env(stack)).stdout
    assert f"Wallet: {doc['wallet']}" in text and f"({token['atomic']} atomic)" in text


# ---------------------------------------------------------------------------------------------- pay

def test_pay_buys_one_completion_and_moves_exactly_the_price(stack):
    qwen = offer(stack, "qwen")
    agent_before, seller_before = balances(stack)
    result = run_buy(["pay", qwen["url"], "--type", "inference", "--model", qwen["model"], "--message", "hello",
                      "--json"], stack_env(stack))
    assert result.returncode == 0, result.stderr
    doc = result.json
    assert PINNED_PAY_FIELDS <= set(doc)
    assert (doc["status"], doc["paymentHeader"], doc["x402Version"]) == (200, "PAYMENT-SIGNATURE", 2)
    assert doc["content"] == f"paid answer from {qwen['model']} via x402"
    assert doc["settlement"]["header"] == "payment-response"
    assert_settled_on_chain(stack, doc["settlement"])
    price = int(qwen["price"])
    assert balances(stack) == (agent_before - price, seller_before + price)


def test_pay_legacy_v1_seller_with_x_payment(stack):
    legacy = offer(stack, "legacy")
    agent_before, seller_before = balances(stack)
    result = run_buy(["pay", legacy["url"], "--type", "inference", "--message", "hi"], stack_env(stack))
    assert result.returncode == 0, result.stderr
    assert "X-PAYMENT" in result.stdout and "paid answer from legacy-model via x402" in result.stdout
    price = int(legacy["price"])
    assert balances(stack) == (agent_before - price, seller_before + price)


def test_pay_with_payment_option_pays_that_option(stack):
    multi = offer(stack, "multi")
    agent_before, seller_before = balances(stack)
    doc = run_buy(["pay", multi["url"], "--type", "inference", "--message", "hi", "--payment-option", "2", "--json"],
                  stack_env(stack)).json
    assert doc["exit_code"] == 0 and doc["option"]["index"] == 2
    price = int(multi["prices"][1])
    assert balances(stack) == (agent_before - price, seller_before + price)


def test_pay_http_type_sends_the_method_and_body_as_given(stack):
    phi = offer(stack, "phi")
    agent_before, seller_before = balances(stack)
    body = json.dumps({"model": phi["model"], "messages": [{"role": "user", "content": "raw http"}]})
    result = run_buy(["pay", phi["url"] + "/v1/chat/completions", "--method", "post", "--data", body, "--json"],
                     stack_env(stack))
    assert result.returncode == 0, result.stderr
    doc = result.json
    assert (doc["type"], doc["method"], doc["status"]) == ("http", "POST", 200)
    assert json.loads(doc["body"])["choices"][0]["message"]["content"] == f"paid answer from {phi['model']} via x402"
    assert_settled_on_chain(stack, doc["settlement"])
    price = int(phi["price"])
    assert balances(stack) == (agent_before - price, seller_before + price)


def test_pay_to_the_header_only_sdk_seller_uses_payment_signature(stack):
    sdk = offer(stack, "sdk")
    agent_before, seller_before = balances(stack)
    doc = run_buy(["pay", sdk["url"], "--type", "inference", "--message", "hi", "--json"], stack_env(stack)).json
    assert doc["exit_code"] == 0 and (doc["paymentHeader"], doc["x402Version"]) == ("PAYMENT-SIGNATURE", 2)
    assert doc["content"] == "paid answer from sdk-model via x402"
    assert_settled_on_chain(stack, doc["settlement"])
    price = int(sdk["price"])
    assert balances(stack) == (agent_before - price, seller_before + price)


def test_pay_agent_streams_sse_lines_to_stdout(stack):
    # The reference SDK settles before it answers, so the settlement header comes with the stream.
    sdk = offer(stack, "sdk")
    agent_before, seller_before = balances(stack)
    result = run_buy(["pay-agent", sdk["url"], "--message", "stream please"], stack_env(stack))
    assert result.returncode == 0, result.stderr
    data_lines = [line for line in result.stdout.splitlines() if line]
    assert data_lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in data_lines)
    chunks = [json.loads(line[6:]) for line in data_lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "Paid" not in result.stdout  # stdout is the stream only; the summary is on stderr
    # The summary says what the chain shows, not what the seller's header claims.
    assert "Settlement: verified on chain by its transaction's receipt" in result.stderr
    price = int(sdk["price"])
    assert balances(stack) == (agent_before - price, seller_before + price)

    request = json.dumps({"messages": [{"role": "user", "content": "again"}], "stream": False})
    collected = run_buy(["pay-agent", sdk["url"], "--data", request, "--json"], stack_env(stack)).json
    assert collected["exit_code"] == 0 and collected["streamed"] is False
    assert collected["content"] == f"paid answer from {sdk['model']} via x402"
    assert collected["body"].rstrip().endswith("data: [DONE]")
    assert_settled_on_chain(stack, collected["settlement"])


def test_pay_to_a_seller_that_is_down_fails_before_signing(stack):
    before = balances(stack)
    url = f"http://127.0.0.1:{closed_port()}/services/qwen"
    result = run_buy(["pay", url, "--type", "inference", "--message", "hi", "--json"], stack_env(stack))
    assert result.returncode == 1
    error = result.json["error"]
    assert error["code"] == "unreachable" and "cannot reach the seller" in error["message"]
    assert "Paying" not in result.stderr
    assert balances(stack) == before


# Bad input that is refused before any request (usage errors, exit 2) is tested in test_cli.py.


# ------------------------------------------------------------------------ payment logic on loopback

def b64(doc: dict) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def test_failure_after_paying_carries_the_settled_warning():
    settlement = payment.decode_settlement({"PAYMENT-RESPONSE": b64({"success": True, "transaction": "0xabc",
                                                                    "payer": "0x1", "network": "eip155:84532"})})
    assert (settlement.header, settlement.transaction, settlement.success) == ("payment-response", "0xabc", True)
    response = payment.PaidResponse(status=500, headers={}, body=b"boom", settlement=settlement,
                                    payment_header="PAYMENT-SIGNATURE", elapsed_s=0.1)
    with pytest.raises(payment.PaymentFailed) as caught:
        payment.check_outcome(response, "http://seller/x")
    assert "HTTP 500 after payment: boom" in caught.value.message
    assert payment.settled_warning(settlement) == "the payment may have settled on-chain (tx 0xabc)"

    redirect = payment.PaidResponse(status=302, headers={"Location": "http://elsewhere/"}, body=b"",
                                    settlement=None, payment_header="X-PAYMENT", elapsed_s=0.1)
    with pytest.raises(payment.PaymentFailed) as caught:
        payment.check_outcome(redirect, "http://seller/x")
    assert "redirected" in caught.value.message and "may have been spent" in caught.value.message

    refused = payment.PaidResponse(status=402, headers={"PAYMENT-REQUIRED": b64({"error": "invalid_nonce"})},
                                   body=b"{}", settlement=None, payment_header="PAYMENT-SIGNATURE", elapsed_s=0.1)
    with pytest.raises(payment.PaymentFailed) as caught:
        payment.check_outcome(refused, "http://seller/x")
    assert "refused the payment (HTTP 402): invalid_nonce" in caught.value.message
    assert payment.decode_settlement({"X-PAYMENT-RESPONSE": "%%%"}).decode_error


class _SlowSSE(BaseHTTPRequestHandler):
    """Sends one SSE line, then waits until the client has delivered it before sending the rest;
    chunked (like uvicorn) or HTTP/1.0 until close."""
    delivered = threading.Event()
    chunked = False

    def _write(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)
        self.wfile.flush()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._write(b"data: first\n\n")
        on_time = self.delivered.wait(10)
        self._write(b"data: " + (b"after-first" if on_time else b"late") + b"\n\ndata: [DONE]\n\n")
        if self.chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("chunked", [True, False])
def test_stream_hands_each_line_over_as_it_arrives(chunked):
    handler = type("Handler", (_SlowSSE,), {"delivered": threading.Event(), "chunked": chunked,
                                            "protocol_version": "HTTP/1.1" if chunked else "HTTP/1.0"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        received: list[tuple[float, str]] = []

        def sink(line: str) -> None:
            received.append((time.monotonic(), line))
            if line == "data: first":
                handler.delivered.set()

        request = payment.PaidRequest("POST", f"http://127.0.0.1:{server.server_port}/v1/chat/completions",
                                      body=b"{}", content_type="application/json", stream=True)
        response = payment.send_paid(make_session("test"), request, "PAYMENT-SIGNATURE", "x", timeout=20, on_line=sink)
    finally:
        server.shutdown()
        server.server_close()
    lines = [line for _, line in received if line]
    assert lines == ["data: first", "data: after-first", "data: [DONE]"]
    assert response.status == 200 and response.lines == [line for _, line in received]

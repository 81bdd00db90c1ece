"""The devstack's chain, remote signer and foreign (reference x402 SDK) seller, exercised over HTTP.

Payments are signed THROUGH the signer's HTTP API and settle for real on anvil; every check reads
the chain back rather than trusting the seller's word.
"""
from __future__ import annotations

import base64
from http.client import HTTPConnection
import json
import secrets
import time
import urllib.parse

import pytest
import requests

from devstack import config
from devstack.stack import down, up
from devstack.parts.chain import rpc, token_balance

TRANSFER_TYPES = {
    "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                     {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"}],
}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture(scope="module")
def devstack(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("devstack-chain"))
    stack = up(directory, ["chain", "signer", "foreign"])
    yield stack
    down(directory)


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        yield session


def b64json(value: str) -> dict:
    return json.loads(base64.b64decode(value))


def offer_url(stack, offer: str) -> str:
    return f"{stack.env['FOREIGN_SELLER_BASE_URL']}/services/{offer}/v1/chat/completions"


def balance(stack, owner: str) -> int:
    return token_balance(stack.info["chain"]["rpc"], config.USDC_ADDRESS, owner)


def sign_voucher(stack, http, requirement: dict, amount: str) -> dict:
    """An EIP-3009 TransferWithAuthorization for `requirement`, signed by the remote signer."""
    signer = stack.info["signer"]
    authorization = {"from": signer["address"], "to": requirement["payTo"], "value": amount,
                     "validAfter": "0", "validBefore": str(int(time.time()) + 3600),
                     "nonce": "0x" + secrets.token_hex(32)}
    typed = {"types": TRANSFER_TYPES, "primaryType": "TransferWithAuthorization",
             "domain": {"name": requirement["extra"]["name"], "version": requirement["extra"]["version"],
                        "chainId": config.CHAIN_ID, "verifyingContract": requirement["asset"]},
             "message": authorization}
    resp = http.post(f"{signer['url']}/api/v1/sign/{signer['address']}/typed-data", json=typed, timeout=10)
    assert resp.status_code == 200, resp.text
    signature = resp.json()["signature"]
    assert len(bytes.fromhex(signature[2:])) == 65 and signature[-2:] in ("1b", "1c")
    return {"signature": signature, "authorization": authorization}


def probe_v2(stack, http, offer: str) -> dict:
    resp = http.post(offer_url(stack, offer), json=CHAT, timeout=10)
    assert resp.status_code == 402
    return b64json(resp.headers["PAYMENT-REQUIRED"])


def v2_header(stack, http, required: dict, option: int = 0) -> str:
    accepted = required["accepts"][option]
    payment = {"x402Version": 2, "payload": sign_voucher(stack, http, accepted, accepted["amount"]),
               "accepted": accepted, "resource": required["resource"]}
    return base64.b64encode(json.dumps(payment).encode()).decode()


# -- chain -------------------------------------------------------------------------------------
def test_chain_is_base_sepolia_with_the_token_and_a_funded_agent(devstack):
    chain = devstack.info["chain"]
    assert int(rpc(chain["rpc"], "eth_chainId"), 16) == 84532
    code = rpc(chain["rpc"], "eth_getCode", [config.USDC_ADDRESS, "latest"])
    assert len(code) > 1000
    assert balance(devstack, chain["agent_address"]) == config.AGENT_FUNDING_ATOMIC
    # A mined block after setup, so eth_call at latest does not run at timestamp 1.
    block = rpc(chain["rpc"], "eth_getBlockByNumber", ["latest", False])
    assert int(block["timestamp"], 16) > time.time() - 3600


def test_erpc_routes_our_chain_and_refuses_others(devstack, http):
    erpc = devstack.env["ERPC_URL"]
    call = {"jsonrpc": "2.0", "id": 3, "method": "eth_chainId", "params": []}
    for chain in ("base-sepolia", "84532"):
        assert http.post(f"{erpc}/{chain}", json=call, timeout=5).json() == {"jsonrpc": "2.0", "id": 3,
                                                                             "result": "0x14a34"}
    other = http.post(f"{erpc}/base", json=call, timeout=5)
    assert other.status_code == 404 and "base" in other.json()["error"]["message"]


# -- signer ------------------------------------------------------------------------------------
def test_signer_health_and_keys(devstack, http):
    url = devstack.env["REMOTE_SIGNER_URL"]
    assert http.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
    assert http.get(f"{url}/api/v1/keys", timeout=5).json() == {"keys": [devstack.info["chain"]["agent_address"]]}


def test_signer_keeps_the_connection_alive(devstack):
    """HTTP/1.1 with Content-Length on every answer, errors included: one socket serves many calls."""
    url = urllib.parse.urlsplit(devstack.env["REMOTE_SIGNER_URL"])
    conn = HTTPConnection(url.hostname, url.port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        first = conn.getresponse()
        assert first.status == 200 and first.read() == b'{"status": "ok"}'
        sock = conn.sock
        conn.request("POST", "/api/v1/sign/0x0000000000000000000000000000000000000001/hash", body=b"{}")
        second = conn.getresponse()
        assert second.status == 404 and json.loads(second.read())["code"] == "SIGNER_NOT_FOUND"
        conn.request("GET", "/api/v1/keys")
        third = conn.getresponse()
        assert third.status == 200 and json.loads(third.read())["keys"]
        assert conn.sock is sock and sock is not None
    finally:
        conn.close()


def test_signer_error_shapes(devstack, http):
    url, address = devstack.env["REMOTE_SIGNER_URL"], devstack.info["signer"]["address"]
    stranger = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
    resp = http.post(f"{url}/api/v1/sign/{stranger}/message", json={"message": "x"}, timeout=5)
    assert resp.status_code == 404
    assert resp.json() == {"error": resp.json()["error"], "code": "SIGNER_NOT_FOUND", "address": stranger}
    resp = http.post(f"{url}/api/v1/sign/{address}/typed-data", json={"types": {}, "domain": {}}, timeout=5)
    assert resp.status_code == 400 and resp.json()["code"] == "MISSING_FIELD"
    assert "primaryType" in resp.json()["error"]
    resp = http.post(f"{url}/api/v1/sign/{address}/hash", json={"hash": "0x1234"}, timeout=5)
    assert resp.status_code == 400 and resp.json()["code"] == "BAD_REQUEST"


def test_signer_signatures_recover_to_the_agent(devstack, http):
    from eth_account import Account
    from eth_account.messages import encode_defunct

    url, address = devstack.env["REMOTE_SIGNER_URL"], devstack.info["signer"]["address"]
    sig = http.post(f"{url}/api/v1/sign/{address}/message", json={"message": "hi"}, timeout=5).json()["signature"]
    assert Account.recover_message(encode_defunct(text="hi"), signature=sig) == address
    digest = "0x" + "ab" * 32
    sig = http.post(f"{url}/api/v1/sign/{address.lower()}/hash", json={"hash": digest}, timeout=5).json()["signature"]
    assert Account._recover_hash(bytes.fromhex(digest[2:]), signature=sig) == address


def test_signer_typed_data_with_or_without_the_domain_type(devstack, http):
    url, address = devstack.env["REMOTE_SIGNER_URL"], devstack.info["signer"]["address"]
    typed = {"types": TRANSFER_TYPES, "primaryType": "TransferWithAuthorization",
             "domain": {"name": "USDC", "version": "2", "chainId": 84532, "verifyingContract": config.USDC_ADDRESS},
             "message": {"from": address, "to": address, "value": "1", "validAfter": "0",
                         "validBefore": "4294967295", "nonce": "0x" + "00" * 32}}
    without = dict(typed, types={k: v for k, v in TRANSFER_TYPES.items() if k != "EIP712Domain"})
    signed = [http.post(f"{url}/api/v1/sign/{address}/typed-data", json=t, timeout=5).json()["signature"]
              for t in (typed, without)]
    assert signed[0] == signed[1]


# -- foreign seller (reference SDK) -------------------------------------------------------------
def test_sdk_offer_puts_its_requirements_only_in_the_header(devstack, http):
    resp = http.post(offer_url(devstack, "sdk"), json=CHAT, timeout=10)
    assert resp.status_code == 402 and resp.json() == {}
    assert b64json(resp.headers["PAYMENT-REQUIRED"])["accepts"]


def test_sdk_offer_ignores_x_payment_and_challenges_again(devstack, http):
    """What the in-cluster buyer would meet: a valid v2 payment in X-PAYMENT is not even read."""
    required = probe_v2(devstack, http, "sdk")
    payer = devstack.info["chain"]["agent_address"]
    before = balance(devstack, payer)
    resp = http.post(offer_url(devstack, "sdk"), json=CHAT, headers={"X-PAYMENT": v2_header(devstack, http, required)},
                     timeout=30)
    assert resp.status_code == 402 and "PAYMENT-REQUIRED" in resp.headers
    assert balance(devstack, payer) == before


def test_v2_payment_through_the_signer_settles_on_chain_and_replay_is_refused(devstack, http):
    required = probe_v2(devstack, http, "sdk")
    assert required["x402Version"] == 2
    accepted = required["accepts"][0]
    assert accepted["amount"] == "1000" and accepted["network"] == "eip155:84532"
    assert accepted["asset"] == config.USDC_ADDRESS and accepted["extra"] == {"name": "USDC", "version": "2"}
    payer, pay_to = devstack.info["chain"]["agent_address"], devstack.info["foreign"]["pay_to"]
    assert accepted["payTo"] == pay_to
    before = balance(devstack, payer), balance(devstack, pay_to)

    header = v2_header(devstack, http, required)
    resp = http.post(offer_url(devstack, "sdk"), json=CHAT, headers={"PAYMENT-SIGNATURE": header}, timeout=30)
    assert resp.status_code == 200, resp.headers.get("PAYMENT-REQUIRED")
    body = resp.json()
    assert body["object"] == "chat.completion" and body["model"] == "sdk-model"
    assert body["choices"][0]["message"]["content"] == "paid answer from sdk-model via x402"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    settled = b64json(resp.headers["PAYMENT-RESPONSE"])
    assert settled["success"] is True and settled["transaction"].startswith("0x")
    receipt = rpc(devstack.info["chain"]["rpc"], "eth_getTransactionReceipt", [settled["transaction"]])
    assert int(receipt["status"], 16) == 1
    assert (balance(devstack, payer), balance(devstack, pay_to)) == (before[0] - 1000, before[1] + 1000)

    replay = http.post(offer_url(devstack, "sdk"), json=CHAT, headers={"PAYMENT-SIGNATURE": header}, timeout=30)
    assert replay.status_code == 402
    assert "nonce" in b64json(replay.headers["PAYMENT-REQUIRED"])["error"]
    assert (balance(devstack, payer), balance(devstack, pay_to)) == (before[0] - 1000, before[1] + 1000)


def test_streaming_answer_is_sse(devstack, http):
    required = probe_v2(devstack, http, "sdk")
    resp = http.post(offer_url(devstack, "sdk"), json=dict(CHAT, stream=True),
                     headers={"PAYMENT-SIGNATURE": v2_header(devstack, http, required)}, timeout=30)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: "):] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "sdk-model" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "paid answer from sdk-model via x402"


def test_legacy_offer_speaks_v1(devstack, http):
    url = offer_url(devstack, "legacy")
    probe = http.post(url, json=CHAT, timeout=10)
    assert probe.status_code == 402 and "PAYMENT-REQUIRED" not in probe.headers
    required = probe.json()
    assert required["x402Version"] == 1
    accepted = required["accepts"][0]
    assert accepted["maxAmountRequired"] == "1000" and accepted["network"] == "base-sepolia"
    assert accepted["resource"] == url
    payer, pay_to = devstack.info["chain"]["agent_address"], devstack.info["foreign"]["pay_to"]
    before = balance(devstack, payer), balance(devstack, pay_to)

    payment = {"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
               "payload": sign_voucher(devstack, http, accepted, accepted["maxAmountRequired"])}
    header = base64.b64encode(json.dumps(payment).encode()).decode()
    resp = http.post(url, json=CHAT, headers={"X-PAYMENT": header}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "paid answer from legacy-model via x402"
    assert b64json(resp.headers["X-PAYMENT-RESPONSE"])["success"] is True
    assert (balance(devstack, payer), balance(devstack, pay_to)) == (before[0] - 1000, before[1] + 1000)

    replay = http.post(url, json=CHAT, headers={"X-PAYMENT": header}, timeout=30)
    assert replay.status_code == 402 and replay.json()["x402Version"] == 1
    assert balance(devstack, payer) == before[0] - 1000


def test_stack_info_describes_the_foreign_offers(devstack):
    foreign = devstack.info["foreign"]
    offers = {o["offer"]: o for o in foreign["offers"]}
    assert set(offers) == {"sdk", "legacy", "pid", "future"}
    # pid and future (payment-identifier / an unknown extension, required) are unlisted SDK offers.
    assert [(offers[o]["x402_version"], offers[o]["listed"]) for o in ("pid", "future")] == [(2, False), (2, False)]
    assert offers["sdk"] == dict(offers["sdk"], model="sdk-model", price="1000", listed=True, x402_version=2,
                                 url=f"{foreign['url']}/services/sdk")
    assert offers["legacy"]["x402_version"] == 1
    assert devstack.env["FOREIGN_SELLER_URL"] == offers["sdk"]["url"]
    assert devstack.env["FOREIGN_V1_SELLER_URL"] == offers["legacy"]["url"]
    assert "SELLER_URL" not in devstack.env  # the main (Obol-shaped) seller is another part

"""The devstack's main seller, the Obol-shaped gateway, against obol-wire.md §2, settling on anvil.

Vouchers are signed through the remote signer; every paid check reads the chain back.
"""
from __future__ import annotations

import base64
import json
import secrets
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

from devstack import config
from devstack.stack import down, up
from devstack.parts.chain import rpc, token_balance

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
TRANSFER_TYPES = {
    "TransferWithAuthorization": [
        {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
        {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
        {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"}],
}


@pytest.fixture(scope="module")
def obol(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("obol-seller"))
    stack = up(directory, ["chain", "signer", "seller"])
    yield stack
    down(directory)


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        session.trust_env = False
        yield session


def url(stack, offer: str, path: str = "/v1/chat/completions") -> str:
    return f"{stack.env['SELLER_BASE_URL']}/services/{offer}{path}"


def balance(stack, owner: str) -> int:
    return token_balance(stack.info["chain"]["rpc"], config.USDC_ADDRESS, owner)


def balances(stack) -> tuple[int, int]:
    return balance(stack, stack.info["signer"]["address"]), balance(stack, stack.info["seller"]["pay_to"])


def b64(doc) -> str:
    return base64.b64encode(json.dumps(doc).encode()).decode()


def challenge(stack, http, offer: str = "qwen") -> tuple[requests.Response, dict]:
    resp = http.post(url(stack, offer), json=CHAT, timeout=10)
    assert resp.status_code == 402, resp.text
    return resp, resp.json()


def payment(stack, http, entry: dict, **accepted_overrides) -> dict:
    """A v2 payment for `entry`, signed by the agent's key through the remote signer."""
    signer = stack.info["signer"]
    authorization = {"from": signer["address"], "to": entry["payTo"], "value": entry["amount"], "validAfter": "0",
                     "validBefore": str(int(time.time()) + 3600), "nonce": "0x" + secrets.token_hex(32)}
    typed = {"types": TRANSFER_TYPES, "primaryType": "TransferWithAuthorization",
             "domain": {"name": entry["extra"]["name"], "version": entry["extra"]["version"],
                        "chainId": config.CHAIN_ID, "verifyingContract": entry["asset"]},
             "message": authorization}
    resp = http.post(f"{signer['url']}/api/v1/sign/{signer['address']}/typed-data", json=typed, timeout=10)
    assert resp.status_code == 200, resp.text
    return {"x402Version": 2, "accepted": {**entry, **accepted_overrides},
            "payload": {"signature": resp.json()["signature"], "authorization": authorization}}


def test_the_402_carries_the_same_json_in_body_and_header(obol, http):
    resp, body = challenge(obol, http)
    assert resp.headers["Content-Type"] == "application/json"
    assert base64.b64decode(resp.headers["PAYMENT-REQUIRED"]) == resp.content  # the very same bytes
    assert resp.headers["Link"] == '</api/services.json>; rel="catalog"'
    assert body["x402Version"] == 2 and body["error"] == "Payment required for this resource"
    assert body["resource"]["url"] == url(obol, "qwen")
    assert body["resource"]["description"] == "Payment required for /services/qwen/v1/chat/completions"
    assert body["resource"]["mimeType"] == "application/json" and {"serviceName", "iconUrl"} <= set(body["resource"])
    caip2, alias = body["accepts"]
    assert caip2 == {"scheme": "exact", "network": config.CAIP2, "asset": config.USDC_ADDRESS, "amount": "1000",
                     "payTo": obol.info["seller"]["pay_to"], "maxTimeoutSeconds": 300,
                     "extra": {"assetTransferMethod": "eip3009", "name": "USDC", "version": "2"}}
    assert alias == dict(caip2, network=config.CHAIN_NAME)


def test_each_payment_option_is_advertised_caip2_then_alias(obol, http):
    _, body = challenge(obol, http, "multi")
    assert [(e["amount"], e["network"]) for e in body["accepts"]] == [
        ("3000", config.CAIP2), ("3000", config.CHAIN_NAME), ("1000", config.CAIP2), ("1000", config.CHAIN_NAME)]


@pytest.mark.parametrize("header", ["X-PAYMENT", "PAYMENT-SIGNATURE"])
def test_a_matching_payment_settles_and_both_receipt_headers_come_back(obol, http, header):
    _, body = challenge(obol, http)
    before = balances(obol)
    paid = http.post(url(obol, "qwen"), json=CHAT, timeout=60,
                     headers={header: b64(payment(obol, http, body["accepts"][0]))})
    assert paid.status_code == 200, paid.text
    assert paid.json()["choices"][0]["message"]["content"] == "paid answer from qwen3.6-35b via x402"
    assert paid.headers["X-PAYMENT-RESPONSE"] == paid.headers["PAYMENT-RESPONSE"]
    receipt = json.loads(base64.b64decode(paid.headers["PAYMENT-RESPONSE"]))
    assert receipt["success"] is True and receipt["network"] == config.CAIP2
    assert int(rpc(obol.info["chain"]["rpc"], "eth_getTransactionReceipt", [receipt["transaction"]])["status"], 16) == 1
    assert balances(obol) == (before[0] - 1000, before[1] + 1000)


def test_the_alias_network_matches_and_the_payload_goes_to_the_facilitator_as_sent(obol, http):
    """§2b/2d: `base-sepolia` matches the seller's CAIP-2 entry (no re-challenge); the payload is passed on
    unchanged, and the SDK facilitator here knows its v2 scheme only as eip155:84532, so it refuses it.
    The in-cluster buyer always sends CAIP-2 (§1 c2), as does `buy.py pay` (the first spelling)."""
    _, body = challenge(obol, http)
    before = balances(obol)
    resp = http.post(url(obol, "qwen"), json=CHAT, timeout=60,
                     headers={"X-PAYMENT": b64(payment(obol, http, body["accepts"][1]))})
    assert resp.status_code == 503
    assert (resp.json()["reason"], resp.json()["retriable"]) == ("facilitator_error", False)
    assert "base-sepolia" in resp.json()["detail"]
    assert balances(obol) == before


def test_the_second_option_of_a_two_option_offer_pays_its_price(obol, http):
    _, body = challenge(obol, http, "multi")
    before = balances(obol)
    paid = http.post(url(obol, "multi"), json=CHAT, timeout=60,
                     headers={"X-PAYMENT": b64(payment(obol, http, body["accepts"][2]))})
    assert paid.status_code == 200 and paid.json()["model"] == "multi-model"
    assert balances(obol) == (before[0] - 1000, before[1] + 1000)


def test_a_header_that_is_not_base64_json_is_400(obol, http):
    before = balances(obol)
    for value in ("%%%not-base64%%%", base64.b64encode(b"[1, 2]").decode()):
        resp = http.post(url(obol, "qwen"), json=CHAT, headers={"X-PAYMENT": value}, timeout=10)
        assert resp.status_code == 400
        doc = resp.json()
        assert (doc["error"], doc["reason"], doc["retriable"]) == ("Invalid payment header", "invalid_payment_header",
                                                                   False)
        assert doc["hint"]
    assert balances(obol) == before


def test_a_v1_payload_is_re_challenged_with_no_matching_requirement(obol, http):
    _, body = challenge(obol, http)
    v2 = payment(obol, http, body["accepts"][0])
    v1 = {"x402Version": 1, "scheme": "exact", "network": config.CHAIN_NAME, "payload": v2["payload"]}
    before = balances(obol)
    resp = http.post(url(obol, "qwen"), json=CHAT, headers={"X-PAYMENT": b64(v1)}, timeout=30)
    assert resp.status_code == 402
    again = resp.json()
    assert base64.b64decode(resp.headers["PAYMENT-REQUIRED"]) == resp.content
    assert again["extensions"]["paymentFailure"]["reason"] == "no_matching_requirement"
    assert again["error"].startswith('Payment invalid: payment offered scheme="" network=""')
    assert balances(obol) == before


def test_a_price_that_is_not_the_sellers_is_no_match(obol, http):
    _, body = challenge(obol, http)
    before = balances(obol)
    cheaper = payment(obol, http, dict(body["accepts"][0], amount="999"))
    resp = http.post(url(obol, "qwen"), json=CHAT, headers={"X-PAYMENT": b64(cheaper)}, timeout=30)
    assert resp.status_code == 402
    assert resp.json()["extensions"]["paymentFailure"]["reason"] == "no_matching_requirement"
    assert balances(obol) == before


def test_a_replayed_voucher_is_refused_by_the_facilitator_as_payment_invalid(obol, http):
    _, body = challenge(obol, http)
    header = b64(payment(obol, http, body["accepts"][0]))
    assert http.post(url(obol, "qwen"), json=CHAT, headers={"X-PAYMENT": header}, timeout=60).status_code == 200
    before = balances(obol)
    replay = http.post(url(obol, "qwen"), json=CHAT, headers={"X-PAYMENT": header}, timeout=60)
    assert replay.status_code == 402
    assert replay.json()["extensions"]["paymentFailure"]["reason"] == "payment_invalid"
    assert balances(obol) == before


def test_a_signature_with_v_0_or_1_is_normalised_before_verify_and_settle(obol, http):
    _, body = challenge(obol, http)
    paying = payment(obol, http, body["accepts"][0])
    signature = paying["payload"]["signature"]
    paying["payload"]["signature"] = signature[:-2] + f"{int(signature[-2:], 16) - 27:02x}"
    before = balances(obol)
    resp = http.post(url(obol, "qwen"), json=CHAT, headers={"X-PAYMENT": b64(paying)}, timeout=60)
    assert resp.status_code == 200, resp.text
    assert balances(obol) == (before[0] - 1000, before[1] + 1000)


def test_an_upstream_error_is_not_settled(obol, http):
    _, body = challenge(obol, http)
    before = balances(obol)
    resp = http.post(url(obol, "qwen", "/v1/embeddings"), json=CHAT, timeout=30,
                     headers={"X-PAYMENT": b64(payment(obol, http, body["accepts"][0]))})
    assert resp.status_code == 404 and "PAYMENT-RESPONSE" not in resp.headers
    assert balances(obol) == before


def test_a_stream_is_settled_after_it_ends_with_the_receipt_in_trailers(obol, http):
    _, body = challenge(obol, http)
    header = b64(payment(obol, http, body["accepts"][0]))
    before = balances(obol)
    parts = urlsplit(url(obol, "qwen"))
    raw_request = json.dumps(dict(CHAT, stream=True)).encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                     f"X-PAYMENT: {header}\r\nContent-Length: {len(raw_request)}\r\nConnection: close\r\n\r\n".encode()
                     + raw_request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Trailer: X-PAYMENT-RESPONSE, PAYMENT-RESPONSE" in head
    assert b"PAYMENT-RESPONSE" not in head.replace(b"Trailer: X-PAYMENT-RESPONSE, PAYMENT-RESPONSE", b"")
    assert b"data: [DONE]" in rest
    trailers = dict(line.split(": ", 1) for line in rest.split(b"0\r\n", 1)[-1].decode().split("\r\n") if ": " in line)
    assert trailers["X-PAYMENT-RESPONSE"] == trailers["PAYMENT-RESPONSE"]
    assert json.loads(base64.b64decode(trailers["PAYMENT-RESPONSE"]))["success"] is True
    assert balances(obol) == (before[0] - 1000, before[1] + 1000)


def test_a_seller_whose_price_cannot_be_read_answers_500(obol, http):
    drift = next(o for o in obol.info["seller"]["offers"] if o["offer"] == "drift")
    from pathlib import Path
    price_file = Path(drift["price_file"])
    price = price_file.read_text()
    price_file.unlink()
    try:
        assert http.post(url(obol, "drift"), json=CHAT, timeout=10).status_code == 500
    finally:
        price_file.write_text(price)
    assert http.post(url(obol, "drift"), json=CHAT, timeout=10).status_code == 402

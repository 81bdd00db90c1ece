"""The simulated cluster pieces against the real ones: controller + x402-buyer with the real Kubernetes
API server, the Obol-shaped seller, the foreign (reference SDK and x402 v1) seller and anvil.

Vouchers are signed here with eth-account (not through buy.py), so these tests pin the controller's
and the buyer's contract on their own (obol-wire.md §1, §3): a PurchaseRequest becomes Ready with the
reference status, a paid chat through the buyer settles exactly the price on chain, each refusal has
its reason, and a foreign seller's vouchers fail exactly as the "mismatch cases" say.
"""
from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from eth_account import Account
from eth_account.messages import encode_typed_data

from devstack import config
from devstack.stack import down, up

PARTS = ["kube", "chain", "signer", "seller", "foreign", "buyer", "controller"]
PR_PATH = "/apis/obol.org/v1alpha1/namespaces/{ns}/purchaserequests"
AGENT = Account.from_key(config.AGENT_KEY)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("cluster"))
    stack = up(directory, PARTS)
    yield stack
    down(directory)


class Kube:
    """PurchaseRequest calls over plain requests, with the devstack's token and CA."""

    def __init__(self, info: dict) -> None:
        self.base = info["server"] + PR_PATH.format(ns=info["namespace"])
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {info['token']}"
        self.session.verify = info["ca"]
        self.session.trust_env = False  # else REQUESTS_CA_BUNDLE overrides verify (requests #3829)

    def create(self, name: str, spec: dict) -> dict:
        body = {"apiVersion": "obol.org/v1alpha1", "kind": "PurchaseRequest", "metadata": {"name": name},
                "spec": spec}
        resp = self.session.post(self.base, json=body, timeout=10)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def get(self, name: str) -> dict | None:
        resp = self.session.get(f"{self.base}/{name}", timeout=10)
        return None if resp.status_code == 404 else resp.json()

    def replace(self, pr: dict) -> dict:
        resp = self.session.put(f"{self.base}/{pr['metadata']['name']}", json=pr, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def delete(self, name: str) -> None:
        assert self.session.delete(f"{self.base}/{name}", timeout=10).status_code in (200, 202)

    def wait(self, name: str, check, timeout: float = 20.0) -> dict | None:
        """Poll until `check(pr)` holds; return the PR (None if it is gone and check accepts that)."""
        deadline = time.monotonic() + timeout
        pr = None
        while time.monotonic() < deadline:
            pr = self.get(name)
            if check(pr):
                return pr
            time.sleep(0.05)
        raise AssertionError(f"{name} never satisfied the check; last seen: {json.dumps(pr, indent=1)}")


def condition(pr: dict | None, ctype: str) -> dict:
    return next((c for c in ((pr or {}).get("status") or {}).get("conditions") or [] if c["type"] == ctype), {})


def offer(stack, model: str) -> dict:
    return next(o for o in stack.info["seller"]["offers"] + stack.info["foreign"]["offers"] if o["model"] == model)


def sign_auths(stack, price: str, count: int, network: str = config.CAIP2) -> list[dict]:
    """EIP-3009 vouchers in the exact spec.preSignedAuths shape buy.py writes (§7.2)."""
    pay_to = stack.info["seller"]["pay_to"]
    auths = []
    for _ in range(count):
        nonce = "0x" + secrets.token_hex(32)
        message = {"from": AGENT.address, "to": pay_to, "value": price, "validAfter": "0",
                   "validBefore": str(int(time.time()) + 86400), "nonce": nonce}
        typed = {
            "types": {
                "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                 {"name": "chainId", "type": "uint256"},
                                 {"name": "verifyingContract", "type": "address"}],
                "TransferWithAuthorization": [
                    {"name": "from", "type": "address"}, {"name": "to", "type": "address"},
                    {"name": "value", "type": "uint256"}, {"name": "validAfter", "type": "uint256"},
                    {"name": "validBefore", "type": "uint256"}, {"name": "nonce", "type": "bytes32"}],
            },
            "primaryType": "TransferWithAuthorization",
            "domain": {"name": "USDC", "version": "2", "chainId": config.CHAIN_ID,
                       "verifyingContract": config.USDC_ADDRESS},
            "message": {**message, "value": int(price), "validAfter": 0, "validBefore": int(message["validBefore"]),
                        "nonce": bytes.fromhex(nonce[2:])},
        }
        signature = AGENT.sign_message(encode_typed_data(full_message=typed)).signature.hex()
        auths.append({"id": nonce, "payment": {
            "x402Version": 2,
            "accepted": {"scheme": "exact", "network": network, "amount": price, "asset": config.USDC_ADDRESS,
                         "payTo": pay_to, "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}},
            "payload": {"signature": "0x" + signature.removeprefix("0x"), "authorization": message},
        }})
    return auths


def spec_for(stack, model: str, auths: list[dict], *, price: str | None = None,
             network: str = config.CHAIN_NAME) -> dict:
    o = offer(stack, model)
    return {"endpoint": o["url"] + "/v1/chat/completions", "model": model, "count": max(1, len(auths)),
            "payment": {"network": network, "payTo": stack.info["seller"]["pay_to"], "price": price or o["price"],
                        "asset": config.USDC_ADDRESS, "assetSymbol": "USDC", "assetDecimals": 6,
                        "assetTransferMethod": "eip3009", "eip712Name": "USDC", "eip712Version": "2"},
            "preSignedAuths": auths}


def usdc_balance(stack, address: str) -> int:
    data = "0x70a08231" + address.lower().removeprefix("0x").rjust(64, "0")
    resp = requests.post(stack.info["chain"]["rpc"], timeout=10, json={
        "jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [{"to": config.USDC_ADDRESS, "data": data}, "latest"]})
    return int(resp.json()["result"], 16)


def buyer_status(stack) -> dict:
    return requests.get(stack.info["buyer"]["url"] + "/status", timeout=5).json()


def chat(stack, model: str, **extra) -> requests.Response:
    return requests.post(stack.info["buyer"]["url"] + "/v1/chat/completions", timeout=60, json={
        "model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, **extra})


def is_ready(pr: dict | None) -> bool:
    return condition(pr, "Ready").get("status") == "True"


@pytest.fixture(scope="module")
def kube(cluster) -> Kube:
    return Kube(cluster.info["kube"])


@pytest.fixture(scope="module")
def qwen_purchase(cluster, kube) -> dict:
    """A Ready purchase of 3 vouchers for the seller's first offer."""
    model = config.OFFERS[0]["model"]
    kube.create("qwen", spec_for(cluster, model, sign_auths(cluster, offer(cluster, model)["price"], 3)))
    return kube.wait("qwen", is_ready)


def test_no_process_of_the_stack_carries_the_api_token_on_its_command_line(cluster):
    token = cluster.info["kube"]["token"].encode()
    processes = ["etcd", "crdsrv", "anvil", "erpc", "signer", "seller", "foreign", "buyer", "controller"]
    cmdlines = {name: Path(f"/proc/{cluster.pid(name)}/cmdline").read_bytes() for name in processes}
    assert [name for name, line in cmdlines.items() if token in line] == []
    token_file = Path(cluster.dir / "kube" / "controller-token")
    assert token_file.read_bytes() == token and token_file.stat().st_mode & 0o777 == 0o600


def test_purchase_becomes_ready_with_the_reference_status(cluster, qwen_purchase):
    pr, model = qwen_purchase, config.OFFERS[0]["model"]
    status = pr["status"]
    assert status["observedGeneration"] == pr["metadata"]["generation"]
    assert status["remaining"] == 3 and status["spent"] == 0 and status["totalSigned"] == 3
    assert status["publicModel"] == f"paid/{model}"
    assert status["signerAddress"] == AGENT.address
    assert status["probedPrice"] == offer(cluster, model)["price"]
    assert "obol.org/purchase-finalizer" in pr["metadata"]["finalizers"]
    reasons = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert reasons == {"Probed": ("True", "Validated"), "AuthsLoaded": ("True", "Loaded"),
                       "Configured": ("True", "Written"), "Ready": ("True", "Reconciled")}
    assert condition(pr, "Probed")["message"] == f"402: {offer(cluster, model)['price']} on {config.CAIP2}"
    assert condition(pr, "Configured")["message"] == "Wrote 3 auths to llm/x402-buyer-auths"
    assert condition(pr, "Ready")["message"] == "Sidecar: 3 remaining, 0 spent"
    assert buyer_status(cluster)["qwen"] == {
        "url": offer(cluster, model)["url"], "remote_model": model, "public_model": f"paid/{model}",
        "remaining": 3, "spent": 0, "network": config.CHAIN_NAME}
    # The buyer files, as the real controller writes them: the spec's payment completed from accepts[0],
    # and the vouchers verbatim.
    buyer = cluster.info["buyer"]
    written = json.loads((Path(buyer["config_dir"]) / "qwen.json").read_text())
    assert written == {"url": offer(cluster, model)["url"], "network": config.CHAIN_NAME,
                       "payTo": cluster.info["seller"]["pay_to"], "price": offer(cluster, model)["price"],
                       "asset": config.USDC_ADDRESS, "assetSymbol": "USDC", "assetDecimals": 6,
                       "assetTransferMethod": "eip3009", "eip712Name": "USDC", "eip712Version": "2",
                       "remoteModel": model}
    auths = json.loads((Path(buyer["auths_dir"]) / "qwen.json").read_text())
    assert auths == [{"id": a["id"], "payment": a["payment"]} for a in pr["spec"]["preSignedAuths"]]
    # The real buyer has no model listing: LiteLLM publishes paid/<model>.
    assert requests.get(buyer["url"] + "/v1/models", timeout=5).status_code == 404


def test_paid_chat_spends_one_voucher_and_settles_the_price(cluster, kube, qwen_purchase):
    model, pay_to = config.OFFERS[0]["model"], cluster.info["seller"]["pay_to"]
    price = int(offer(cluster, model)["price"])
    before = usdc_balance(cluster, pay_to)
    resp = chat(cluster, f"paid/{model}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == f"paid answer from {model} via x402"
    assert resp.headers["PAYMENT-RESPONSE"] == resp.headers["X-PAYMENT-RESPONSE"]  # passed through as sent
    assert usdc_balance(cluster, pay_to) - before == price
    live = buyer_status(cluster)["qwen"]
    assert (live["remaining"], live["spent"]) == (2, 1)
    state = json.loads(Path(cluster.info["buyer"]["state"]).read_text())
    assert list(state) == ["consumed"] and len(state["consumed"]["qwen"]) == 1
    assert state["consumed"]["qwen"][0] in {a["id"] for a in qwen_purchase["spec"]["preSignedAuths"]}
    # The controller's informer has no resync: a Ready purchase's counters move only on an event for it.
    assert kube.get("qwen")["status"]["remaining"] == 3
    pr = kube.get("qwen")
    pr["metadata"].setdefault("annotations", {})["test/poke"] = "1"  # an event, not a new generation
    kube.replace(pr)
    pr = kube.wait("qwen", lambda p: p["status"].get("spent") == 1)
    assert pr["status"]["remaining"] == 2 and is_ready(pr)
    assert condition(pr, "Ready")["message"] == "Sidecar: 2 remaining, 1 spent"
    assert condition(pr, "Ready")["lastTransitionTime"] == condition(qwen_purchase, "Ready")["lastTransitionTime"]


def test_streaming_chat_passes_server_sent_events_through(cluster, qwen_purchase):
    model = config.OFFERS[0]["model"]
    resp = chat(cluster, f"openai/paid/{model}", stream=True)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert "via x402" in resp.text and resp.text.rstrip().endswith("data: [DONE]")


def test_new_generation_is_reconfigured_and_waits_for_the_runtime_pool(cluster, kube, qwen_purchase):
    model = config.OFFERS[0]["model"]
    price = offer(cluster, model)["price"]
    consumed = set(json.loads(Path(cluster.info["buyer"]["state"]).read_text())["consumed"]["qwen"])
    pr = kube.get("qwen")
    old = pr["spec"]["preSignedAuths"]
    unspent = [a for a in old if a["id"] not in consumed]
    # Spent vouchers left in the spec can never be active again: the pool cannot reach len(spec).
    pr["spec"]["preSignedAuths"] = old + sign_auths(cluster, price, 1)
    pr["spec"]["count"] = len(pr["spec"]["preSignedAuths"])
    generation = kube.replace(pr)["metadata"]["generation"]
    want = len(pr["spec"]["preSignedAuths"])
    syncing = kube.wait("qwen", lambda p: condition(p, "Ready").get("reason") == "RuntimeSyncing")
    assert condition(syncing, "Ready")["message"] == f"waiting for runtime auth pool to reach {want} active auths"
    assert syncing["status"]["observedGeneration"] == generation and not is_ready(syncing)
    assert syncing["status"]["remaining"] == buyer_status(cluster)["qwen"]["remaining"] < want
    # A top-up that keeps only unspent vouchers becomes Ready for the new generation.
    pr = kube.get("qwen")
    pr["spec"]["preSignedAuths"] = unspent + sign_auths(cluster, price, 2)
    pr["spec"]["count"] = len(pr["spec"]["preSignedAuths"])
    generation = kube.replace(pr)["metadata"]["generation"]
    ready = kube.wait("qwen", lambda p: is_ready(p) and p["status"].get("observedGeneration") == generation)
    assert ready["status"]["remaining"] == len(unspent) + 2 == buyer_status(cluster)["qwen"]["remaining"]
    assert ready["status"]["spent"] == len(consumed)


def test_concurrent_chats_never_spend_a_voucher_twice(cluster, kube):
    model, pay_to = config.OFFERS[6]["model"], cluster.info["seller"]["pay_to"]
    price = int(offer(cluster, model)["price"])
    kube.create("burst", spec_for(cluster, model, sign_auths(cluster, str(price), 3)))
    kube.wait("burst", is_ready)
    before = usdc_balance(cluster, pay_to)
    with ThreadPoolExecutor(5) as pool:
        codes = sorted(r.status_code for r in pool.map(lambda _: chat(cluster, f"paid/{model}"), range(5)))
    assert codes == [200, 200, 200, 502, 502]  # an empty pool is a payment error: the reverse proxy's 502
    assert usdc_balance(cluster, pay_to) - before == 3 * price
    assert (buyer_status(cluster)["burst"]["remaining"], buyer_status(cluster)["burst"]["spent"]) == (0, 3)


def test_rejected_voucher_is_put_back_and_the_failure_relayed(cluster, kube):
    model = config.OFFERS[7]["model"]
    auths = sign_auths(cluster, offer(cluster, model)["price"], 1)
    auths[0]["payment"]["payload"]["authorization"]["value"] = "999"  # no longer what was signed
    kube.create("rejected", spec_for(cluster, model, auths))
    kube.wait("rejected", is_ready)
    for _ in range(2):  # released to the head of the pool, so the next call sends it again
        resp = chat(cluster, f"paid/{model}")
        assert resp.status_code == 402
        assert resp.json()["extensions"]["paymentFailure"]["reason"] == "payment_invalid"
        assert "PAYMENT-REQUIRED" in resp.headers
        assert buyer_status(cluster)["rejected"] == {**buyer_status(cluster)["rejected"], "remaining": 1, "spent": 0}


def test_unknown_model_is_404(cluster):
    resp = chat(cluster, "paid/nobody-sells-this")
    assert resp.status_code == 404
    assert resp.text == "no purchased upstream mapped for requested model\n"


def test_price_that_differs_from_the_seller_is_a_pricing_mismatch(cluster, kube):
    model = config.OFFERS[1]["model"]
    real = offer(cluster, model)["price"]
    kube.create("mismatch", spec_for(cluster, model, sign_auths(cluster, "1", 1), price="1"))
    pr = kube.wait("mismatch", lambda p: condition(p, "Probed").get("status") == "False")
    assert condition(pr, "Probed")["reason"] == "PricingMismatch"
    assert condition(pr, "Probed")["message"] == f"spec.price=1 but endpoint wants {real}"
    assert [c["type"] for c in pr["status"]["conditions"]] == ["Probed"]  # a failed probe blocks every stage
    assert not is_ready(pr) and "mismatch" not in buyer_status(cluster)


def test_second_purchase_of_the_same_model_is_a_duplicate(cluster, kube, qwen_purchase):
    model = config.OFFERS[0]["model"]
    kube.create("qwen-again", spec_for(cluster, model, sign_auths(cluster, offer(cluster, model)["price"], 1)))
    pr = kube.wait("qwen-again", lambda p: condition(p, "Configured").get("status") == "False")
    assert condition(pr, "Configured")["reason"] == "DuplicateModel"
    assert "qwen-again" not in buyer_status(cluster)


def test_purchase_without_vouchers_has_no_auths(cluster, kube):
    kube.create("empty", spec_for(cluster, config.OFFERS[2]["model"], []))
    pr = kube.wait("empty", lambda p: condition(p, "AuthsLoaded").get("status") == "False")
    assert condition(pr, "AuthsLoaded")["reason"] == "NoAuths"
    assert condition(pr, "Probed")["status"] == "True"


# -- the mismatch cases of obol-wire.md: a foreign seller's vouchers placed in a PurchaseRequest by hand --

def test_a_v1_sellers_vouchers_reach_ready_but_every_payment_is_refused(cluster, kube):
    """The probe reads the v1 body's accepts[0] and is satisfied; the buyer sends the voucher as signed,
    an x402 v2 envelope in X-PAYMENT, which the v1 seller refuses; the voucher goes back to the head and
    is tried again on the next call, forever. (Until issue 8 the simulated buyer re-wrapped it for v1.)"""
    model, pay_to = "legacy-model", cluster.info["foreign"]["pay_to"]
    price = offer(cluster, model)["price"]
    kube.create("legacy", spec_for(cluster, model, sign_auths(cluster, price, 1, network=config.CHAIN_NAME)))
    kube.wait("legacy", is_ready)
    before = usdc_balance(cluster, pay_to)
    for _ in range(2):
        resp = chat(cluster, f"paid/{model}")
        assert resp.status_code == 402 and resp.json()["x402Version"] == 1
        assert (buyer_status(cluster)["legacy"]["remaining"], buyer_status(cluster)["legacy"]["spent"]) == (1, 0)
    assert usdc_balance(cluster, pay_to) == before


def test_a_header_only_sellers_purchase_never_passes_the_probe(cluster, kube):
    """The controller reads the 402 body only; the reference SDK seller's body is `{}`."""
    model = "sdk-model"
    kube.create("sdk", spec_for(cluster, model, sign_auths(cluster, offer(cluster, model)["price"], 1)))
    pr = kube.wait("sdk", lambda p: condition(p, "Probed").get("status") == "False")
    assert (condition(pr, "Probed")["reason"], condition(pr, "Probed")["message"]) == \
        ("InvalidPricing", "402 body missing accepts")
    assert "sdk" not in buyer_status(cluster)
    kube.delete("sdk")
    kube.wait("sdk", lambda p: p is None)


def test_the_buyer_cannot_pay_a_header_only_seller_even_when_configured(cluster):
    """The buyer alone, with files placed by hand as a controller would write them: the 402 body has no
    accepts, so no voucher is taken and the caller gets the reverse proxy's 502."""
    model, price = "sdk-model", offer(cluster, "sdk-model")["price"]
    buyer, pay_to = cluster.info["buyer"], cluster.info["foreign"]["pay_to"]
    auths = sign_auths(cluster, price, 1)
    config_file, auths_file = Path(buyer["config_dir"]) / "by-hand.json", Path(buyer["auths_dir"]) / "by-hand.json"
    auths_file.write_text(json.dumps(auths))
    config_file.write_text(json.dumps({"url": offer(cluster, model)["url"], "network": config.CHAIN_NAME,
                                       "payTo": pay_to, "price": price, "asset": config.USDC_ADDRESS,
                                       "remoteModel": model}))
    try:
        assert requests.post(buyer["url"] + "/admin/reload", timeout=5).status_code == 200
        deadline = time.monotonic() + 10
        while "by-hand" not in buyer_status(cluster):
            assert time.monotonic() < deadline, "the buyer did not load the hand-written files"
            time.sleep(0.1)
        before = usdc_balance(cluster, pay_to)
        resp = chat(cluster, f"paid/{model}")
        assert (resp.status_code, resp.content) == (502, b"")
        assert buyer_status(cluster)["by-hand"]["remaining"] == 1 and buyer_status(cluster)["by-hand"]["spent"] == 0
        assert usdc_balance(cluster, pay_to) == before
    finally:
        config_file.unlink()
        auths_file.unlink()
        requests.post(buyer["url"] + "/admin/reload", timeout=5)


def test_drained_purchase_is_deleted_and_torn_down(cluster, kube):
    model = config.OFFERS[4]["model"]
    kube.create("drain", spec_for(cluster, model, sign_auths(cluster, offer(cluster, model)["price"], 1)))
    kube.wait("drain", is_ready)
    assert chat(cluster, f"paid/{model}").status_code == 200
    empty = chat(cluster, f"paid/{model}")
    assert (empty.status_code, empty.content) == (502, b"")  # empty pool: a payment error, the proxy's 502
    kube.delete("drain")
    kube.wait("drain", lambda p: p is None)
    assert "drain" not in buyer_status(cluster)
    buyer = cluster.info["buyer"]
    assert not (Path(buyer["config_dir"]) / "drain.json").exists()
    assert not (Path(buyer["auths_dir"]) / "drain.json").exists()


def test_purchase_with_vouchers_left_drains_before_deletion(cluster, kube):
    model = config.OFFERS[5]["model"]
    kube.create("undrained", spec_for(cluster, model, sign_auths(cluster, offer(cluster, model)["price"], 1)))
    kube.wait("undrained", is_ready)
    kube.delete("undrained")
    pr = kube.wait("undrained", lambda p: condition(p, "Deleting").get("status") == "True")
    assert condition(pr, "Deleting")["reason"] == "Draining"
    assert buyer_status(cluster)["undrained"]["remaining"] == 1
    assert chat(cluster, f"paid/{model}").status_code == 200  # the route still serves while draining
    kube.wait("undrained", lambda p: p is None)

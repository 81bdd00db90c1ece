"""The simulated x402-buyer against obol-wire.md §1, with a recording seller on loopback.

The buyer runs alone; the tests write its config and auths files the way the controller does and
play the seller themselves, so every request the buyer sends can be read back: which header carries
the voucher, what the voucher says, what happens to it after each kind of answer.
"""
from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from devstack.stack import down, up

ASSET = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
PAY_TO = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
UA = "obol-buy-x402/1.0 (+https://github.com/ObolNetwork/obol-stack)"


def entry(**overrides) -> dict:
    base = {"scheme": "exact", "network": "eip155:84532", "asset": ASSET, "amount": "1000", "payTo": PAY_TO,
            "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2", "assetTransferMethod": "eip3009"}}
    return {**base, **overrides}


class Seller(BaseHTTPRequestHandler):
    """Answers 402 with `body` (and `header`) unless the request is paid; then `paid` (status, headers)."""
    protocol_version = "HTTP/1.1"
    calls: list
    state: dict

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.calls.append({"path": self.path, "headers": dict(self.headers), "body": body})
        paid = self.headers.get("X-PAYMENT") or self.headers.get("PAYMENT-SIGNATURE")
        if paid:
            status, headers = self.state["paid"]
            data = b'{"choices":[{"message":{"content":"paid"}}]}' if status < 400 else b'{"error":"refused"}'
        else:
            status, headers = 402, dict(self.state.get("header") or {})
            data = json.dumps(self.state["body"]).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def buyer(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("buyer-alone"))
    stack = up(directory, ["buyer"])
    yield stack
    down(directory)


@pytest.fixture()
def seller():
    handler = type("Recording", (Seller,), {"calls": [], "state": {"body": {"x402Version": 2, "accepts": [entry()]},
                                                                   "paid": (200, {})}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{server.server_address[1]}/services/x"
    server.shutdown()
    server.server_close()


class Buyer:
    def __init__(self, stack, name: str) -> None:
        self.info, self.name = stack.info["buyer"], name

    @property
    def url(self) -> str:
        return self.info["url"]

    def place(self, seller_url: str, auths: list, expect: int | None = None, **config) -> None:
        """Write the two files as the controller does, then make the buyer reload until it serves `expect`
        vouchers (default: all of them) for exactly this config."""
        cfg = {"url": seller_url, "network": "base-sepolia", "payTo": PAY_TO, "price": "1000", "asset": ASSET,
               "assetSymbol": "USDC", "assetDecimals": 6, "remoteModel": f"{self.name}-model", **config}
        (Path(self.info["auths_dir"]) / f"{self.name}.json").write_text(json.dumps(auths, indent=2))
        (Path(self.info["config_dir"]) / f"{self.name}.json").write_text(json.dumps(cfg, indent=2))
        want = len(auths) if expect is None else expect
        self.reload_until(lambda status: (status.get(self.name) or {}).get("remaining") == want
                          and status[self.name]["network"] == cfg["network"])

    def remove_files(self) -> None:
        for key in ("config_dir", "auths_dir"):
            (Path(self.info[key]) / f"{self.name}.json").unlink(missing_ok=True)
        self.reload_until(lambda status: self.name not in status)

    def reload_until(self, check) -> dict:
        requests.post(self.url + "/admin/reload", timeout=5)
        deadline = time.monotonic() + 10
        while not check(status := self.status()):
            assert time.monotonic() < deadline, f"the buyer never reached the expected state: {status}"
            time.sleep(0.05)
        return status

    def status(self) -> dict:
        return requests.get(self.url + "/status", timeout=5).json()

    def entry(self) -> dict:
        return self.status()[self.name]

    def chat(self, model: str | None = None) -> requests.Response:
        return requests.post(self.url + "/v1/chat/completions", timeout=30, json={
            "model": model or f"paid/{self.name}-model", "messages": [{"role": "user", "content": "hi"}]})

    def consumed(self) -> list:
        path = Path(self.info["state"])
        return json.loads(path.read_text())["consumed"].get(self.name, []) if path.exists() else []


def voucher(nonce: str, **payment) -> dict:
    doc = {"x402Version": 2, "accepted": entry(),
           "payload": {"signature": "0x" + "11" * 65, "authorization": {
               "from": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "to": PAY_TO, "value": "1000", "validAfter": "0",
               "validBefore": str(int(time.time()) + 86400), "nonce": nonce}}}
    doc.update(payment)
    return {"id": nonce, "payment": doc}


def sent(call: dict) -> dict:
    return json.loads(base64.b64decode(call["headers"]["X-PAYMENT"]))


@pytest.fixture()
def named(buyer, request):
    b = Buyer(buyer, re.sub(r"[^a-z0-9]+", "-", request.node.name[5:40].lower()).strip("-"))
    yield b
    b.remove_files()


def test_the_voucher_goes_in_x_payment_only_as_it_was_signed(named, seller):
    handler, url = seller
    stored = voucher("0x01")
    named.place(url, [stored, voucher("0x02")])
    resp = named.chat()
    assert resp.status_code == 200
    unpaid, paid = handler.calls
    assert "X-PAYMENT" not in unpaid["headers"] and "PAYMENT-SIGNATURE" not in paid["headers"]
    assert unpaid["headers"]["User-Agent"] == paid["headers"]["User-Agent"] == UA
    assert paid["path"] == "/services/x/v1/chat/completions"
    assert json.loads(paid["body"])["model"] == f"{named.name}-model"  # paid/ stripped
    assert sent(paid) == stored["payment"]  # nothing filled: every accepted field was set
    assert (named.entry()["remaining"], named.entry()["spent"]) == (1, 1)
    assert named.consumed() == ["0x01"]


def test_only_empty_accepted_fields_are_filled_and_version_0_becomes_2(named, seller):
    handler, url = seller
    handler.state["body"] = {"x402Version": 2, "accepts": [entry(network="base-sepolia")]}
    bare = voucher("0x03", x402Version=0, accepted={"network": "base-sepolia"}, resource="http://x")
    v1 = voucher("0x04", x402Version=1)
    del v1["payment"]["accepted"]
    named.place(url, [bare, v1], expect=0)  # a string resource cannot decode: the whole file is skipped
    bare["payment"].pop("resource")
    named.place(url, [bare, v1])
    named.chat()
    named.chat()
    first, second = sent(handler.calls[1]), sent(handler.calls[3])
    assert first["x402Version"] == 2 and second["x402Version"] == 1  # never re-wrapped for v1
    assert first["accepted"] == {"scheme": "exact", "network": "eip155:84532", "asset": ASSET, "amount": "1000",
                                 "payTo": PAY_TO, "maxTimeoutSeconds": 0}  # filled: only the empty fields
    assert second["accepted"]["network"] == "eip155:84532" and "extra" not in second["accepted"]
    assert "scheme" not in second  # a v1 voucher's top-level fields do not survive the v2 round trip


def test_a_flat_legacy_auth_gets_a_fresh_envelope(named, seller):
    handler, url = seller
    flat = {"signature": "0x" + "22" * 65, "from": "0xabc", "to": PAY_TO, "value": "1000", "validAfter": "0",
            "validBefore": "4294967295", "nonce": "0x05"}
    named.place(url, [flat])
    named.chat()
    assert sent(handler.calls[1]) == {"x402Version": 2, "payload": {"signature": flat["signature"], "authorization": {
        k: flat[k] for k in ("from", "to", "value", "validAfter", "validBefore", "nonce")}}, "accepted": entry()}
    assert named.consumed() == ["0x05"]


def test_requirements_only_in_the_header_are_a_502_and_nothing_is_held(named, seller):
    handler, url = seller
    handler.state.update(body={}, header={"PAYMENT-REQUIRED": base64.b64encode(json.dumps(
        {"x402Version": 2, "accepts": [entry()]}).encode()).decode()})
    named.place(url, [voucher("0x06")])
    resp = named.chat()
    assert (resp.status_code, resp.content) == (502, b"")
    assert len(handler.calls) == 1 and named.entry()["remaining"] == 1


@pytest.mark.parametrize("accepts", [[entry(amount="999")], [entry(payTo="0x" + "99" * 20)],
                                     [entry(network="eip155:8453")], []])
def test_no_qualifying_entry_is_a_502(named, seller, accepts):
    handler, url = seller
    handler.state["body"] = {"x402Version": 2, "accepts": accepts}
    named.place(url, [voucher("0x07")])
    assert named.chat().status_code == 502 and named.entry()["remaining"] == 1


def test_the_first_qualifying_entry_is_taken_case_insensitively_and_scheme_is_not_checked(named, seller):
    handler, url = seller
    handler.state["body"] = {"x402Version": 1, "accepts": [
        entry(amount="5"), {**entry(scheme="upto", payTo=PAY_TO.lower(), network="BASE-SEPOLIA"), "amount": "",
                             "maxAmountRequired": "1000"}]}
    stored = voucher("0x08", accepted={})
    named.place(url, [stored])
    assert named.chat().status_code == 200
    assert sent(handler.calls[1])["accepted"]["scheme"] == "upto"


def test_a_refused_voucher_goes_back_to_the_head_and_is_sent_again(named, seller):
    handler, url = seller
    handler.state["paid"] = (402, {})
    named.place(url, [voucher("0x09"), voucher("0x0a")])
    for _ in range(2):
        assert named.chat().status_code == 402
    assert [sent(c)["payload"]["authorization"]["nonce"] for c in handler.calls[1::2]] == ["0x09", "0x09"]
    assert (named.entry()["remaining"], named.entry()["spent"], named.consumed()) == (2, 0, [])


def test_an_error_with_a_settled_transaction_is_confirmed(named, seller):
    handler, url = seller
    receipt = base64.b64encode(json.dumps({"success": False, "transaction": "0xfeed"}).encode()).decode()
    handler.state["paid"] = (503, {"X-PAYMENT-RESPONSE": receipt})
    named.place(url, [voucher("0x0b"), voucher("0x0c")])
    assert named.chat().status_code == 503
    assert (named.entry()["remaining"], named.entry()["spent"], named.consumed()) == (1, 1, ["0x0b"])
    handler.state["paid"] = (503, {"PAYMENT-RESPONSE": receipt})  # the v2 name is not read
    assert named.chat().status_code == 503
    assert (named.entry()["remaining"], named.consumed()) == (1, ["0x0b"])


def test_head_vouchers_about_to_expire_are_dropped_in_memory_only(named, seller):
    handler, url = seller
    soon = voucher("0x0d")
    soon["payment"]["payload"]["authorization"]["validBefore"] = str(int(time.time()) + 5)
    named.place(url, [soon, voucher("0x0e")])
    assert named.entry()["remaining"] == 2
    assert named.chat().status_code == 200
    assert sent(handler.calls[1])["payload"]["authorization"]["nonce"] == "0x0e"
    assert named.consumed() == ["0x0e"] and named.entry()["remaining"] == 0
    status = named.reload_until(lambda s: s[named.name]["remaining"] == 1)  # the dropped one comes back
    assert status[named.name]["spent"] == 1


def test_status_admin_routes_and_model_names(named, seller):
    _, url = seller
    named.place(url, [voucher("0x0f")], network="BASE-SEPOLIA", remoteModel=" openai/paid/tidy ")
    assert named.entry() == {"url": url, "remote_model": "tidy", "public_model": "paid/tidy", "remaining": 1,
                             "spent": 0, "network": "BASE-SEPOLIA"}
    assert named.chat("paid/openai/paid/tidy").status_code == 200
    for model in ("paid/nobody", None):
        resp = requests.post(named.url + "/v1/chat/completions", timeout=10,
                             **({"json": {"model": model}} if model else {"data": b"not json"}))
        assert (resp.status_code, resp.text) == (404, "no purchased upstream mapped for requested model\n")
    assert requests.get(named.url + "/healthz", timeout=5).text == "ok"
    assert requests.post(named.url + "/admin/remove", timeout=5).status_code == 400
    removed = requests.post(named.url + "/admin/remove", params={"name": named.name}, timeout=5)
    assert removed.json() == {"status": "removed", "name": named.name}
    assert named.name not in named.status()
    named.reload_until(lambda s: named.name in s)  # its file is still there: the next reload brings it back
    assert requests.post(named.url + "/admin/reload", timeout=5).json()["status"] in (
        "reload triggered", "reload already pending")


def test_a_restarted_buyer_keeps_its_consumed_state(buyer, named, seller):
    _, url = seller
    named.place(url, [voucher("0x10"), voucher("0x11"), voucher("0x12")])
    assert named.chat().status_code == 200 and named.chat().status_code == 200
    info = buyer.info["buyer"]
    port = buyer.free_port()
    second = subprocess.Popen([sys.executable, "-m", "devstack.sim.buyer", "--port", str(port), "--config-dir",
                               info["config_dir"], "--auths-dir", info["auths_dir"], "--state", info["state"]],
                              cwd=str(buyer.repo), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                status = requests.get(f"http://127.0.0.1:{port}/status", timeout=2).json()
                break
            except requests.RequestException:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert (status[named.name]["remaining"], status[named.name]["spent"]) == (1, 2)
    finally:
        second.terminate()
        second.wait(10)

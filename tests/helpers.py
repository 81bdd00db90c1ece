"""Small readers of the devstack's real state, for assertions (kube objects, balances, pools, configs),
and the idempotent set-ups several test modules share (purchases bought once per session)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import requests

from buy_x402 import settings as settings_mod
from buy_x402.errors import KubeApiError
from buy_x402.kube import KubeClient
from conftest import run_buy, stack_env
from devstack import config
from devstack.parts import chain as chain_part
from devstack.parts import kube as kube_part
from devstack.parts.chain import token_balance
from devstack.stack import Stack

PR_PATH = "/apis/obol.org/v1alpha1/namespaces/{ns}/purchaserequests"
CAPPED = "capped-mistral"    # mistral-large-3 with a cost cap below the seller's price (process, listing)
DRIFTED = "drift-refill"     # drift-model, whose seller price a test moves (process, set-default)


def offer(stack: Stack, model: str) -> dict:
    """An offer of the Obol-shaped seller, or of the foreign one, by model id."""
    offers = stack.info["seller"]["offers"] + stack.info.get("foreign", {}).get("offers", [])
    return next(o for o in offers if o["model"] == model)


@contextlib.contextmanager
def cost_cap_schema(stack: Stack):
    """The PurchaseRequest CRD with spec.autoRefill.maxUnitPrice for the block; the upstream one after it.

    The API server prunes by the schema it serves, on writes and on reads: a stored cost cap is only
    visible while the variant is installed.
    """
    kube_part.apply_crd(stack.info["kube"], kube_part.crd_with_cost_cap())
    try:
        yield
    finally:
        kube_part.apply_crd(stack.info["kube"], kube_part.crd_document())


def buyer_files(stack: Stack, name: str) -> tuple[dict | None, list | None]:
    """(config, auths) the controller wrote for purchase `name`, as the buyer reads them."""
    buyer = stack.info["buyer"]
    found = []
    for directory in (buyer["config_dir"], buyer["auths_dir"]):
        path = Path(directory) / f"{name}.json"
        found.append(json.loads(path.read_text()) if path.exists() else None)
    return found[0], found[1]


def wait_until(check, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def kube_get(stack: Stack, name: str) -> dict | None:
    kube = stack.info["kube"]
    url = kube["server"] + PR_PATH.format(ns=kube["namespace"]) + f"/{name}"
    resp = requests.get(url, headers={"Authorization": f"Bearer {kube['token']}"}, verify=kube["ca"], timeout=10)
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return resp.json()


def kube_names(stack: Stack) -> list[str]:
    kube = stack.info["kube"]
    url = kube["server"] + PR_PATH.format(ns=kube["namespace"])
    resp = requests.get(url, headers={"Authorization": f"Bearer {kube['token']}"}, verify=kube["ca"], timeout=10)
    resp.raise_for_status()
    return sorted(i["metadata"]["name"] for i in resp.json()["items"])


def usdc_balance(stack: Stack, owner: str) -> int:
    return token_balance(stack.env["ANVIL_RPC_URL"], config.USDC_ADDRESS, owner)


def buyer_status(stack: Stack) -> dict:
    return requests.get(stack.env["X402_BUYER_URL"] + "/status", timeout=5).json()


def litellm_chat(stack: Stack, model: str) -> requests.Response:
    llm = stack.info["litellm"]
    return requests.post(llm["url"] + "/v1/chat/completions",
                         headers={"Authorization": f"Bearer {llm['master_key']}"},
                         json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8},
                         timeout=120)


def agent_chat(stack: Stack, text: str) -> str:
    """A chat turn with the running Hermes agent (its API server), no model named."""
    resp = requests.post(stack.env["HERMES_API_URL"] + "/chat/completions",
                         headers={"Authorization": f"Bearer {stack.env['HERMES_API_KEY']}"},
                         json={"messages": [{"role": "user", "content": text}]}, timeout=180)
    resp.raise_for_status()
    return resp.json()["choices"][0]["message"]["content"]


def config_path(stack: Stack) -> Path:
    return Path(stack.env["HERMES_HOME"]) / "config.yaml"


def file_state(path: Path) -> tuple[str, int, int, int]:
    """(sha256 of the bytes, mode, uid, gid): equal before and after means untouched."""
    st = os.stat(path)
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mode & 0o7777, st.st_uid, st.st_gid


SINK = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"  # anvil dev account #3: unlocked, holds ETH for gas


def usdc_transfer(stack: Stack, sender: str, to: str, amount: int) -> None:
    """Move USDC from any address (anvil impersonates it) and wait until the transfer is mined."""
    rpc = stack.env["ANVIL_RPC_URL"]
    data = "0xa9059cbb" + to[2:].lower().rjust(64, "0") + hex(amount)[2:].rjust(64, "0")
    chain_part.rpc(rpc, "anvil_impersonateAccount", [sender])
    try:
        tx = chain_part.rpc(rpc, "eth_sendTransaction", [{"from": sender, "to": config.USDC_ADDRESS, "data": data}])
        receipt = chain_part.wait_receipt(rpc, tx)  # anvil can answer before it mined
        assert receipt["status"] == "0x1", receipt
    finally:
        chain_part.rpc(rpc, "anvil_stopImpersonatingAccount", [sender])


class drained_wallet:
    """Move the agent's USDC away but `keep` atomic units for the block, then move it back."""

    def __init__(self, stack: Stack, keep: int) -> None:
        self.stack, self.keep = stack, keep
        self.agent = stack.info["signer"]["address"]

    def __enter__(self) -> int:
        self.moved = usdc_balance(self.stack, self.agent) - self.keep
        assert self.moved > 0
        usdc_transfer(self.stack, self.agent, SINK, self.moved)
        if usdc_balance(self.stack, self.agent) != self.keep:  # put it back: later tests need the funds
            self.__exit__()
            raise AssertionError(f"the agent's wallet does not hold exactly {self.keep} after draining")
        return self.keep

    def __exit__(self, *exc) -> None:
        usdc_transfer(self.stack, SINK, self.agent, self.moved)


# --- purchases several modules share, bought once per session -------------------------------------

def kube(stack) -> KubeClient:
    return KubeClient.from_settings(settings_mod.load(stack_env(stack)))


def live(stack) -> dict:
    return requests.get(stack.env["X402_BUYER_URL"] + "/status", timeout=5).json()


def wait(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def ensure_purchase(stack, name: str, model: str, *flags: str) -> dict:
    """The purchase `name` of `model`, bought once per session (the listing tests share it)."""
    try:
        return kube(stack).get(name)
    except KubeApiError as err:
        assert err.reason == "NotFound", err
    res = run_buy(["buy", name, "--endpoint", offer(stack, model)["url"], "--model", model, *flags],
                  stack_env(stack))
    assert res.returncode == 0, res.stderr
    wait(lambda: name in live(stack), what=f"{name} live in the buyer")
    return kube(stack).get(name)


def ready_for_its_generation(obj: dict) -> bool:
    ready = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), {})
    return ready.get("status") == "True" and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]


def settled(stack, name: str) -> dict:
    """The PurchaseRequest once it is Ready for its generation and its status counters equal the buyer's,
    so nothing writes it again until its spec changes or vouchers are spent. The controller copies the
    buyer's counters only when an event makes it reconcile (it does not poll), so a stale status gets
    one: an annotation change, which is not a new generation."""
    poked = {"at": 0.0}

    def check():
        obj, entry = kube(stack).get(name), live(stack).get(name)
        if entry is None or not ready_for_its_generation(obj):
            return None
        if (obj["status"].get("remaining"), obj["status"].get("spent")) == (entry["remaining"], entry["spent"]):
            return obj
        if time.monotonic() - poked["at"] > 2:
            poked["at"] = time.monotonic()
            obj["metadata"].setdefault("annotations", {})["test/settle"] = str(time.time())
            try:
                kube(stack).replace(obj)
            except KubeApiError as err:
                assert err.reason == "Conflict", err
        return None
    return wait(check, what=f"{name} Ready with the buyer's counters")


def spend(stack, model: str, n: int) -> None:
    """Spend `n` vouchers: paid chats through the buyer, as LiteLLM would send them; the seller's balance
    on anvil must move by exactly its current price × n."""
    url = offer(stack, model)["url"] + "/v1/chat/completions"
    price = int(requests.post(url, json={"model": model, "messages": []}, timeout=10).json()["accepts"][0]["amount"])
    pay_to = stack.info["seller"]["pay_to"]
    before = usdc_balance(stack, pay_to)
    for _ in range(n):
        resp = requests.post(stack.env["X402_BUYER_URL"] + "/v1/chat/completions", timeout=60,
                             json={"model": f"paid/{model}", "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 200, resp.text
    assert usdc_balance(stack, pay_to) - before == price * n


def spend_to(stack, name: str, model: str, remaining: int) -> None:
    have = live(stack)[name]["remaining"]
    assert have >= remaining, f"{name} has only {have} vouchers left"
    spend(stack, model, have - remaining)
    assert live(stack)[name]["remaining"] == remaining


def config_bytes(stack) -> bytes:
    return (Path(stack.env["HERMES_HOME"]) / "config.yaml").read_bytes()


def hermes_default(stack) -> str:
    res = subprocess.run([stack.env["HERMES_BIN"], "config", "get", "model.default"], capture_output=True,
                         text=True, timeout=60, env=stack_env(stack))
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1].strip()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drift_purchase(stack) -> tuple[dict, Path]:
    """The purchase of the `drift` offer, whose price the test sets through a file the seller reads."""
    obj = ensure_purchase(stack, DRIFTED, "drift-model", "--count", "2", "--auto-refill", "--refill-threshold", "1",
                          "--refill-count", "2", "--cost-cap", "0.002 USDC")
    return obj, Path(offer(stack, "drift-model")["price_file"])


def seller_quotes_the_spec(stack) -> None:
    """Leave the drift seller quoting what the purchase expects, so the controller stays Ready."""
    _, price_file = drift_purchase(stack)
    price_file.write_text(kube(stack).get(DRIFTED)["spec"]["payment"]["price"])

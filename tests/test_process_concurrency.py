"""`process --all` runs the refills that are due side by side (at most REFILL_WORKERS at once), loses and
repeats no voucher, and says the same thing whichever refill finishes first.

The devstack test makes its purchases directly through the API (each its own model name at the Obol
seller, as bench/scale.py does), with the seller behind a proxy that holds every probe of ours a moment
and counts how many were in flight at once. The unit test drives the scheduling with refills whose
finishing order is the reverse of their starting order, which real refills cannot be made to do.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from buy_x402 import purchases, settings, x402
from buy_x402.commands import process
from buy_x402.http import make_session
from buy_x402.peers import Peers
from buy_x402.result import Context
from conftest import run_buy, stack_env
from devstack.counting_proxy import CountingProxy
from devstack.local_signer import InProcessSigner
from helpers import kube, live, wait

UA = "buy-x402-concurrency-test"
DUE = [f"conc-{i}" for i in range(6)]          # 3 vouchers, threshold 3: a refill of 2 each
CAPPED = ["conc-capped-0", "conc-capped-1"]     # due, but maxTotal is spent: skipped, and each says why
CALM = ["conc-calm"]                            # threshold 1: not due


# ------------------------------------------------------------------------------------- the devstack

@pytest.fixture()
def slow_seller(stack):
    """The seller behind a proxy that holds each of our requests 0.3 s; the purchases removed afterwards."""
    seller = stack.env["SELLER_URL"]
    origin = seller[:seller.index("/", len("http://"))]
    proxy = CountingProxy("seller", origin, counted_agent=UA, delay_s=0.3)
    yield proxy, proxy.url + seller[len(origin):]
    existing = {o["metadata"]["name"] for o in kube(stack).list()}
    with ThreadPoolExecutor(max_workers=4) as pool:  # `remove` stops the buyer spending them, so they go
        removed = list(pool.map(lambda n: run_buy(["remove", n, "--json"], stack_env(stack)),
                                [n for n in DUE + CAPPED + CALM if n in existing]))
    proxy.close()
    assert all(r.returncode == 0 for r in removed), [r.stderr for r in removed if r.returncode]


def make(stack, endpoint: str) -> None:
    k = kube(stack)
    offer = x402.probe(make_session(UA), stack.env["SELLER_URL"], "probe")
    option = offer.accepts[0]
    payment = purchases.build_payment_spec(option, chain_name=option.chain.name, symbol=option.symbol,
                                           decimals=option.decimals)
    signer = InProcessSigner()  # the purchases' first vouchers only
    for name in DUE + CAPPED + CALM:
        auths = signer.presign(option, address=stack.info["signer"]["address"], count=3,
                               deadline=int(time.time()) + 86400, extensions=offer.extensions, workers=1)
        policy = {"enabled": True, "threshold": 1 if name in CALM else 3, "count": 2}
        if name in CAPPED:
            policy["maxTotal"] = 3 * option.amount  # the 3 vouchers it holds spent the cap
        k.create(purchases.build_purchase(name, k.namespace, endpoint=endpoint, model=f"{name}-model",
                                          payment=payment, auths=auths, auto_refill=policy))


def ready(stack) -> dict[str, dict]:
    items = {o["metadata"]["name"]: o for o in kube(stack).list()}
    status = live(stack)
    mine = DUE + CAPPED + CALM
    if all(n in items and purchases.readiness(items[n]).ready and (status.get(n) or {}).get("remaining") == 3
           for n in mine):
        return {n: items[n] for n in mine}
    return {}


def test_process_all_refills_side_by_side_losing_and_repeating_no_voucher(stack, slow_seller):
    proxy, endpoint = slow_seller
    make(stack, endpoint)
    before = wait(lambda: ready(stack), timeout=90, what="the purchases Ready and live")
    ids_before = {n: [a["id"] for a in obj["spec"]["preSignedAuths"]] for n, obj in before.items()}
    ledger = Path(stack.env["HERMES_HOME"]) / "buy-x402" / "signings.json"
    ledger_before = json.loads(ledger.read_text()) if ledger.exists() else {"purchases": {}}

    result = run_buy(["process", "--all", "--json"], stack_env(stack, OBOL_BUYER_USER_AGENT=UA))
    assert result.returncode == 0, result.stderr
    actions = result.json["purchases"]
    assert [a["name"] for a in actions] == sorted(a["name"] for a in actions)  # purchase order, always
    mine = {a["name"]: a for a in actions if a["name"] in before}
    assert {n for n, a in mine.items() if a["action"] == "refilled"} == set(DUE)
    assert all(mine[n]["count"] == 2 and mine[n]["pool"] == 5 for n in DUE)
    assert all(mine[n]["action"] == "skipped" and mine[n]["capped"] for n in CAPPED)
    assert mine[CALM[0]] == {"name": CALM[0], "action": "skipped", "reason": "remaining 3 above threshold 1"}

    # Each refilled pool is its unspent tail and 2 new vouchers; no voucher is in two pools or twice in one.
    after = {o["metadata"]["name"]: o for o in kube(stack).list() if o["metadata"]["name"] in before}
    every = []
    for name, obj in after.items():
        ids = [a["id"] for a in obj["spec"]["preSignedAuths"]]
        every += ids
        if name in DUE:
            assert ids[:3] == ids_before[name] and len(ids) == 5 and obj["spec"]["count"] == 5
        else:
            assert ids == ids_before[name]
    assert len(every) == len(set(every))
    # ...and the signing record holds one signing of 2 for each of them, none for the others.
    signings = json.loads(ledger.read_text())["purchases"]
    for name in DUE + CAPPED + CALM:
        key = f"{after[name]['metadata']['namespace']}/{name}"
        new = signings.get(key, {"count": 0})["count"] - ledger_before["purchases"].get(key, {"count": 0})["count"]
        assert new == (2 if name in DUE else 0), (name, new)

    # Side by side, never more than REFILL_WORKERS at once; the capped ones said why, in purchase order.
    assert 2 <= proxy.max_in_flight <= process.REFILL_WORKERS
    said = [line.split(":")[0] for line in result.stderr.splitlines() if line.startswith("conc-")]
    assert said == CAPPED, result.stderr
    wait(lambda: all(live(stack)[n]["remaining"] == 5 for n in DUE), timeout=60, what="the refills live")


# ---------------------------------------------------------------------------------- the scheduling

def test_what_side_by_side_refills_say_comes_in_purchase_order(monkeypatch, tmp_path):
    """Seven due purchases whose refills finish in the reverse order they start, four at a time (a
    barrier proves four run at once), among ones not due and one not live: the actions and every line
    on stderr come out in purchase order."""
    said: list[str] = []
    env = {"HOME": str(tmp_path), "HERMES_HOME": str(tmp_path / "hermes"), "KUBECONFIG": str(tmp_path / "none"),
           "BUY_X402_SERVICE_ACCOUNT_DIR": str(tmp_path / "none"), "REMOTE_SIGNER_URL": "http://127.0.0.1:9",
           "ERPC_URL": "http://127.0.0.1:9", "X402_BUYER_URL": "http://127.0.0.1:9"}
    ctx = Context(settings=settings.load(env), notify=lambda t: said.append(f"note {t}"),
                  warn=lambda t: said.append(f"warn {t}"), progress=lambda *a: None)
    barrier = threading.Barrier(process.REFILL_WORKERS, timeout=10)
    started: list[str] = []

    def refill(peers, obj, entry, *, wanted, reason, by, signing_workers):
        name = obj["metadata"]["name"]
        started.append(name)
        if len(started) <= process.REFILL_WORKERS:
            barrier.wait()  # breaks (and fails the test) unless four refills run at once
        time.sleep(0.05 * (8 - int(name[-1])))  # the later the purchase, the sooner it finishes
        peers.ctx.notify(f"{name}: first")
        peers.ctx.warn(f"{name}: second")
        return {"name": name, "action": "refilled", "count": wanted, "workers": signing_workers}

    monkeypatch.setattr(process.refilling, "refill", refill)
    due = {"enabled": True, "threshold": 1, "count": 2}
    items = [{"metadata": {"name": f"p{i}"}, "spec": {"autoRefill": due}} for i in range(1, 8)]
    items.insert(3, {"metadata": {"name": "p3a"}, "spec": {"autoRefill": due}})       # not live yet
    items.insert(5, {"metadata": {"name": "p4a"}, "spec": {"autoRefill": {**due, "threshold": 0}}})  # not due
    status = {o["metadata"]["name"]: {"remaining": 1} for o in items if o["metadata"]["name"] != "p3a"}

    actions = process._reconcile_all(Peers(ctx), items, status)

    assert [a["name"] for a in actions] == [o["metadata"]["name"] for o in items]
    assert [a["action"] for a in actions] == ["skipped" if a["name"] in ("p3a", "p4a") else "refilled"
                                              for a in actions]
    assert {a["workers"] for a in actions if a["action"] == "refilled"} == {process.REFILL_SIGNING_WORKERS}
    expected = []
    for obj in items:
        name = obj["metadata"]["name"]
        if name == "p3a":
            expected.append("note p3a: not live in x402-buyer status yet; skipping")
        elif name != "p4a":
            expected += [f"note {name}: first", f"warn {name}: second"]
    assert said == expected
    assert set(started[:4]) == {"p1", "p2", "p3", "p4"} and len(started) == 7

"""Time from a PurchaseRequest's Ready condition being written to the verified switch of model.default.

Ours: `kube.wait_for` (a watch) followed by the adoption chain without the canary, as `buy --set-default
--no-canary` runs it. Baseline: the upstream's wait — a GET every 5 s — followed by the same adoption.
The benchmark plays the controller: it writes Ready itself (no controller runs), at a random moment
after the waiter started, so the poller's phase is fair. Same stack, same run, interleaved rounds.
Targets: our median under 1 s, and at least 3x faster than the baseline.
"""
from __future__ import annotations

import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from buy_x402 import purchases, settings  # noqa: E402
from buy_x402.adoption import adopt, restore_previous_default  # noqa: E402
from buy_x402.peers import Peers  # noqa: E402
from buy_x402.result import Context  # noqa: E402
from devstack import config  # noqa: E402
from devstack.stack import down, up  # noqa: E402

PARTS = ["kube", "upstream", "litellm", "hermes"]   # no controller: the benchmark writes Ready itself
ROUNDS = 5
POLL_S = 5.0
MODEL = config.OFFERS[0]["model"]
ALIAS = f"paid/{MODEL}"


def quiet_context(env: dict[str, str]) -> Context:
    return Context(settings=settings.load(env), notify=lambda m: None, warn=lambda m: None,
                   progress=lambda *a: None)


def purchase(name: str, namespace: str) -> dict:
    payment = {"network": config.CHAIN_NAME, "payTo": "0x" + "22" * 20, "price": "1000", "asset": config.USDC_ADDRESS}
    return purchases.build_purchase(name, namespace, endpoint="http://127.0.0.1:9/services/qwen", model=MODEL,
                                    payment=payment, auths=[{"id": "0x" + "11" * 32, "payment": {}}],
                                    auto_refill={"enabled": True, "threshold": 0, "count": 1})


def write_ready(peers: Peers, name: str) -> None:
    obj = peers.kube.get(name)
    obj["status"] = {"observedGeneration": obj["metadata"]["generation"], "publicModel": ALIAS, "remaining": 1,
                     "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled", "message": "bench",
                                     "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}]}
    peers.kube.replace_status(obj)


def wait_watch(peers: Peers, name: str) -> None:
    peers.kube.wait_for(name, lambda o: purchases.readiness(o).ready, timeout_s=60)


def wait_poll(peers: Peers, name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if purchases.readiness(peers.kube.get(name)).ready:
            return
        time.sleep(POLL_S)
    raise TimeoutError(name)


def one_round(env: dict[str, str], name: str, wait) -> float:
    peers = Peers(quiet_context(env))
    peers.kube.create(purchase(name, peers.kube.config.namespace))
    marks: dict[str, float] = {}
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            wait(peers, name)
            result = adopt(Peers(quiet_context(env)), ALIAS, purchase=name, canary=False)
            assert result["changed"] and result["write"]
            marks["switched"] = time.perf_counter()
        except BaseException as exc:  # reported below; a failed round fails the benchmark
            errors.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(random.uniform(0.2, POLL_S))          # Ready lands somewhere in the poller's 5 s cycle
    marks["ready"] = time.perf_counter()
    write_ready(peers, name)
    thread.join(timeout=90)
    if errors:
        raise errors[0]
    restore_previous_default(Peers(quiet_context(env)))
    peers.kube.delete(name)
    return marks["switched"] - marks["ready"]


def main() -> int:
    directory = tempfile.mkdtemp(prefix="bench-adopt-")
    stack = up(directory, PARTS)
    try:
        env = {"PATH": "/usr/bin:/bin", "HOME": directory, **stack.env}
        results: dict[str, list[float]] = {"ours": [], "baseline": []}
        for i in range(ROUNDS):
            for label, wait in (("ours", wait_watch), ("baseline", wait_poll)):
                results[label].append(one_round(env, f"bench-{label}-{i}", wait))
    finally:
        down(directory)
    ours, base = statistics.median(results["ours"]), statistics.median(results["baseline"])
    ratio = base / ours
    print(f"Ready written -> verified switch, no canary (median of {ROUNDS}):")
    print(f"  baseline (GET every {POLL_S:g} s): {base:.3f} s   {[round(x, 3) for x in results['baseline']]}")
    print(f"  ours     (watch):           {ours:.3f} s   {[round(x, 3) for x in results['ours']]}")
    ok = ours < 1.0 and ratio >= 3.0
    print(f"  ratio {ratio:.1f}x; targets median < 1 s and >= 3x: {'OK' if ok else 'BELOW TARGET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Pre-signing 500 ERC-3009 vouchers through the remote signer: our overhead against the signer's own work,
and how much of a network round trip we hide.

Ours: `SignerClient.presign` as `buy` runs it (vouchers.SIGNING_WORKERS in flight, each on its own
kept-alive connection). Baseline: the upstream buy.py's way, a fresh connection per request (urllib), one
request at a time. Floor: the signer simulation's own work for the same 500 requests, in this process
without HTTP: decoding each typed-data body and signing it (`devstack.sim.signer.sign_request`).

Two figures, all measured in one run, rounds interleaved (median of ROUNDS):
  (a) overhead: ours against the devstack signer on loopback <= 1.4 x the floor;
  (b) latency hiding: against a second signer that answers each request 2 ms late (`--latency-ms`, the
      round trip to a signer pod behind a Service), ours >= 5 x faster than the baseline.
With the CPU each side used (this process; the signer's, from /proc) so a miss says where the time went.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account import Account  # noqa: E402

from bench.measure import median, own_cpu, process_cpu, stamp, verdict  # noqa: E402
from buy_x402.http import make_session  # noqa: E402
from buy_x402.schemes import eip3009  # noqa: E402
from buy_x402.signer import SignerClient  # noqa: E402
from buy_x402.vouchers import SIGNING_WORKERS  # noqa: E402
from buy_x402.x402 import parse_payment_required  # noqa: E402
from devstack import config  # noqa: E402
from devstack.sim.signer import sign_request  # noqa: E402
from devstack.stack import down, up  # noqa: E402

COUNT = 500
ROUNDS = 5
LATENCY_MS = 2.0
MAX_OVERHEAD = 1.4
MIN_HIDING = 5.0


def option_for(pay_to: str):
    """A seller's payment option as the x402 module parses it (v1 body shape; no seller needed)."""
    body = json.dumps({"x402Version": 1, "accepts": [{
        "scheme": "exact", "network": config.CHAIN_NAME, "maxAmountRequired": "1000", "asset": config.USDC_ADDRESS,
        "payTo": pay_to, "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}}]})
    return parse_payment_required(402, {}, body.encode()).accepts[0]


def typed_batch(option, address: str, valid_before: int) -> list[dict]:
    return [eip3009.SCHEME.typed_data(option, payer=address, nonce=eip3009.new_nonce(), deadline=valid_before)
            for _ in range(COUNT)]


def floor(account, option, address: str, valid_before: int) -> int:
    """The signer's own work: what its handler does with each request body once routed."""
    bodies = [json.dumps(typed).encode() for typed in typed_batch(option, address, valid_before)]
    signed = 0
    for raw in bodies:
        status, answer = sign_request(account, "typed-data", raw)
        signed += status == 200 and bool(answer["signature"])
    return signed


def baseline(url: str, option, address: str, valid_before: int) -> int:
    signed = 0
    for typed in typed_batch(option, address, valid_before):
        req = urllib.request.Request(f"{url}/api/v1/sign/{address}/typed-data", data=json.dumps(typed).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            signature = json.loads(resp.read())["signature"]
        eip3009.SCHEME.auth_object(option, typed, signature)
        signed += 1
    return signed


def ours(url: str, option, address: str, valid_before: int) -> int:
    auths = SignerClient(make_session("bench"), url).presign(option, address=address, count=COUNT,
                                                             deadline=valid_before, workers=SIGNING_WORKERS)
    assert len({a["id"] for a in auths}) == COUNT
    return len(auths)


class Run:
    """Wall time, this process's CPU and the signer's CPU of one call, kept per label."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.client: dict[str, list[float]] = {}
        self.signer: dict[str, list[float]] = {}

    def time(self, label: str, signer_pid: int | None, func, *args) -> None:
        signer0, cpu0, t0 = process_cpu(signer_pid) if signer_pid else 0.0, own_cpu(), time.perf_counter()
        signed = func(*args)
        wall, cpu = time.perf_counter() - t0, own_cpu() - cpu0
        assert signed == COUNT, f"{label}: {signed}/{COUNT} signed"
        self.wall.setdefault(label, []).append(wall)
        self.client.setdefault(label, []).append(cpu)
        if signer_pid:
            self.signer.setdefault(label, []).append(process_cpu(signer_pid) - signer0)

    def line(self, label: str, text: str) -> str:
        ms = 1000 / COUNT
        out = f"  {text:<52} {median(self.wall[label]):6.3f} s"
        parts = [f"this process {median(self.client[label]) * ms:.3f} ms"]
        if label in self.signer:
            parts.append(f"signer {median(self.signer[label]) * ms:.3f} ms")
        return out + "   CPU per signature: " + ", ".join(parts)


def main() -> int:
    directory = tempfile.mkdtemp(prefix="bench-presign-")
    stack = up(directory, ["signer"])
    try:
        url, address = stack.env["REMOTE_SIGNER_URL"], stack.info["signer"]["address"]
        port = stack.free_port()
        slow_url = f"http://127.0.0.1:{port}"
        stack.spawn("signer-latency", [stack.python, "-m", "devstack.sim.signer", "--port", str(port), "--key-file",
                                       str(stack.path("secrets", "agent.key")), "--latency-ms", str(LATENCY_MS)],
                    cwd=stack.repo)
        stack.wait_http("signer-latency", f"{slow_url}/healthz", timeout=30, ok=lambda status: status == 200)
        pid, slow_pid = stack.pid("signer"), stack.pid("signer-latency")
        account = Account.from_key(config.AGENT_KEY)
        option = option_for(address)
        valid_before = int(time.time()) + 86400
        for target in (url, slow_url):  # warm both paths once
            ours(target, option, address, valid_before)
            baseline(target, option, address, valid_before)
        run = Run()
        for _ in range(ROUNDS):  # interleaved, so drift on the machine hits every figure alike
            run.time("floor", None, floor, account, option, address, valid_before)
            run.time("ours", pid, ours, url, option, address, valid_before)
            run.time("baseline", pid, baseline, url, option, address, valid_before)
            run.time("ours-latency", slow_pid, ours, slow_url, option, address, valid_before)
            run.time("baseline-latency", slow_pid, baseline, slow_url, option, address, valid_before)
    finally:
        down(directory)
    med = {label: median(values) for label, values in run.wall.items()}
    overhead = med["ours"] / med["floor"]
    hiding = med["baseline-latency"] / med["ours-latency"]
    signer_http = (median(run.signer["ours"]) - med["floor"]) / COUNT * 1000
    print(f"presign: {COUNT} ERC-3009 vouchers, median of {ROUNDS} interleaved rounds ({stamp()})")
    print(f"  {'floor: the signer simulation in-process (decode + sign)':<52} {med['floor']:6.3f} s")
    print(run.line("ours", f"ours, loopback ({SIGNING_WORKERS} in flight, kept alive)"))
    print(run.line("baseline", "baseline, loopback (new connection each, sequential)"))
    print(run.line("ours-latency", f"ours, signer {LATENCY_MS:g} ms away"))
    print(run.line("baseline-latency", f"baseline, signer {LATENCY_MS:g} ms away"))
    print(f"  the signer's own HTTP and routing, beyond the floor: {signer_http:.3f} ms per signature")
    # The signer serves one request at a time (one event loop; signing is CPU in the handler), so no client
    # can finish the batch sooner than the signer's own CPU for it: target (a) cannot be met when that
    # alone exceeds it. Printed so a miss says whose time it is.
    signer_batch = median(run.signer["ours"])
    print(f"  bound: the signer's CPU for the batch, {signer_batch:.3f} s = {signer_batch / med['floor']:.2f}x the floor;"
          f" ours / that bound = {med['ours'] / signer_batch:.2f}x")
    print(f"  (a) overhead: ours / floor = {overhead:.2f}x (target <= {MAX_OVERHEAD:g}x): "
          f"{verdict(overhead <= MAX_OVERHEAD)}")
    print(f"  (b) latency hiding at {LATENCY_MS:g} ms: baseline / ours = {hiding:.1f}x (target >= {MIN_HIDING:g}x): "
          f"{verdict(hiding >= MIN_HIDING)}")
    return 0 if overhead <= MAX_OVERHEAD and hiding >= MIN_HIDING else 1


if __name__ == "__main__":
    sys.exit(main())

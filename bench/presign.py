"""Pre-signing 500 ERC-3009 vouchers against the devstack's remote signer: ours vs. the upstream's way.

Ours: `SignerClient.presign` (EIP-3009 scheme) — one pooled session (connections reused), 8 requests in flight.
Baseline: the upstream buy.py's way — a fresh connection per request (urllib), one request at a time.
Both sign the same typed data against the same signer in the same run; the ratio is what counts.
Target: ours at least 3x faster.
"""
from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from buy_x402.schemes import eip3009  # noqa: E402
from buy_x402.http import make_session  # noqa: E402
from buy_x402.signer import SignerClient  # noqa: E402
from buy_x402.x402 import parse_payment_required  # noqa: E402
from devstack import config  # noqa: E402
from devstack.stack import down, up  # noqa: E402

COUNT = 500
ROUNDS = 3
TARGET_RATIO = 3.0


def option_for(pay_to: str):
    """A seller's payment option as the x402 module parses it (v1 body shape; no seller needed)."""
    body = json.dumps({"x402Version": 1, "accepts": [{
        "scheme": "exact", "network": config.CHAIN_NAME, "maxAmountRequired": "1000", "asset": config.USDC_ADDRESS,
        "payTo": pay_to, "maxTimeoutSeconds": 300, "extra": {"name": "USDC", "version": "2"}}]})
    return parse_payment_required(402, {}, body.encode()).accepts[0]


def baseline(url: str, option, address: str, valid_before: int) -> list[dict]:
    auths = []
    for _ in range(COUNT):
        typed = eip3009.SCHEME.typed_data(option, payer=address, nonce=eip3009.new_nonce(), deadline=valid_before)
        req = urllib.request.Request(f"{url}/api/v1/sign/{address}/typed-data", data=json.dumps(typed).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            signature = json.loads(resp.read())["signature"]
        auths.append(eip3009.SCHEME.auth_object(option, typed, signature))
    return auths


def ours(url: str, option, address: str, valid_before: int) -> list[dict]:
    client = SignerClient(make_session("bench", pool_size=10), url)
    return client.presign(option, address=address, count=COUNT, deadline=valid_before, workers=8)


def main() -> int:
    directory = tempfile.mkdtemp(prefix="bench-presign-")
    stack = up(directory, ["signer"])
    try:
        url, address = stack.env["REMOTE_SIGNER_URL"], stack.info["signer"]["address"]
        option = option_for(address)
        valid_before = int(time.time()) + 86400
        ours(url, option, address, valid_before)  # warm both paths once
        times: dict[str, list[float]] = {"ours": [], "baseline": []}
        for _ in range(ROUNDS):  # interleaved, so drift on the machine hits both alike
            for name, func in (("baseline", baseline), ("ours", ours)):
                t0 = time.perf_counter()
                auths = func(url, option, address, valid_before)
                times[name].append(time.perf_counter() - t0)
                assert len(auths) == COUNT and len({a["id"] for a in auths}) == COUNT
    finally:
        down(directory)
    ours_s, base_s = statistics.median(times["ours"]), statistics.median(times["baseline"])
    ratio = base_s / ours_s
    print(f"presign {COUNT} ERC-3009 vouchers (median of {ROUNDS}):")
    print(f"  baseline (fresh connection per request, sequential): {base_s:.3f} s")
    print(f"  ours     (one pooled session, 8 in flight):          {ours_s:.3f} s")
    print(f"  ratio {ratio:.2f}x (target >= {TARGET_RATIO:g}x): {'OK' if ratio >= TARGET_RATIO else 'BELOW TARGET'}")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())

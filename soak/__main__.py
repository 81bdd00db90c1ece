"""`make soak`: the crash-consistency and concurrency runs at full size, on a devstack of their own.

    python -m soak [--dir DIR] [--kills 500] [--terms 50] [--seed N] [--keep]

Kills buy.py at random points of `default set` and `buy --set-default` with both writers (the real
Hermes CLI and the fallback writer), runs writers concurrently, and prints a table of tried / held.
Exits 1 when any run broke an invariant (`soak/faults.py` lists them). Not part of `make test`,
which runs a few dozen of the same runs (`tests/test_soak.py`).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from devstack import config
from devstack.stack import down, up
from soak import faults


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="devstack directory (default: a new temp dir)")
    parser.add_argument("--kills", type=int, default=500, help="SIGKILLs in all (default 500)")
    parser.add_argument("--terms", type=int, default=50, help="SIGTERMs in all (default 50)")
    parser.add_argument("--ints", type=int, default=10, help="SIGINTs in all (default 10)")
    parser.add_argument("--concurrent-sets", type=int, default=20)
    parser.add_argument("--concurrent-buys", type=int, default=15)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="leave the devstack running")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    directory = args.dir or tempfile.mkdtemp(prefix="buy-x402-soak-")
    work = Path(tempfile.mkdtemp(prefix="buy-x402-soak-work-"))
    print(f"soak: seed {seed}, devstack {directory}, work {work}", flush=True)
    stack = up(directory)
    started = time.monotonic()
    try:
        env = dict(stack.env)
        offer = next(o for o in stack.info["seller"]["offers"] if o["model"] == env["SELLER_MODEL"])
        model, url = offer["model"], offer["url"]
        name = faults.owner(env, model) or "soak"  # one purchase per model: reuse the one that owns it
        bought = faults.buy(["buy", name, "--endpoint", url, "--model", model, "--count", "5", "--json"],
                            {"PATH": "/usr/bin:/bin", "HOME": str(work), **env})
        if bought.returncode != 0:
            print(bought.stderr, file=sys.stderr)
            return 1
        models = (config.FREE_MODEL, f"paid/{model}")
        # Kills are split: most on `default set` (cheap), a tenth on `buy --set-default` (each signs a voucher).
        buy_kills, buy_terms = args.kills // 10, max(args.terms // 10, 1)
        set_kills, set_terms = args.kills - buy_kills, args.terms - buy_terms
        tallies = []
        for fallback in (False, True):
            half = 0 if fallback else 1
            tallies.append(faults.crash_default_set(
                env, work, models, kills=set_kills // 2 + (set_kills % 2) * half, terms=set_terms // 2 + (set_terms % 2) * half,
                ints=args.ints // 2, fallback=fallback, rng=rng))
            print(faults.table(tallies[-1:]), flush=True)
        for fallback in (False, True):
            half = 0 if fallback else 1
            tallies.append(faults.crash_buy(
                env, work, name, url, model, config.FREE_MODEL, kills=buy_kills // 2 + (buy_kills % 2) * half,
                terms=buy_terms // 2 + (buy_terms % 2) * half, fallback=fallback, rng=rng))
            print(faults.table(tallies[-1:]), flush=True)
        tallies.append(faults.concurrent_default_set(env, work, list(models), args.concurrent_sets))
        tallies.append(faults.concurrent_buys(env, name, url, model, args.concurrent_buys))
        print(f"\nsoak finished in {time.monotonic() - started:.0f} s (seed {seed})\n")
        print(faults.table(tallies))
        return 0 if all(t.tried == t.held for t in tallies) else 1
    finally:
        if not args.keep:
            down(directory)


if __name__ == "__main__":
    raise SystemExit(main())

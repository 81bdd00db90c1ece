"""A namespace with 10, 100 and 300 purchases: `list`, `status`, `process --all` and `audit` on it.

The purchases are made directly through the API (quicker than `buy`): each its own model name, all
pointing at one offer of the Obol-shaped seller (the controller probes with model "probe", the buyer
routes by `remoteModel`), with 5 vouchers signed by the signer simulation's own code in this process.
10 % of them (plus one, for the single refill) are due for a refill (threshold 5, count 5); the rest
are not (threshold 1). The controller reconciles them as it would any; the bench waits until every
one is live in the x402-buyer and Ready.

`buy.py` then runs as the agent runs it, pointed at counting reverse proxies in front of the kube API,
the x402-buyer, eRPC, the seller and the signer (devstack/counting_proxy.py): the calls are counted on the
wire. `list`, `status` and `audit` are timed without the proxies (median of 3) and counted through
them once; `process` (one refill, then `--all`) runs once, through them, its peak RSS from wait4.
Targets: `list` and `process --all` make the same calls at every N apart from what the due refills
need (one list, one buyer status; a probe and signatures only for a purchase that needs them);
`list` of 300 in < 2 s; `process --all` with 30 refills < 5 x one refill; peak RSS of
`process --all` at 300 < 80 MB. `status` and `audit` are reported.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from devstack.counting_proxy import CountingProxy  # noqa: E402
from bench.measure import Run, median, stamp, verdict  # noqa: E402
from buy_x402 import purchases, schemes, x402  # noqa: E402
from buy_x402.http import make_session  # noqa: E402
from buy_x402.buyer import BuyerClient  # noqa: E402
from buy_x402.errors import KubeApiError  # noqa: E402
from buy_x402.kube import KubeClient, load_config  # noqa: E402
from buy_x402.settings import load as load_settings  # noqa: E402
from devstack.parts.hermes import write_home  # noqa: E402
from devstack.local_signer import InProcessSigner  # noqa: E402
from devstack.stack import down, up  # noqa: E402

PROCESS_ROUNDS = 3
LEVELS = tuple(int(n) for n in os.environ.get("SCALE_LEVELS", "10,100,300").split(","))
VOUCHERS = 5
PARTS = ["kube", "chain", "signer", "seller", "buyer", "controller"]
BUY = str(Path(__file__).resolve().parent.parent / "buy.py")
AGENT = "buy-x402-scale-bench"          # the User-Agent the proxies count
LIST_MAX_S, REFILL_RATIO_MAX, RSS_MAX_MB = 2.0, 5.0, 80.0
# What a refill asks of the peers; everything else `process` asks is the same whatever N is.
REFILL_SHAPES = ("POST /services/", "POST /api/v1/sign/", "POST /rpc/", "PUT /purchaserequests/")


class Bench:
    def __init__(self, directory: str) -> None:
        self.stack = up(directory, PARTS)
        home = Path(directory) / "hermes"
        write_home(home, "http://127.0.0.1:9")  # a config for the guardian and the signing record; no CLI
        self.direct = {"PATH": os.environ.get("PATH", ""), "HOME": directory, "LANG": "C.UTF-8", **self.stack.env,
                       "HERMES_HOME": str(home), "HERMES_BIN": str(home / "no-hermes-cli"),
                       "OBOL_BUYER_USER_AGENT": AGENT}
        kube = self.stack.info["kube"]
        self.proxies = {
            "kube": CountingProxy("kube", kube["server"], counted_agent=AGENT, verify=kube["ca"]),
            "buyer": CountingProxy("buyer", self.stack.env["X402_BUYER_URL"], counted_agent=AGENT),
            "erpc": CountingProxy("erpc", origin(self.stack.env["ERPC_URL"]), counted_agent=AGENT),
            "seller": CountingProxy("seller", origin(self.stack.env["SELLER_URL"]), counted_agent=AGENT),
            "signer": CountingProxy("signer", self.stack.env["REMOTE_SIGNER_URL"], counted_agent=AGENT),
        }
        kubeconfig = Path(directory) / "kubeconfig-counted"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "counted",
            "clusters": [{"name": "counted", "cluster": {"server": self.proxies["kube"].url}}],
            "users": [{"name": "counted", "user": {"token": kube["token"]}}],
            "contexts": [{"name": "counted", "context": {"cluster": "counted", "user": "counted",
                                                         "namespace": kube["namespace"]}}]}))
        self.counted = {**self.direct, "KUBECONFIG": str(kubeconfig), "X402_BUYER_URL": self.proxies["buyer"].url,
                        "ERPC_URL": self.proxies["erpc"].url + urlsplit(self.stack.env["ERPC_URL"]).path,
                        "REMOTE_SIGNER_URL": self.proxies["signer"].url}
        settings = load_settings(self.direct)
        self.kube = KubeClient(load_config(settings), make_session(AGENT, pool_size=8))
        seller_path = urlsplit(self.stack.env["SELLER_URL"]).path
        self.endpoint = x402.normalize_endpoint(self.proxies["seller"].url + seller_path)
        self.offer = x402.probe(make_session(AGENT), self.stack.env["SELLER_URL"], "probe")
        self.option = self.offer.accepts[0]
        self.payment = purchases.build_payment_spec(self.option, chain_name=self.option.chain.name,
                                                    symbol=self.option.symbol, decimals=self.option.decimals)
        self.signer = InProcessSigner()
        self.wallet = self.stack.info["signer"]["address"]
        self.made = 0
        self.due: list[str] = []

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()

    def take_counts(self) -> Counter:
        counts: Counter = Counter()
        for name, proxy in self.proxies.items():
            counts.update({f"{name}: {shape}": n for shape, n in proxy.take().items()})
        return counts

    # -- purchases ----------------------------------------------------------------------------------
    def make_purchases(self, total: int) -> None:
        """Purchases up to `total`; of the new ones, total/10 + 1 are due for a refill."""
        new = list(range(self.made, total))
        due_count = total // 10 + 1
        step = len(new) / due_count
        due = {new[int(k * step)] for k in range(due_count)}
        signed_at = int(time.time())
        valid_after = schemes.valid_after_for(signed_at)

        def make(i: int) -> None:
            name = f"scale-{i:03d}"
            auths = self.signer.presign(self.option, address=self.wallet, count=VOUCHERS,
                                        deadline=signed_at + 7 * 86400, extensions=self.offer.extensions,
                                        workers=1, valid_after=valid_after)
            policy = {"enabled": True, "threshold": VOUCHERS if i in due else 1, "count": VOUCHERS}
            self.kube.create(purchases.build_purchase(name, self.kube.namespace, endpoint=self.endpoint,
                                                      model=f"scale-model-{i:03d}", payment=self.payment,
                                                      auths=auths, auto_refill=policy))
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(make, new))
        self.due += [f"scale-{i:03d}" for i in sorted(due)]
        self.made = total

    def wait_ready(self, total: int, timeout: float = 600) -> float:
        """Until every purchase is live in the buyer with its vouchers and Ready; the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            items = self.kube.list()
            ready = sum(purchases.readiness(obj).ready for obj in items)
            if len(items) == total and ready == total:
                return time.monotonic() - started
            time.sleep(1)
        raise RuntimeError(f"only {ready}/{total} purchases Ready after {timeout:g} s")

    def redue(self, names: list[str], timeout: float = 300) -> None:
        """Make these (refilled) purchases due again: threshold = their pool; until the controller and the
        buyer have the new generation."""
        for name in names:
            for _ in range(10):
                obj = self.kube.get(name)
                obj["spec"]["autoRefill"]["threshold"] = len(obj["spec"]["preSignedAuths"])
                try:
                    self.kube.replace(obj)
                    break
                except KubeApiError as err:
                    if err.reason != "Conflict":
                        raise
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            live = BuyerClient(make_session(AGENT), self.stack.env["X402_BUYER_URL"]).status()
            items = {obj["metadata"]["name"]: obj for obj in self.kube.list()}
            if all(purchases.readiness(items[n]).ready and (live.get(n) or {}).get("remaining") ==
                   len(items[n]["spec"]["preSignedAuths"]) for n in names):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the purchases made due again did not converge within {timeout:g} s")

    def run(self, env: dict[str, str], *args: str) -> Run:
        run = Run([sys.executable, BUY, *args], env)
        if run.code != 0:
            raise RuntimeError(f"buy.py {' '.join(args)} exited {run.code}: {run.stderr[-3000:]}")
        return run

    def timed(self, *args: str, runs: int = 3) -> tuple[float, Counter, Run]:
        """Median wall time of `runs` direct runs, and the calls of one more through the proxies."""
        walls = [self.run(self.direct, *args).wall for _ in range(runs)]
        self.take_counts()
        counted = self.run(self.counted, *args)
        return median(walls), self.take_counts(), counted

    def counted_once(self, *args: str) -> tuple[Run, Counter]:
        self.take_counts()
        run = self.run(self.counted, *args)
        return run, self.take_counts()

    def process_all(self, env: dict[str, str], due: list[str]) -> Run:
        """`process --all` with exactly `due` due for a refill (made due again first); checked."""
        self.redue(due)
        self.take_counts()
        run = self.run(env, "process", "--all", "--json")
        refilled = sorted(a["name"] for a in run.json["purchases"] if a["action"] == "refilled")
        assert refilled == sorted(due), (refilled, due)
        return run


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def split(counts: Counter) -> tuple[Counter, Counter]:
    """(the calls every run makes, the calls its refills make)."""
    refill = Counter({k: n for k, n in counts.items() if any(s in k for s in REFILL_SHAPES)})
    return counts - refill, refill


def show(counts: Counter) -> str:
    return "; ".join(f"{key} x{n}" for key, n in sorted(counts.items())) or "none"


def main() -> int:
    directory = tempfile.mkdtemp(prefix="bench-scale-")
    bench = Bench(directory)
    rows: dict[int, dict] = {}
    try:
        for total in LEVELS:
            bench.make_purchases(total)
            settle = bench.wait_ready(total)
            row = rows[total] = {"settle": settle}
            row["list"], row["list_calls"], _ = bench.timed("list", "--json")
            row["status"], row["status_calls"], _ = bench.timed("status", bench.due[0], "--json")
            row["audit"], row["audit_calls"], audit = bench.timed("audit", "--json")
            row["audit_vouchers"] = audit.json["vouchers"]
            one, rest = bench.due[0], bench.due[1:]
            bench.run(bench.direct, "process", "--all", "--json")  # the ones made due at creation
            singles, alls, names = [], [], []
            for _ in range(PROCESS_ROUNDS):  # timed directly, 1 refill due then N/10, each made due again
                singles.append(bench.process_all(bench.direct, [one]))
                alls.append(bench.process_all(bench.direct, rest))
            for _ in range(PROCESS_ROUNDS):  # and `process NAME` of the one, for reference
                bench.redue([one])
                names.append(bench.run(bench.direct, "process", one, "--json"))
            row["one"], row["all"] = median(r.wall for r in singles), median(r.wall for r in alls)
            row["name"] = median(r.wall for r in names)
            row["all_rss"], row["refills"] = max(r.rss_mb for r in alls), len(rest)
            bench.process_all(bench.counted, [one])  # and once each through the proxies, counted
            row["one_calls"] = bench.take_counts()
            bench.process_all(bench.counted, rest)
            row["all_calls"] = bench.take_counts()
            bench.due.clear()
    finally:
        bench.close()
        down(directory)

    print(f"scale: purchases of {VOUCHERS} vouchers, 10 % due for a refill of {VOUCHERS} ({stamp()})")
    print(f"  median of {PROCESS_ROUNDS} (list, status, audit: of 3); settle: until the controller had them all Ready")
    print(f"  {'N':>4} {'settle':>7} {'list':>7} {'status':>7} {'audit':>7} {'process NAME':>13} "
          f"{'process --all, 1 refill':>24} {'N/10 refills':>13} {'peak RSS':>9}")
    for total, row in rows.items():
        print(f"  {total:>4} {row['settle']:6.1f}s {row['list']:6.3f}s {row['status']:6.3f}s {row['audit']:6.3f}s "
              f"{row['name']:12.3f}s {row['one']:23.3f}s {row['all']:8.3f}s ({row['refills']:>2}) "
              f"{row['all_rss']:6.1f} MB")
    print("  calls (counted on the wire, by peer and request):")
    for total, row in rows.items():
        base, refill = split(row["all_calls"])
        one_base, one_refill = split(row["one_calls"])
        print(f"   N={total}: list: {show(row['list_calls'])}")
        print(f"          status: {show(row['status_calls'])}")
        print(f"          audit ({row['audit_vouchers']} vouchers): {show(row['audit_calls'])}")
        print(f"          process --all, every run: {show(base)}")
        print(f"          process --all, each refill: {show(one_refill)}")
        print(f"          process --all, {row['refills']} refills: {show(refill)}")
        row["per_refill_ok"] = base == one_base and set(refill) == set(one_refill) and \
            all(n == one_refill[k] * row["refills"] for k, n in refill.items())
        row["base"] = base
    first = rows[LEVELS[0]]
    list_flat = all(row["list_calls"] == first["list_calls"] for row in rows.values())
    base_flat = all(row["base"] == first["base"] for row in rows.values())
    per_refill = all(row["per_refill_ok"] for row in rows.values())
    big = rows[LEVELS[-1]]
    ratio = big["all"] / big["one"]
    checks = [
        ("list makes the same calls at every N", list_flat),
        ("process --all: the same calls at every N besides its refills, each refill the calls of one", base_flat
         and per_refill),
        (f"list of {LEVELS[-1]}: {big['list']:.3f} s (target < {LIST_MAX_S:g} s)", big["list"] < LIST_MAX_S),
        (f"process --all at {LEVELS[-1]} with {big['refills']} refills: {big['all']:.3f} s = {ratio:.1f}x with one "
         f"({big['one']:.3f} s) (target < {REFILL_RATIO_MAX:g}x)", ratio < REFILL_RATIO_MAX),
        (f"peak RSS of process --all at {LEVELS[-1]}: {big['all_rss']:.1f} MB (target < {RSS_MAX_MB:g} MB)",
         big["all_rss"] < RSS_MAX_MB),
    ]
    for text, ok in checks:
        print(f"  {text}: {verdict(ok)}")
    # The target's "one refill" is `process --all` with one due, at the same N: both runs list the same
    # purchases, so the ratio is the refills' own. Against `process NAME` (one GET, no list) it is shown too.
    print(f"  for reference: process --all at {LEVELS[-1]} with {big['refills']} refills / process NAME "
          f"({big['name']:.3f} s, no list) = {big['all'] / big['name']:.1f}x")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

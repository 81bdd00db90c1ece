"""Simulated serviceoffer-controller: reconciles PurchaseRequests as obol-wire.md §3 describes.

    python -m devstack.sim.controller --server S --token-file F --ca CA --namespace NS --buyer-url U \
        --config-dir D1 --auths-dir D2 --health-port P

Follows §3 (purchase.go@cb8d2d7a, purchase_helpers.go@01e2d757 and, for what they added,
purchase_lifecycle_test.go@e8ca640d, the newest behaviour seen):
- a purchase without the finalizer `obol.org/purchase-finalizer` gets it and nothing else that pass;
- the status is reset when `metadata.generation` differs from `observedGeneration`, and every write
  carries the generation it describes; stages already True for this generation are not re-run;
- Probed (POST the chat probe body to spec.endpoint, 15 s; body `accepts[0]` only, exact price string;
  ProbeError / NotPaymentGated / InvalidPricing / PricingMismatch; probedAt, probedPrice; asset,
  transfer method and EIP-712 name/version copied from accepts[0] into the spec used for this pass),
  AuthsLoaded (NoAuths; signerAddress, totalSigned), Configured (DuplicateModel; `<name>.json` into the
  buyer's config and auths directories, which stand for the ConfigMaps `llm/x402-buyer-config` and
  `llm/x402-buyer-auths`; POST /admin/reload; remaining, publicModel), Ready (GET /status:
  SidecarNotReady, RuntimeSyncing until live remaining equals the spec's vouchers the first time in a
  generation, then Reconciled "Sidecar: R remaining, S spent");
- a status is written only when it changed; a purchase that is not Ready is requeued after 5 s;
- deletion drains: Deleting/Draining while the buyer still holds vouchers, then the buyer files go,
  the buyer reloads and the finalizer is removed.
Its informer has no resync: a Ready purchase is reconciled again only when an event arrives for it,
so its status counters follow the buyer only then. Like a controller-runtime client, it lists from the
informer's cache (the objects its list and watch delivered), not from the API server: a live LIST of
every purchase in each reconcile made the API server the bottleneck of a namespace with hundreds of
purchases (bench/scale.py), which the real controller does not do. Where the reference is silent it follows the
newest behaviour described: the DuplicateModel owner is the purchase already Configured (else the
older one), and a draining purchase is requeued every 5 s like a purchase that is not Ready.
LiteLLM here has a static config listing every devstack offer (no database for /model/new), so
publishing `paid/<model>` is logged, not performed. The stage rules are in devstack/sim/stages.py.
"""
from __future__ import annotations

import argparse
import copy
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from ..loopback import LoopbackHandler, make_server
from .kube_rest import Conflict, KubeClient
from .stages import (PROBE_BODY, StageFailed, buyer_auths, buyer_config, is_true, now_rfc3339, probe_first_option,
                     set_condition, signer_address, write_json)

FINALIZER = "obol.org/purchase-finalizer"
PROBE_TIMEOUT_S = 15.0
BUYER_TIMEOUT_S = 3.0
REQUEUE_S = 5.0
BUYER_NAMESPACE = "llm"


def log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} controller: {msg}\n")  # one write: threads share the log
    sys.stderr.flush()


class Controller:
    """Watch-driven reconciler: one job per purchase at a time, re-run when an event arrived meanwhile."""

    def __init__(self, kube: KubeClient, buyer_url: str, config_dir: Path, auths_dir: Path) -> None:
        self.kube, self.buyer_url = kube, buyer_url.rstrip("/")
        self.config_dir, self.auths_dir = config_dir, auths_dir
        self.lock = threading.Lock()
        self.synced: dict[str, int] = {}        # name -> generation whose runtime pool reached the spec once
        self.requeue_at: dict[str, float] = {}
        self.pending: set[str] = set()
        self.running: set[str] = set()
        self.dirty: set[str] = set()
        self.executor = ThreadPoolExecutor(max_workers=4)
        self.listed = threading.Event()
        self.local = threading.local()
        self.cache: dict[str, dict] = {}        # the informer's view: name -> the object last delivered

    @property
    def http(self) -> requests.Session:
        if not hasattr(self.local, "s"):
            self.local.s = requests.Session()
            self.local.s.trust_env = False
        return self.local.s

    # -- work queue ---------------------------------------------------------------------------
    def enqueue(self, name: str) -> None:
        with self.lock:
            self.requeue_at.pop(name, None)
            if name in self.running:
                self.dirty.add(name)
                return
            if name in self.pending:
                return
            self.pending.add(name)
        self.executor.submit(self._run, name)

    def requeue_after(self, name: str, seconds: float) -> None:
        with self.lock:
            self.requeue_at[name] = time.monotonic() + seconds

    def _run(self, name: str) -> None:
        with self.lock:
            self.pending.discard(name)
            self.running.add(name)
        try:
            self.reconcile(name)
        except Exception as exc:  # one bad object must not stop the others; a rate-limited retry follows
            log(f"{name}: reconcile error {exc!r}")
            self.requeue_after(name, 1.0)
        finally:
            with self.lock:
                self.running.discard(name)
                again = name in self.dirty
                self.dirty.discard(name)
            if again:
                self.enqueue(name)

    def requeue_forever(self) -> None:
        while True:
            time.sleep(0.1)
            now = time.monotonic()
            with self.lock:
                due = [name for name, at in self.requeue_at.items() if at <= now]
            for name in due:
                self.enqueue(name)

    # -- watch --------------------------------------------------------------------------------
    def watch_forever(self) -> None:
        while True:
            try:
                listing = self.kube.list()
                with self.lock:
                    self.cache = {obj["metadata"]["name"]: obj for obj in listing.get("items", [])}
                for obj in listing.get("items", []):
                    self.enqueue(obj["metadata"]["name"])
                if not self.listed.is_set():
                    log(f"first list: {len(listing.get('items', []))} PurchaseRequests")
                self.listed.set()
                for event in self.kube.watch(listing["metadata"]["resourceVersion"]):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        log(f"watch error {obj.get('code')}: {obj.get('message')}; re-listing")
                        break
                    if kind == "BOOKMARK":
                        continue
                    name = obj["metadata"]["name"]
                    if kind == "DELETED":
                        log(f"{name}: deleted")
                        with self.lock:
                            self.requeue_at.pop(name, None)
                            self.cache.pop(name, None)
                        self.synced.pop(name, None)
                    else:
                        with self.lock:
                            self.cache[name] = obj
                        self.enqueue(name)
            except Exception as exc:
                log(f"watch/list failed: {exc!r}; retrying")
                time.sleep(1)

    # -- buyer --------------------------------------------------------------------------------
    def buyer_entry(self, name: str) -> dict:
        """checkBuyerStatus: this purchase's entry in the buyer's /status, or RuntimeError saying why not."""
        try:
            resp = self.http.get(f"{self.buyer_url}/status", timeout=BUYER_TIMEOUT_S)
            live = resp.json()
        except (requests.RequestException, ValueError) as exc:
            raise RuntimeError(f"x402-buyer /status: {exc.__class__.__name__}: {exc}") from exc
        if not isinstance(live, dict) or name not in live:
            raise RuntimeError(f'upstream "{name}" not found in sidecar status')
        return live[name]

    def buyer_reload(self) -> None:
        try:
            self.http.post(f"{self.buyer_url}/admin/reload", timeout=BUYER_TIMEOUT_S)
        except requests.RequestException as exc:  # best effort: the buyer also reloads every 5 s
            log(f"buyer reload failed: {exc!r}")

    # -- reconcile ----------------------------------------------------------------------------
    def reconcile(self, name: str) -> None:
        obj = self.kube.get(name)
        if obj is None:
            return
        meta = obj["metadata"]
        if FINALIZER not in (meta.get("finalizers") or []):
            meta["finalizers"] = (meta.get("finalizers") or []) + [FINALIZER]
            try:
                self.kube.replace(obj)
            except Conflict:
                self.enqueue(name)
            return
        if meta.get("deletionTimestamp"):
            self.drain(obj)
            return
        generation = meta.get("generation")
        old = obj.get("status") or {}
        status = copy.deepcopy(old) if old.get("observedGeneration") == generation else {}
        status["observedGeneration"] = generation
        conditions = status.setdefault("conditions", [])
        spec = obj.get("spec") or {}
        payment = dict(spec.get("payment") or {})  # the in-memory spec the probe may complete

        if not is_true(conditions, "Probed"):
            self.stage_probe(spec, payment, status, conditions)
        if is_true(conditions, "Probed") and not is_true(conditions, "AuthsLoaded"):
            self.stage_auths(spec, status, conditions)
        if is_true(conditions, "AuthsLoaded") and not is_true(conditions, "Configured"):
            self.stage_configure(obj, payment, status, conditions)
        if is_true(conditions, "Configured"):
            self.stage_ready(obj, status, conditions)
        self.write_status(obj, status)
        if not is_true(conditions, "Ready"):
            self.requeue_after(name, REQUEUE_S)

    def stage_probe(self, spec: dict, payment: dict, status: dict, conditions: list[dict]) -> None:
        endpoint = spec.get("endpoint") or ""
        try:
            try:
                resp = self.http.post(endpoint, data=PROBE_BODY, headers={"Content-Type": "application/json"},
                                      timeout=PROBE_TIMEOUT_S)
            except requests.RequestException as exc:
                raise StageFailed("ProbeError", f'Post "{endpoint}": {exc}') from exc
            first = probe_first_option(resp.status_code, resp.content)
            if first["price"] != payment.get("price"):
                raise StageFailed("PricingMismatch", f"spec.price={payment.get('price', '')} but endpoint wants "
                                                     f"{first['price']}")
        except StageFailed as failed:
            set_condition(conditions, "Probed", False, failed.reason, failed.message)
            return
        status.update(probedAt=now_rfc3339(), probedPrice=first["price"])
        payment.update(asset=first["asset"], assetTransferMethod=first["assetTransferMethod"],
                       eip712Name=first["eip712Name"], eip712Version=first["eip712Version"])
        set_condition(conditions, "Probed", True, "Validated", f"402: {first['price']} on {first['network']}")

    def stage_auths(self, spec: dict, status: dict, conditions: list[dict]) -> None:
        auths = spec.get("preSignedAuths") or []
        if not auths:
            set_condition(conditions, "AuthsLoaded", False, "NoAuths",
                          "spec.preSignedAuths is empty — buy.py should embed auths in the CR")
            return
        if signer_address(auths[0]):
            status["signerAddress"] = signer_address(auths[0])
        status["totalSigned"] = len(auths)
        set_condition(conditions, "AuthsLoaded", True, "Loaded", f"Loaded {len(auths)} pre-signed auths from spec")

    def stage_configure(self, obj: dict, payment: dict, status: dict, conditions: list[dict]) -> None:
        name, spec = obj["metadata"]["name"], obj.get("spec") or {}
        owner = self.model_owner(obj)
        if owner:
            set_condition(conditions, "Configured", False, "DuplicateModel",
                          f"model {spec.get('model')} is already purchased by PurchaseRequest {owner}")
            return
        auths = spec.get("preSignedAuths") or []
        try:
            write_json(self.config_dir / f"{name}.json", buyer_config(spec, payment))
        except OSError as exc:
            set_condition(conditions, "Configured", False, "ConfigWriteError", str(exc))
            return
        try:
            write_json(self.auths_dir / f"{name}.json", buyer_auths(auths))
        except OSError as exc:
            set_condition(conditions, "Configured", False, "AuthsWriteError", str(exc))
            return
        self.buyer_reload()
        log(f"{name}: paid/{spec.get('model')} is in LiteLLM's static config (the real controller would "
            f"POST /model/new); LiteLLM here has no database to add models at runtime")
        status.update(remaining=len(auths), publicModel=f"paid/{spec.get('model')}")
        set_condition(conditions, "Configured", True, "Written",
                      f"Wrote {len(auths)} auths to {BUYER_NAMESPACE}/x402-buyer-auths")

    def stage_ready(self, obj: dict, status: dict, conditions: list[dict]) -> None:
        name, generation = obj["metadata"]["name"], obj["metadata"].get("generation")
        try:
            entry = self.buyer_entry(name)
        except RuntimeError as exc:
            set_condition(conditions, "Ready", False, "SidecarNotReady", str(exc))
            return
        remaining, spent = int(entry.get("remaining") or 0), int(entry.get("spent") or 0)
        status.update(remaining=remaining, spent=spent)
        want = len((obj.get("spec") or {}).get("preSignedAuths") or [])
        first_ready = self.synced.get(name) != generation and not is_true(conditions, "Ready")
        if first_ready and remaining != want:
            set_condition(conditions, "Ready", False, "RuntimeSyncing",
                          f"waiting for runtime auth pool to reach {want} active auths")
            return
        set_condition(conditions, "Ready", True, "Reconciled", f"Sidecar: {remaining} remaining, {spent} spent")
        self.synced[name] = generation

    def model_owner(self, obj: dict) -> str | None:
        """Another PurchaseRequest serving this model (Configured), or created earlier and not failed."""
        me, model = obj["metadata"], (obj.get("spec") or {}).get("model")
        mine = (me.get("creationTimestamp", ""), me["name"])
        with self.lock:
            cached = list(self.cache.values())
        for other in cached:
            meta = other["metadata"]
            if meta["name"] == me["name"] or (other.get("spec") or {}).get("model") != model:
                continue
            conditions = (other.get("status") or {}).get("conditions") or []
            failed = any(c.get("status") == "False" and c.get("type") != "Ready" for c in conditions)
            if is_true(conditions, "Configured") or (
                    not failed and (meta.get("creationTimestamp", ""), meta["name"]) < mine):
                return meta["name"]
        return None

    def drain(self, obj: dict) -> None:
        """Deleting: keep serving until the buyer's pool is empty, then tear down and drop the finalizer."""
        name, meta = obj["metadata"]["name"], obj["metadata"]
        try:
            entry = self.buyer_entry(name)
        except RuntimeError:
            entry = {}
        remaining = int(entry.get("remaining") or 0)
        if remaining > 0:
            status = copy.deepcopy(obj.get("status") or {})
            status.update(remaining=remaining, spent=int(entry.get("spent") or 0))
            set_condition(status.setdefault("conditions", []), "Deleting", True, "Draining",
                          f"waiting for {remaining} remaining auths to be spent before teardown")
            self.write_status(obj, status)
            self.requeue_after(name, REQUEUE_S)
            return
        for directory in (self.config_dir, self.auths_dir):
            (directory / f"{name}.json").unlink(missing_ok=True)
        self.buyer_reload()
        meta["finalizers"] = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        try:
            self.kube.replace(obj)
        except Conflict:
            self.enqueue(name)
            return
        log(f"{name}: drained; removed buyer files and the finalizer")

    def write_status(self, obj: dict, status: dict) -> None:
        """PUT /status only when it changed; on 409 retry against a fresh read of the same generation."""
        name = obj["metadata"]["name"]
        old = obj.get("status") or {}
        if status == old:
            return
        body = dict(obj, status=status)
        for _ in range(5):
            try:
                self.kube.replace_status(body)
            except Conflict:
                fresh = self.kube.get(name)
                if fresh is None or fresh["metadata"].get("generation") != obj["metadata"].get("generation"):
                    self.enqueue(name)
                    return
                body = dict(fresh, status=status)
                continue
            self.log_transitions(name, old, status)
            return
        self.enqueue(name)

    @staticmethod
    def log_transitions(name: str, old: dict, new: dict) -> None:
        before = {c["type"]: (c["status"], c.get("reason")) for c in old.get("conditions") or []}
        for c in new.get("conditions") or []:
            if before.get(c["type"]) != (c["status"], c.get("reason")):
                log(f"{name}: {c['type']}={c['status']} {c.get('reason')}: {c.get('message')}")


class Health(LoopbackHandler):
    listed: threading.Event

    def do_GET(self) -> None:  # noqa: N802
        ok = self.path.split("?")[0] in ("/healthz", "/readyz") and self.listed.is_set()
        self.send_body(200 if ok else 503, b"ok" if ok else b"not ready", "text/plain")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.sim.controller", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in ("--server", "--ca", "--namespace", "--buyer-url"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--token-file", type=Path, required=True, help="a file holding the bearer token")
    parser.add_argument("--config-dir", type=Path, required=True)
    parser.add_argument("--auths-dir", type=Path, required=True)
    parser.add_argument("--health-port", type=int, required=True)
    args = parser.parse_args(argv)
    kube = KubeClient(args.server, args.token_file.read_text().strip(), args.ca, args.namespace)
    controller = Controller(kube, args.buyer_url, args.config_dir, args.auths_dir)
    Health.listed = controller.listed
    health = make_server(args.health_port, Health)
    threading.Thread(target=health.serve_forever, daemon=True).start()
    threading.Thread(target=controller.requeue_forever, daemon=True).start()
    log(f"watching purchaserequests in {args.namespace}; buyer {args.buyer_url}")
    controller.watch_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

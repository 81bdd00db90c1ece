"""Simulated serviceoffer-controller: reconciles PurchaseRequests like the real one (§9).

It watches PurchaseRequests on the (real) Kubernetes API server and walks each through
Probed → AuthsLoaded → Configured → Ready: it probes the seller's 402, checks the price, writes the
x402-buyer's `<name>.json` files (the real one writes ConfigMaps `llm/x402-buyer-config` and
`llm/x402-buyer-auths`, which the buyer mounts), triggers a buyer reload and mirrors the buyer's live
`remaining`/`spent` into the status. Deletion drains first (finalizer `obol.org/purchase-finalizer`).
The pure stage rules live in devstack/sim/stages.py, the REST calls in devstack/sim/kube_rest.py.

    python -m devstack.sim.controller --server S --token-file F --ca CA --namespace NS --buyer-url U \
        --config-dir D1 --auths-dir D2 --health-port P
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from ..loopback import LoopbackHandler, make_server
from .kube_rest import Conflict, KubeClient
from .stages import (StageFailed, is_true, matching_option, now_rfc3339, payment_requirements, set_condition,
                     signer_address, write_atomic)
FINALIZER = "obol.org/purchase-finalizer"
PROBE_TIMEOUT_S = 15.0
BUYER_TIMEOUT_S = 3.0
SYNC_INTERVAL_S = 1.0      # Ready/Deleting purchases: mirror the buyer's counters this often
REQUEUE_NOT_READY_S = 5.0  # like the real controller's requeue while not Ready
BUYER_DOWN_AFTER = 3       # consecutive failed /status polls before a Ready purchase is re-checked
CHAT_SUFFIX = "/v1/chat/completions"


def log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} controller: {msg}\n")  # one write: threads share the log
    sys.stderr.flush()


class Controller:
    """Watch-driven reconciler: one job per purchase at a time, re-run when an event arrived meanwhile."""

    def __init__(self, kube: KubeClient, buyer_url: str, config_dir: Path, auths_dir: Path) -> None:
        self.kube, self.buyer_url = kube, buyer_url.rstrip("/")
        self.config_dir, self.auths_dir = config_dir, auths_dir
        self.lock = threading.Lock()
        self.objects: dict[str, dict] = {}        # latest object seen per name (list/watch/our writes)
        self.synced: dict[str, int] = {}          # name -> generation whose runtime pool reached the spec
        self.written: dict[str, tuple] = {}       # name -> (status we sent, status the server kept)
        self.last_run: dict[str, float] = {}
        self.pending: set[str] = set()
        self.running: set[str] = set()
        self.dirty: set[str] = set()
        self.executor = ThreadPoolExecutor(max_workers=4)
        self.listed = threading.Event()
        self.local = threading.local()

    @property
    def http(self) -> requests.Session:
        if not hasattr(self.local, "s"):
            self.local.s = requests.Session()
            self.local.s.trust_env = False
        return self.local.s

    # -- work queue ---------------------------------------------------------------------------
    def enqueue(self, name: str) -> None:
        with self.lock:
            if name in self.running:
                self.dirty.add(name)
                return
            if name in self.pending:
                return
            self.pending.add(name)
        self.executor.submit(self._run, name)

    def _run(self, name: str) -> None:
        with self.lock:
            self.pending.discard(name)
            self.running.add(name)
        try:
            self.reconcile(name)
        except Exception as exc:  # one bad object must not stop the others; retried by the requeue
            log(f"{name}: reconcile error {exc!r}")
        finally:
            with self.lock:
                self.running.discard(name)
                again = name in self.dirty
                self.dirty.discard(name)
            if again:
                self.enqueue(name)

    # -- watch and periodic sync --------------------------------------------------------------
    def watch_forever(self) -> None:
        while True:
            try:
                listing = self.kube.list()
                names = set()
                for obj in listing.get("items", []):
                    name = obj["metadata"]["name"]
                    names.add(name)
                    self.objects[name] = obj
                    self.enqueue(name)
                for gone in set(self.objects) - names:
                    self.forget(gone)
                if not self.listed.is_set():
                    log(f"first list: {len(names)} PurchaseRequests")
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
                        self.forget(name)
                    else:
                        self.objects[name] = obj
                        self.enqueue(name)
            except Exception as exc:
                log(f"watch/list failed: {exc!r}; retrying")
                time.sleep(1)

    def forget(self, name: str) -> None:
        for table in (self.objects, self.synced, self.written, self.last_run):
            table.pop(name, None)

    def sync_forever(self) -> None:
        """Ready/Deleting purchases follow the buyer's counters; others are retried every 5 s."""
        failures = 0
        while True:
            time.sleep(SYNC_INTERVAL_S)
            try:
                live, failures = self.buyer_status(), 0
            except Exception:
                live, failures = None, failures + 1
            for name, obj in list(self.objects.items()):
                status = obj.get("status") or {}
                entry = (live or {}).get(name)
                if obj["metadata"].get("deletionTimestamp") or is_true(obj, "Ready"):
                    if live is None and failures < BUYER_DOWN_AFTER:
                        continue  # a slow answer under load is not an outage: do not flip Ready for it
                    if live is None or entry is None or (entry.get("remaining"), entry.get("spent")) != (
                            status.get("remaining"), status.get("spent")):
                        self.enqueue(name)
                elif time.monotonic() - self.last_run.get(name, 0) >= REQUEUE_NOT_READY_S:
                    self.enqueue(name)

    # -- buyer --------------------------------------------------------------------------------
    def buyer_status(self) -> dict:
        resp = self.http.get(f"{self.buyer_url}/status", timeout=BUYER_TIMEOUT_S)
        resp.raise_for_status()
        return resp.json()

    def buyer_reload(self) -> None:
        try:
            self.http.post(f"{self.buyer_url}/admin/reload", timeout=BUYER_TIMEOUT_S).raise_for_status()
        except requests.RequestException as exc:  # best effort, as upstream: the buyer also reloads every 5 s
            log(f"buyer reload failed: {exc!r}")

    # -- reconcile ----------------------------------------------------------------------------
    def reconcile(self, name: str) -> None:
        self.last_run[name] = time.monotonic()
        obj = self.kube.get(name)
        if obj is None:
            self.forget(name)
            return
        self.objects[name] = obj
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            self.finalize(obj)
            return
        if FINALIZER not in (meta.get("finalizers") or []):
            meta.setdefault("finalizers", []).append(FINALIZER)
            try:
                obj = self.kube.replace(obj)
            except Conflict:
                self.enqueue(name)
                return
            self.objects[name] = obj
            log(f"{name}: added finalizer {FINALIZER}")
        old = obj.get("status") or {}
        previous = old.get("conditions") or []
        generation = obj["metadata"].get("generation")
        if old.get("observedGeneration") == generation and is_true(obj, "Configured"):
            # Buyer files are written for this generation: only the runtime side is left to follow.
            synced = self.synced.get(name) == generation or is_true(obj, "Ready")
            status = json.loads(json.dumps(old))
            self.stage_ready(obj, status, previous, fresh=not synced)
        else:
            status = {}  # a new generation, or a failed stage to retry: the status starts over
            self.stages(obj, status, previous)
        # The generation this status describes, so nobody mistakes conditions of an older spec for it.
        status["observedGeneration"] = generation
        self.write_status(obj, status)

    def fail(self, status: dict, previous: list[dict], ctype: str, failed: StageFailed) -> None:
        set_condition(status, previous, ctype, False, failed.reason, failed.message)
        set_condition(status, previous, "Ready", False, failed.reason, failed.message)

    def stages(self, obj: dict, status: dict, previous: list[dict]) -> None:
        name, spec = obj["metadata"]["name"], obj.get("spec") or {}
        payment = spec.get("payment") or {}
        try:
            option = self.probe(spec)
        except StageFailed as failed:
            self.fail(status, previous, "Probed", failed)
            return
        amount = str(option.get("amount") or option.get("maxAmountRequired") or "")
        set_condition(status, previous, "Probed", True, "Validated", f"Endpoint returned 402 at price {amount}")
        before = obj.get("status") or {}
        keep = is_true(obj, "Probed") and before.get("probedPrice") == amount and before.get("probedAt")
        status.update(probedAt=before["probedAt"] if keep else now_rfc3339(), probedPrice=amount)

        auths = spec.get("preSignedAuths") or []
        if not auths:
            self.fail(status, previous, "AuthsLoaded", StageFailed("NoAuths", "spec.preSignedAuths is empty"))
            return
        set_condition(status, previous, "AuthsLoaded", True, "Loaded", f"Loaded {len(auths)} pre-signed auths from spec")
        status.update(totalSigned=len(auths), signerAddress=signer_address(auths[0]))

        owner = self.model_owner(obj)
        if owner:
            self.fail(status, previous, "Configured", StageFailed(
                "DuplicateModel", f"model {spec.get('model')} is already purchased by PurchaseRequest {owner}"))
            return
        extra = option.get("extra") or {}
        buyer_config = {
            "url": spec["endpoint"][:-len(CHAT_SUFFIX)] if spec["endpoint"].endswith(CHAT_SUFFIX) else spec["endpoint"],
            "network": payment.get("network"), "payTo": payment.get("payTo"), "price": payment.get("price"),
            "asset": payment.get("asset"), "assetSymbol": payment.get("assetSymbol"),
            "assetDecimals": payment.get("assetDecimals"),
            "assetTransferMethod": payment.get("assetTransferMethod") or extra.get("assetTransferMethod") or "eip3009",
            "eip712Name": payment.get("eip712Name") or extra.get("name", ""),
            "eip712Version": payment.get("eip712Version") or extra.get("version", ""),
            "remoteModel": spec.get("model"),
        }
        try:
            write_atomic(self.auths_dir / f"{name}.json", json.dumps(auths))
        except OSError as exc:
            self.fail(status, previous, "Configured", StageFailed("AuthsWriteError", str(exc)))
            return
        try:
            write_atomic(self.config_dir / f"{name}.json", json.dumps(buyer_config, indent=1))
        except OSError as exc:
            self.fail(status, previous, "Configured", StageFailed("ConfigWriteError", str(exc)))
            return
        self.buyer_reload()
        log(f"{name}: paid/{spec.get('model')} is in LiteLLM's static config (the real controller would "
            f"POST /model/new); LiteLLM here has no DB to add models at runtime")
        status.update(publicModel=f"paid/{spec.get('model')}", remaining=len(auths))
        set_condition(status, previous, "Configured", True, "Written", f"Wrote {len(auths)} auths to llm/x402-buyer-auths")
        self.stage_ready(obj, status, previous, fresh=True)

    def probe(self, spec: dict) -> dict:
        """POST the endpoint unpaid: it must answer 402 with an option matching spec.payment's price."""
        body = {"model": spec.get("model"), "messages": [{"role": "user", "content": "probe"}], "max_tokens": 1}
        try:
            resp = self.http.post(spec.get("endpoint", ""), json=body, timeout=PROBE_TIMEOUT_S, allow_redirects=False)
        except requests.RequestException as exc:
            raise StageFailed("ProbeError", f"probe of {spec.get('endpoint')} failed: {exc.__class__.__name__}: {exc}")
        if resp.status_code != 402:
            raise StageFailed("NotPaymentGated", f"expected 402, got {resp.status_code}")
        required = payment_requirements(resp)
        payment = spec.get("payment") or {}
        option = matching_option(required["accepts"], payment)
        amount = str(option.get("amount") or option.get("maxAmountRequired") or "")
        if not amount:
            raise StageFailed("InvalidPricing", "matching payment option has no amount")
        if amount != str(payment.get("price")):
            raise StageFailed("PricingMismatch", f"spec.price={payment.get('price')} but endpoint wants {amount}")
        return option

    def model_owner(self, obj: dict) -> str | None:
        """Another PurchaseRequest serving this model (Configured), or created earlier and not failed."""
        me, model = obj["metadata"], (obj.get("spec") or {}).get("model")
        mine = (me.get("creationTimestamp", ""), me["name"])
        for other in self.kube.list().get("items", []):
            meta = other["metadata"]
            if meta["name"] == me["name"] or (other.get("spec") or {}).get("model") != model:
                continue
            failed = any(c.get("status") == "False" and c.get("type") != "Ready"
                         for c in (other.get("status") or {}).get("conditions") or [])
            if is_true(other, "Configured") or (
                    not failed and (meta.get("creationTimestamp", ""), meta["name"]) < mine):
                return meta["name"]
        return None

    def stage_ready(self, obj: dict, status: dict, previous: list[dict], *, fresh: bool) -> None:
        name = obj["metadata"]["name"]
        want = len((obj.get("spec") or {}).get("preSignedAuths") or [])
        try:
            try:
                live = self.buyer_status()
            except (requests.RequestException, ValueError):
                if fresh:
                    raise
                time.sleep(0.5)  # once Ready, one slow answer does not make the sidecar "not ready"
                live = self.buyer_status()
            entry = live.get(name)
        except (requests.RequestException, ValueError) as exc:
            self.fail(status, previous, "Ready", StageFailed("SidecarNotReady", f"x402-buyer /status: {exc.__class__.__name__}"))
            return
        if entry is None:
            self.fail(status, previous, "Ready", StageFailed("SidecarNotReady", f"x402-buyer has not loaded {name}"))
            return
        remaining, spent = int(entry.get("remaining", 0)), int(entry.get("spent", 0))
        status.update(remaining=remaining, spent=spent)
        price = str(((obj.get("spec") or {}).get("payment") or {}).get("price", ""))
        if price.isdigit():
            status["totalSpent"] = str(spent * int(price))
        if fresh and remaining != want:
            self.fail(status, previous, "Ready", StageFailed(
                "RuntimeSyncing", f"waiting for runtime auth pool to reach {want} active auths"))
            return
        set_condition(status, previous, "Ready", True, "Reconciled", f"Sidecar: {remaining} remaining, {spent} spent")
        self.synced[name] = obj["metadata"].get("generation")

    def finalize(self, obj: dict) -> None:
        """Drain, then tear down the buyer files and let Kubernetes delete the object."""
        name, meta = obj["metadata"]["name"], obj["metadata"]
        if FINALIZER not in (meta.get("finalizers") or []):
            return
        try:
            entry = self.buyer_status().get(name) or {}
        except (requests.RequestException, ValueError) as exc:
            log(f"{name}: deleting, but the buyer is unreachable ({exc.__class__.__name__}); retrying")
            return
        remaining = int(entry.get("remaining", 0))
        if remaining > 0:
            status = json.loads(json.dumps(obj.get("status") or {}))
            previous = status.get("conditions") or []
            status.update(remaining=remaining, spent=int(entry.get("spent", 0)))
            set_condition(status, previous, "Deleting", True, "Draining",
                          f"waiting for {remaining} remaining auths to be spent before teardown")
            self.write_status(obj, status)
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
        if status == old or self.written.get(name) == (status, old):
            return
        body = dict(obj, status=status)
        for _ in range(5):
            try:
                updated = self.kube.replace_status(body)
            except Conflict:
                fresh = self.kube.get(name)
                if fresh is None or fresh["metadata"].get("generation") != obj["metadata"].get("generation"):
                    self.enqueue(name)
                    return
                body = dict(fresh, status=status)
                continue
            self.objects[name] = updated
            self.written[name] = (status, updated.get("status") or {})
            self.log_transitions(name, old, status)
            return
        self.enqueue(name)

    @staticmethod
    def log_transitions(name: str, old: dict, new: dict) -> None:
        before = {c["type"]: (c["status"], c.get("reason"), c.get("message")) for c in old.get("conditions") or []}
        for c in new.get("conditions") or []:
            if (before.get(c["type"]) or (None, None))[:2] != (c["status"], c.get("reason")):
                log(f"{name}: {c['type']}={c['status']} {c.get('reason')}: {c.get('message')}")


class Health(LoopbackHandler):
    listed: threading.Event

    def do_GET(self) -> None:
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
    threading.Thread(target=controller.sync_forever, daemon=True).start()
    log(f"watching purchaserequests in {args.namespace}; buyer {args.buyer_url}")
    controller.watch_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`buy.py process NAME | --all` (and `maintain`): the auto-refill reconcile and the default guardian.

Run every few minutes by the agent's scheduler (`scheduling.py`), which delivers its stdout to the user:
so it is idempotent, says nothing on stdout unless something changed, and exits 1 only when
something failed. A purchase at or below its refill threshold gets the refill of `refilling.py`
(shared with `refill NAME`): §13.2 with `buy`'s checks before signing and the spend caps; a refill
that cannot be made now (wallet short, cost cap, spend cap, converging) is skipped with its reason.
The guardian keeps an agent that adopted `paid/<id>` from being bricked when that pool runs dry,
whether no refill is configured, possible, or allowed by a spend cap.
"""
from __future__ import annotations

import contextlib
import time
from argparse import Namespace
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .. import purchases, refill, refilling
from ..adoption import PAID_PREFIX, restore_previous_default
from ..agent.record import AdoptionRecord
from ..errors import (AgentConfigError, BuyError, DefaultNotChanged, ExitCode, Interrupted, TransportError,
                      UsageError, X402BuyerError)
from ..peers import Peers
from ..result import Context, Result
from ..vouchers import SIGNING_WORKERS

BUYER_UNAVAILABLE = "x402-buyer status is unavailable; cannot make safe refill decisions."
REFILL_WORKERS = 4          # refills in flight at once (bench/scale.py: 30 refills)
REFILL_SIGNING_WORKERS = 2  # signatures in flight per refill beside others: REFILL_WORKERS x 2 at the signer
EVENT_CHANGED_ELSEWHERE = "default_changed_elsewhere"
# Skips that happen every run by design: not worth a line on stderr from cron every five minutes.
_ROUTINE = ("auto-refill disabled", "auto-refill count is not configured", "remaining ")


def run(ctx: Context, args: Namespace) -> Result:
    if bool(args.name) == bool(args.all):
        raise UsageError("give one purchase NAME or --all", hint="buy.py process --all")
    return process(Peers(ctx), None if args.all else args.name)


def run_maintain(ctx: Context, args: Namespace) -> Result:
    ctx.notify("maintain is deprecated; running process --all")
    return process(Peers(ctx), None)


def process(peers: Peers, name: str | None) -> Result:
    """Reconcile `name` (or every purchase), then guard the agent's default; one Result."""
    try:
        live = peers.buyer.status()
    except (X402BuyerError, TransportError) as err:
        raise X402BuyerError(BUYER_UNAVAILABLE, hint=f"check the x402-buyer at {peers.settings.x402_buyer_url} "
                         f"({err.message})") from err
    if name:  # one small GET; the list only to name the purchases that exist when there is none
        items = [peers.kube.get_or_none(name) or purchases.find(peers.kube.list(), name)]
    else:
        items = sorted(peers.kube.list(), key=lambda o: o["metadata"]["name"])
    actions = _reconcile_all(peers, items, live)
    refilled = {a["name"] for a in actions if a["action"] == "refilled"}
    guardian = _guard_default(peers, live, items, {a["name"]: a for a in actions}, only=name)
    failures = [f"{a['name']}: {a['reason']}" for a in actions if a["action"] == "failed"]
    if guardian and guardian["action"] == "failed":
        failures.append(f"default guardian: {guardian['reason']}")
    data: dict[str, Any] = {
        "purchases": actions, "guardian": guardian, "refilled": len(refilled),
        "changed": bool(refilled) or bool(guardian and guardian.get("changed")),
    }
    if failures:
        err = BuyError("process failed: " + "; ".join(failures), code="process_failed",
                       hint="fix the cause; `buy.py status NAME` shows a purchase in detail")
        return Result("process", data, ExitCode.FAILED, err)
    return Result("process", data)


def _reconcile_all(peers: Peers, items: list[dict], live: dict) -> list[dict[str, Any]]:
    """Every purchase's action, in the order of `items`. The refills that are due run at most
    REFILL_WORKERS at a time (each signing through fewer connections, so the signer sees the same
    load as one refill); what each says on stderr is held and said in the order of `items`, so the
    output is the same whichever refill finishes first."""
    plans = [(obj, live.get(obj["metadata"]["name"])) for obj in items]
    due = [i for i, (obj, entry) in enumerate(plans)
           if entry is not None and refill.plan_refill(int(entry.get("remaining") or 0),
                                                       (obj.get("spec") or {}).get("autoRefill")).refill]
    if len(due) < 2:
        return [_reconcile_one(peers, obj, entry) for obj, entry in plans]
    _build_shared_clients(peers)
    views = {i: Held(peers) for i in due}
    workers = min(REFILL_WORKERS, len(due))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refill")
    futures = {i: pool.submit(_reconcile_one, views[i].peers, *plans[i], signing_workers=REFILL_SIGNING_WORKERS)
               for i in due}
    actions: list[dict[str, Any]] = []
    try:
        for i, (obj, entry) in enumerate(plans):
            if i in futures:
                actions.append(futures[i].result())
                views[i].say()
            else:
                actions.append(_reconcile_one(peers, obj, entry))
    except Interrupted as exc:  # nothing new starts; the refills in flight end (each has its deadlines)
        pool.shutdown(wait=True, cancel_futures=True)
        finished = [futures[i].result() for i in due
                    if futures[i].done() and not futures[i].cancelled() and futures[i].exception() is None]
        if any(action["action"] == "refilled" for action in finished):
            exc.data = {**exc.data, "purchases": finished}
            exc.note = ("the refills already running when it came were finished and written (reported here); "
                        "no other purchase was touched")
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return actions


def _build_shared_clients(peers: Peers) -> None:
    """Build the clients every refill shares before the threads start (each would otherwise build its
    own), and the wallet address once."""
    for build in (lambda: peers.session, lambda: peers.kube, lambda: peers.chain, lambda: peers.buyer,
                  lambda: peers.signer.address(), lambda: peers.agent_config):
        with contextlib.suppress(BuyError):  # a failure is each refill's to report
            build()


class Held:
    """A view of `peers` for one refill that runs beside others: its notes and warnings are held
    until `say` (in the order of the purchases); its signing progress is not shown."""

    def __init__(self, peers: Peers) -> None:
        self.lines: list[tuple[Callable[[str], None], str]] = []
        ctx = peers.ctx
        held = Context(settings=ctx.settings, notify=lambda text: self.lines.append((ctx.notify, text)),
                       warn=lambda text: self.lines.append((ctx.warn, text)), progress=lambda *_: None,
                       stream=None)
        self.peers = peers.sharing(held)

    def say(self) -> None:
        for say, text in self.lines:
            say(text)


def _skip(peers: Peers, name: str, reason: str) -> dict[str, Any]:
    if not reason.startswith(_ROUTINE):
        peers.ctx.notify(f"{name}: {reason}")
    return {"name": name, "action": "skipped", "reason": reason}


def _reconcile_one(peers: Peers, obj: dict, entry: dict | None, *,
                   signing_workers: int = SIGNING_WORKERS) -> dict[str, Any]:
    name = obj["metadata"]["name"]
    if entry is None:
        return _skip(peers, name, "not live in x402-buyer status yet; skipping")
    try:
        return _reconcile(peers, obj, entry, signing_workers)
    except BuyError as err:
        peers.ctx.notify(f"{name}: reconcile failed: {err.message}")
        return {"name": name, "action": "failed", "reason": f"reconcile failed: {err.message}",
                "error": {"code": err.code, "message": err.message}}


def _reconcile(peers: Peers, obj: dict, entry: dict, signing_workers: int) -> dict[str, Any]:
    """§13.2 for one purchase: a refill when the pool is at or below the threshold (refilling.py)."""
    plan = refill.plan_refill(int(entry.get("remaining") or 0), (obj.get("spec") or {}).get("autoRefill"))
    if not plan.refill:
        return _skip(peers, obj["metadata"]["name"], plan.reason)
    action = refilling.refill(peers, obj, entry, wanted=plan.count, reason=plan.reason, by="process",
                              signing_workers=signing_workers)
    if action["action"] == "skipped":
        peers.ctx.notify(f"{action['name']}: {action['reason']}")
    return action


def _spendable(obj: dict | None, entry: dict | None) -> tuple[bool, str]:
    """Whether the purchase still has a voucher the buyer can spend, and why not."""
    if obj is None:
        return False, "its PurchaseRequest no longer exists"
    remaining = int((entry or {}).get("remaining") or 0)
    if remaining == 0:
        return False, "its pool is spent: remaining 0"
    pool = (obj.get("spec") or {}).get("preSignedAuths") or []
    expired, _ = purchases.pool_expiry(purchases.active_tail(pool, remaining, clamp=True), time.time())
    if expired >= remaining:
        return False, f"all {remaining} remaining vouchers have expired"
    return True, ""


def _guard_default(peers: Peers, live: dict, items: list[dict], actions: dict[str, dict],
                   only: str | None) -> dict[str, Any] | None:
    """Restore the previous default when the adopted paid/<id> can no longer pay; None if not concerned.
    A pool that a spend cap keeps from refilling is a pool that cannot be refilled."""
    try:
        agent, config = peers.agent, peers.agent_config
        try:
            snapshot, unreadable = agent.read(config), None
        except AgentConfigError as err:  # only a concern if there is an adoption to guard
            snapshot, unreadable = None, err
        current = agent.current_default(snapshot) if snapshot else None
        record = agent.record(config)
        last = record.last(current, snapshot.identity if snapshot else None)
        if not last or not str(last.get("adopted") or "").startswith(PAID_PREFIX):
            return None
        purchase = last.get("purchase")
        if only is not None and purchase != only:
            return None
        if unreadable is not None:
            raise unreadable
        base = {"adopted": last["adopted"], "purchase": purchase, "current": current, "changed": False}
        if current != last["adopted"]:
            return {**base, "action": "left_alone",
                    "reason": f"model.default is {current!r}, set by someone else since buy-x402 adopted "
                              f"{last['adopted']!r}; left alone",
                    "recorded": _record_once(record, last, current)}
        action = actions.get(purchase or "") or {}
        if action.get("action") == "refilled":
            return None
        entry = live.get(purchase or "")
        obj = next((o for o in items if o["metadata"]["name"] == purchase), None)
        if obj is None:
            obj = peers.kube.get_or_none(purchase) if purchase else None
        if obj is not None and entry is None:
            return None  # not live yet (converging): not evidence of an empty pool
        ok, why = _spendable(obj, entry)
        if ok:
            return None
        if action.get("capped") and action.get("action") == "skipped":
            why += f"; no refill: {action['reason']}"
        peers.ctx.notify(f"{last['adopted']} has no spendable vouchers ({why}) and no refill was made; "
                         f"restoring the previous default {last.get('previous')!r}")
        restored = restore_previous_default(peers)
    except DefaultNotChanged as err:
        return {"action": "failed", "changed": False, "reason": f"could not restore the previous default: {err.message}"}
    except BuyError as err:
        return {"action": "failed", "changed": False, "reason": err.message}
    return {**base, "action": "restored", "changed": True, "model": restored["model"],
            "reason": f"{last['adopted']} had no spendable vouchers ({why})", "restore": restored}


def _record_once(record: AdoptionRecord, last: dict, current: str | None) -> bool:
    """Record "someone else changed the default" once per adoption and value, not every cron run."""
    key = {"adopted": last.get("adopted"), "adoption_at": last.get("at"), "current": current}
    for event in record.read().get("events") or []:
        if event.get("kind") == EVENT_CHANGED_ELSEWHERE and all(event.get(k) == v for k, v in key.items()):
            return False
    record.note(EVENT_CHANGED_ELSEWHERE, purchase=last.get("purchase"), **key)
    return True


__all__ = ["run", "run_maintain", "process", "BUYER_UNAVAILABLE"]

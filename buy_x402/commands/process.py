"""`buy.py process NAME | --all` (and `maintain`): the auto-refill reconcile and the default guardian.

Run every few minutes by the agent's scheduler (`scheduling.py`), which delivers its stdout to the user:
so it is idempotent, says nothing on stdout unless something changed, and exits 1 only when
something failed. Refills follow obol-buy-x402.md §13.2, plus the fix of §18.6 (the re-probed
price is written to `spec.payment.price`, so the controller's probe does not flag PricingMismatch).
Unlike §13.2, a seller that cannot be probed fails the refill (exit 1) rather than signing at the
stored price: vouchers for a price nobody confirmed may all be refused, and the wallet is committed.
A refill applies `buy`'s rules before signing: a seller the cluster's buyer can pay (cluster.py) and
a server-side dry run of the exact write; unspent vouchers signed at a price the seller no longer
asks are dropped (purchases.stale_vouchers).
The guardian keeps an agent that adopted `paid/<id>` from being bricked when that pool runs dry.
"""
from __future__ import annotations

import time
from argparse import Namespace
from typing import Any

from .. import cluster, purchases, refill, x402
from ..adoption import PAID_PREFIX, restore_previous_default
from ..agent.record import AdoptionRecord
from ..amounts import auth_expiry, format_amount
from ..errors import (AgentConfigError, BuyError, DefaultNotChanged, ExitCode, KubeApiError, PurchaseError,
                      TransportError, UsageError, X402BuyerError)
from ..offer import PaymentOption, PaymentRequired
from ..peers import Peers
from ..result import Context, Result
from ..vouchers import dry_run_write, placeholder_auths, preflight, presign, replace_with_retry

BUYER_UNAVAILABLE = "x402-buyer status is unavailable; cannot make safe refill decisions."
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
    items = [purchases.find(peers.kube.list(), name)] if name else sorted(peers.kube.list(),
                                                                           key=lambda o: o["metadata"]["name"])
    actions = [_reconcile_one(peers, obj, live.get(obj["metadata"]["name"])) for obj in items]
    refilled = {a["name"] for a in actions if a["action"] == "refilled"}
    guardian = _guard_default(peers, live, items, refilled, only=name)
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


def _skip(peers: Peers, name: str, reason: str) -> dict[str, Any]:
    if not reason.startswith(_ROUTINE):
        peers.ctx.notify(f"{name}: {reason}")
    return {"name": name, "action": "skipped", "reason": reason}


def _reconcile_one(peers: Peers, obj: dict, entry: dict | None) -> dict[str, Any]:
    name = obj["metadata"]["name"]
    if entry is None:
        return _skip(peers, name, "not live in x402-buyer status yet; skipping")
    try:
        return _reconcile(peers, obj, entry)
    except BuyError as err:
        peers.ctx.notify(f"{name}: reconcile failed: {err.message}")
        return {"name": name, "action": "failed", "reason": f"reconcile failed: {err.message}",
                "error": {"code": err.code, "message": err.message}}


def _matching_option(offer: PaymentRequired, payment: dict) -> PaymentOption | None:
    """The seller's option this purchase pays with: same asset, payTo and chain."""
    for option in offer.accepts:
        if (option.payable and option.chain.name == payment.get("network")
                and option.asset.lower() == str(payment.get("asset") or "").lower()
                and option.pay_to.lower() == str(payment.get("payTo") or "").lower()):
            return option
    return None


def _reconcile(peers: Peers, obj: dict, entry: dict) -> dict[str, Any]:
    """§13.2 for one purchase: plan, converged?, re-probe, cost cap, balance, sign, replace."""
    name = obj["metadata"]["name"]
    spec = obj.get("spec") or {}
    policy = spec.get("autoRefill")
    remaining = int(entry.get("remaining") or 0)
    plan = refill.plan_refill(remaining, policy)
    if not plan.refill:
        return _skip(peers, name, plan.reason)
    try:
        purchases.check_topup_allowed(obj, entry)
    except PurchaseError as err:
        return _skip(peers, name, f"{err.message}; skipping")
    active = purchases.active_tail(spec.get("preSignedAuths") or [], remaining)
    if len(active) + plan.count > purchases.MAX_POOL:
        return _skip(peers, name, f"{len(active)} active vouchers + {plan.count} would exceed the pool maximum "
                                  f"of {purchases.MAX_POOL}; skipping")

    payment = dict(spec.get("payment") or {})
    offer = x402.probe(peers.session, spec.get("endpoint") or "", spec.get("model"))
    option = _matching_option(offer, payment)
    if option is None:
        raise PurchaseError(f"the seller no longer offers this purchase's payment option ({payment.get('asset')} "
                            f"on {payment.get('network')} to {payment.get('payTo')}); no vouchers were signed",
                            hint=f"buy.py probe {spec.get('endpoint')}")
    decimals, symbol = payment.get("assetDecimals"), payment.get("assetSymbol")

    def fmt(atomic: int) -> str:
        return format_amount(atomic, decimals, symbol)

    price = option.amount
    stored = int(payment.get("price") or 0)
    if price != stored:
        peers.ctx.notify(f"{name}: seller price moved {fmt(stored)} → {fmt(price)}; refilling at the seller's quote")
    cap = policy.get("maxUnitPrice")
    if cap not in (None, "") and price > int(cap):
        return _skip(peers, name, f"seller price {fmt(price)} exceeds cost cap {fmt(int(cap))}; skipping refill")
    wallet = peers.signer.address()
    balance = peers.chain.balance_of(option.chain.name, option.asset, wallet)
    cost = plan.count * price
    if balance < cost:
        return _skip(peers, name, f"wallet balance {fmt(balance)} below refill cost {fmt(cost)} "
                                  f"({plan.count} × {fmt(price)}); skipping")
    # No sponsoring extensions: the unspent tail may hold permits with the nonces a new batch would reuse.
    signing_plan = preflight(peers, option, wallet)

    valid_before = auth_expiry(peers.settings.auth_ttl, int(time.time()))
    cluster.check_spendable(offer, option, network=str(payment.get("network") or ""),
                            url=purchases.chat_endpoint(spec.get("endpoint") or ""))
    new_payment = purchases.merge_payment(payment, {**payment, "price": str(price)})
    stale = purchases.stale_vouchers(active, new_payment)
    if stale:
        peers.ctx.notify(f"{name}: dropping {len(stale)} unspent voucher(s) signed at another price: the seller "
                         f"now asks {fmt(price)} and would refuse them, blocking the pool")
    placeholders = placeholder_auths(option, wallet, plan.count, valid_before, offer, signing_plan)
    dry_run_write(peers, purchases.topup_object(obj, new_auths=placeholders, live_remaining=entry["remaining"],
                                                payment=new_payment, auto_refill=policy), replace=True)
    auths = presign(peers, option, wallet, plan.count, valid_before, offer, signing_plan)
    written = replace_with_retry(peers, name, obj, entry, auths, new_payment, policy)
    pool = len(written["spec"]["preSignedAuths"])
    return {"name": name, "action": "refilled", "reason": plan.reason, "count": plan.count,
            "price": {"atomic": str(price), "display": fmt(price)},
            "price_moved": None if price == stored else {"from": str(stored), "to": str(price)},
            "pool": pool, "dropped": len(stale), "cost": {"atomic": str(cost), "display": fmt(cost)}}


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


def _guard_default(peers: Peers, live: dict, items: list[dict], refilled: set[str],
                   only: str | None) -> dict[str, Any] | None:
    """Restore the previous default when the adopted paid/<id> can no longer pay; None if not concerned."""
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
        if purchase in refilled:
            return None
        entry = live.get(purchase or "")
        obj = next((o for o in items if o["metadata"]["name"] == purchase), None)
        if obj is None:
            obj = _get_or_none(peers, purchase)
        if obj is not None and entry is None:
            return None  # not live yet (converging): not evidence of an empty pool
        ok, why = _spendable(obj, entry)
        if ok:
            return None
        peers.ctx.notify(f"{last['adopted']} has no spendable vouchers ({why}) and no refill was made; "
                         f"restoring the previous default {last.get('previous')!r}")
        restored = restore_previous_default(peers)
    except DefaultNotChanged as err:
        return {"action": "failed", "changed": False, "reason": f"could not restore the previous default: {err.message}"}
    except BuyError as err:
        return {"action": "failed", "changed": False, "reason": err.message}
    return {**base, "action": "restored", "changed": True, "model": restored["model"],
            "reason": f"{last['adopted']} had no spendable vouchers ({why})", "restore": restored}


def _get_or_none(peers: Peers, name: str | None) -> dict | None:
    if not name:
        return None
    try:
        return peers.kube.get(name)
    except KubeApiError as err:
        if err.reason == "NotFound":
            return None
        raise


def _record_once(record: AdoptionRecord, last: dict, current: str | None) -> bool:
    """Record "someone else changed the default" once per adoption and value, not every cron run."""
    key = {"adopted": last.get("adopted"), "adoption_at": last.get("at"), "current": current}
    for event in record.read().get("events") or []:
        if event.get("kind") == EVENT_CHANGED_ELSEWHERE and all(event.get(k) == v for k, v in key.items()):
            return False
    record.note(EVENT_CHANGED_ELSEWHERE, purchase=last.get("purchase"), **key)
    return True


__all__ = ["run", "run_maintain", "process", "BUYER_UNAVAILABLE"]

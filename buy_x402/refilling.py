"""One refill of a purchase's voucher pool: what `process` does at the threshold and `refill` does now.

obol-buy-x402.md §13.2, plus: the re-probed price is written to `spec.payment.price` (§18.6, so the
controller's probe does not flag PricingMismatch); a seller that cannot be probed fails the refill
rather than signing at the stored price (vouchers for a price nobody confirmed may all be refused);
`buy`'s rules before signing (a seller the cluster's buyer can pay, cluster.py, and a server-side dry
run of the exact write); unspent vouchers signed at a price the seller no longer asks are dropped
(purchases.stale_vouchers); and the spend caps (caps.py): only what fits under `maxTotal` and
`maxSpendPerDay` is signed, and each signing is recorded before it happens (spending.py).

A refill that is not due or not possible now is a skip with its one-line reason (`process` runs every
few minutes and says it on stderr); a failure raises. Only the final PUT commits anything.
"""
from __future__ import annotations

import time
from typing import Any

from . import caps, cluster, purchases, spending, x402
from .amounts import auth_expiry, format_amount
from .errors import PurchaseError
from .offer import PaymentOption, PaymentRequired
from .peers import Peers
from .vouchers import SIGNING_WORKERS, dry_run_write, placeholder_auths, preflight, presign, replace_with_retry


def skipped(name: str, reason: str, **facts: Any) -> dict[str, Any]:
    return {"name": name, "action": "skipped", "reason": reason, **facts}


def matching_option(offer: PaymentRequired, payment: dict) -> PaymentOption | None:
    """The seller's option this purchase pays with: same asset, payTo and chain."""
    for option in offer.accepts:
        if (option.payable and option.chain.name == payment.get("network")
                and option.asset.lower() == str(payment.get("asset") or "").lower()
                and option.pay_to.lower() == str(payment.get("payTo") or "").lower()):
            return option
    return None


def refill(peers: Peers, obj: dict, entry: dict, *, wanted: int, reason: str, by: str,
           signing_workers: int = SIGNING_WORKERS) -> dict[str, Any]:
    """Sign up to `wanted` vouchers for purchase `obj` (live `entry`) and write them; the action taken.

    `reason` says why a refill is made (kept in the result); `by` names the command in the signing record;
    `signing_workers` bounds its signatures in flight (`process` runs several refills at once).
    """
    name = obj["metadata"]["name"]
    spec = obj.get("spec") or {}
    policy = spec.get("autoRefill") or {}
    try:
        purchases.check_topup_allowed(obj, entry)
    except PurchaseError as err:
        return skipped(name, f"{err.message}; skipping")
    active = purchases.active_tail(spec.get("preSignedAuths") or [], entry["remaining"])
    if len(active) + wanted > purchases.MAX_POOL:
        return skipped(name, f"{len(active)} active vouchers + {wanted} would exceed the pool maximum of "
                             f"{purchases.MAX_POOL}; skipping")
    limits = caps.Caps.of(policy, name)  # a broken stored cap fails before anything is asked of anyone

    payment = dict(spec.get("payment") or {})
    offer = x402.probe(peers.session, spec.get("endpoint") or "", spec.get("model"))
    option = matching_option(offer, payment)
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
        return skipped(name, f"seller price {fmt(price)} exceeds cost cap {fmt(int(cap))}; skipping refill")

    namespace = spending.namespace_of(peers, obj)
    ledger = spending.open_ledger(peers, required=limits.any)
    use = spending.usage_of(obj, entry, spending.record_of(ledger, obj, namespace), price)
    room = caps.fit(limits, use, price, wanted, fmt)
    cap_facts = caps.report(limits, use, fmt) if limits.any else None
    if room.count == 0:
        return skipped(name, f"{room.reason}; no voucher signed", caps=cap_facts, capped=True)
    count = room.count
    if count < wanted:
        peers.ctx.notify(f"{name}: {room.reason}; signing {count} of {wanted} vouchers")

    wallet = peers.signer.address()
    balance = peers.chain.balance_of(option.chain.name, option.asset, wallet)
    cost = count * price
    if balance < cost:
        return skipped(name, f"wallet balance {fmt(balance)} below refill cost {fmt(cost)} "
                             f"({count} × {fmt(price)}); skipping")
    # No sponsoring extensions: the unspent tail may hold permits with the nonces a new batch would reuse.
    signing_plan = preflight(peers, option, wallet)

    now = int(time.time())
    valid_before = auth_expiry(peers.settings.auth_ttl, now)
    cluster.check_spendable(offer, option, network=str(payment.get("network") or ""),
                            url=purchases.chat_endpoint(spec.get("endpoint") or ""))
    new_payment = purchases.merge_payment(payment, {**payment, "price": str(price)})
    stale = purchases.stale_vouchers(active, new_payment)
    if stale:
        peers.ctx.notify(f"{name}: dropping {len(stale)} unspent voucher(s) signed at another price: the seller "
                         f"now asks {fmt(price)} and would refuse them, blocking the pool")
    signing = caps.new_signing(count, price, by=by, now=now)
    placeholders = placeholder_auths(option, wallet, count, valid_before, offer, signing_plan, signed_at=now)
    dry_run_write(peers, purchases.topup_object(obj, new_auths=placeholders, live_remaining=entry["remaining"],
                                                payment=new_payment, auto_refill=policy, signing=signing),
                  replace=True)

    reservation = spending.reserve(ledger, obj, entry, signing, limits=limits, price=price, fmt=fmt,
                                   namespace=namespace, notify=peers.ctx.notify)
    try:
        auths = presign(peers, option, wallet, count, valid_before, offer, signing_plan, signing_workers,
                        signed_at=now)
        written = replace_with_retry(peers, name, obj, entry, auths, new_payment, policy, signing=signing,
                                     recheck=spending.conflict_recheck(ledger, signing, limits=limits, price=price,
                                                                       fmt=fmt, namespace=namespace))
    except BaseException:
        reservation.release()
        raise
    pool = len(written["spec"]["preSignedAuths"])
    result: dict[str, Any] = {
        "name": name, "action": "refilled", "reason": reason, "count": count, "wanted": wanted,
        "price": {"atomic": str(price), "display": fmt(price)},
        "price_moved": None if price == stored else {"from": str(stored), "to": str(price)},
        "pool": pool, "dropped": len(stale), "cost": {"atomic": str(cost), "display": fmt(cost)},
        "capped": room.reason if count < wanted else None,
    }
    if limits.any:
        after = spending.usage_of(written, entry, spending.record_of(ledger, written, namespace), price)
        result["caps"] = caps.report(limits, after, fmt)
    return result


__all__ = ["refill", "skipped", "matching_option"]

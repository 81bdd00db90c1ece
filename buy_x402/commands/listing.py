"""`buy.py list` and `buy.py status NAME`: what the agent bought and whether it can still pay.

Both read the PurchaseRequests (the truth of what exists) and the x402-buyer's `/status` (the live
pool); a buyer that does not answer is shown as such, never as an empty pool. The spend caps and how
much of each is used (caps.py) are in `status` (text and JSON) and under the `list` table; `list --json`
stays the host's exact rows.
"""
from __future__ import annotations

import time
from argparse import Namespace
from typing import Any

from .. import purchases, spending
from ..amounts import format_amount
from ..errors import BuyError
from ..peers import Peers
from ..result import Context, Result

BUYER_DOWN = "x402-buyer status is unavailable; remaining/spent come from the PurchaseRequest status and may be stale"


def run_list(ctx: Context, args: Namespace) -> Result:
    peers = Peers(ctx)
    items = sorted(peers.kube.list(), key=lambda o: o["metadata"]["name"])
    live = peers.buyer.try_status()
    if live is None and items:
        ctx.warn(BUYER_DOWN)
    rows = [purchases.list_row(obj, (live or {}).get(obj["metadata"]["name"])) for obj in items]
    capped = [(obj, row) for obj, row in zip(items, rows) if _has_caps(obj)]
    ledger = spending.ledger_for_reading(peers) if capped else None
    caps = {row["name"]: _cap_facts(peers, obj, (live or {}).get(row["name"]), row, ledger) for obj, row in capped}
    return Result("list", {"purchases": rows, "caps": caps})


def _has_caps(obj: dict) -> bool:
    policy = (obj.get("spec") or {}).get("autoRefill") or {}
    return any(policy.get(key) not in (None, "") for key in ("maxTotal", "maxSpendPerDay"))


def _cap_facts(peers: Peers, obj: dict, entry: dict | None, row: dict, ledger) -> dict[str, Any]:
    """The purchase's caps and their use (read-only); an unreadable source is shown, never a guess."""
    def fmt(atomic: int) -> str:
        return format_amount(atomic, row.get("assetDecimals"), row.get("assetSymbol"))
    try:
        return spending.cap_facts(obj, entry, ledger, namespace=spending.namespace_of(peers, obj), fmt=fmt)
    except BuyError as err:
        return {"error": err.message}


def _agent_default(peers: Peers, alias: str) -> dict[str, Any]:
    """Whether the model the agent chats with is this purchase's paid/<id> (read-only; never fails status)."""
    try:
        agent, config = peers.agent, peers.agent_config
        current = agent.current_default(agent.read(config))
    except BuyError as err:
        return {"model": None, "is_this_purchase": False, "error": err.message}
    return {"model": current, "is_this_purchase": current == alias, "config": str(config.path)}


def run_status(ctx: Context, args: Namespace) -> Result:
    peers = Peers(ctx)
    obj = peers.kube.get_or_none(args.name) or purchases.find(peers.kube.list(), args.name)
    live = peers.buyer.try_status()
    entry = (live or {}).get(args.name)
    row = purchases.list_row(obj, entry)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    now = time.time()
    active = purchases.active_tail(spec.get("preSignedAuths") or [], row["remaining"], clamp=True)
    expired, earliest = purchases.pool_expiry(active, now)
    if live is None:
        ctx.warn(BUYER_DOWN)
    elif entry is None:
        ctx.warn(f"{args.name} is not live in x402-buyer status yet; its vouchers cannot be spent until it is")
    if expired:
        ctx.warn(f"{expired} of {row['remaining']} remaining vouchers of {args.name} have expired and cannot "
                 f"be spent; top up with `buy.py buy {args.name} ...`")
    data: dict[str, Any] = {
        "purchase": row,
        "namespace": (obj.get("metadata") or {}).get("namespace"),
        "serving": purchases.is_serving(obj),
        "conditions": [{"type": t, "status": s, "reason": r, "message": m}
                       for t, s, r, m in purchases.condition_summary(obj)],
        "generation": (obj.get("metadata") or {}).get("generation"),
        "observedGeneration": status.get("observedGeneration"),
        "autoRefill": spec.get("autoRefill") or {"enabled": False},
        "expiry": {"expired": expired, "earliest": earliest,
                   "earliest_in_s": None if earliest is None else int(earliest - now)},
        "buyer": {"running": live is not None, "live": entry is not None},
        "default": _agent_default(peers, row["alias"]),
        "caps": _cap_facts(peers, obj, entry, row, spending.ledger_for_reading(peers)),
    }
    return Result("status", data)


__all__ = ["run_list", "run_status"]

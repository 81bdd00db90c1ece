"""`buy.py list` and `buy.py status NAME`: what the agent bought and whether it can still pay.

Both read the PurchaseRequests (the truth of what exists) and the x402-buyer's `/status` (the live
pool); a buyer that does not answer is shown as such, never as an empty pool.
"""
from __future__ import annotations

import time
from argparse import Namespace
from typing import Any

from .. import hermes, purchases
from ..errors import BuyError, PurchaseError
from ..result import Context, Result
from .common import Peers

BUYER_DOWN = "x402-buyer status is unavailable; remaining/spent come from the PurchaseRequest status and may be stale"


def run_list(ctx: Context, args: Namespace) -> Result:
    peers = Peers(ctx)
    items = sorted(peers.kube.list(), key=lambda o: o["metadata"]["name"])
    live = peers.buyer.try_status()
    if live is None and items:
        ctx.warn(BUYER_DOWN)
    rows = [purchases.list_row(obj, (live or {}).get(obj["metadata"]["name"])) for obj in items]
    return Result("list", {"purchases": rows})


def _unknown(name: str, items: list[dict]) -> PurchaseError:
    names = sorted(o["metadata"]["name"] for o in items)
    if names:
        return PurchaseError(f"no purchase named {name!r}; existing purchases: {', '.join(names)}",
                             hint="buy.py list", data={"name": name, "purchases": names})
    return PurchaseError(f"no purchase named {name!r}; there are no purchases in this namespace",
                         hint="buy one: buy.py buy NAME --endpoint URL --model ID",
                         data={"name": name, "purchases": []})


def find_purchase(peers: Peers, name: str) -> dict:
    """The PurchaseRequest `name`, or PurchaseError naming the ones that exist (exit 1)."""
    items = peers.kube.list()
    obj = next((o for o in items if o["metadata"]["name"] == name), None)
    if obj is None:
        raise _unknown(name, items)
    return obj


def _agent_default(peers: Peers, alias: str) -> dict[str, Any]:
    """Whether the model Hermes chats with is this purchase's paid/<id> (read-only; never fails status)."""
    try:
        cfg = peers.hermes_config
        current = hermes.current_model(hermes.load_snapshot(cfg).data)
    except BuyError as err:
        return {"model": None, "is_this_purchase": False, "error": err.message}
    return {"model": current, "is_this_purchase": current == alias, "config": str(cfg.path)}


def run_status(ctx: Context, args: Namespace) -> Result:
    peers = Peers(ctx)
    obj = find_purchase(peers, args.name)
    live = peers.buyer.try_status()
    entry = (live or {}).get(args.name)
    row = purchases.list_row(obj, entry)
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    pool = spec.get("preSignedAuths") or []
    active = pool[len(pool) - min(row["remaining"], len(pool)):] if row["remaining"] else []
    now = time.time()
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
    }
    return Result("status", data)


__all__ = ["run_list", "run_status", "find_purchase"]

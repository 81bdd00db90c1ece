"""`buy.py audit [NAME]`: every voucher's state on chain against the x402-buyer's count.

Money truth comes from the chain, not from any one party's word: the buyer says how many vouchers it
spent, the seller says it settled, the chain says which nonces are used. The reads are batched
JSON-RPC calls with bounded concurrency (`ChainClient.batch`), one log query per token and wallet to
tell settlements from cancellations, so a namespace with hundreds of purchases stays cheap.
What it can and cannot see is in `buy_x402/voucher_states.py`.
"""
from __future__ import annotations

import time
from argparse import Namespace

from .. import voucher_states, purchases
from ..peers import Peers
from ..result import Context, Result


def run(ctx: Context, args: Namespace) -> Result:
    peers = Peers(ctx)
    items = sorted(peers.kube.list(), key=lambda o: o["metadata"]["name"])
    if args.name:
        items = [purchases.find(items, args.name)]
    live = peers.buyer.try_status()
    if live is None and items:
        ctx.warn("the x402-buyer does not answer: what it holds is taken from each PurchaseRequest's status, "
                 "which may be stale")
    entries = {obj["metadata"]["name"]: voucher_states.entries_of(obj) for obj in items}
    created = [t for t in (voucher_states.created_at(obj) for obj in items) if t is not None]
    flat = [entry for group in entries.values() for entry in group]
    for warning in voucher_states.read_states(peers.chain, flat, now=time.time(),
                                      since=min(created) if len(created) == len(items) and created else None):
        ctx.warn(warning)
    rows = [voucher_states.audit_row(obj, (live or {}).get(obj["metadata"]["name"]), entries[obj["metadata"]["name"]])
            for obj in items]
    for row, obj in zip(rows, items):
        row["alias"] = purchases.list_row(obj, (live or {}).get(row["name"]))["alias"]
        row["money"] = _money_of(obj)
    return Result("audit", {"purchases": rows, "ok": all(r["ok"] for r in rows),
                            "discrepancies": sum(len(r["discrepancies"]) for r in rows),
                            "vouchers": len(flat), "buyer_answered": live is not None})


def _money_of(obj: dict) -> dict:
    row = purchases.list_row(obj, None)
    return {"symbol": row["assetSymbol"], "decimals": row["assetDecimals"]}

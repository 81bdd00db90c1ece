"""`buy.py refill NAME [--count N]`: top a purchase's pool up now.

The refill `process` makes at the threshold (refilling.py), without waiting for the threshold: the
same checks before signing (a converged purchase the buyer serves, the seller's price re-probed, the
cost cap, the spend caps, the wallet's balance, a seller the cluster can pay, a server-side dry run)
and the same write. What `process` would skip is a refusal here (exit 1, nothing signed). The count is
`--count`, else the purchase's auto-refill count; a spend cap may let fewer be signed, which is said.
Success means the PurchaseRequest holds the new vouchers (the PUT answered); the controller loads them
into the x402-buyer within seconds, which `status NAME` shows.
"""
from __future__ import annotations

from argparse import Namespace

from .. import purchases, refilling
from ..errors import PurchaseError, TransportError, UsageError, X402BuyerError
from ..peers import Peers
from ..refill import MAX_REFILL_COUNT
from ..result import Context, Result
from ..vouchers import SIGNING_WORKERS

_SKIP_TAILS = ("; skipping refill", "; skipping", "; no voucher signed")


def run(ctx: Context, args: Namespace) -> Result:
    if args.count is not None and not 1 <= args.count <= MAX_REFILL_COUNT:
        raise UsageError(f"--count must be between 1 and {MAX_REFILL_COUNT} (got {args.count})")
    peers = Peers(ctx, pool_size=SIGNING_WORKERS + 2)
    obj = peers.kube.get_or_none(args.name) or purchases.find(peers.kube.list(), args.name)
    name = args.name
    try:
        entry = peers.buyer.status().get(name)
    except (X402BuyerError, TransportError) as err:
        raise X402BuyerError(f"x402-buyer status is unavailable, so the pool of {name} cannot be read; nothing "
                             "was signed", hint=f"check the x402-buyer at {peers.settings.x402_buyer_url} "
                                                f"({err.message})") from err
    if entry is None:
        raise PurchaseError(f"{name} is not live in x402-buyer status yet; nothing was signed",
                            hint=f"wait until `buy.py status {name}` shows it serving, then refill")
    policy = (obj.get("spec") or {}).get("autoRefill") or {}
    count = args.count or int(policy.get("count") or 0)
    if count < 1:
        raise UsageError(f"{name} has no auto-refill count to refill with", hint=f"buy.py refill {name} --count N")
    action = refilling.refill(peers, obj, entry, wanted=count, reason=f"refill of {count} asked", by="refill")
    if action["action"] == "skipped":
        why = action["reason"]
        for tail in _SKIP_TAILS:
            why = why.removesuffix(tail)
        spec = obj.get("spec") or {}
        hint = (f"the spend caps are the operator's: wait for the 24 h window, or raise one with a top-up "
                f"(buy.py buy {name} --endpoint {spec.get('endpoint')} --model {spec.get('model')} --count 1 "
                "--max-total AMOUNT / --max-spend-per-day AMOUNT)") if action.get("capped") else f"buy.py status {name}"
        raise PurchaseError(f"{name} was not refilled: {why}; nothing was signed", hint=hint,
                            code="cap_reached" if action.get("capped") else "refused",
                            data={k: v for k, v in action.items() if k in ("name", "caps")})
    return Result("refill", action)


__all__ = ["run"]

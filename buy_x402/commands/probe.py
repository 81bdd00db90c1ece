"""`buy.py probe URL`: every payment option a seller offers, with what this skill would sign.

Read-only: one unpaid request. Shows what `buy`/`pay` would choose from, including options this
skill cannot pay (unknown network or scheme), so an operator sees why a purchase is refused.
"""
from __future__ import annotations

from argparse import Namespace
from typing import Any

from .. import signing, x402
from ..result import Context, Result
from .common import Peers


def signing_domain(option: x402.PaymentOption) -> dict | None:
    """The EIP-712 domain a voucher for `option` would be signed with; None when it cannot be paid."""
    if option.chain is None:
        return None
    if option.transfer_method == "permit2":
        return {"name": "Permit2", "chainId": option.chain.chain_id, "verifyingContract": signing.PERMIT2_ADDRESS}
    return signing.eip3009_domain(option)


def option_view(option: x402.PaymentOption) -> dict[str, Any]:
    """One option as the JSON output pins it (camelCase, atomic amounts as strings)."""
    return {
        "index": option.index, "scheme": option.scheme, "network": option.network,
        "chain": option.chain.name if option.chain else None,
        "chainId": option.chain.chain_id if option.chain else None,
        "payable": option.payable,
        "price": {"atomic": str(option.amount), "display": option.price_text(), "symbol": option.symbol,
                  "decimals": option.decimals},
        "asset": option.asset, "payTo": option.pay_to, "transferMethod": option.transfer_method,
        "signingDomain": signing_domain(option), "maxTimeoutSeconds": option.max_timeout_seconds,
        "extra": option.extra,
    }


def offer_view(offer: x402.PaymentRequired) -> dict[str, Any]:
    return {"x402Version": offer.x402_version, "source": offer.source, "resource": offer.resource,
            "sellerMessage": offer.error, "extensions": sorted(offer.extensions or {}),
            "options": [option_view(o) for o in offer.accepts]}


def target_url(url: str, kind: str) -> str:
    return x402.normalize_endpoint(url) + "/v1/chat/completions" if kind in ("inference", "agent") else url


def run(ctx: Context, args: Namespace) -> Result:
    peers = Peers(ctx)
    kind = args.type
    ctx.notify(f"Probing {target_url(args.url, kind)} ...")
    offer = x402.probe(peers.session, args.url, args.model, kind=kind, method=args.method)
    data = {"url": target_url(args.url, kind), "type": kind, **offer_view(offer)}
    return Result(command="probe", data=data)

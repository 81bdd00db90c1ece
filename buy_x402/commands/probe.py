"""`buy.py probe URL`: every payment option a seller offers, with what this skill would sign.

Read-only: one unpaid request. Shows what `buy`/`pay` would choose from, including options this
skill cannot pay (unknown network or scheme), and for a chat offer whether the cluster's x402-buyer
could spend vouchers for each option (what `buy` checks before signing), so an operator sees why a
purchase would be refused before trying it.
"""
from __future__ import annotations

from argparse import Namespace

from .. import cluster, x402
from ..peers import Peers
from ..result import Context, Result
from ..urls import seller_url


def target_url(url: str, kind: str) -> str:
    return x402.chat_url(url) if kind in ("inference", "agent") else url


def run(ctx: Context, args: Namespace) -> Result:
    seller_url(args.url, "the probe URL")
    peers = Peers(ctx)
    kind = args.type
    ctx.notify(f"Probing {target_url(args.url, kind)} ...")
    offer = x402.probe(peers.session, args.url, args.model, kind=kind, method=args.method)
    data = {"url": target_url(args.url, kind), "type": kind, **x402.offer_view(offer)}
    for view, option in zip(data["options"], offer.accepts):
        if kind == "inference":
            why = cluster.refusal(offer, option)
            view.update(clusterCanSpend=why is None, clusterRefusal=why)
        else:  # `buy` buys chat models only: for other offers the question does not arise
            view.update(clusterCanSpend=None, clusterRefusal=None)
    return Result(command="probe", data=data)

"""`buy.py balance [--chain C]`: the wallet's balance of every token this skill knows on a chain."""
from __future__ import annotations

from argparse import Namespace

from .. import offer
from ..amounts import format_amount
from ..errors import ChainError
from ..peers import Peers
from ..result import Context, Result


def run(ctx: Context, args: Namespace) -> Result:
    chain = offer.resolve_chain(args.chain or ctx.settings.default_chain)
    tokens = offer.KNOWN_TOKENS.get(chain.name, {})
    if not tokens:
        known = ", ".join(sorted(offer.KNOWN_TOKENS))
        raise ChainError(f"no known tokens on {chain.name}; balances are shown for: {known}",
                         hint=f"pass --chain with one of: {known}", data={"chain": chain.name})
    peers = Peers(ctx)
    wallet = peers.signer.address()
    rows = []
    for address, (symbol, decimals) in tokens.items():
        checksummed = next((a for a in (chain.usdc, offer.OBOL_MAINNET) if a and a.lower() == address), address)
        atomic = peers.chain.balance_of(chain.name, checksummed, wallet)
        rows.append({"symbol": symbol, "address": checksummed, "decimals": decimals, "atomic": str(atomic),
                     "display": format_amount(atomic, decimals, None)})
    return Result(command="balance", data={"wallet": wallet, "chain": chain.name, "chainId": chain.chain_id,
                                           "tokens": rows})

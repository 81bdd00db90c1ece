"""What a seller offers, as data: chains, tokens, and the payment options of a 402.

No I/O and no parsing here: `x402` reads a seller's 402 into these types, the payment schemes sign
for them, and everything else reads them. Kept apart from `x402` so the schemes (which `x402` asks
to recognise an option's transfer method) can depend on the data without depending on the parser.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .amounts import format_amount
from .errors import PaymentChoiceError


# ------------------------------------------------------------------------------------------- chains

@dataclass(frozen=True)
class Chain:
    name: str
    chain_id: int
    usdc: str | None

    @property
    def caip2(self) -> str:
        return f"eip155:{self.chain_id}"


CHAINS: dict[str, Chain] = {c.name: c for c in (
    Chain("mainnet", 1, "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"),
    Chain("base", 8453, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
    Chain("base-sepolia", 84532, "0x036CbD53842c5426634e7929541eC2318f3dCF7e"),
    Chain("sepolia", 11155111, None),
    Chain("hoodi", 560048, None),
)}
CHAIN_ALIASES = {"ethereum": "mainnet", "eth": "mainnet",
                 **{c.caip2: c.name for c in CHAINS.values()}}


def supported_chains() -> str:
    return ", ".join(sorted(CHAINS))


def resolve_chain(text: str | None) -> Chain:
    """A chain by name, alias or CAIP-2 id; unknown is an error, never a silent default."""
    key = (text or "").strip().lower()
    chain = CHAINS.get(CHAIN_ALIASES.get(key, key))
    if chain is None:
        raise PaymentChoiceError(f"Unknown chain {text!r}. Supported: {supported_chains()}",
                                 data={"chain": text, "supported": sorted(CHAINS)})
    return chain


def chain_or_none(text: str | None) -> Chain | None:
    """The chain a seller names, or None for a network this skill cannot pay on (listed, never chosen)."""
    try:
        return resolve_chain(text)
    except PaymentChoiceError:
        return None


# ------------------------------------------------------------------------------------------- tokens

OBOL_MAINNET = "0x0B010000b7624eb9B3DfBC279673C76E9D29D5F7"
KNOWN_TOKENS: dict[str, dict[str, tuple[str, int]]] = {
    "mainnet": {CHAINS["mainnet"].usdc.lower(): ("USDC", 6), OBOL_MAINNET.lower(): ("OBOL", 18)},
    "base": {CHAINS["base"].usdc.lower(): ("USDC", 6)},
    "base-sepolia": {CHAINS["base-sepolia"].usdc.lower(): ("USDC", 6)},
}


def is_canonical_usdc(chain: Chain | None, asset: str | None) -> bool:
    return bool(chain and chain.usdc and asset and chain.usdc.lower() == asset.lower())


def token_meta(chain: Chain | None, asset: str | None, extra: Mapping[str, Any] | None) -> tuple[str | None, int | None]:
    """(symbol, decimals) of a payment asset, or (None, None) when it cannot be trusted.

    Known addresses win. A seller's `extra.name` is only believed for "Obol Network" (OBOL, 18), as
    upstream does. A token that merely calls itself "USDC" at an address that is not the chain's
    canonical USDC stays unknown: guessing 6 decimals for it could mis-scale a budget by 10^12.
    """
    if chain is not None and asset:
        known = KNOWN_TOKENS.get(chain.name, {}).get(asset.lower())
        if known:
            return known
    name = str((extra or {}).get("name") or "")
    if name == "Obol Network":
        return "OBOL", 18
    if name in ("USDC", "USD Coin") and is_canonical_usdc(chain, asset):
        return "USDC", 6
    return None, None


# ------------------------------------------------------------------------------------ requirements

@dataclass
class PaymentOption:
    """One `accepts[]` entry. `network` is kept exactly as the seller wrote it; `chain` is None for
    networks this skill cannot pay on (listed, never chosen). `transfer_method` names the payment
    scheme (`buy_x402.schemes`) that signs for it."""
    index: int
    scheme: str
    network: str
    chain: Chain | None
    amount: int
    asset: str
    pay_to: str
    max_timeout_seconds: int = 60
    extra: dict = field(default_factory=dict)
    transfer_method: str = "eip3009"
    symbol: str | None = None
    decimals: int | None = None
    raw: dict = field(default_factory=dict)
    defect: str | None = None   # why the seller's option cannot be signed for as written (e.g. a bad payTo)
    also_as: list[str] = field(default_factory=list)   # the same option advertised under other network spellings

    @property
    def payable(self) -> bool:
        return self.chain is not None and self.scheme == "exact" and self.defect is None

    def price_text(self) -> str:
        return format_amount(self.amount, self.decimals, self.symbol)

    def describe(self) -> str:
        where = self.chain.name if self.chain else f"{self.network} (unsupported network)"
        scheme = "" if self.scheme == "exact" else f", scheme {self.scheme} (unsupported)"
        token = self.symbol or f"token {self.asset}"
        defect = f" (refused: {self.defect})" if self.defect else ""
        return (f"[{self.index}] {self.price_text()} per request in {token} on {where} via "
                f"{self.transfer_method}{scheme}{defect}")


@dataclass
class PaymentRequired:
    x402_version: int
    accepts: list[PaymentOption]
    resource: Any = None
    extensions: dict | None = None
    source: str = "header"
    raw: dict = field(default_factory=dict)
    error: str | None = None
    body: dict | None = None   # the 402's JSON body when it is an object, whatever `source` is


__all__ = ["Chain", "CHAINS", "CHAIN_ALIASES", "supported_chains", "resolve_chain", "chain_or_none",
           "OBOL_MAINNET", "KNOWN_TOKENS", "is_canonical_usdc", "token_meta", "PaymentOption", "PaymentRequired"]

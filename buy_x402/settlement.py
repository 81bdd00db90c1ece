"""Whether a one-shot payment settled, by the chain's word rather than the seller's.

A seller's settlement header is a claim. Two reads through eRPC decide:

1. When the seller names a transaction: its receipt must carry the token's
   `Transfer(wallet → payTo, amount)` — the payment agreed. A receipt without it (a reverted
   transaction, or one that moved other tokens, or none) contradicts the seller.
2. Otherwise, or when that receipt does not show it: the voucher's own nonce. EIP-3009
   `authorizationState(wallet, nonce)` / Permit2's nonce bitmap is set exactly when the signed
   authorization was consumed, and the signature binds payee and amount, so a used nonce means the
   agreed transfer happened (this skill never cancels a one-shot voucher, the other way a nonce is
   marked). An unused nonce after a short wait means nothing moved: the voucher stays redeemable
   by the seller until it expires.

The outcome is `verified` True / False / None (the chain could not be read) with how it was
established; the caller decides what each means for the exit code.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import schemes
from .amounts import format_amount
from .chain import ChainClient, transfers
from .errors import BuyError, ChainError
from .offer import PaymentOption

RECEIPT_WAIT_S = 10.0   # a transaction the seller names may still be propagating to our RPC node
NONCE_WAIT_S = 6.0      # settlement may finish a block after the answer (a streamed answer settles last)
POLL_S = 0.5


@dataclass
class Verification:
    verified: bool | None
    how: str                       # "receipt", "authorizationState", "permit2NonceBitmap" or "unavailable"
    detail: str
    transaction: str | None = None
    seller_claim: str = "absent"   # the seller's transaction: "confirmed", "contradicted", "absent"
    moved: list[dict] = field(default_factory=list)   # the token's transfers out of the wallet in that transaction

    def as_dict(self) -> dict[str, Any]:
        return {"verified": self.verified, "how": self.how, "detail": self.detail, "transaction": self.transaction,
                "sellerClaim": self.seller_claim,
                "moved": [dict(t, value=str(t["value"])) for t in self.moved]}


def _nonce_used(chain: ChainClient, option: PaymentOption, voucher: dict) -> tuple[str, bool]:
    """(how, used): the voucher's nonce read on chain the way its payment scheme keeps it."""
    scheme = schemes.of(option)
    found = scheme.identify(voucher, {"network": option.chain.name, "asset": option.asset})
    if found is None:
        raise ChainError(f"the voucher for {option.describe()} carries no nonce to look up")
    to, data = scheme.state_call(found)
    return scheme.state_read, scheme.is_used(found, chain.call(option.chain.name, to, data))


def verify(chain: ChainClient, option: PaymentOption, wallet: str, voucher: dict, transaction: str | None, *,
           expires_at: int | None = None, receipt_wait_s: float = RECEIPT_WAIT_S, nonce_wait_s: float = NONCE_WAIT_S,
           sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> Verification:
    """What the chain says about the payment `voucher` made for `option` (see the module docstring)."""
    price = format_amount(option.amount, option.decimals, option.symbol)
    try:
        claim, moved, claim_note, mined = "absent", [], "", False
        if transaction:
            receipt = _poll(lambda: chain.receipt(option.chain.name, transaction), receipt_wait_s, sleep, clock)
            if receipt is not None:
                mined = True
                found = transfers(receipt, option.asset)
                moved = [t for t in found if t["from"] == wallet.lower()]
                agreed = any(t["to"] == option.pay_to.lower() and t["value"] == option.amount for t in moved)
                if str(receipt.get("status")) == "0x1" and agreed:
                    return Verification(True, "receipt", f"transaction {transaction} moved {price} from {wallet} to "
                                        f"{option.pay_to}", transaction, "confirmed", moved)
                claim = "contradicted"
                if str(receipt.get("status")) != "0x1":
                    claim_note = f"the seller's transaction {transaction} reverted"
                elif moved:
                    what = ", ".join(f"{format_amount(t['value'], option.decimals, option.symbol)} to {t['to']}"
                                     for t in moved)
                    claim_note = f"the seller's transaction {transaction} moved {what}, not {price} to {option.pay_to}"
                else:
                    claim_note = f"the seller's transaction {transaction} moved no {option.symbol or 'tokens'} from the wallet"
            else:
                claim = "contradicted"
                claim_note = f"the seller's transaction {transaction} is unknown to the chain after {receipt_wait_s:g} s"
        # A mined transaction of the seller's was the settlement it claims: no reason to wait for another.
        how, used = _poll_nonce(chain, option, voucher, 0.0 if mined else nonce_wait_s, sleep, clock)
    except BuyError as exc:
        return Verification(None, "unavailable", f"the chain could not be read: {exc.message}", transaction,
                            "absent" if not transaction else "unchecked")
    if used:
        detail = f"the voucher's nonce is used on chain: {price} went from {wallet} to {option.pay_to}"
        return Verification(True, how, detail + (f" ({claim_note})" if claim_note else ""), transaction, claim, moved)
    until = f" until {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(expires_at))}" if expires_at else ""
    detail = f"the voucher is unused on chain: nothing was paid; the seller can still redeem it{until}"
    return Verification(False, how, (claim_note + "; " if claim_note else "") + detail, transaction, claim, moved)


def _poll(read: Callable[[], Any], wait_s: float, sleep, clock) -> Any:
    deadline = clock() + wait_s
    while True:
        value = read()
        if value is not None or clock() >= deadline:
            return value
        sleep(POLL_S)


def _poll_nonce(chain, option, voucher, wait_s: float, sleep, clock) -> tuple[str, bool]:
    deadline = clock() + wait_s
    while True:
        how, used = _nonce_used(chain, option, voucher)
        if used or clock() >= deadline:
            return how, used
        sleep(POLL_S)


__all__ = ["Verification", "verify", "RECEIPT_WAIT_S", "NONCE_WAIT_S"]

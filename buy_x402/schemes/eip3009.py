"""EIP-3009 `transferWithAuthorization`: the token itself checks the voucher (USDC). The default scheme."""
from __future__ import annotations

import secrets
from typing import Any, Mapping

from ..amounts import MAX_AUTH_COUNT
from ..offer import PaymentOption, is_canonical_usdc
from .base import PaymentScheme, SignTypedData, SigningPlan, chain_id, typed_data, voucher

# The name/version each chain's canonical USDC signs with; anything else falls back to ("USDC", "2").
USDC_DOMAINS = {"mainnet": ("USD Coin", "2"), "base": ("USD Coin", "2"), "base-sepolia": ("USDC", "2")}
FALLBACK_DOMAIN = ("USDC", "2")
TRANSFER_WITH_AUTHORIZATION = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]


def new_nonce() -> str:
    """A fresh EIP-3009 nonce: 32 random bytes as 0x-hex."""
    return "0x" + secrets.token_hex(32)


class Eip3009(PaymentScheme):
    name = "eip3009"
    max_auths = MAX_AUTH_COUNT

    def selected_by(self, extra: Mapping[str, Any]) -> bool:
        return extra.get("assetTransferMethod") == self.name

    def domain(self, option: PaymentOption) -> dict:
        """The token's EIP-712 domain for transferWithAuthorization.

        Order: the seller's explicit `extra.eip712Domain{name,version}` → the per-chain table, only for
        that chain's canonical USDC → ("USDC", "2"). `extra.name` alone is display text, never trusted
        as a domain (upstream behaviour; a wrong name only yields a signature the token rejects).
        """
        explicit = option.extra.get("eip712Domain")
        if isinstance(explicit, Mapping) and explicit.get("name") and explicit.get("version"):
            name, version = str(explicit["name"]), str(explicit["version"])
        elif is_canonical_usdc(option.chain, option.asset):
            name, version = USDC_DOMAINS.get(option.chain.name, FALLBACK_DOMAIN)
        else:
            name, version = FALLBACK_DOMAIN
        return {"name": name, "version": version, "chainId": chain_id(option), "verifyingContract": option.asset}

    def typed_data(self, option: PaymentOption, *, payer: str, nonce: str, deadline: int,
                   valid_after: int = 0) -> dict:
        """TransferWithAuthorization from `payer` to the seller for exactly the offer's amount."""
        message = {"from": payer, "to": option.pay_to, "value": str(option.amount), "validAfter": str(int(valid_after)),
                   "validBefore": str(int(deadline)), "nonce": nonce}
        return typed_data(self.domain(option), "TransferWithAuthorization",
                          {"TransferWithAuthorization": TRANSFER_WITH_AUTHORIZATION}, message)

    def auth_object(self, option: PaymentOption, typed: dict, signature: str, *,
                    extensions: Mapping[str, Any] | None = None) -> dict:
        message = typed["message"]
        return voucher(option, message["nonce"], {"signature": signature, "authorization": dict(message)}, extensions)

    def preflight(self, chain, option: PaymentOption, wallet: str, *,
                  offered_extensions: Mapping[str, Any] | None = None) -> SigningPlan:
        return SigningPlan()  # the token checks balance and nonce when the voucher is redeemed

    def sign(self, sign_typed: SignTypedData, option: PaymentOption, *, payer: str, deadline: int,
             index: int, plan: SigningPlan, extensions: dict | None, valid_after: int = 0) -> dict:
        typed = self.typed_data(option, payer=payer, nonce=new_nonce(), deadline=deadline, valid_after=valid_after)
        return self.auth_object(option, typed, sign_typed(payer, typed), extensions=extensions)

    def deadline(self, payload: Mapping[str, Any]) -> Any:
        return (payload.get("authorization") or {}).get("validBefore")

    def valid_after(self, payload: Mapping[str, Any]) -> Any:
        return (payload.get("authorization") or {}).get("validAfter")


SCHEME = Eip3009()

__all__ = ["SCHEME", "Eip3009", "USDC_DOMAINS", "new_nonce"]

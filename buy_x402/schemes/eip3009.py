"""EIP-3009 `transferWithAuthorization`: the token itself checks the voucher (USDC). The default scheme."""
from __future__ import annotations

import secrets
from typing import Any, Mapping

from .. import abi
from ..amounts import MAX_AUTH_COUNT
from ..offer import PaymentOption, chain_or_none, is_canonical_usdc
from .base import (EventQuery, OnChainVoucher, PaymentScheme, Revocation, SignTypedData, SigningPlan, chain_id,
                   int_or_none, typed_data, voucher)

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
CANCEL_AUTHORIZATION = [
    {"name": "authorizer", "type": "address"},
    {"name": "nonce", "type": "bytes32"},
]


def new_nonce() -> str:
    """A fresh EIP-3009 nonce: 32 random bytes as 0x-hex."""
    return "0x" + secrets.token_hex(32)


class Eip3009(PaymentScheme):
    name = "eip3009"
    state_read = "authorizationState"   # how `settlement.how` names the on-chain read of a nonce
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

    # -- the voucher on chain ------------------------------------------------------------------
    def identify(self, auth: Mapping[str, Any], payment: Mapping[str, Any]) -> OnChainVoucher | None:
        """A `{id, payment}` voucher, or a legacy flat auth, signed with transferWithAuthorization."""
        doc = auth.get("payment") if isinstance(auth.get("payment"), Mapping) else None
        if doc is not None:
            fields = (doc.get("payload") or {}).get("authorization")
            accepted = doc.get("accepted") if isinstance(doc.get("accepted"), Mapping) else {}
            extra = dict(accepted.get("extra") or {}) if isinstance(accepted.get("extra"), Mapping) else {}
        else:
            fields, accepted = auth, {}
            name, version = payment.get("eip712Name"), payment.get("eip712Version")
            extra = {"eip712Domain": {"name": name, "version": version}} if name and version else {}
        if not isinstance(fields, Mapping) or not fields.get("nonce") or not fields.get("from"):
            return None
        chain = chain_or_none(payment.get("network")) or chain_or_none(accepted.get("network"))
        token = str(accepted.get("asset") or payment.get("asset") or "")
        nonce, value = int_or_none(fields.get("nonce")), int_or_none(fields.get("value"))
        if chain is None or not token or nonce is None:
            return None
        option = PaymentOption(index=0, scheme="exact", network=chain.caip2, chain=chain, amount=value or 0,
                               asset=token, pay_to=str(fields.get("to") or ""), extra=extra)
        return OnChainVoucher(id=str(auth.get("id") or fields.get("nonce")), scheme=self.name, chain=chain.name,
                              token=token, authorizer=str(fields["from"]), nonce=nonce, value=value or 0,
                              pay_to=str(fields.get("to") or ""), deadline=int_or_none(fields.get("validBefore")),
                              domain=self.domain(option))

    def state_call(self, voucher: OnChainVoucher) -> tuple[str, str]:
        return voucher.token, abi.call_data(abi.AUTHORIZATION_STATE, abi.address_word(voucher.authorizer),
                                            abi.bytes32_word(voucher.nonce))

    def is_used(self, voucher: OnChainVoucher, result: str) -> bool:
        return any(abi.words(result)[:1])

    def event_queries(self, vouchers: list[OnChainVoucher]) -> list[EventQuery]:
        """AuthorizationUsed and AuthorizationCanceled of each (token, authorizer): the token logs both."""
        pairs = sorted({(v.token.lower(), v.authorizer.lower()) for v in vouchers})
        return [EventQuery(token, [[abi.TOPIC_AUTHORIZATION_USED, abi.TOPIC_AUTHORIZATION_CANCELED],
                                   abi.topic_address(authorizer)]) for token, authorizer in pairs]

    def cancelled_nonces(self, vouchers: list[OnChainVoucher], logs: list[dict]) -> set[str]:
        cancelled = set()
        for log in logs:
            topics = [str(t).lower() for t in log.get("topics") or []]
            if len(topics) == 3 and topics[0] == abi.TOPIC_AUTHORIZATION_CANCELED:
                cancelled.add((str(log.get("address") or "").lower(), int(topics[1], 16), int(topics[2], 16)))
        return {v.id for v in vouchers
                if (v.token.lower(), int(v.authorizer, 16), v.nonce) in cancelled}

    def cancel_typed_data(self, voucher: OnChainVoucher) -> dict:
        """CancelAuthorization(authorizer, nonce) in the token's EIP-712 domain (the one the voucher used)."""
        if not voucher.domain:
            raise ValueError(f"voucher {voucher.id} has no signing domain to cancel it in")
        message = {"authorizer": voucher.authorizer, "nonce": "0x" + abi.bytes32_word(voucher.nonce)}
        return typed_data(dict(voucher.domain), "CancelAuthorization",
                          {"CancelAuthorization": CANCEL_AUTHORIZATION}, message)

    def revocations(self, vouchers: list[OnChainVoucher], sign_typed: SignTypedData) -> list[Revocation]:
        """One `cancelAuthorization(authorizer, nonce, v, r, s)` per voucher, signed by the authorizer
        (the v,r,s overload: every FiatTokenV2 version has it)."""
        out = []
        for v in vouchers:
            sig_v, r, s = abi.split_signature(sign_typed(v.authorizer, self.cancel_typed_data(v)))
            data = abi.call_data(abi.CANCEL_AUTHORIZATION, abi.address_word(v.authorizer), abi.bytes32_word(v.nonce),
                                 abi.uint_word(sig_v), r, s)
            out.append(Revocation(v.token, data, (v.id,)))
        return out


SCHEME = Eip3009()

__all__ = ["SCHEME", "Eip3009", "USDC_DOMAINS", "CANCEL_AUTHORIZATION", "new_nonce"]

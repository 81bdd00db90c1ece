"""Permit2 `PermitWitnessTransferFrom` through the x402 exact proxy, with EIP-2612 gas sponsoring.

Permit2 moves any ERC-20 the wallet approved it for. When the seller offers `eip2612GasSponsoring`
and the token answers `nonces(owner)`, each voucher also carries an EIP-2612 permit, so no prior
approval is needed; otherwise the wallet must have approved Permit2 once, which the pre-flight checks.
"""
from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Mapping

from .. import abi
from ..errors import WalletError
from ..offer import PaymentOption, chain_or_none
from .base import (EventQuery, OnChainVoucher, PaymentScheme, Revocation, SignTypedData, SigningPlan, chain_id,
                   int_or_none, typed_data, voucher)

if TYPE_CHECKING:
    from ..chain import ChainClient

PERMIT2_ADDRESS = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
X402_EXACT_PERMIT2_PROXY = "0x402085c248EeA27D92E8b30b2C58ed07f9E20001"
EIP2612_GAS_SPONSORING_KEY = "eip2612GasSponsoring"
SAFE_AUTH_COUNT = 500   # Permit2 auths are bigger; the buyer's ConfigMap holds ≈537
APPROVE_SELECTOR = "0x095ea7b3"
WITNESS_TYPES = {
    "PermitWitnessTransferFrom": [
        {"name": "permitted", "type": "TokenPermissions"},
        {"name": "spender", "type": "address"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
        {"name": "witness", "type": "Witness"},
    ],
    "TokenPermissions": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint256"}],
    "Witness": [{"name": "to", "type": "address"}, {"name": "validAfter", "type": "uint256"}],
}
EIP2612_PERMIT = [
    {"name": "owner", "type": "address"},
    {"name": "spender", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


def new_nonce() -> int:
    """A fresh Permit2 nonce: a random uint256 (Permit2 nonces are unordered bitmaps)."""
    return int.from_bytes(secrets.token_bytes(32), "big")


def eip2612_permit(option: PaymentOption, *, owner: str, nonce: int, deadline: int) -> dict:
    """EIP-2612 Permit letting Permit2 pull the offer's amount (gas-sponsored approval)."""
    domain = {"name": str(option.extra.get("name") or "USDC"), "version": str(option.extra.get("version") or "2"),
              "chainId": chain_id(option), "verifyingContract": option.asset}
    message = {"owner": owner, "spender": PERMIT2_ADDRESS, "value": str(option.amount),
               "nonce": str(int(nonce)), "deadline": str(int(deadline))}
    return typed_data(domain, "Permit", {"Permit": EIP2612_PERMIT}, message)


def eip2612_extension(permit_typed: dict, signature: str) -> dict:
    """The `eip2612GasSponsoring` extension the facilitator reads (x402 Eip2612GasSponsoringInfo)."""
    m = permit_typed["message"]
    info = {"from": m["owner"], "asset": permit_typed["domain"]["verifyingContract"], "spender": m["spender"],
            "amount": m["value"], "nonce": m["nonce"], "deadline": m["deadline"], "signature": signature,
            "version": "1"}
    return {EIP2612_GAS_SPONSORING_KEY: {"info": info}}


class Permit2(PaymentScheme):
    name = "permit2"
    state_read = "permit2NonceBitmap"   # how `settlement.how` names the on-chain read of a nonce
    max_auths = SAFE_AUTH_COUNT

    def selected_by(self, extra: Mapping[str, Any]) -> bool:
        return extra.get("assetTransferMethod") == self.name

    def domain(self, option: PaymentOption) -> dict:
        return {"name": "Permit2", "chainId": chain_id(option), "verifyingContract": PERMIT2_ADDRESS}

    def typed_data(self, option: PaymentOption, *, payer: str, nonce: int, deadline: int,
                   valid_after: int = 0) -> dict:
        """PermitWitnessTransferFrom for the x402 exact proxy, witness {to: payTo, validAfter}.

        `payer` is not part of the signed message (Permit2 recovers it); it is accepted so every
        scheme builds its typed data the same way.
        """
        del payer
        message = {"permitted": {"token": option.asset, "amount": str(option.amount)},
                   "spender": X402_EXACT_PERMIT2_PROXY, "nonce": str(int(nonce)), "deadline": str(int(deadline)),
                   "witness": {"to": option.pay_to, "validAfter": str(int(valid_after))}}
        return typed_data(self.domain(option), "PermitWitnessTransferFrom", WITNESS_TYPES, message)

    def auth_object(self, option: PaymentOption, typed: dict, signature: str, *, payer: str,
                    extensions: Mapping[str, Any] | None = None) -> dict:
        """`payer` (the signer's address) is required: it is not in the signed message."""
        if not payer:
            raise ValueError("a Permit2 voucher needs the payer address")
        m = typed["message"]
        payload = {"signature": signature, "permit2Authorization": {
            "permitted": dict(m["permitted"]), "from": payer, "spender": m["spender"],
            "nonce": m["nonce"], "deadline": m["deadline"], "witness": dict(m["witness"])}}
        return voucher(option, m["nonce"], payload, extensions)

    def preflight(self, chain: "ChainClient", option: PaymentOption, wallet: str, *,
                  offered_extensions: Mapping[str, Any] | None = None) -> SigningPlan:
        """Gas sponsoring when offered and the token has EIP-2612 nonces; else a Permit2 approval must exist."""
        base = None
        if EIP2612_GAS_SPONSORING_KEY in (offered_extensions or {}):
            base = chain.nonces(option.chain.name, option.asset, wallet)
        if base is None and chain.allowance(option.chain.name, option.asset, wallet, PERMIT2_ADDRESS) == 0:
            data = APPROVE_SELECTOR + PERMIT2_ADDRESS[2:].lower().rjust(64, "0") + "f" * 64
            raise WalletError(f"wallet {wallet} has not approved Permit2 ({PERMIT2_ADDRESS}) to spend {option.asset} "
                              f"on {option.chain.name}; nothing was signed",
                              hint=f"send once from {wallet}: to={option.asset} data={data}")
        return SigningPlan(permit_nonce_base=base)

    def sign(self, sign_typed: SignTypedData, option: PaymentOption, *, payer: str, deadline: int,
             index: int, plan: SigningPlan, extensions: dict | None, valid_after: int = 0) -> dict:
        """With a permit nonce base, voucher `index` also carries an EIP-2612 permit with nonce base+index."""
        typed = self.typed_data(option, payer=payer, nonce=new_nonce(), deadline=deadline, valid_after=valid_after)
        signature = sign_typed(payer, typed)
        extra = dict(extensions or {})
        if plan.permit_nonce_base is not None:
            permit = eip2612_permit(option, owner=payer, nonce=plan.permit_nonce_base + index, deadline=deadline)
            extra.update(eip2612_extension(permit, sign_typed(payer, permit)))
        return self.auth_object(option, typed, signature, payer=payer, extensions=extra or None)

    def deadline(self, payload: Mapping[str, Any]) -> Any:
        return (payload.get("permit2Authorization") or {}).get("deadline")

    def valid_after(self, payload: Mapping[str, Any]) -> Any:
        return ((payload.get("permit2Authorization") or {}).get("witness") or {}).get("validAfter")

    # -- the voucher on chain: Permit2's unordered nonces (word = nonce >> 8, bit = nonce & 0xff) --
    def identify(self, auth: Mapping[str, Any], payment: Mapping[str, Any]) -> OnChainVoucher | None:
        doc = auth.get("payment") if isinstance(auth.get("payment"), Mapping) else {}
        fields = (doc.get("payload") or {}).get("permit2Authorization") if isinstance(doc, Mapping) else None
        if not isinstance(fields, Mapping) or not fields.get("from"):
            return None
        accepted = doc.get("accepted") if isinstance(doc.get("accepted"), Mapping) else {}
        chain = chain_or_none(payment.get("network")) or chain_or_none(accepted.get("network"))
        permitted = fields.get("permitted") if isinstance(fields.get("permitted"), Mapping) else {}
        witness = fields.get("witness") if isinstance(fields.get("witness"), Mapping) else {}
        nonce = int_or_none(fields.get("nonce"))
        token = str(permitted.get("token") or accepted.get("asset") or payment.get("asset") or "")
        if chain is None or nonce is None or not token:
            return None
        return OnChainVoucher(id=str(auth.get("id") or fields.get("nonce")), scheme=self.name, chain=chain.name,
                              token=token, authorizer=str(fields["from"]), nonce=nonce,
                              value=int_or_none(permitted.get("amount")) or 0, pay_to=str(witness.get("to") or ""),
                              deadline=int_or_none(fields.get("deadline")))

    def state_call(self, voucher: OnChainVoucher) -> tuple[str, str]:
        return PERMIT2_ADDRESS, abi.call_data(abi.NONCE_BITMAP, abi.address_word(voucher.authorizer),
                                              abi.uint_word(voucher.nonce >> 8))

    def is_used(self, voucher: OnChainVoucher, result: str) -> bool:
        bitmap = (abi.words(result) or [0])[0]
        return bool((bitmap >> (voucher.nonce & 0xFF)) & 1)

    def event_queries(self, vouchers: list[OnChainVoucher]) -> list[EventQuery]:
        """UnorderedNonceInvalidation of each owner; a Permit2 settlement logs no nonce event."""
        owners = sorted({v.authorizer.lower() for v in vouchers})
        return [EventQuery(PERMIT2_ADDRESS, [abi.TOPIC_UNORDERED_NONCE_INVALIDATION, abi.topic_address(owner)])
                for owner in owners]

    def cancelled_nonces(self, vouchers: list[OnChainVoucher], logs: list[dict]) -> set[str]:
        invalidated: dict[tuple[int, int], int] = {}
        for log in logs:
            topics = [str(t).lower() for t in log.get("topics") or []]
            data = abi.words(str(log.get("data") or ""))
            if len(topics) == 2 and topics[0] == abi.TOPIC_UNORDERED_NONCE_INVALIDATION and len(data) >= 2:
                key = (int(topics[1], 16), data[0])
                invalidated[key] = invalidated.get(key, 0) | data[1]
        return {v.id for v in vouchers
                if (invalidated.get((int(v.authorizer, 16), v.nonce >> 8), 0) >> (v.nonce & 0xFF)) & 1}

    def revocations(self, vouchers: list[OnChainVoucher], sign_typed: SignTypedData) -> list[Revocation]:
        """`invalidateUnorderedNonces(word, mask)` on Permit2, one per owner and word; msg.sender is the
        owner, so nothing is signed but the transaction."""
        del sign_typed
        groups: dict[tuple[str, int], list[OnChainVoucher]] = {}
        for v in vouchers:
            groups.setdefault((v.authorizer.lower(), v.nonce >> 8), []).append(v)
        out = []
        for (_, word), members in sorted(groups.items()):
            mask = 0
            for v in members:
                mask |= 1 << (v.nonce & 0xFF)
            data = abi.call_data(abi.INVALIDATE_UNORDERED_NONCES, abi.uint_word(word), abi.uint_word(mask))
            out.append(Revocation(PERMIT2_ADDRESS, data, tuple(v.id for v in members)))
        return out


SCHEME = Permit2()

__all__ = ["SCHEME", "Permit2", "PERMIT2_ADDRESS", "X402_EXACT_PERMIT2_PROXY", "EIP2612_GAS_SPONSORING_KEY",
           "eip2612_permit", "eip2612_extension", "new_nonce"]

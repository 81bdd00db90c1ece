"""EIP-712 typed data for x402 vouchers, and the voucher objects stored in a PurchaseRequest.

Pure: nothing here signs (the remote signer holds the key) or talks to the network. The typed data is
exactly what goes to `POST /api/v1/sign/<addr>/typed-data`; numeric message values are decimal strings,
as upstream sends them, so the JSON is lossless for uint256.
"""
from __future__ import annotations

import copy
import secrets
from typing import Any, Mapping

from .x402 import PaymentOption, is_canonical_usdc

PERMIT2_ADDRESS = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
X402_EXACT_PERMIT2_PROXY = "0x402085c248EeA27D92E8b30b2C58ed07f9E20001"
EIP2612_GAS_SPONSORING_KEY = "eip2612GasSponsoring"

# The name/version each chain's canonical USDC signs with; anything else falls back to ("USDC", "2").
USDC_DOMAINS = {"mainnet": ("USD Coin", "2"), "base": ("USD Coin", "2"), "base-sepolia": ("USDC", "2")}
FALLBACK_DOMAIN = ("USDC", "2")

_DOMAIN_FIELDS = {
    "name": {"name": "name", "type": "string"},
    "version": {"name": "version", "type": "string"},
    "chainId": {"name": "chainId", "type": "uint256"},
    "verifyingContract": {"name": "verifyingContract", "type": "address"},
}
TRANSFER_WITH_AUTHORIZATION = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]
PERMIT2_WITNESS_TYPES = {
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


def new_nonce() -> str:
    """A fresh EIP-3009 nonce: 32 random bytes as 0x-hex."""
    return "0x" + secrets.token_hex(32)


def new_permit2_nonce() -> int:
    """A fresh Permit2 nonce: a random uint256 (Permit2 nonces are unordered bitmaps)."""
    return int.from_bytes(secrets.token_bytes(32), "big")


def _typed(domain: dict, primary: str, types: dict, message: dict) -> dict:
    domain_type = [_DOMAIN_FIELDS[key] for key in ("name", "version", "chainId", "verifyingContract") if key in domain]
    return {"types": {"EIP712Domain": domain_type, **copy.deepcopy(types)},
            "primaryType": primary, "domain": domain, "message": message}


def _chain_id(option: PaymentOption) -> int:
    if option.chain is None:
        raise ValueError(f"payment option {option.index} is on unsupported network {option.network!r}")
    return option.chain.chain_id


def eip3009_domain(option: PaymentOption) -> dict:
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
    return {"name": name, "version": version, "chainId": _chain_id(option), "verifyingContract": option.asset}


def transfer_with_authorization(option: PaymentOption, *, signer: str, nonce: str, valid_before: int) -> dict:
    """ERC-3009 TransferWithAuthorization from `signer` to the seller for exactly the offer's amount."""
    message = {"from": signer, "to": option.pay_to, "value": str(option.amount), "validAfter": "0",
               "validBefore": str(int(valid_before)), "nonce": nonce}
    return _typed(eip3009_domain(option), "TransferWithAuthorization",
                  {"TransferWithAuthorization": TRANSFER_WITH_AUTHORIZATION}, message)


def permit2_witness_transfer(option: PaymentOption, *, signer: str, nonce: int, deadline: int) -> dict:
    """Permit2 PermitWitnessTransferFrom for the x402 exact proxy, witness {to: payTo, validAfter 0}.

    `signer` is not part of the signed message (Permit2 recovers it); it is accepted so callers build
    every kind the same way.
    """
    del signer
    domain = {"name": "Permit2", "chainId": _chain_id(option), "verifyingContract": PERMIT2_ADDRESS}
    message = {"permitted": {"token": option.asset, "amount": str(option.amount)},
               "spender": X402_EXACT_PERMIT2_PROXY, "nonce": str(int(nonce)), "deadline": str(int(deadline)),
               "witness": {"to": option.pay_to, "validAfter": "0"}}
    return _typed(domain, "PermitWitnessTransferFrom", PERMIT2_WITNESS_TYPES, message)


def eip2612_permit(option: PaymentOption, *, owner: str, nonce: int, deadline: int) -> dict:
    """EIP-2612 Permit letting Permit2 pull the offer's amount (gas-sponsored approval)."""
    domain = {"name": str(option.extra.get("name") or "USDC"), "version": str(option.extra.get("version") or "2"),
              "chainId": _chain_id(option), "verifyingContract": option.asset}
    message = {"owner": owner, "spender": PERMIT2_ADDRESS, "value": str(option.amount),
               "nonce": str(int(nonce)), "deadline": str(int(deadline))}
    return _typed(domain, "Permit", {"Permit": EIP2612_PERMIT}, message)


def eip2612_extension(permit_typed: dict, signature: str) -> dict:
    """The `eip2612GasSponsoring` extension the facilitator reads (x402 Eip2612GasSponsoringInfo)."""
    m = permit_typed["message"]
    info = {"from": m["owner"], "asset": permit_typed["domain"]["verifyingContract"], "spender": m["spender"],
            "amount": m["value"], "nonce": m["nonce"], "deadline": m["deadline"], "signature": signature,
            "version": "1"}
    return {EIP2612_GAS_SPONSORING_KEY: {"info": info}}


def echo_extensions(extensions: Mapping[str, Any] | None) -> dict | None:
    """The 402's extensions as a voucher echoes them: only `{"info": …}` (schemas dropped to keep the CR small)."""
    echoed = {key: {"info": copy.deepcopy(value["info"])}
              for key, value in (extensions or {}).items() if isinstance(value, Mapping) and "info" in value}
    return echoed or None


def accepted(option: PaymentOption) -> dict:
    """The `accepted` requirement a voucher carries; `network` exactly as the seller gave it."""
    return {"scheme": option.scheme, "network": option.network, "amount": str(option.amount),
            "asset": option.asset, "payTo": option.pay_to, "maxTimeoutSeconds": option.max_timeout_seconds,
            "extra": copy.deepcopy(option.extra)}


def auth_object(option: PaymentOption, typed: dict, signature: str, *, payer: str | None = None,
                extensions: Mapping[str, Any] | None = None) -> dict:
    """One `spec.preSignedAuths` element: `{id, payment: {x402Version: 2, accepted, payload, extensions?}}`.

    For Permit2 `payer` (the signer's address) is required: it is not in the signed message.
    """
    message = typed["message"]
    if typed["primaryType"] == "TransferWithAuthorization":
        payload = {"signature": signature, "authorization": dict(message)}
        auth_id = message["nonce"]
    elif typed["primaryType"] == "PermitWitnessTransferFrom":
        if not payer:
            raise ValueError("a Permit2 voucher needs the payer address")
        payload = {"signature": signature, "permit2Authorization": {
            "permitted": dict(message["permitted"]), "from": payer, "spender": message["spender"],
            "nonce": message["nonce"], "deadline": message["deadline"], "witness": dict(message["witness"])}}
        auth_id = message["nonce"]
    else:
        raise ValueError(f"not a voucher type: {typed['primaryType']}")
    payment: dict[str, Any] = {"x402Version": 2, "accepted": accepted(option), "payload": payload}
    if extensions:
        payment["extensions"] = copy.deepcopy(dict(extensions))
    return {"id": auth_id, "payment": payment}


__all__ = ["PERMIT2_ADDRESS", "X402_EXACT_PERMIT2_PROXY", "USDC_DOMAINS", "new_nonce", "new_permit2_nonce",
           "eip3009_domain", "transfer_with_authorization", "permit2_witness_transfer", "eip2612_permit",
           "eip2612_extension", "echo_extensions", "accepted", "auth_object"]

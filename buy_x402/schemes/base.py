"""What every payment scheme shares: the interface, the signing plan, and the EIP-712 voucher pieces.

A payment scheme is one asset transfer method of x402's `exact` scheme (EIP-3009, Permit2, ...).
Each lives in its own module and implements `PaymentScheme`; `schemes/__init__.py` registers it.
Pure except `preflight`, which reads the chain: nothing here signs (the remote signer holds the key).
"""
from __future__ import annotations

import abc
import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..extensions import echo as extensions_echo
from ..offer import PaymentOption

if TYPE_CHECKING:
    from ..chain import ChainClient

# (address, EIP-712 typed data) -> 0x signature: the remote signer, or a test key.
SignTypedData = Callable[[str, dict], str]

# A voucher becomes valid this long before it was signed (as Obol's clientsign.go does): far enough back
# for a signer whose clock runs ahead of the chain's, and exact enough that `validAfter + SIGNING_MARGIN_S`
# tells when it was signed, which the spend caps fall back to when the signing record is gone.
SIGNING_MARGIN_S = 300


def valid_after_for(signed_at: int) -> int:
    """The `validAfter` of a voucher signed at `signed_at` (unix seconds)."""
    return max(0, int(signed_at) - SIGNING_MARGIN_S)


def signed_at_from(valid_after: Any) -> int | None:
    """When a voucher was signed, from its `validAfter`; None for 0 / missing (signed without a date)."""
    try:
        value = int(valid_after)
    except (TypeError, ValueError):
        return None
    return value + SIGNING_MARGIN_S if value > 0 else None

_DOMAIN_FIELDS = {
    "name": {"name": "name", "type": "string"},
    "version": {"name": "version", "type": "string"},
    "chainId": {"name": "chainId", "type": "uint256"},
    "verifyingContract": {"name": "verifyingContract", "type": "address"},
}


@dataclass(frozen=True)
class SigningPlan:
    """What a scheme's pre-flight learned for one batch (e.g. where EIP-2612 permit nonces start)."""
    permit_nonce_base: int | None = None


class PaymentScheme(abc.ABC):
    """How one transfer method builds, signs, checks and dates a voucher."""

    name: str        # `extra.assetTransferMethod` / `spec.payment.assetTransferMethod`
    max_auths: int   # the most vouchers one PurchaseRequest of this scheme may hold

    @abc.abstractmethod
    def selected_by(self, extra: Mapping[str, Any]) -> bool:
        """Whether a seller's option extras ask for this transfer method."""

    @abc.abstractmethod
    def domain(self, option: PaymentOption) -> dict:
        """The EIP-712 domain a voucher for `option` is signed with."""

    @abc.abstractmethod
    def preflight(self, chain: "ChainClient", option: PaymentOption, wallet: str, *,
                  offered_extensions: Mapping[str, Any] | None = None) -> SigningPlan:
        """Checks that can fail before anything is signed; raises WalletError naming the fix.

        `offered_extensions` are the 402's extensions this signing may use (e.g. gas sponsoring);
        None when the caller must not rely on them.
        """

    @abc.abstractmethod
    def sign(self, sign_typed: SignTypedData, option: PaymentOption, *, payer: str, deadline: int,
             index: int, plan: SigningPlan, extensions: dict | None, valid_after: int = 0) -> dict:
        """Voucher number `index` of a batch, in `spec.preSignedAuths` form, payable from `valid_after`."""

    @abc.abstractmethod
    def deadline(self, payload: Mapping[str, Any]) -> Any:
        """When a stored voucher's payload stops being payable (raw value), or None if not this scheme's."""

    @abc.abstractmethod
    def valid_after(self, payload: Mapping[str, Any]) -> Any:
        """From when a stored voucher's payload is payable (raw value), or None if not this scheme's."""


def chain_id(option: PaymentOption) -> int:
    if option.chain is None:
        raise ValueError(f"payment option {option.index} is on unsupported network {option.network!r}")
    return option.chain.chain_id


def typed_data(domain: dict, primary: str, types: dict, message: dict) -> dict:
    """EIP-712 typed data as the remote signer takes it; numbers as decimal strings (lossless uint256)."""
    domain_type = [_DOMAIN_FIELDS[key] for key in ("name", "version", "chainId", "verifyingContract") if key in domain]
    return {"types": {"EIP712Domain": domain_type, **copy.deepcopy(types)},
            "primaryType": primary, "domain": domain, "message": message}


def accepted(option: PaymentOption) -> dict:
    """The `accepted` requirement a voucher carries; `network` exactly as the seller gave it."""
    return {"scheme": option.scheme, "network": option.network, "amount": str(option.amount),
            "asset": option.asset, "payTo": option.pay_to, "maxTimeoutSeconds": option.max_timeout_seconds,
            "extra": copy.deepcopy(option.extra)}


def voucher(option: PaymentOption, auth_id: str, payload: dict, extensions: Mapping[str, Any] | None) -> dict:
    """One `spec.preSignedAuths` element: `{id, payment: {x402Version: 2, accepted, payload, extensions?}}`."""
    payment: dict[str, Any] = {"x402Version": 2, "accepted": accepted(option), "payload": payload}
    if extensions:
        payment["extensions"] = copy.deepcopy(dict(extensions))
    return {"id": auth_id, "payment": payment}


def echo_extensions(extensions: Mapping[str, Any] | None) -> dict | None:
    """The 402's extensions as a voucher echoes them (buy_x402/extensions.py has the rules)."""
    return extensions_echo(extensions)


__all__ = ["PaymentScheme", "SigningPlan", "SignTypedData", "SIGNING_MARGIN_S", "valid_after_for", "signed_at_from", "chain_id", "typed_data", "accepted", "voucher",
           "echo_extensions"]

"""What every payment scheme shares: the interface, the signing plan, and the EIP-712 voucher pieces.

A payment scheme is one asset transfer method of x402's `exact` scheme (EIP-3009, Permit2, ...).
Each lives in its own module and implements `PaymentScheme`; `schemes/__init__.py` registers it.
Pure except `preflight`, which reads the chain: nothing here signs (the remote signer holds the key)
and nothing sends. Besides signing, a scheme knows its vouchers on chain: which nonce a voucher
spends (`identify`), the read that tells whether that nonce is used (`state_call`/`is_used`), the
events that tell a settlement from a cancellation (`event_queries`/`cancelled_nonces`), and the
calls that make unused nonces unusable for ever (`revocations`).
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
class OnChainVoucher:
    """One stored voucher as the chain knows it: who signed, which nonce, what it pays, until when."""
    id: str
    scheme: str
    chain: str                 # eRPC chain name
    token: str
    authorizer: str
    nonce: int
    value: int
    pay_to: str
    deadline: int | None       # None: no deadline found
    domain: dict | None = None  # the EIP-712 domain the voucher was signed with, when revoking needs it


@dataclass(frozen=True)
class Revocation:
    """One transaction from the authorizer that makes the nonces of `covers` (voucher ids) unusable."""
    to: str
    data: str
    covers: tuple[str, ...]


@dataclass(frozen=True)
class EventQuery:
    """eth_getLogs filter whose logs `cancelled_nonces` reads."""
    address: str
    topics: list


@dataclass(frozen=True)
class SigningPlan:
    """What a scheme's pre-flight learned for one batch (e.g. where EIP-2612 permit nonces start)."""
    permit_nonce_base: int | None = None


class PaymentScheme(abc.ABC):
    """How one transfer method builds, signs, checks and dates a voucher."""

    name: str        # `extra.assetTransferMethod` / `spec.payment.assetTransferMethod`
    max_auths: int   # the most vouchers one PurchaseRequest of this scheme may hold
    state_read: str  # the chain read that tells a used nonce (named in `settlement.how`)

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

    # -- the voucher on chain ------------------------------------------------------------------
    @abc.abstractmethod
    def identify(self, auth: Mapping[str, Any], payment: Mapping[str, Any]) -> OnChainVoucher | None:
        """A `spec.preSignedAuths` element (with the purchase's `spec.payment`) as the chain knows it;
        None when it is not this scheme's voucher."""

    @abc.abstractmethod
    def state_call(self, voucher: OnChainVoucher) -> tuple[str, str]:
        """(to, data) of the `eth_call` whose answer `is_used` reads."""

    @abc.abstractmethod
    def is_used(self, voucher: OnChainVoucher, result: str) -> bool:
        """Whether the voucher's nonce can no longer be spent (settled or cancelled)."""

    @abc.abstractmethod
    def event_queries(self, vouchers: list[OnChainVoucher]) -> list[EventQuery]:
        """Log filters that find the cancellations (and, where the scheme logs them, the settlements)."""

    @abc.abstractmethod
    def cancelled_nonces(self, vouchers: list[OnChainVoucher], logs: list[dict]) -> set[str]:
        """Ids of `vouchers` whose nonce the logs show cancelled (a used nonce without one was settled)."""

    @abc.abstractmethod
    def revocations(self, vouchers: list[OnChainVoucher], sign_typed: SignTypedData) -> list[Revocation]:
        """The transactions, sent by the authorizer, that make these unused nonces unusable for ever."""


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


def int_or_none(value: Any) -> int | None:
    try:
        return int(str(value), 0) if isinstance(value, str) and value.startswith("0x") else int(value)
    except (TypeError, ValueError):
        return None


__all__ = ["PaymentScheme", "SigningPlan", "OnChainVoucher", "Revocation", "EventQuery", "int_or_none",
           "SignTypedData", "SIGNING_MARGIN_S", "valid_after_for", "signed_at_from", "chain_id", "typed_data",
           "accepted", "voucher",
           "echo_extensions"]

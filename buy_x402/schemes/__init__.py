"""The payment schemes this skill can sign for, one module each, and how an option finds its own.

A new scheme is one module implementing `base.PaymentScheme` and one entry in `SCHEMES` below.
"""
from __future__ import annotations

from typing import Any, Mapping

from . import eip3009, permit2
from .base import (SIGNING_MARGIN_S, OnChainVoucher, PaymentScheme, Revocation, SigningPlan, echo_extensions,
                   signed_at_from, valid_after_for)

SCHEMES: dict[str, PaymentScheme] = {s.name: s for s in (eip3009.SCHEME, permit2.SCHEME)}
DEFAULT = eip3009.SCHEME


def for_extra(extra: Mapping[str, Any]) -> PaymentScheme:
    """The scheme a seller's option extras select; EIP-3009 when none asks for another."""
    return next((s for s in SCHEMES.values() if s is not DEFAULT and s.selected_by(extra)), DEFAULT)


def of(option: Any) -> PaymentScheme:
    """The scheme that signs for `option` (a PaymentOption; its `transfer_method` names it)."""
    return SCHEMES[option.transfer_method]


def deadline_of(payload: Mapping[str, Any]) -> Any:
    """A stored voucher payload's deadline, whichever scheme signed it; None when none recognises it."""
    for scheme in SCHEMES.values():
        value = scheme.deadline(payload)
        if value not in (None, ""):
            return value
    return None


def signed_at_of(payload: Mapping[str, Any]) -> int | None:
    """When a stored voucher was signed (its `validAfter` + the signing margin), whichever scheme signed it;
    None when it carries no date (signed with validAfter 0, as the upstream skill and older versions do)."""
    for scheme in SCHEMES.values():
        value = scheme.valid_after(payload)
        if value not in (None, ""):
            return signed_at_from(value)
    return None


def identify(auth: Mapping[str, Any], payment: Mapping[str, Any]) -> OnChainVoucher | None:
    """A stored voucher as the chain knows it, by whichever scheme signed it; None when none recognises it."""
    for scheme in SCHEMES.values():
        found = scheme.identify(auth, payment)
        if found is not None:
            return found
    return None


__all__ = ["SCHEMES", "DEFAULT", "PaymentScheme", "SigningPlan", "OnChainVoucher", "Revocation", "for_extra", "of",
           "deadline_of", "signed_at_of", "echo_extensions", "identify", "SIGNING_MARGIN_S", "valid_after_for"]

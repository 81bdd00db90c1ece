"""x402 v2 extensions a seller declares in its 402, and what each voucher carries back.

A voucher echoes every declared extension's `info` (the `schema` half is dropped to keep a
PurchaseRequest small; upstream buy.py does the same). One extension needs more than an echo:

- `payment-identifier` (the x402 SDK's `x402.extensions.payment_identifier`): an idempotency key
  the client supplies per payment, `info.id`, 16-128 characters of `[A-Za-z0-9_-]`, next to the
  server's `info.required`. Each voucher gets a fresh one ("pay_" + 32 hex, as the SDK's
  `generate_payment_id` makes them): the seller deduplicates by it, so two vouchers sharing one
  would look like one payment retried.

A seller marks an extension it cannot serve without as `info.required: true` (payment-identifier's
convention). An extension required that this skill does not implement is refused before anything
is signed: the seller would take the voucher and refuse the request, or worse, settle it.
"""
from __future__ import annotations

import copy
import re
import secrets
from typing import Any, Mapping

from .errors import SellerError

PAYMENT_IDENTIFIER = "payment-identifier"
EIP2612_GAS_SPONSORING = "eip2612GasSponsoring"
PAYMENT_ID_PREFIX = "pay_"
PAYMENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
# Extensions this skill satisfies whenever a seller requires them: an echo of `info` is all that
# `bazaar` (discovery metadata) asks; `payment-identifier` gets a fresh id per voucher.
SATISFIED = frozenset({PAYMENT_IDENTIFIER, "bazaar"})


def new_payment_id() -> str:
    """A payment identifier in the SDK's shape: "pay_" + 32 hex characters (36, within 16-128)."""
    return PAYMENT_ID_PREFIX + secrets.token_hex(16)


def required(offered: Mapping[str, Any] | None) -> list[str]:
    """The extensions a seller declares with `info.required: true`, in its order."""
    out = []
    for key, value in (offered or {}).items():
        info = value.get("info") if isinstance(value, Mapping) else None
        if isinstance(info, Mapping) and info.get("required") is True:
            out.append(str(key))
    return out


def check_satisfiable(offered: Mapping[str, Any] | None, *, url: str, sponsored: bool = False) -> None:
    """Refuse (SellerError, exit 1) a seller that requires an extension this skill cannot supply.

    `sponsored`: the vouchers to be signed carry an EIP-2612 permit (Permit2 gas sponsoring), which
    is what a required `eip2612GasSponsoring` asks for.
    """
    supplied = SATISFIED | ({EIP2612_GAS_SPONSORING} if sponsored else set())
    missing = [key for key in required(offered) if key not in supplied]
    if missing:
        names = ", ".join(missing)
        raise SellerError(f"{url}: the seller requires the x402 extension{'s' if len(missing) > 1 else ''} {names}, "
                          "which this skill does not implement; nothing was signed",
                          hint="use another seller (or ask this one to make the extension optional)",
                          code="extension_unsupported", data={"extensions": missing, "url": url})


def echo(offered: Mapping[str, Any] | None) -> dict | None:
    """Each declared extension's `info` only (schemas dropped to keep the CR small); None when none."""
    echoed = {key: {"info": copy.deepcopy(value["info"])}
              for key, value in (offered or {}).items() if isinstance(value, Mapping) and "info" in value}
    return echoed or None


def for_voucher(offered: Mapping[str, Any] | None) -> dict | None:
    """The `extensions` one voucher carries: the echo, with a fresh payment identifier when the seller
    declared that extension. None when the seller declared none."""
    echoed = echo(offered) or {}
    identifier = echoed.get(PAYMENT_IDENTIFIER)
    if identifier is not None:
        info = identifier["info"] if isinstance(identifier["info"], dict) else {}
        identifier["info"] = dict(info, id=new_payment_id())
    return echoed or None


def payment_id(extensions: Mapping[str, Any] | None) -> str | None:
    """The payment identifier a voucher's extensions carry, if any."""
    info = ((extensions or {}).get(PAYMENT_IDENTIFIER) or {}).get("info") if extensions else None
    value = info.get("id") if isinstance(info, Mapping) else None
    return value if isinstance(value, str) else None


__all__ = ["PAYMENT_IDENTIFIER", "SATISFIED", "new_payment_id", "required", "check_satisfiable", "echo", "for_voucher",
           "payment_id", "PAYMENT_ID_PATTERN"]

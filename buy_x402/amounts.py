"""Money on the command line and on screen: token units vs atomic units, voucher counts, expiry.

A bare integer is always atomic units (what the 402 says); anything with a decimal point, a symbol
or "$" is token units scaled by the asset's decimals. An amount that names a different token than the
one being paid in is refused rather than converted: there is no price oracle here.
"""
from __future__ import annotations

import re
from decimal import Context, Decimal

from .errors import PaymentChoiceError, UsageError
from .urls import shown

DEFAULT_BUDGET_ATOMIC = 100_000_000   # 100 USDC, as upstream buy.py
MAX_AUTH_COUNT = 1000                 # the most vouchers one run signs (each scheme may cap lower)
DEFAULT_AUTH_TTL_SECONDS = 30 * 24 * 3600
MIN_AUTH_TTL_SECONDS = 600
MAX_SAFE_DEADLINE = 4294967295        # "never": the largest uint32, what upstream uses
NEVER_WORDS = ("never", "0", "none", "-1")
_EXACT = Context(prec=200)  # uint256 has 78 digits: never let scaling round

MAX_ATOMIC = 2**256 - 1                # a uint256: no token amount is larger
MAX_AMOUNT_CHARS = 100
MAX_TTL_DIGITS = 12
_MONEY = re.compile(r"^(?P<dollar>\$)?\s*(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<sym>[A-Za-z][A-Za-z0-9.\-]*)?$")
_EXPONENT = re.compile(r"^\$?\s*[0-9.]+[eE][+-]?[0-9]+\b")
_AMOUNT_HINT = "use atomic units (10000), token units (0.01 or '0.01 USDC') or dollars ($0.01)"


def check_money_syntax(text: str, what: str = "amount") -> None:
    """UsageError unless `text` reads as an amount: what the command line can check before the
    offer's token is known (the scale and the symbol are checked by `parse_money` after the probe)."""
    raw = str(text).strip()
    if len(raw) > MAX_AMOUNT_CHARS:
        raise UsageError(f"{what} is {len(raw)} characters long; no amount needs more than {MAX_AMOUNT_CHARS}",
                         hint=_AMOUNT_HINT)
    if _EXPONENT.match(raw):
        raise UsageError(f"{what} {shown(raw, 40)} is in scientific notation, which amounts do not take",
                         hint="write the number out, e.g. 1000 (atomic units) or 0.001 (token units)")
    match = _MONEY.match(raw)
    if not match:
        raise UsageError(f"{what} {shown(raw, 40)} is not an amount", hint=_AMOUNT_HINT)
    if match["sym"] and match["sym"].lower() in ("nan", "inf", "infinity"):
        raise UsageError(f"{what} {shown(raw, 40)} is not an amount", hint=_AMOUNT_HINT)
    whole = match["num"].split(".")[0]
    if len(whole.lstrip("0")) > 78:
        raise UsageError(f"{what} {shown(raw, 40)} is larger than any token amount (2^256 - 1)",
                         hint=_AMOUNT_HINT)


def check_auth_ttl(text: str | None) -> None:
    """UsageError unless `text` is a voucher lifetime `auth_expiry` takes: seconds or 'never'."""
    raw = str(text or "").strip().lower()
    if raw in NEVER_WORDS or not raw:
        return
    if len(raw) > MAX_TTL_DIGITS or not raw.isascii() or not raw.isdigit():
        raise UsageError(f"auth TTL {shown(text, 40)} is not a number of seconds or 'never'",
                         hint="use e.g. --auth-ttl 86400, or --auth-ttl never")


def parse_money(text: str, *, decimals: int | None, symbol: str | None, what: str = "amount") -> int:
    """Atomic units for `text` ("1000", "1.5", "1.5 USDC", "1.5USDC", "$1.50") paid in `symbol`.

    "$" means a USD stablecoin, so it is only valid when the asset is USDC. `what` names the flag in
    messages (e.g. "--budget").
    """
    raw = str(text).strip()
    check_money_syntax(raw, what)
    if raw.isascii() and raw.isdigit():
        value = int(raw)
        if value <= 0:
            raise UsageError(f"{what} must be positive, got {raw!r}")
        if value > MAX_ATOMIC:
            raise UsageError(f"{what} {shown(raw, 40)} is larger than any token amount (2^256 - 1)")
        return value
    match = _MONEY.match(raw)
    asset_symbol = (symbol or "").upper() or None
    named = (match["sym"] or "").upper() or None
    if match["dollar"] and asset_symbol != "USDC":
        raise PaymentChoiceError(f"{what} {raw!r} is in dollars but the payment asset is "
                                 f"{symbol or 'an unknown token'}, not USDC",
                                 hint="give the amount in atomic units or in the asset's own units")
    if named and named != asset_symbol:
        raise PaymentChoiceError(f"{what} {raw!r} is in {named} but the payment asset is "
                                 f"{symbol or 'an unknown token'}",
                                 hint="choose the matching offer with --token, or give atomic units")
    if decimals is None:
        raise PaymentChoiceError(f"{what} {raw!r} is in token units but the asset's decimals are unknown",
                                 hint="give the amount in atomic units (a bare integer)")
    number = Decimal(match["num"])
    scaled = number.scaleb(decimals, context=_EXACT)
    if scaled != scaled.to_integral_value():
        raise UsageError(f"{what} {raw!r} has more than {decimals} decimal places for {symbol or 'this token'}")
    value = int(scaled)
    if value <= 0:
        raise UsageError(f"{what} must be positive, got {raw!r}")
    if value > MAX_ATOMIC:
        raise UsageError(f"{what} {shown(raw, 40)} is larger than any token amount (2^256 - 1)")
    return value


def format_amount(atomic: int, decimals: int | None, symbol: str | None) -> str:
    """'0.001 USDC (1000 atomic)'; without known decimals just '1000 atomic units'."""
    atomic = int(atomic)
    if decimals is None:
        return f"{atomic} atomic units" + (f" of {symbol}" if symbol else "")
    scaled = Decimal(atomic).scaleb(-decimals, context=_EXACT)
    text = f"{scaled:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} {symbol} ({atomic} atomic)" if symbol else f"{text} ({atomic} atomic)"


def auth_count(price: int, *, budget: int | None = None, count: int | None = None,
               cap: int = MAX_AUTH_COUNT) -> int:
    """How many vouchers to sign (§6 step 5): --count wins (capped), else budget // price (capped), ≥ 1.
    `cap` is the payment scheme's `max_auths`.

    An explicit --budget is a promise: a count whose total exceeds it is a usage error, never a
    silent overspend.
    """
    price = int(price)
    if price <= 0:
        raise PaymentChoiceError(f"the offer's price must be positive, got {price}")
    if count is not None:
        if int(count) < 1:
            raise UsageError(f"--count must be at least 1, got {count}")
        n = min(int(count), cap)
    else:
        n = min((DEFAULT_BUDGET_ATOMIC if budget is None else int(budget)) // price, cap)
    n = max(n, 1)
    if budget is not None and n * price > int(budget):
        if count is not None:
            raise UsageError(f"--count {n} costs {n * price} atomic units, more than --budget {budget}",
                             hint="raise --budget or lower --count")
        raise UsageError(f"--budget {budget} is less than one request's price {price}",
                         hint="raise --budget")
    return n


def auth_expiry(ttl_text: str | None, now: int) -> int:
    """validBefore/deadline for new vouchers (§7.1): default 30 days, at least 10 minutes, or never."""
    if ttl_text is None or not str(ttl_text).strip():
        return min(now + DEFAULT_AUTH_TTL_SECONDS, MAX_SAFE_DEADLINE)
    text = str(ttl_text).strip().lower()
    if text in NEVER_WORDS:
        return MAX_SAFE_DEADLINE
    check_auth_ttl(text)
    return min(now + max(int(text), MIN_AUTH_TTL_SECONDS), MAX_SAFE_DEADLINE)


__all__ = ["parse_money", "check_money_syntax", "check_auth_ttl", "MAX_ATOMIC", "format_amount", "auth_count", "auth_expiry",
           "DEFAULT_BUDGET_ATOMIC", "MAX_AUTH_COUNT", "MAX_SAFE_DEADLINE"]

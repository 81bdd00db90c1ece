"""Numbers and names from the command line, checked once, before anything is signed or sent.

Every number a flag takes is finite and inside a stated range (`nan`, `inf`, `-1` and `1e308` are
usage errors, never a timeout that breaks after a voucher left); whole numbers are plain ASCII
digits of bounded length (Python's `int` would take `١٢`, `1_0` and raise on 5000 digits). The
argparse types in `cli` and the commands' own checks both come from here.
"""
from __future__ import annotations

import math
import re

from .errors import UsageError
from .urls import shown

MAX_DIGITS = 80          # a uint256 has 78 digits; anything longer is not a number this skill uses
MAX_MODEL_ID_CHARS = 512
_WHOLE = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


def whole_number(text: str, *, minimum: int, maximum: int, what: str) -> int:
    """A whole number in [minimum, maximum] written in ASCII digits; UsageError otherwise."""
    raw = str(text).strip()
    if len(raw) > MAX_DIGITS or not _WHOLE.fullmatch(raw):
        raise UsageError(f"{what} expects a whole number, got {shown(raw, 40)}",
                         hint=f"use digits only, between {minimum} and {maximum}")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise UsageError(f"{what} must be between {minimum} and {maximum}, got {value if len(raw) < 20 else shown(raw, 40)}",
                         hint=f"use a number between {minimum} and {maximum}")
    return value


def finite_number(text: str, *, minimum: float, maximum: float, what: str, strictly_above: bool = True) -> float:
    """A finite decimal number (no exponent, no nan/inf) with minimum < value <= maximum
    (minimum <= value when not `strictly_above`); UsageError otherwise."""
    raw = str(text).strip()
    if len(raw) > MAX_DIGITS or not _DECIMAL.fullmatch(raw):
        raise UsageError(f"{what} expects a plain decimal number, got {shown(raw, 40)}",
                         hint=f"e.g. {what} 30 (no exponent, nan or inf)")
    value = float(raw)
    low_ok = value > minimum if strictly_above else value >= minimum
    if not (math.isfinite(value) and low_ok and value <= maximum):
        bound = "more than" if strictly_above else "at least"
        raise UsageError(f"{what} must be {bound} {minimum:g} and at most {maximum:g}, got {raw}",
                         hint=f"use a number in that range, e.g. {what} 30")
    return value


def model_id(text: str, what: str) -> str:
    """A model id as a flag or argument gives it: not empty, bounded, no control characters."""
    if len(text) > MAX_MODEL_ID_CHARS:
        raise UsageError(f"{what} {shown(text, 60)} is longer than {MAX_MODEL_ID_CHARS} characters",
                         hint="pass the exact model id, e.g. qwen3.6-35b", code="bad_model_name")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise UsageError(f"{what} {shown(text, 60)} contains control characters",
                         hint="pass the exact model id, e.g. qwen3.6-35b", code="bad_model_name")
    return text


__all__ = ["whole_number", "finite_number", "model_id", "MAX_DIGITS", "MAX_MODEL_ID_CHARS"]

"""Money parsing, display, voucher counts and expiry: the arithmetic a budget depends on."""
from __future__ import annotations

import pytest

from buy_x402.amounts import (DEFAULT_BUDGET_ATOMIC, MAX_SAFE_DEADLINE, auth_count, auth_expiry, format_amount,
                              parse_money)
from buy_x402.errors import PaymentChoiceError, UsageError
from buy_x402.schemes.permit2 import SCHEME as PERMIT2

NOW = 1_800_000_000


@pytest.mark.parametrize("text, expected", [
    ("1000", 1000),
    ("1.5", 1_500_000),
    ("1.5 USDC", 1_500_000),
    ("1.5USDC", 1_500_000),
    ("1.5 usdc", 1_500_000),
    ("$1.50", 1_500_000),
    ("$0.000001", 1),
    ("0.01", 10_000),
    (".5", 500_000),
    ("  7  ", 7),
])
def test_parse_money_usdc(text, expected):
    assert parse_money(text, decimals=6, symbol="USDC") == expected


def test_parse_money_eighteen_decimals():
    assert parse_money("2.5 OBOL", decimals=18, symbol="OBOL") == 2_500_000_000_000_000_000
    # 30+ significant digits: no rounding by the default 28-digit decimal context.
    assert parse_money("123456789012.123456789012345678", decimals=18, symbol="OBOL") == 123456789012123456789012345678
    assert parse_money("1", decimals=18, symbol="OBOL") == 1  # bare integer stays atomic


@pytest.mark.parametrize("text, message", [
    ("$1", "is in dollars but the payment asset is OBOL"),
    ("1 USDC", "is in USDC but the payment asset is OBOL"),
])
def test_parse_money_symbol_mismatch(text, message):
    with pytest.raises(PaymentChoiceError, match=message):
        parse_money(text, decimals=18, symbol="OBOL")


def test_parse_money_unknown_token():
    with pytest.raises(PaymentChoiceError, match="decimals are unknown"):
        parse_money("1.5", decimals=None, symbol=None)
    with pytest.raises(PaymentChoiceError, match="an unknown token"):
        parse_money("1.5 USDC", decimals=None, symbol=None)
    assert parse_money("15", decimals=None, symbol=None) == 15


@pytest.mark.parametrize("text, error, message", [
    ("0.0000001", UsageError, "more than 6 decimal places"),
    ("0", UsageError, "must be positive"),
    ("0.0", UsageError, "must be positive"),
    ("-5", UsageError, "is not an amount"),
    ("abc", UsageError, "is not an amount"),
    ("1,5", UsageError, "is not an amount"),
    ("", UsageError, "is not an amount"),
])
def test_parse_money_rejects(text, error, message):
    with pytest.raises(error, match=message):
        parse_money(text, decimals=6, symbol="USDC", what="--budget")


def test_parse_money_names_the_flag():
    with pytest.raises(UsageError, match="^--cost-cap 'x' is not an amount"):
        parse_money("x", decimals=6, symbol="USDC", what="--cost-cap")


@pytest.mark.parametrize("atomic, decimals, symbol, text", [
    (1000, 6, "USDC", "0.001 USDC (1000 atomic)"),
    (10_000, 6, "USDC", "0.01 USDC (10000 atomic)"),
    (1_000_000, 6, "USDC", "1 USDC (1000000 atomic)"),
    (1_500_000, 6, "USDC", "1.5 USDC (1500000 atomic)"),
    (10**18, 18, "OBOL", "1 OBOL (1000000000000000000 atomic)"),
    (1, 18, "OBOL", "0.000000000000000001 OBOL (1 atomic)"),
    (42, None, None, "42 atomic units"),
    (123456789012123456789012345678, 18, "OBOL", "123456789012.123456789012345678 OBOL (123456789012123456789012345678 atomic)"),
    (42, 2, None, "0.42 (42 atomic)"),
])
def test_format_amount(atomic, decimals, symbol, text):
    assert format_amount(atomic, decimals, symbol) == text


def test_auth_count_default_budget():
    assert auth_count(1_000_000) == DEFAULT_BUDGET_ATOMIC // 1_000_000 == 100
    assert auth_count(10_000) == 1000  # 10 000 affordable, capped
    assert auth_count(10_000, cap=PERMIT2.max_auths) == 500
    assert auth_count(DEFAULT_BUDGET_ATOMIC * 10) == 1  # never zero


def test_auth_count_budget_and_count():
    assert auth_count(10_000, budget=55_000) == 5
    assert auth_count(10_000, count=7) == 7
    assert auth_count(10_000, count=5000) == 1000
    assert auth_count(10_000, count=5000, cap=PERMIT2.max_auths) == 500
    assert auth_count(10_000, count=5, budget=50_000) == 5


def test_auth_count_count_over_budget_names_both():
    with pytest.raises(UsageError, match=r"--count 6 costs 60000 atomic units, more than --budget 50000"):
        auth_count(10_000, count=6, budget=50_000)


def test_auth_count_budget_below_price():
    with pytest.raises(UsageError, match="--budget 9999 is less than one request's price 10000"):
        auth_count(10_000, budget=9_999)


def test_auth_count_rejects_bad_input():
    with pytest.raises(UsageError, match="--count must be at least 1"):
        auth_count(10_000, count=0)
    with pytest.raises(PaymentChoiceError, match="price must be positive"):
        auth_count(0)


@pytest.mark.parametrize("ttl, expected", [
    (None, NOW + 30 * 24 * 3600),
    ("", NOW + 30 * 24 * 3600),
    ("86400", NOW + 86400),
    ("60", NOW + 600),  # at least ten minutes
    ("never", MAX_SAFE_DEADLINE),
    ("NEVER", MAX_SAFE_DEADLINE),
    ("0", MAX_SAFE_DEADLINE),
    ("none", MAX_SAFE_DEADLINE),
    ("-1", MAX_SAFE_DEADLINE),
    ("99999999999", MAX_SAFE_DEADLINE),  # clamped to the uint32 "never" ceiling
])
def test_auth_expiry(ttl, expected):
    assert auth_expiry(ttl, NOW) == expected


@pytest.mark.parametrize("ttl", ["soon", "1h", "-5", "1.5"])
def test_auth_expiry_rejects_garbage(ttl):
    with pytest.raises(UsageError, match="is not a number of seconds or 'never'"):
        auth_expiry(ttl, NOW)

"""The few ABI pieces the skill sends and reads on chain, encoded by hand (static words only).

The shipped skill needs only `requests` and `PyYAML`, so there is no keccak here: selectors and
event topics are constants, each pinned by a unit test that recomputes it with eth-utils.
"""
from __future__ import annotations

from .errors import ChainError

# ERC-20 / EIP-3009 (USDC's FiatTokenV2): the v,r,s overload of cancelAuthorization, which every
# FiatTokenV2 version has (the `bytes signature` overload is newer).
AUTHORIZATION_STATE = "e94a0102"            # authorizationState(address,bytes32)
CANCEL_AUTHORIZATION = "5a049a70"           # cancelAuthorization(address,bytes32,uint8,bytes32,bytes32)
TRANSFER_WITH_AUTHORIZATION = "e3ee160e"    # transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)
# Permit2 (SignatureTransfer): unordered nonces live in a bitmap per owner and 256-nonce word.
NONCE_BITMAP = "4fe02b44"                   # nonceBitmap(address,uint256)
INVALIDATE_UNORDERED_NONCES = "3ff9dcb1"    # invalidateUnorderedNonces(uint256,uint256)

TOPIC_AUTHORIZATION_USED = "0x98de503528ee59b575ef0c0a2576a82497bfc029a5685b209e9ec333479b10a5"
TOPIC_AUTHORIZATION_CANCELED = "0x1cdd46ff242716cdaa72d159d339a485b3438398348d68f09d7c8c0a59353d81"
TOPIC_UNORDERED_NONCE_INVALIDATION = "0x3704902f963766a4e561bbaab6e6cdc1b1dd12f6e9e99648da8843b3f46b918d"
TOPIC_TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"

UINT256_MAX = (1 << 256) - 1


def address_word(address: str) -> str:
    """A 20-byte address as one 32-byte ABI word (64 hex digits, no 0x)."""
    hex_part = str(address).lower().removeprefix("0x")
    if len(hex_part) != 40 or any(c not in "0123456789abcdef" for c in hex_part):
        raise ChainError(f"{address!r} is not a 20-byte hex address")
    return hex_part.rjust(64, "0")


def uint_word(value: int) -> str:
    value = int(value)
    if not 0 <= value <= UINT256_MAX:
        raise ChainError(f"{value} does not fit in a uint256")
    return format(value, "064x")


def bytes32_word(value: str | int) -> str:
    """A bytes32 given as 0x-hex (32 bytes) or as an integer."""
    if isinstance(value, int):
        return uint_word(value)
    hex_part = str(value).lower().removeprefix("0x")
    if len(hex_part) != 64 or any(c not in "0123456789abcdef" for c in hex_part):
        raise ChainError(f"{value!r} is not 32 bytes of hex")
    return hex_part


def call_data(selector: str, *words: str) -> str:
    """0x + selector + the already-encoded 32-byte words."""
    return "0x" + selector + "".join(words)


def topic_address(address: str) -> str:
    return "0x" + address_word(address)


def split_signature(signature: str) -> tuple[int, str, str]:
    """(v, r, s) of a 65-byte r‖s‖v signature; v as 27/28."""
    hex_part = signature.removeprefix("0x")
    if len(hex_part) != 130:
        raise ChainError(f"a signature must be 65 bytes, got {len(hex_part) // 2}")
    v = int(hex_part[128:], 16)
    return (v + 27 if v < 27 else v), hex_part[:64], hex_part[64:128]


def words(data: str) -> list[int]:
    """The 32-byte words of ABI-encoded return or log data."""
    hex_part = (data or "0x").removeprefix("0x")
    return [int(hex_part[i:i + 64], 16) for i in range(0, len(hex_part) - len(hex_part) % 64, 64)]


__all__ = ["address_word", "uint_word", "bytes32_word", "call_data", "topic_address", "split_signature", "words",
           "AUTHORIZATION_STATE", "CANCEL_AUTHORIZATION", "TRANSFER_WITH_AUTHORIZATION", "NONCE_BITMAP",
           "INVALIDATE_UNORDERED_NONCES", "TOPIC_AUTHORIZATION_USED", "TOPIC_AUTHORIZATION_CANCELED",
           "TOPIC_UNORDERED_NONCE_INVALIDATION", "TOPIC_TRANSFER", "UINT256_MAX"]

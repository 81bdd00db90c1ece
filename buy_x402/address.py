"""EVM addresses as a seller writes them: 20 bytes of hex, and the EIP-55 checksum when mixed-case.

A mixed-case address whose checksum does not match is a typo (or a tampered offer): vouchers for it
would pay an address nobody controls, so it is refused before anything is signed. EIP-55 needs
Keccak-256, which `hashlib` does not have (its sha3_256 pads differently); the skill ships with
requests and PyYAML only, so the permutation is here, in plain Python (an address is one block).
"""
from __future__ import annotations

import functools
import re

_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_ROUNDS = (
    0x0000000000000001, 0x0000000000008082, 0x800000000000808A, 0x8000000080008000, 0x000000000000808B,
    0x0000000080000001, 0x8000000080008081, 0x8000000000008009, 0x000000000000008A, 0x0000000000000088,
    0x0000000080008009, 0x000000008000000A, 0x000000008000808B, 0x800000000000008B, 0x8000000000008089,
    0x8000000000008003, 0x8000000000008002, 0x8000000000000080, 0x000000000000800A, 0x800000008000000A,
    0x8000000080008081, 0x8000000000008080, 0x0000000080000001, 0x8000000080008008,
)
_ROTATIONS = ((0, 36, 3, 41, 18), (1, 44, 10, 45, 2), (62, 6, 43, 15, 61), (28, 55, 25, 21, 56),
              (27, 20, 39, 8, 14))
_MASK = (1 << 64) - 1
_RATE = 136  # bytes: Keccak-256


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (64 - shift))) & _MASK if shift else value


def _permute(lanes: list[list[int]]) -> None:
    for constant in _ROUNDS:
        c = [lanes[x][0] ^ lanes[x][1] ^ lanes[x][2] ^ lanes[x][3] ^ lanes[x][4] for x in range(5)]
        d = [c[(x - 1) % 5] ^ _rotl(c[(x + 1) % 5], 1) for x in range(5)]
        for x in range(5):
            for y in range(5):
                lanes[x][y] ^= d[x]
        b = [[0] * 5 for _ in range(5)]
        for x in range(5):
            for y in range(5):
                b[y][(2 * x + 3 * y) % 5] = _rotl(lanes[x][y], _ROTATIONS[x][y])
        for x in range(5):
            for y in range(5):
                lanes[x][y] = b[x][y] ^ (~b[(x + 1) % 5][y] & b[(x + 2) % 5][y])
        lanes[0][0] ^= constant


def keccak256(data: bytes) -> bytes:
    """Keccak-256 as Ethereum uses it (original padding 0x01, not SHA3's 0x06)."""
    padded = bytearray(data) + b"\x01" + b"\x00" * ((-len(data) - 1) % _RATE)
    padded[-1] |= 0x80
    lanes = [[0] * 5 for _ in range(5)]
    for start in range(0, len(padded), _RATE):
        block = padded[start:start + _RATE]
        for i in range(_RATE // 8):
            lanes[i % 5][i // 5] ^= int.from_bytes(block[8 * i:8 * i + 8], "little")
        _permute(lanes)
    return b"".join(lanes[i % 5][i // 5].to_bytes(8, "little") for i in range(4))


@functools.lru_cache(maxsize=256)
def to_checksum(address: str) -> str:
    """The EIP-55 spelling of a 0x-prefixed 40-hex-digit address. Remembered: the Keccak here is plain
    Python (~1 ms), and `process` re-reads the same seller's addresses for every refill."""
    lower = address[2:].lower()
    digest = keccak256(lower.encode("ascii")).hex()
    return "0x" + "".join(ch.upper() if int(digest[i], 16) >= 8 else ch for i, ch in enumerate(lower))


def address_problem(address: str) -> str | None:
    """Why `address` cannot be paid to or signed for, or None: not 0x + 40 hex digits, or
    mixed-case with a wrong EIP-55 checksum (all lower or all upper case carries no checksum)."""
    if not isinstance(address, str) or not _HEX_ADDRESS.fullmatch(address):
        return "is not an address (0x and 40 hex digits)"
    digits = address[2:]
    if digits == digits.lower() or digits == digits.upper():
        return None
    if address != to_checksum(address):
        return "fails its EIP-55 checksum (a mistyped or altered address)"
    return None


__all__ = ["keccak256", "to_checksum", "address_problem"]

"""A minimal JSON-RPC client for the pod's eRPC gateway (`POST <ERPC_URL>/<chain>`).

Only reads: code, ERC-20 balance/allowance, EIP-2612 nonces, and what settles a payment (receipts,
the token's Transfer events, EIP-3009 authorizationState, Permit2's nonce bitmap). Errors name the chain and the method so
an operator can tell a missing RPC route from a token that does not exist.
"""
from __future__ import annotations

import itertools
from typing import Any

import requests

from .errors import ChainError
from .http import send
from .offer import Chain

RPC_TIMEOUT_S = 30.0
SELECTOR_BALANCE_OF = "70a08231"
SELECTOR_ALLOWANCE = "dd62ed3e"
SELECTOR_NONCES = "7ecebe00"
SELECTOR_AUTHORIZATION_STATE = "e94a0102"   # EIP-3009 authorizationState(address,bytes32)
SELECTOR_NONCE_BITMAP = "4fe02b44"          # Permit2 nonceBitmap(address,uint256)
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"  # Transfer(address,address,uint256)


def _name(chain: Chain | str) -> str:
    return chain.name if isinstance(chain, Chain) else str(chain)


def _address_word(address: str) -> str:
    hex_part = address.lower().removeprefix("0x")
    if len(hex_part) != 40 or any(c not in "0123456789abcdef" for c in hex_part):
        raise ChainError(f"{address!r} is not a 20-byte hex address")
    return hex_part.rjust(64, "0")


def _uint(result: Any, what: str) -> int:
    if not isinstance(result, str) or not result.startswith("0x") or len(result) <= 2:
        raise ChainError(f"{what} returned no value ({result!r}): is there a token contract at that address?")
    return int(result, 16)


class ChainClient:
    def __init__(self, session: requests.Session, erpc_url: str) -> None:
        self.session = session
        self.erpc_url = erpc_url.rstrip("/")
        self._ids = itertools.count(1)

    def rpc(self, chain: Chain | str, method: str, params: list | None = None) -> Any:
        """One JSON-RPC 2.0 call; the `result`, or ChainError (with `rpc_error` data) on any failure."""
        name = _name(chain)
        url = f"{self.erpc_url}/{name}"
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or []}
        response = send(self.session, "POST", url, peer="chain RPC (eRPC)", timeout=RPC_TIMEOUT_S, json=body)
        if response.status_code != 200:
            raise ChainError(f"{method} on {name}: RPC answered HTTP {response.status_code}: {response.text[:200]}",
                             hint=f"check that ERPC_URL serves chain {name!r}",
                             data={"chain": name, "method": method, "status": response.status_code})
        try:
            doc = response.json()
        except ValueError:
            raise ChainError(f"{method} on {name}: RPC answer is not JSON: {response.text[:200]}",
                             data={"chain": name, "method": method}) from None
        if not isinstance(doc, dict):
            raise ChainError(f"{method} on {name}: RPC answer is not a JSON-RPC object: {response.text[:200]}",
                             data={"chain": name, "method": method})
        if doc.get("error") is not None:
            error = doc["error"]
            text = error.get("message", error) if isinstance(error, dict) else error
            raise ChainError(f"{method} on {name} failed: {text}",
                             data={"chain": name, "method": method, "rpc_error": error})
        if "result" not in doc:
            raise ChainError(f"{method} on {name}: RPC answer has no result: {response.text[:200]}",
                             data={"chain": name, "method": method})
        return doc["result"]

    def call(self, chain: Chain | str, to: str, data: str) -> Any:
        return self.rpc(chain, "eth_call", [{"to": to, "data": data}, "latest"])

    def get_code(self, chain: Chain | str, address: str) -> str:
        return str(self.rpc(chain, "eth_getCode", [address, "latest"]) or "0x")

    def has_code(self, chain: Chain | str, address: str) -> bool:
        return self.get_code(chain, address) not in ("0x", "0x0", "")

    def balance_of(self, chain: Chain | str, token: str, owner: str) -> int:
        data = "0x" + SELECTOR_BALANCE_OF + _address_word(owner)
        return _uint(self.call(chain, token, data), f"balanceOf({owner}) on {token} ({_name(chain)})")

    def allowance(self, chain: Chain | str, token: str, owner: str, spender: str) -> int:
        data = "0x" + SELECTOR_ALLOWANCE + _address_word(owner) + _address_word(spender)
        return _uint(self.call(chain, token, data), f"allowance({owner}, {spender}) on {token} ({_name(chain)})")

    def nonces(self, chain: Chain | str, token: str, owner: str) -> int | None:
        """The token's EIP-2612 nonce for `owner`; None when the token has no `nonces` (reverts or is silent).

        HTTP failures and unreachable RPC still raise: "unknown" is not "unsupported".
        """
        data = "0x" + SELECTOR_NONCES + _address_word(owner)
        try:
            result = self.call(chain, token, data)
        except ChainError as exc:
            if "rpc_error" in exc.data:
                return None
            raise
        if not isinstance(result, str) or len(result) < 66:
            return None
        return int(result, 16)

    # -- settlement reads: what the chain says about a payment, whatever the seller says --------------

    def receipt(self, chain: Chain | str, tx_hash: str) -> dict | None:
        """The transaction's receipt, or None while the chain does not know it (pending or never sent)."""
        if not _is_hash(tx_hash):
            raise ChainError(f"{tx_hash!r} is not a 32-byte transaction hash")
        result = self.rpc(chain, "eth_getTransactionReceipt", [tx_hash])
        if result is not None and not isinstance(result, dict):
            raise ChainError(f"eth_getTransactionReceipt({tx_hash}) on {_name(chain)} returned {result!r}")
        return result

    def authorization_state(self, chain: Chain | str, token: str, authorizer: str, nonce: str) -> bool:
        """EIP-3009: whether `authorizer`'s `nonce` is used (or cancelled) on `token`."""
        if not _is_hash(nonce):
            raise ChainError(f"{nonce!r} is not a 32-byte EIP-3009 nonce")
        data = "0x" + SELECTOR_AUTHORIZATION_STATE + _address_word(authorizer) + nonce[2:].lower()
        return _uint(self.call(chain, token, data), f"authorizationState({authorizer}, {nonce}) on {token} "
                                                    f"({_name(chain)})") != 0

    def permit2_nonce_used(self, chain: Chain | str, permit2: str, owner: str, nonce: int) -> bool:
        """Permit2's unordered nonces: bit (nonce & 255) of nonceBitmap(owner, nonce >> 8)."""
        word = format(int(nonce) >> 8, "064x")
        bitmap = _uint(self.call(chain, permit2, "0x" + SELECTOR_NONCE_BITMAP + _address_word(owner) + word),
                       f"nonceBitmap({owner}) on Permit2 ({_name(chain)})")
        return bool((bitmap >> (int(nonce) & 0xFF)) & 1)


def _is_hash(value: Any) -> bool:
    text = str(value or "")
    return len(text) == 66 and text[:2] == "0x" and all(c in "0123456789abcdefABCDEF" for c in text[2:])


def transfers(receipt: dict, token: str) -> list[dict]:
    """The token's Transfer(from, to, value) events in a receipt, decoded ({from, to, value})."""
    out = []
    for log in receipt.get("logs") or []:
        topics = log.get("topics") or []
        if (str(log.get("address") or "").lower() != token.lower() or len(topics) != 3
                or str(topics[0]).lower() != TRANSFER_TOPIC):
            continue
        try:
            value = int(log.get("data") or "0x0", 16)
        except ValueError:
            continue
        out.append({"from": "0x" + str(topics[1])[-40:].lower(), "to": "0x" + str(topics[2])[-40:].lower(),
                    "value": value})
    return out


__all__ = ["ChainClient", "SELECTOR_BALANCE_OF", "SELECTOR_ALLOWANCE", "SELECTOR_NONCES", "TRANSFER_TOPIC", "transfers"]

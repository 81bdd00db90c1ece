"""A minimal JSON-RPC client for the pod's eRPC gateway (`POST <ERPC_URL>/<chain>`).

Only reads: code, ERC-20 balance/allowance, EIP-2612 nonces. Errors name the chain and the method so
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


__all__ = ["ChainClient", "SELECTOR_BALANCE_OF", "SELECTOR_ALLOWANCE", "SELECTOR_NONCES"]

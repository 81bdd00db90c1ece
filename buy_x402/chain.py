"""A minimal JSON-RPC client for the pod's eRPC gateway (`POST <ERPC_URL>/<chain>`).

Reads (code, ERC-20 balance/allowance, EIP-2612 nonces, receipts and the token's Transfer events,
many `eth_call`s as bounded JSON-RPC batches, logs, blocks) and the few writes the skill makes itself: raw transactions the
remote signer signed (voucher cancellation). Errors name the chain and the method so an operator
can tell a missing RPC route from a token that does not exist.
"""
from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import requests

from .errors import ChainError
from .http import send
from .offer import Chain

RPC_TIMEOUT_S = 30.0
BATCH_SIZE = 100          # JSON-RPC calls per batch request
BATCH_WORKERS = 4         # batch requests in flight at once: bounded load on eRPC
LOG_RANGE_BLOCKS = 10_000  # eth_getLogs block span per request (providers cap the range)
RECEIPT_POLL_S = 0.5
FALLBACK_TIP_WEI = 1_000_000_000
SELECTOR_BALANCE_OF = "70a08231"
SELECTOR_ALLOWANCE = "dd62ed3e"
SELECTOR_NONCES = "7ecebe00"
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

    # -- many reads at once ------------------------------------------------------------------------
    def batch(self, chain: Chain | str, calls: Sequence[tuple[str, list]]) -> list[Any]:
        """Many JSON-RPC calls as batch requests of BATCH_SIZE, at most BATCH_WORKERS in flight.

        Results come back in the order of `calls`; a call the node answered with an error is a
        `ChainError` in its place (callers decide what one failed read means). A transport or HTTP
        failure of a whole batch raises.
        """
        chunks = [list(calls[i:i + BATCH_SIZE]) for i in range(0, len(calls), BATCH_SIZE)]
        if not chunks:
            return []
        if len(chunks) == 1:
            return self._batch_once(chain, chunks[0])
        with ThreadPoolExecutor(max_workers=min(BATCH_WORKERS, len(chunks))) as pool:
            parts = list(pool.map(lambda chunk: self._batch_once(chain, chunk), chunks))
        return [item for part in parts for item in part]

    def _batch_once(self, chain: Chain | str, calls: list[tuple[str, list]]) -> list[Any]:
        name = _name(chain)
        ids = [next(self._ids) for _ in calls]
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in zip(ids, calls)]
        response = send(self.session, "POST", f"{self.erpc_url}/{name}", peer="chain RPC (eRPC)",
                        timeout=RPC_TIMEOUT_S, json=body)
        if response.status_code != 200:
            raise ChainError(f"a batch of {len(calls)} calls on {name}: RPC answered HTTP {response.status_code}: "
                             f"{response.text[:200]}", hint=f"check that ERPC_URL serves chain {name!r}",
                             data={"chain": name, "status": response.status_code})
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if not isinstance(doc, list):
            raise ChainError(f"a batch of {len(calls)} calls on {name}: the RPC did not answer a JSON-RPC batch: "
                             f"{response.text[:200]}", data={"chain": name})
        by_id = {item.get("id"): item for item in doc if isinstance(item, dict)}
        out: list[Any] = []
        for call_id, (method, _) in zip(ids, calls):
            item = by_id.get(call_id)
            if item is None:
                out.append(ChainError(f"{method} on {name}: no answer in the batch", data={"chain": name}))
            elif item.get("error") is not None:
                error = item["error"]
                text = error.get("message", error) if isinstance(error, dict) else error
                out.append(ChainError(f"{method} on {name} failed: {text}",
                                      data={"chain": name, "method": method, "rpc_error": error}))
            else:
                out.append(item.get("result"))
        return out

    def call_many(self, chain: Chain | str, calls: Sequence[tuple[str, str]]) -> list[Any]:
        """`eth_call` of each (to, data) at "latest", batched; results in order (ChainError in place)."""
        return self.batch(chain, [("eth_call", [{"to": to, "data": data}, "latest"]) for to, data in calls])

    # -- blocks and logs -------------------------------------------------------------------------
    def chain_id(self, chain: Chain | str) -> int:
        return _uint(self.rpc(chain, "eth_chainId"), f"eth_chainId on {_name(chain)}")

    def block_number(self, chain: Chain | str) -> int:
        return _uint(self.rpc(chain, "eth_blockNumber"), f"eth_blockNumber on {_name(chain)}")

    def block_timestamp(self, chain: Chain | str, number: int) -> int:
        block = self.rpc(chain, "eth_getBlockByNumber", [hex(number), False])
        if not isinstance(block, dict):
            raise ChainError(f"block {number} on {_name(chain)} not found")
        return _uint(block.get("timestamp"), f"timestamp of block {number}")

    def block_at_or_before(self, chain: Chain | str, timestamp: int) -> int:
        """The newest block mined at or before `timestamp` (0 when none): a binary search over headers,
        about log2(height) reads, so log queries can start where a purchase began instead of at genesis."""
        low, high = 0, self.block_number(chain)
        if self.block_timestamp(chain, high) <= timestamp:
            return high
        while low < high:
            mid = (low + high + 1) // 2
            if self.block_timestamp(chain, mid) <= timestamp:
                low = mid
            else:
                high = mid - 1
        return low

    def get_logs(self, chain: Chain | str, *, address: str, topics: list, from_block: int,
                 to_block: int | None = None) -> list[dict]:
        """`eth_getLogs` of `address` over [from_block, to_block], LOG_RANGE_BLOCKS per request, batched."""
        last = self.block_number(chain) if to_block is None else to_block
        spans = [(start, min(start + LOG_RANGE_BLOCKS - 1, last))
                 for start in range(max(0, from_block), last + 1, LOG_RANGE_BLOCKS)]
        answers = self.batch(chain, [("eth_getLogs", [{"address": address, "topics": topics, "fromBlock": hex(a),
                                                       "toBlock": hex(b)}]) for a, b in spans])
        logs: list[dict] = []
        for answer in answers:
            if isinstance(answer, ChainError):
                raise answer
            logs.extend(item for item in answer or [] if isinstance(item, dict))
        return logs

    # -- transactions (signed elsewhere: the remote signer holds the key) --------------------------
    def eth_balance(self, chain: Chain | str, address: str) -> int:
        return _uint(self.rpc(chain, "eth_getBalance", [address, "latest"]), f"eth_getBalance({address})")

    def transaction_count(self, chain: Chain | str, address: str) -> int:
        """The next nonce, counting transactions still pending."""
        return _uint(self.rpc(chain, "eth_getTransactionCount", [address, "pending"]),
                     f"eth_getTransactionCount({address})")

    def estimate_gas(self, chain: Chain | str, *, sender: str, to: str, data: str) -> int:
        return _uint(self.rpc(chain, "eth_estimateGas", [{"from": sender, "to": to, "data": data}]),
                     f"eth_estimateGas to {to}")

    def fees(self, chain: Chain | str) -> tuple[int, int]:
        """(maxFeePerGas, maxPriorityFeePerGas) as the wallet skill's `send-tx` picks them: twice the
        gas price plus the suggested tip (1 gwei when the node has no suggestion)."""
        price = _uint(self.rpc(chain, "eth_gasPrice"), "eth_gasPrice")
        try:
            tip = _uint(self.rpc(chain, "eth_maxPriorityFeePerGas"), "eth_maxPriorityFeePerGas")
        except ChainError:
            tip = FALLBACK_TIP_WEI
        return 2 * price + tip, tip

    def send_raw_transaction(self, chain: Chain | str, raw: str) -> str:
        result = self.rpc(chain, "eth_sendRawTransaction", [raw])
        if not isinstance(result, str) or not result.startswith("0x"):
            raise ChainError(f"eth_sendRawTransaction on {_name(chain)} returned no transaction hash: {result!r}")
        return result

    def wait_receipt(self, chain: Chain | str, tx_hash: str, *, timeout_s: float = 120.0) -> dict:
        """The mined receipt of `tx_hash`; ChainError when none arrives in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            receipt = self.receipt(chain, tx_hash)
            if isinstance(receipt, dict) and receipt.get("blockNumber"):
                return receipt
            if time.monotonic() >= deadline:
                raise ChainError(f"transaction {tx_hash} on {_name(chain)} was not mined within {timeout_s:g} s",
                                 hint="check it later; re-running the command skips what is already done",
                                 data={"transaction": tx_hash})
            time.sleep(RECEIPT_POLL_S)


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


__all__ = ["ChainClient", "SELECTOR_BALANCE_OF", "SELECTOR_ALLOWANCE", "SELECTOR_NONCES", "TRANSFER_TOPIC",
           "transfers", "BATCH_SIZE", "BATCH_WORKERS", "LOG_RANGE_BLOCKS"]

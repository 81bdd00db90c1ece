"""Client of the pod's remote signer, and batch pre-signing of vouchers through it.

The signer holds the wallet key; this module only sends typed data and collects signatures. A batch
is all-or-nothing: one failed signature aborts it and nothing partial is returned, so a purchase is
never written with fewer vouchers than it claims.
"""
from __future__ import annotations

import re
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Callable

import requests

from . import extensions as x402_extensions
from . import schemes
from .errors import SignerError
from .http import send
from .offer import PaymentOption
from .schemes import SigningPlan

SIGN_TIMEOUT_S = 30.0
KEYS_TIMEOUT_S = 10.0
_SIGNATURE = re.compile(r"^(0x)?[0-9a-fA-F]{130}$")

Progress = Callable[[int, int], None]


def normalize_signature(signature: str) -> str:
    """0x-prefixed 65-byte hex with v as 27/28: tokens' ecrecover rejects v = 0/1."""
    sig = signature if signature.startswith("0x") else "0x" + signature
    v = int(sig[-2:], 16)
    if v in (0, 1):
        sig = sig[:-2] + format(v + 27, "02x")
    return sig


class SignerClient:
    def __init__(self, session: requests.Session, base_url: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")

    def _error(self, response: requests.Response, what: str) -> SignerError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("error"):
            signer_code = str(body.get("code") or "")
            return SignerError(f"remote signer refused to {what}: {body['error']}"
                               + (f" ({signer_code})" if signer_code else ""),
                               data={"status": response.status_code, "signer_code": signer_code})
        return SignerError(f"remote signer answered HTTP {response.status_code} to {what}: {response.text[:200]}",
                           data={"status": response.status_code})

    def address(self) -> str:
        """The wallet address: the signer's first key."""
        url = f"{self.base_url}/api/v1/keys"
        response = send(self.session, "GET", url, peer="remote signer", timeout=KEYS_TIMEOUT_S)
        if response.status_code != 200:
            raise self._error(response, "list its keys")
        try:
            keys = response.json().get("keys") or []
        except (ValueError, AttributeError):
            raise SignerError(f"remote signer's key list is not JSON: {response.text[:200]}") from None
        if not keys:
            raise SignerError("no signing keys in remote-signer", hint="provision a wallet for this agent")
        return str(keys[0])

    def sign_typed_data(self, address: str, typed: dict) -> str:
        """The 65-byte signature (0x-hex, v 27/28) of EIP-712 `typed` by `address`."""
        url = f"{self.base_url}/api/v1/sign/{address}/typed-data"
        response = send(self.session, "POST", url, peer="remote signer", timeout=SIGN_TIMEOUT_S, json=typed)
        if response.status_code != 200:
            raise self._error(response, f"sign {typed.get('primaryType', 'typed data')}")
        try:
            signature = response.json().get("signature")
        except (ValueError, AttributeError):
            signature = None
        if not signature or not isinstance(signature, str) or not _SIGNATURE.match(signature):
            raise SignerError(f"remote signer returned no usable signature for {typed.get('primaryType')}: "
                              f"{response.text[:200]}")
        return normalize_signature(signature)

    def sign_message(self, address: str, message: str) -> str:
        """The EIP-191 personal_sign signature (0x-hex, 65 bytes) of the text `message` by `address`."""
        url = f"{self.base_url}/api/v1/sign/{address}/message"
        response = send(self.session, "POST", url, peer="remote signer", timeout=SIGN_TIMEOUT_S,
                        json={"message": message})
        if response.status_code != 200:
            raise self._error(response, "sign a message")
        try:
            signature = response.json().get("signature")
        except (ValueError, AttributeError):
            signature = None
        if not signature or not isinstance(signature, str) or not _SIGNATURE.match(signature):
            raise SignerError(f"remote signer returned no usable message signature: {response.text[:200]}")
        return signature if signature.startswith("0x") else "0x" + signature

    def sign_transaction(self, address: str, tx: dict) -> str:
        """The raw signed EIP-1559 transaction (0x-hex) for `tx` in the remote signer's shape:
        {chain_id, to, nonce, gas_limit, max_fee_per_gas, max_priority_fee_per_gas, value, data}."""
        url = f"{self.base_url}/api/v1/sign/{address}/transaction"
        response = send(self.session, "POST", url, peer="remote signer", timeout=SIGN_TIMEOUT_S, json=tx)
        if response.status_code != 200:
            raise self._error(response, "sign a transaction")
        try:
            raw = response.json().get("signed_transaction")
        except (ValueError, AttributeError):
            raw = None
        if not isinstance(raw, str) or not re.match(r"^0x[0-9a-fA-F]+$", raw):
            raise SignerError(f"remote signer returned no signed transaction: {response.text[:200]}")
        return raw

    def _batch(self, count: int, make_one: Callable[[int], dict], on_progress: Progress | None,
               workers: int) -> list[dict]:
        """Run `make_one(i)` for i in 0..count-1 with bounded concurrency; results in order, all or nothing."""
        if count < 1:
            return []
        results: list[dict | None] = [None] * count
        done = 0
        with ThreadPoolExecutor(max_workers=max(1, min(workers, count))) as pool:
            futures: dict[Future, int] = {pool.submit(make_one, i): i for i in range(count)}
            pending = set(futures)
            try:
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in finished:
                        results[futures[future]] = future.result()  # re-raises the first failure
                        done += 1
                        if on_progress:
                            on_progress(done, count)
            except SignerError as exc:
                for future in pending:
                    future.cancel()
                raise SignerError(f"pre-signing aborted after {done}/{count} signatures: {exc.message}",
                                  hint=exc.hint, data=exc.data) from exc
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return [r for r in results if r is not None]

    def presign(self, option: PaymentOption, *, address: str, count: int, deadline: int,
                plan: SigningPlan | None = None, extensions: dict | None = None,
                on_progress: Progress | None = None, workers: int = 8, valid_after: int = 0) -> list[dict]:
        """`count` vouchers for `option`, signed by `address` as its payment scheme says, each with a
        fresh nonce, in `spec.preSignedAuths` form. `plan` is what the scheme's pre-flight returned;
        `valid_after` is when they become payable (unix seconds; 0: at once, undated). Each voucher echoes
        the seller's `extensions` with its own payment identifier (buy_x402/extensions.py)."""
        scheme = schemes.of(option)
        plan = plan or SigningPlan()

        def one(index: int) -> dict:
            return scheme.sign(self.sign_typed_data, option, payer=address, deadline=deadline, index=index,
                               plan=plan, extensions=x402_extensions.for_voucher(extensions), valid_after=valid_after)
        return self._batch(count, one, on_progress, workers)


__all__ = ["SignerClient", "normalize_signature"]

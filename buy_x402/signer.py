"""Client of the pod's remote signer, and batch pre-signing of vouchers through it.

The signer holds the wallet key; this module only sends typed data and collects signatures. A batch
is all-or-nothing: one failed signature aborts it and nothing partial is returned, so a purchase is
never written with fewer vouchers than it claims.
"""
from __future__ import annotations

import contextlib
import json
import re
import threading
from typing import Callable, Iterator

import requests

from . import extensions as x402_extensions
from . import schemes
from .errors import SignerError
from .direct_http import DirectConnection
from .http import send
from .offer import PaymentOption
from .schemes import SigningPlan
from .schemes.base import SignTypedData

SIGN_TIMEOUT_S = 30.0
KEYS_TIMEOUT_S = 10.0
_SIGNATURE = re.compile(r"^(0x)?[0-9a-fA-F]{130}$")

Progress = Callable[[int, int], None]


def _text(answer: bytes) -> str:
    return answer[:200].decode("utf-8", "replace")


def _refusal(status: int, body, answer: bytes, what: str) -> SignerError:
    """A signer's non-200 answer, with its error code when it gave the API's error shape."""
    if isinstance(body, dict) and body.get("error"):
        signer_code = str(body.get("code") or "")
        return SignerError(f"remote signer refused to {what}: {body['error']}"
                           + (f" ({signer_code})" if signer_code else ""),
                           data={"status": status, "signer_code": signer_code})
    return SignerError(f"remote signer answered HTTP {status} to {what}: {_text(answer)}", data={"status": status})


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
        self._address: str | None = None

    def _error(self, response: requests.Response, what: str) -> SignerError:
        try:
            body = response.json()
        except ValueError:
            body = None
        return _refusal(response.status_code, body, response.content, what)

    def address(self) -> str:
        """The wallet address: the signer's first key (asked once per client: `process` refills many
        purchases from one wallet)."""
        if self._address is None:
            self._address = self._first_key()
        return self._address

    def _first_key(self) -> str:
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
        return self._typed_signature(response.status_code, response.content, typed)

    def _typed_signature(self, status: int, answer: bytes, typed: dict) -> str:
        what = typed.get("primaryType", "typed data")
        try:
            body = json.loads(answer)
        except ValueError:
            body = None
        if status != 200:
            raise _refusal(status, body, answer, f"sign {what}")
        signature = body.get("signature") if isinstance(body, dict) else None
        if not signature or not isinstance(signature, str) or not _SIGNATURE.match(signature):
            raise SignerError(f"remote signer returned no usable signature for {typed.get('primaryType')}: "
                              f"{_text(answer)}")
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

    @contextlib.contextmanager
    def _worker(self) -> Iterator[SignTypedData]:
        """What one worker of a batch signs with: its own kept-alive connection to an http:// signer
        (the in-pod Service) on the lean path of direct_http.py, whose CPU per signature is a fraction
        of the session's; any other URL (https, credentials in it) goes through the session, one call
        at a time."""
        user_agent = str(getattr(self.session, "headers", {}).get("User-Agent") or "buy-x402")
        try:
            connection = DirectConnection(self.base_url, peer="remote signer", timeout=SIGN_TIMEOUT_S,
                                          user_agent=user_agent)
        except ValueError:
            yield self.sign_typed_data
            return

        def sign(address: str, typed: dict) -> str:
            status, answer = connection.post(f"/api/v1/sign/{address}/typed-data", json.dumps(typed).encode())
            return self._typed_signature(status, answer, typed)
        try:
            yield sign
        finally:
            connection.close()

    def _batch(self, count: int, make_one: Callable[[int, SignTypedData], dict], on_progress: Progress | None,
               workers: int) -> list[dict]:
        """`make_one(i, sign)` for i in 0..count-1 on `workers` threads, each signing through its own
        connection; results in order, all or nothing. Progress is reported in order, under one lock,
        by the worker that finished (no thread switch per signature). After the first failure no
        worker starts another signature; the batch ends when the ones in flight have (each has its
        deadline), also when the calling thread is interrupted."""
        if count < 1:
            return []
        results: list[dict | None] = [None] * count
        lock = threading.Lock()
        state = {"next": 0, "done": 0, "failure": None}

        def work() -> None:
            try:
                with self._worker() as sign:
                    while True:
                        with lock:
                            index = state["next"]
                            if index >= count or state["failure"] is not None:
                                return
                            state["next"] = index + 1
                        result = make_one(index, sign)
                        with lock:
                            if state["failure"] is not None:
                                return
                            results[index] = result
                            state["done"] += 1
                            if on_progress:
                                on_progress(state["done"], count)
            except BaseException as exc:  # raised by the calling thread once every worker has stopped
                with lock:
                    if state["failure"] is None:
                        state["failure"] = exc

        threads = [threading.Thread(target=work, name=f"presign-{n}", daemon=True)
                   for n in range(max(1, min(workers, count)))]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException as exc:  # a signal in the calling thread: nothing new starts, the ones in flight end
            with lock:
                state["failure"] = state["failure"] or exc
            for thread in threads:
                thread.join()
            raise
        failure = state["failure"]
        if isinstance(failure, SignerError):
            raise SignerError(f"pre-signing aborted after {state['done']}/{count} signatures: {failure.message}",
                              hint=failure.hint, data=failure.data) from failure
        if failure is not None:
            raise failure
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

        def one(index: int, sign: SignTypedData) -> dict:
            return scheme.sign(sign, option, payer=address, deadline=deadline, index=index,
                               plan=plan, extensions=x402_extensions.for_voucher(extensions), valid_after=valid_after)
        return self._batch(count, one, on_progress, workers)


__all__ = ["SignerClient", "normalize_signature"]

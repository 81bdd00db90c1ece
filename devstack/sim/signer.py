"""Remote-signer simulator: the Obol remote-signer REST API over one key, signing with eth-account.

    python -m devstack.sim.signer --port P --key-file F [--latency-ms MS]

API-faithful to the pod's signer (GET /healthz, GET /api/v1/keys, POST /api/v1/sign/<addr>/
typed-data|message|hash|transaction) including its error shapes
`{"error", "code": SIGNER_NOT_FOUND|BAD_REQUEST|MISSING_FIELD|SIGNING_ERROR, "address"}`.
HTTP/1.1 with Content-Length on every answer, so clients can keep one connection alive.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re

import uvicorn
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data

SIGN_PATH = re.compile(r"^/api/v1/sign/(?P<address>[^/]+)/(?P<kind>typed-data|message|hash|transaction)$")


class SignerError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _signature_hex(signed) -> str:
    """65 bytes r‖s‖v with v 27/28, as the remote signer returns it."""
    sig = bytes(signed.signature)
    if sig[64] < 27:
        sig = sig[:64] + bytes([sig[64] + 27])
    return "0x" + sig.hex()


def _require(body: dict, *fields: str) -> None:
    missing = [f for f in fields if body.get(f) in (None, "")]
    if missing:
        raise SignerError(400, "MISSING_FIELD", f"missing field: {', '.join(missing)}")


def sign_typed_data(account, body: dict) -> dict:
    _require(body, "types", "primaryType", "domain", "message")
    types = body["types"]
    if not isinstance(types, dict) or not isinstance(body["domain"], dict) or not isinstance(body["message"], dict):
        raise SignerError(400, "BAD_REQUEST", "types, domain and message must be JSON objects")
    if body["primaryType"] not in types:
        raise SignerError(400, "BAD_REQUEST", f"primaryType {body['primaryType']!r} is not in types")
    # Callers may or may not list EIP712Domain; derive it from the domain's fields when absent.
    types = dict(types)
    if "EIP712Domain" not in types:
        order = [("name", "string"), ("version", "string"), ("chainId", "uint256"),
                 ("verifyingContract", "address"), ("salt", "bytes32")]
        types["EIP712Domain"] = [{"name": n, "type": t} for n, t in order if n in body["domain"]]
    full = {"types": types, "primaryType": body["primaryType"], "domain": body["domain"],
            "message": body["message"]}
    try:
        signed = account.sign_message(encode_typed_data(full_message=full))
    except Exception as exc:  # eth-account raises many types for malformed typed data
        raise SignerError(500, "SIGNING_ERROR", f"cannot sign typed data: {exc}") from exc
    return {"signature": _signature_hex(signed)}


def sign_message(account, body: dict) -> dict:
    _require(body, "message")
    if not isinstance(body["message"], str):
        raise SignerError(400, "BAD_REQUEST", "message must be a string")
    return {"signature": _signature_hex(account.sign_message(encode_defunct(text=body["message"])))}


def sign_hash(account, body: dict) -> dict:
    _require(body, "hash")
    raw = str(body["hash"])
    try:
        digest = bytes.fromhex(raw[2:] if raw.startswith("0x") else raw)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise SignerError(400, "BAD_REQUEST", "hash must be 32 bytes of hex")
    return {"signature": _signature_hex(account.unsafe_sign_hash(digest))}


def _number(value) -> int:
    """A JSON number or a decimal / 0x-hex string: the wallet skill's send-tx sends `value` as 0x-hex."""
    return int(value, 0) if isinstance(value, str) else int(value)


def sign_transaction(account, body: dict) -> dict:
    _require(body, "chain_id", "nonce", "gas_limit", "max_fee_per_gas")
    try:
        tx = {"type": 2, "chainId": int(body["chain_id"]), "nonce": int(body["nonce"]),
              "gas": int(body["gas_limit"]), "maxFeePerGas": int(body["max_fee_per_gas"]),
              "maxPriorityFeePerGas": int(body.get("max_priority_fee_per_gas") or 0),
              "value": _number(body.get("value") or 0), "data": body.get("data") or "0x"}
        if body.get("to"):
            tx["to"] = body["to"]
        signed = account.sign_transaction(tx)
    except (TypeError, ValueError) as exc:
        raise SignerError(400, "BAD_REQUEST", f"bad transaction: {exc}") from exc
    return {"signed_transaction": "0x" + bytes(signed.raw_transaction).hex()}


SIGNERS = {"typed-data": sign_typed_data, "message": sign_message, "hash": sign_hash,
           "transaction": sign_transaction}


def sign_request(account, kind: str, raw: bytes) -> tuple[int, dict]:
    """What the signer does with one sign request's body, after routing: decode the JSON, sign, and
    the answer (status, JSON). `bench/presign.py` calls this in-process as the floor of its figures."""
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return 400, {"error": "body is not valid JSON", "code": "BAD_REQUEST"}
    if not isinstance(body, dict):
        return 400, {"error": "body must be a JSON object", "code": "BAD_REQUEST"}
    try:
        return 200, SIGNERS[kind](account, body)
    except SignerError as exc:
        return exc.status, {"error": str(exc), "code": exc.code}
    except Exception as exc:  # an unexpected failure still answers the API's error shape
        return 500, {"error": f"signing failed: {exc}", "code": "SIGNING_ERROR"}


class SignerApp:
    """The REST API as a bare ASGI app. A real signer answers over a compiled HTTP stack in tens of
    microseconds; Python's `http.server` spent more per request than the signing itself (header parsing
    through the email package, a thread per connection fighting over the GIL), so the benchmark would
    have measured the simulation rather than the client (uvicorn + httptools + uvloop instead).

    `latency_s` models the round trip to a signer pod behind a Service: each answer leaves that much
    later, without holding anything, so concurrent requests overlap as they would on a network."""

    def __init__(self, account, latency_s: float = 0.0) -> None:
        self.account, self.latency_s = account, latency_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        status, value = self.route(scope["method"], scope["path"], b"".join(chunks))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        body = json.dumps(value).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def route(self, method: str, path: str, raw: bytes) -> tuple[int, dict]:
        if method == "GET":
            path = path.rstrip("/")
            if path == "/healthz":
                return 200, {"status": "ok"}
            if path == "/api/v1/keys":
                return 200, {"keys": [self.account.address]}
            return 404, {"error": f"no such endpoint: GET {path}", "code": "BAD_REQUEST", "address": ""}
        match = SIGN_PATH.match(path) if method == "POST" else None
        if not match:
            return 404, {"error": f"no such endpoint: {method} {path}", "code": "BAD_REQUEST", "address": ""}
        address = match["address"]
        if address.lower() != self.account.address.lower():
            return 404, {"error": f"no key for address {address}", "code": "SIGNER_NOT_FOUND", "address": address}
        status, value = sign_request(self.account, match["kind"], raw)
        return status, value if status == 200 else {**value, "address": address}


def serve(port: int, key: str, latency_ms: float = 0.0) -> None:
    uvicorn.run(SignerApp(Account.from_key(key), latency_ms / 1000), host="127.0.0.1", port=port, loop="uvloop",
                http="httptools", lifespan="off", access_log=False, log_level="warning",
                proxy_headers=False, server_header=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-file", required=True, help="file holding the hex private key")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="answer each request this much later (the network round trip to a signer pod)")
    args = parser.parse_args()
    with open(args.key_file) as f:
        key = f.read().strip()
    serve(args.port, key, args.latency_ms)


if __name__ == "__main__":
    main()

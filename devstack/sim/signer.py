"""Remote-signer simulator: the Obol remote-signer REST API over one key, signing with eth-account.

    python -m devstack.sim.signer --port P --key-file F

API-faithful to the pod's signer (GET /healthz, GET /api/v1/keys, POST /api/v1/sign/<addr>/
typed-data|message|hash|transaction) including its error shapes
`{"error", "code": SIGNER_NOT_FOUND|BAD_REQUEST|MISSING_FIELD|SIGNING_ERROR, "address"}`.
HTTP/1.1 with Content-Length on every answer, so clients can keep one connection alive.
"""
from __future__ import annotations

import argparse
import json
import re
from ..loopback import LoopbackHandler, make_server

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


class SignerHandler(LoopbackHandler):
    account = None  # set per server by serve()

    def _error(self, status: int, code: str, message: str, address: str = "") -> None:
        self.send_json(status, {"error": message, "code": code, "address": address})

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/healthz":
            self.send_json(200, {"status": "ok"})
        elif path == "/api/v1/keys":
            self.send_json(200, {"keys": [self.account.address]})
        else:
            self._error(404, "BAD_REQUEST", f"no such endpoint: GET {path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        match = SIGN_PATH.match(self.path.split("?", 1)[0])
        if not match:
            self._error(404, "BAD_REQUEST", f"no such endpoint: POST {self.path}")
            return
        address = match["address"]
        if address.lower() != self.account.address.lower():
            self._error(404, "SIGNER_NOT_FOUND", f"no key for address {address}", address)
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._error(400, "BAD_REQUEST", "body is not valid JSON", address)
            return
        if not isinstance(body, dict):
            self._error(400, "BAD_REQUEST", "body must be a JSON object", address)
            return
        try:
            self.send_json(200, SIGNERS[match["kind"]](self.account, body))
        except SignerError as exc:
            self._error(exc.status, exc.code, str(exc), address)
        except Exception as exc:  # an unexpected failure still answers the API's error shape
            self._error(500, "SIGNING_ERROR", f"signing failed: {exc}", address)


def serve(port: int, key: str) -> None:
    make_server(port, SignerHandler, account=Account.from_key(key)).serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key-file", required=True, help="file holding the hex private key")
    args = parser.parse_args()
    with open(args.key_file) as f:
        key = f.read().strip()
    serve(args.port, key)


if __name__ == "__main__":
    main()

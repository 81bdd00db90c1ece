"""The Obol seller gateway's wire rules without I/O: the 402 it sends, the payment it accepts, its errors.

Follows obol-wire.md §2 (forwardauth.go@a5d6972c):
- 2a: the JSON 402 body (`x402Version` 2, `error`, the v2 `resource` object, `accepts`, `extensions`
  when present) serialised once, and the `PAYMENT-REQUIRED` header as base64 of exactly those bytes;
  every CAIP-2 entry is followed by a copy with the chain's legacy alias; each entry's `extra` carries
  name, version and assetTransferMethod; `Link: </api/services.json>; rel="catalog"`.
- 2b: `X-PAYMENT` first, then `PAYMENT-SIGNATURE`; standard base64 of JSON or 400
  `invalid_payment_header`; a plain v2 decode (a string `resource` tolerated for x402Version 2,
  `x402Version` otherwise not checked); matching on `accepted` against the seller's own canonical
  entries: scheme, amount, asset and payTo equal as strings, network resolving to the same chain;
  a miss (a v1 payload has no `accepted`) is a 402 re-challenge `no_matching_requirement`; the
  signature's v 0/1 becomes 27/28 before verify and settle; the JSON error bodies
  `{error, reason, detail?, hint?, retriable}`.
- 2d: `base-sepolia` and `eip155:84532` name the same chain.
Go serialises maps with sorted keys and structs in field order; the bodies here keep those orders.
Where the reference is silent (the values of `serviceName`/`iconUrl`) the devstack uses its own.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

# The seller's chain table (its chains.go): legacy alias ↔ CAIP-2.
CHAINS = {"base-sepolia": "eip155:84532", "base": "eip155:8453", "ethereum": "eip155:1",
          "sepolia": "eip155:11155111"}
ALIAS_OF = {caip2: name for name, caip2 in CHAINS.items()}
SERVICE_NAME = "Obol Stack (devstack)"
ICON_URL = "https://obol.org/favicon.ico"
CATALOG_LINK = '</api/services.json>; rel="catalog"'
REQUIREMENT_FIELDS = ("scheme", "network", "asset", "amount", "payTo", "maxTimeoutSeconds")


def bazaar(offer_type: str, model: str) -> dict:
    """extensions.bazaar of a route (bazaar.go): inference and agent offers get the chat-completions
    example and schema, everything else the generic JSON shape."""
    envelope = lambda body: {  # noqa: E731 (bazaarBodySchema)
        "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
        "properties": {
            "input": {"type": "object", "properties": {
                "type": {"type": "string", "const": "http"},
                "method": {"type": "string", "enum": ["POST", "PUT", "PATCH"]},
                "bodyType": {"type": "string", "enum": ["json", "form-data", "text"]}, "body": body,
                "queryParams": {"type": "object", "additionalProperties": {"type": "string"}},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}}},
                "required": ["type", "method", "bodyType", "body"], "additionalProperties": False},
            "output": {"type": "object", "properties": {"type": {"type": "string"}, "example": {"type": "object"}},
                       "required": ["type"]}},
        "required": ["input"]}
    if offer_type not in ("inference", "agent"):
        return {"info": {"input": {"type": "http", "method": "POST", "bodyType": "json", "body": {}},
                         "output": {"type": "json", "example": {}}},
                "schema": envelope({"type": "object", "additionalProperties": True})}
    model = model or "your-model-id"
    chat_body = {"type": "object", "required": ["model", "messages"], "additionalProperties": True,
                 "properties": {"model": {"type": "string"}, "messages": {"type": "array"},
                                "stream": {"type": "boolean"}, "max_tokens": {"type": "integer", "minimum": 1}}}
    return {"info": {"input": {"type": "http", "method": "POST", "bodyType": "json",
                               "body": {"model": model, "messages": [{"role": "user", "content": "Hello"}]}},
                     "output": {"type": "json", "example": {
                         "id": "chatcmpl-example", "object": "chat.completion", "model": model,
                         "choices": [{"index": 0, "message": {"role": "assistant",
                                                              "content": "Hello! How can I help you today?"},
                                      "finish_reason": "stop"}]}}},
            "schema": envelope(chat_body)}


def resolve_caip2(network: str) -> str | None:
    if network in ALIAS_OF:
        return network
    return CHAINS.get(network)


def same_network(a: str, b: str) -> bool:
    """samePaymentNetwork: equal, or both resolve to the same CAIP-2 chain."""
    if a == b:
        return True
    ca, cb = resolve_caip2(a), resolve_caip2(b)
    return ca is not None and ca == cb


def requirement(network: str, amount: str, asset: str, pay_to: str, max_timeout: int, extra: dict) -> dict:
    """One canonical accepts[] entry, in PaymentRequirements field order."""
    return {"scheme": "exact", "network": network, "asset": asset, "amount": amount, "payTo": pay_to,
            "maxTimeoutSeconds": max_timeout, "extra": dict(sorted(extra.items()))}


def advertised(requirements: list[dict]) -> list[dict]:
    """legacyCompatRequirements: each CAIP-2 entry, then its copy under the legacy alias."""
    out = []
    for req in requirements:
        out.append(req)
        alias = ALIAS_OF.get(req["network"])
        if alias and alias != req["network"]:
            out.append(dict(req, network=alias))
    return out


def payment_required_body(resource_url: str, path: str, requirements: list[dict],
                          extensions: dict | None = None, failure: dict | None = None) -> bytes:
    """The 402 body bytes (the header carries base64 of exactly these)."""
    error = "Payment required for this resource"
    if failure is not None:
        error = "Payment invalid"
        if failure.get("detail"):
            error += ": " + failure["detail"]
        if failure.get("hint"):
            error += " — " + failure["hint"]
        extensions = dict(extensions or {}, paymentFailure={k: v for k, v in failure.items() if v})
    body: dict[str, Any] = {
        "x402Version": 2,
        "error": error,
        "resource": {"url": resource_url, "description": "Payment required for " + path,
                     "mimeType": "application/json", "serviceName": SERVICE_NAME, "iconUrl": ICON_URL},
        "accepts": advertised(requirements),
    }
    if extensions:
        body["extensions"] = {key: extensions[key] for key in sorted(extensions)}
    # A Go map: top-level keys sorted; the entries and `resource` are structs: field order.
    return json.dumps(dict(sorted(body.items())), separators=(",", ":"), ensure_ascii=False).encode()


def payment_required_headers(body: bytes) -> dict[str, str]:
    return {"PAYMENT-REQUIRED": base64.b64encode(body).decode(), "Link": CATALOG_LINK}


def error_body(error: str, reason: str, *, detail: str = "", hint: str = "", retriable: bool = False) -> bytes:
    """paymentErrorBody: detail and hint are omitted when empty; a trailing newline, as Go writes it."""
    doc: dict[str, Any] = {"error": error, "reason": reason}
    if detail:
        doc["detail"] = detail
    if hint:
        doc["hint"] = hint
    doc["retriable"] = retriable
    return json.dumps(doc, ensure_ascii=False).encode() + b"\n"


class BadPaymentHeader(Exception):
    """400 invalid_payment_header; `hint` is the one the gateway sends for this kind of failure."""

    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint


def payment_header(headers) -> str | None:
    return headers.get("X-PAYMENT") or headers.get("PAYMENT-SIGNATURE") or None


NOT_BASE64_HINT = ("X-PAYMENT / PAYMENT-SIGNATURE must be the base64-encoded x402 PaymentPayload JSON — "
                   "re-encode and retry the identical request")
NOT_PAYLOAD_HINT = ("payment header decoded but is not valid PaymentPayload JSON — re-fetch the 402 requirements "
                    "and re-sign")


def _typed(value: Any, kind: type) -> None:
    """What Go's json.Unmarshal into the v2 PaymentPayload struct refuses: a field of the wrong JSON type."""
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise BadPaymentHeader(NOT_PAYLOAD_HINT)


def decode_payment(header: str) -> tuple[dict, bytes]:
    """(the payment as a plain v2 decode sees it, the decoded JSON bytes) or BadPaymentHeader."""
    try:
        raw = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadPaymentHeader(NOT_BASE64_HINT) from None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise BadPaymentHeader(NOT_PAYLOAD_HINT) from None
    if not isinstance(doc, dict):
        raise BadPaymentHeader(NOT_PAYLOAD_HINT)
    _typed(doc.get("x402Version"), int)
    _typed(doc.get("payload"), dict)
    _typed(doc.get("extensions"), dict)
    accepted = doc.get("accepted")
    _typed(accepted, dict)
    for key in REQUIREMENT_FIELDS:
        _typed((accepted or {}).get(key), int if key == "maxTimeoutSeconds" else str)
    _typed((accepted or {}).get("extra"), dict)
    resource = doc.get("resource")
    # parsePaymentPayloadCompat: a string resource (a bare URL) is tolerated only for x402Version 2.
    if not (isinstance(resource, str) and resource and doc.get("x402Version") == 2):
        _typed(resource, dict)
    return doc, raw


def match(payment: dict, requirements: list[dict]) -> dict | None:
    """findMatchingRequirementV1 over the seller's own canonical entries (not the alias copies)."""
    accepted = payment.get("accepted") or {}
    for req in requirements:
        if (req["scheme"] == accepted.get("scheme", "") and same_network(req["network"], accepted.get("network", ""))
                and req["amount"] == accepted.get("amount", "") and req["asset"] == accepted.get("asset", "")
                and req["payTo"] == accepted.get("payTo", "")):
            return req
    return None


def no_match_failure(payment: dict) -> dict:
    accepted = payment.get("accepted") or {}
    return {"reason": "no_matching_requirement",
            "detail": f"payment offered scheme={json.dumps(accepted.get('scheme', ''))} "
                      f"network={json.dumps(accepted.get('network', ''))}, which matches none of the accepts[] entries",
            "hint": "sign against one accepts[] entry verbatim — scheme and network must match exactly"}


def normalize_v(raw: bytes) -> bytes:
    """normalizePaymentPayloadForVerify: a signature whose v byte is 0/1 gets 27/28; otherwise unchanged."""
    doc = json.loads(raw)
    payload = doc.get("payload") if isinstance(doc, dict) else None
    sig = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(sig, str):
        return raw
    hexsig = sig.strip().removeprefix("0x")
    if len(hexsig) < 2 or len(hexsig) % 2:
        return raw
    try:
        v = int(hexsig[-2:], 16)
    except ValueError:
        return raw
    if v not in (0, 1):
        return raw
    prefix = "0x" if sig.strip().startswith("0x") else ""
    payload["signature"] = prefix + hexsig[:-2] + f"{v + 27:02x}"
    return json.dumps(doc).encode()


def signature_hint(detail: str, req: dict) -> str:
    """signatureFailureHint: name the EIP-712 domain when the rejection is about the signature."""
    if "signature" not in detail.lower():
        return ""
    name, version = (req.get("extra") or {}).get("name", ""), (req.get("extra") or {}).get("version", "")
    if not name and not version:
        return "signature rejected — re-sign using the EIP-712 domain advertised in accepts[].extra for this asset"
    return (f"signature rejected — sign the EIP-712 domain advertised in accepts[].extra (name={json.dumps(name)} "
            f"version={json.dumps(version)}) for asset {req['asset']} on {req['network']}")


def settlement_header(success: bool, transaction: str, network: str, payer: str | None,
                      error_reason: str | None = None, error_message: str | None = None) -> str:
    """facilitatorSettleResponse as base64 JSON, in its field order (omitempty on the optional ones)."""
    doc: dict[str, Any] = {"success": success}
    if error_reason:
        doc["errorReason"] = error_reason
    if error_message:
        doc["errorMessage"] = error_message
    doc["transaction"] = transaction
    doc["network"] = network
    if payer:
        doc["payer"] = payer
    return base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()

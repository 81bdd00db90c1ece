"""The controller simulation's pure rules: the probe's reading of a 402, the buyer files, conditions.

Follows obol-wire.md §3 (purchase.go@cb8d2d7a, purchase_helpers.go@01e2d757): the probe reads only
the 402 body and only `accepts[0]` (price = `amount`, else `maxAmountRequired`; network and payTo
not compared; the `PAYMENT-REQUIRED` header ignored); the buyer config is the spec's payment with
`url` = the endpoint minus its chat-completions suffix and `remoteModel` = spec.model; the auths file
passes `{id, payment}` verbatim and writes flat auths flat with v 0/1 → 27/28; the signer address is
the first auth's `from`, else its payment's authorization / permit2Authorization `from`; a condition's
lastTransitionTime moves only when its status flips. Kept apart from devstack/sim/controller.py (the
watch loop and the writes) so each reads on its own.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

PROBE_BODY = '{"model":"probe","messages":[{"role":"user","content":"probe"}],"max_tokens":1}'
FLAT_FIELDS = ("signature", "from", "to", "value", "validAfter", "validBefore", "nonce")


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class StageFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def probe_first_option(status_code: int, body: bytes) -> dict:
    """The 402 body's accepts[0] (with `price` resolved), or StageFailed with the controller's reason."""
    if status_code != 402:
        raise StageFailed("NotPaymentGated", f"expected 402, got {status_code}")
    try:
        doc = json.loads(body)
        accepts = doc.get("accepts") if isinstance(doc, dict) else None
    except ValueError:
        accepts = None
    if not isinstance(accepts, list) or not accepts or not isinstance(accepts[0], dict):
        raise StageFailed("InvalidPricing", "402 body missing accepts")
    first = accepts[0]
    extra = first.get("extra") if isinstance(first.get("extra"), dict) else {}
    return {"price": str(first.get("amount") or first.get("maxAmountRequired") or ""),
            "network": str(first.get("network") or ""), "asset": str(first.get("asset") or ""),
            "assetTransferMethod": str(extra.get("assetTransferMethod") or ""),
            "eip712Name": str(extra.get("name") or ""), "eip712Version": str(extra.get("version") or "")}


def upstream_url(endpoint: str) -> str:
    """normalizePurchasedUpstreamURL."""
    trimmed = endpoint.strip().rstrip("/")
    for suffix in ("/v1/chat/completions", "/chat/completions"):
        if trimmed.endswith(suffix):
            return trimmed[: -len(suffix)]
    return trimmed


def buyer_config(spec: dict, payment: dict) -> dict:
    """`<name>.json` of x402-buyer-config; `payment` is spec.payment as the probe left it in memory."""
    return {"url": upstream_url(spec.get("endpoint") or ""), "network": payment.get("network", ""),
            "payTo": payment.get("payTo", ""), "price": payment.get("price", ""), "asset": payment.get("asset", ""),
            "assetSymbol": payment.get("assetSymbol", ""), "assetDecimals": payment.get("assetDecimals", 0),
            "assetTransferMethod": payment.get("assetTransferMethod", ""),
            "eip712Name": payment.get("eip712Name", ""), "eip712Version": payment.get("eip712Version", ""),
            "remoteModel": spec.get("model", "")}


def normalize_recovery(signature: str) -> str:
    if len(signature) != 132 or not signature.startswith("0x"):
        return signature
    try:
        last = int(signature[-2:], 16)
    except ValueError:
        return signature
    return signature[:-2] + f"{last + 27:02x}" if last <= 1 else signature


def buyer_auths(auths: list[dict]) -> list[dict]:
    """preSignedAuthMaps: `{id, payment}` verbatim, else the flat fields with v 0/1 → 27/28."""
    out = []
    for auth in auths:
        if auth.get("payment"):
            out.append({"id": auth.get("id", ""), "payment": auth["payment"]})
        else:
            flat = {key: auth.get(key, "") for key in FLAT_FIELDS}
            flat["signature"] = normalize_recovery(flat["signature"])
            out.append(flat)
    return out


def signer_address(auth: dict) -> str:
    if auth.get("from"):
        return str(auth["from"])
    payload = (auth.get("payment") or {}).get("payload") or {}
    for key in ("authorization", "permit2Authorization"):
        if isinstance(payload.get(key), dict) and payload[key].get("from"):
            return str(payload[key]["from"])
    return ""


def set_condition(conditions: list[dict], ctype: str, ok: bool, reason: str, message: str) -> None:
    """setPurchaseCondition: update in place; lastTransitionTime moves only when the status flips."""
    value = "True" if ok else "False"
    for cond in conditions:
        if cond.get("type") == ctype:
            if cond.get("status") != value:
                cond["lastTransitionTime"] = now_rfc3339()
            cond.update(status=value, reason=reason, message=message)
            return
    conditions.append({"type": ctype, "status": value, "reason": reason, "message": message,
                       "lastTransitionTime": now_rfc3339()})


def is_true(conditions: list[dict], ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status") == "True" for c in conditions)


def write_json(path: Path, value: Any) -> None:
    """A ConfigMap key as the kubelet projects it: the whole file replaced at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2))
    os.replace(tmp, path)

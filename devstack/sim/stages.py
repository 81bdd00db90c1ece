"""The controller simulation's pure stage rules: reading a 402, matching spec.payment, conditions.

Kept apart from devstack/sim/controller.py (the watch loop and the writes) so each reads on its own.
"""
from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import requests

NETWORKS = {"base-sepolia": "eip155:84532", "base": "eip155:8453", "ethereum": "eip155:1",
            "mainnet": "eip155:1", "sepolia": "eip155:11155111"}


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def caip2(network: str) -> str:
    """`base-sepolia` and `eip155:84532` name the same chain; compare them as CAIP-2."""
    return NETWORKS.get(str(network).lower(), str(network).lower())


class StageFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def payment_requirements(resp: requests.Response) -> dict:
    """The 402's requirements: v2 PAYMENT-REQUIRED header, else a v1 JSON body."""
    header = resp.headers.get("PAYMENT-REQUIRED")
    if header:
        try:
            required = json.loads(base64.b64decode(header))
        except (ValueError, TypeError) as exc:
            raise StageFailed("InvalidPricing", f"PAYMENT-REQUIRED header is not base64 JSON: {exc}") from exc
    else:
        try:
            required = resp.json()
        except ValueError:
            required = None
        if not isinstance(required, dict) or required.get("x402Version") != 1:
            raise StageFailed("InvalidPricing", "402 carries neither a PAYMENT-REQUIRED header nor a v1 body")
    if not isinstance(required, dict) or not isinstance(required.get("accepts"), list) or not required["accepts"]:
        raise StageFailed("InvalidPricing", "402 payment requirements have no accepts[]")
    return required


def matching_option(accepts: list[dict], payment: dict) -> dict:
    def same(a: Any, b: Any) -> bool:
        return str(a or "").lower() == str(b or "").lower()
    for option in accepts:
        if (isinstance(option, dict) and same(option.get("asset"), payment.get("asset"))
                and same(option.get("payTo"), payment.get("payTo"))
                and caip2(option.get("network", "")) == caip2(payment.get("network", ""))):
            return option
    raise StageFailed("PricingMismatch",
                      f"no payment option matches spec.payment (asset {payment.get('asset')}, "
                      f"payTo {payment.get('payTo')}, network {payment.get('network')})")


def signer_address(auth: dict) -> str:
    if auth.get("from"):
        return str(auth["from"])
    payload = (auth.get("payment") or {}).get("payload") or {}
    for key in ("authorization", "permit2Authorization"):
        if isinstance(payload.get(key), dict) and payload[key].get("from"):
            return str(payload[key]["from"])
    return ""


def set_condition(status: dict, previous: list[dict], ctype: str, ok: bool, reason: str, message: str) -> None:
    """Set one condition; lastTransitionTime moves only when its status flips."""
    value = "True" if ok else "False"
    old = next((c for c in previous if c.get("type") == ctype), None)
    since = old["lastTransitionTime"] if old and old.get("status") == value and old.get("lastTransitionTime") \
        else now_rfc3339()
    new = {"type": ctype, "status": value, "reason": reason, "message": message, "lastTransitionTime": since}
    conditions = status.setdefault("conditions", [])
    at = next((i for i, c in enumerate(conditions) if c.get("type") == ctype), None)
    if at is None:
        conditions.append(new)
    else:
        conditions[at] = new  # in place: a reordered list would count as a change and be written


def condition(obj: dict, ctype: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), None)


def is_true(obj: dict, ctype: str) -> bool:
    return (condition(obj, ctype) or {}).get("status") == "True"


def write_atomic(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(data)
    os.replace(tmp, path)

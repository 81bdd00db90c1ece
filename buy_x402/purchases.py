"""PurchaseRequest logic without I/O: building the object, top-up pool math, readiness, list rows.

The commands fetch the CR and the x402-buyer `/status` entry and pass them in as dicts; everything
here returns dicts or small dataclasses, so every rule the cluster depends on is unit-testable.
Field names follow obol-buy-x402.md §8 (CRD), §11 (`/status`) and §16 (`list --json`); the
auto-refill policy (§13) is in `refill.py`.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from . import caps, schemes
from .errors import PurchaseError, SellerError
from .offer import chain_or_none, token_meta
from .x402 import chat_url

GROUP = "obol.org"
VERSION = "v1alpha1"
PLURAL = "purchaserequests"
KIND = "PurchaseRequest"
API_VERSION = f"{GROUP}/{VERSION}"
FINALIZER = "obol.org/purchase-finalizer"
MAX_POOL = 2500             # CRD spec.count maximum
NEVER_DEADLINE = 4294967295  # "never" expiry: not a real deadline, so not reported as the earliest

# Controller conditions (§9) that will not heal by waiting: the wait reports them early.
TERMINAL_REASONS = {
    "Probed": {"PricingMismatch", "NotPaymentGated", "InvalidPricing"},
    "AuthsLoaded": {"NoAuths"},
    "AuthsSigned": {"NoAuths"},  # older controller name of AuthsLoaded
    "Configured": {"DuplicateModel"},
}
# spec.payment keys a top-up keeps from the existing object when the new value is empty (§8.2).
_STICKY_PAYMENT_KEYS = ("assetTransferMethod", "eip712Name", "eip712Version")


def alias_for(model_id: str) -> str:
    """The LiteLLM model name the controller publishes for a purchase of `model_id`."""
    return f"paid/{model_id}"


def chat_endpoint(url: str) -> str:
    """The `spec.endpoint` value: the normalized base plus the chat path the controller probes."""
    return chat_url(url)


def find(items: Iterable[dict[str, Any]], name: str) -> dict[str, Any]:
    """The PurchaseRequest `name` among `items`, or PurchaseError naming the ones that exist."""
    items = list(items)
    obj = next((o for o in items if (o.get("metadata") or {}).get("name") == name), None)
    if obj is not None:
        return obj
    names = sorted(o["metadata"]["name"] for o in items)
    if names:
        raise PurchaseError(f"no purchase named {name!r}; existing purchases: {', '.join(names)}",
                            hint="buy.py list", data={"name": name, "purchases": names})
    raise PurchaseError(f"no purchase named {name!r}; there are no purchases in this namespace",
                        hint="buy one: buy.py buy NAME --endpoint URL --model ID",
                        data={"name": name, "purchases": []})


def _eip712_domain(extra: dict[str, Any]) -> tuple[str, str]:
    domain = extra.get("eip712Domain")
    if isinstance(domain, dict) and (domain.get("name") or domain.get("version")):
        return str(domain.get("name") or ""), str(domain.get("version") or "")
    return str(extra.get("name") or ""), str(extra.get("version") or "")


def build_payment_spec(option: Any, *, chain_name: str, symbol: str | None,
                       decimals: int | None) -> dict[str, Any]:
    """`spec.payment` for a chosen x402 payment option; `network` is the eRPC chain name, not CAIP-2."""
    if not option.pay_to:
        raise SellerError("the seller's 402 payment option has no payTo address",
                          hint="the seller's x402 offer is broken; pick another --payment-option or seller")
    asset = option.asset or getattr(option.chain, "usdc", None) or ""
    if not asset:
        raise SellerError(f"the seller's payment option names no asset and {chain_name} has no default USDC",
                          hint="pick another --payment-option or --network")
    name, version = _eip712_domain(option.extra if isinstance(option.extra, dict) else {})
    payment: dict[str, Any] = {
        "network": chain_name,
        "payTo": option.pay_to,
        "price": str(int(option.amount)),
        "asset": asset,
        "assetTransferMethod": option.transfer_method or "eip3009",
        "eip712Name": name,
        "eip712Version": version,
    }
    if symbol:
        payment["assetSymbol"] = symbol
    if decimals is not None:
        payment["assetDecimals"] = int(decimals)
    return payment


def build_purchase(name: str, namespace: str, *, endpoint: str, model: str, payment: dict[str, Any],
                   auths: list[dict[str, Any]], auto_refill: dict[str, Any] | None,
                   signing: caps.Signing | None = None) -> dict[str, Any]:
    """The PurchaseRequest to create; `count` always equals the pool size the controller loads.
    `signing` (the batch in `auths`) starts the signing history the object carries (caps.ANNOTATION)."""
    if not auths:
        raise PurchaseError(f"no payment authorizations to put in PurchaseRequest {name}",
                            hint="sign at least one authorization (--count 1 or a larger --budget)")
    if len(auths) > MAX_POOL:
        raise PurchaseError(f"{len(auths)} authorizations exceed the PurchaseRequest maximum of {MAX_POOL}",
                            hint="use a smaller --count or --budget")
    spec: dict[str, Any] = {
        "endpoint": chat_endpoint(endpoint),
        "model": model,
        "count": len(auths),
        "payment": dict(payment),
        "preSignedAuths": list(auths),
    }
    if auto_refill is not None:
        spec["autoRefill"] = dict(auto_refill)
    obj = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    if signing is not None:
        caps.annotate(obj, signing)
    return obj


def active_tail(pool: list[dict[str, Any]], remaining: int | None, *, clamp: bool = False) -> list[dict[str, Any]]:
    """The auths the buyer has not spent yet: it consumes FIFO from the front, so the last `remaining`.

    A buyer count the pool cannot hold is an error before a write; `clamp` (for display and expiry
    checks of a purchase in use) reads it as "all of them" or "none" instead.
    """
    remaining = int(remaining or 0)
    if clamp:
        remaining = max(0, min(remaining, len(pool)))
    elif remaining < 0 or remaining > len(pool):
        raise PurchaseError(
            f"x402-buyer reports {remaining} unspent auths but the PurchaseRequest holds {len(pool)}",
            hint="the buyer and the PurchaseRequest disagree; wait for it to converge (`buy.py status NAME`)")
    return list(pool[len(pool) - remaining:]) if remaining else []


def merge_payment(existing: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """New payment fields win, except empty transfer method / EIP-712 name+version keep the old ones."""
    merged = dict(new)
    for key in _STICKY_PAYMENT_KEYS:
        if not merged.get(key) and (existing or {}).get(key):
            merged[key] = existing[key]  # type: ignore[index]
    return merged


PAYMENT_IDENTITY = ("network", "asset", "payTo")


def check_same_payment(existing: dict[str, Any], tail: list[dict[str, Any]], payment: dict[str, Any]) -> None:
    """Refuse a top-up whose vouchers pay another chain, token or payee than the unspent ones.

    The buyer spends one pool under one `spec.payment`: a mixed pool would leave the old vouchers
    described wrongly and refused by the seller. With nothing unspent the pool simply changes.
    """
    if not tail:
        return
    old = (existing.get("spec") or {}).get("payment") or {}
    changes = [f"{key} {old.get(key) or '(none)'} → {payment.get(key) or '(none)'}" for key in PAYMENT_IDENTITY
               if str(old.get(key) or "").lower() != str(payment.get(key) or "").lower()]
    if changes:
        name = (existing.get("metadata") or {}).get("name", "?")
        raise PurchaseError(
            f"PurchaseRequest {name} still holds {len(tail)} unspent vouchers paying {old.get('asset')} on "
            f"{old.get('network')} to {old.get('payTo')}; this top-up would pay differently "
            f"({'; '.join(changes)}) and one pool pays one way",
            hint="top up with the same payment option (--payment-option/--token/--network), "
                 "or buy under another name", data={"name": name, "changes": changes})


def voucher_price(auth: dict[str, Any]) -> str:
    """The atomic amount a voucher pays: its `accepted.amount`, else what its authorization transfers."""
    payment = auth.get("payment") or {}
    accepted = payment.get("accepted") or {}
    if accepted.get("amount"):
        return str(accepted["amount"])
    payload = payment.get("payload") or {}
    permitted = ((payload.get("permit2Authorization") or {}).get("permitted") or {}).get("amount")
    return str(permitted or (payload.get("authorization") or {}).get("value") or auth.get("value") or "")


def stale_vouchers(tail: list[dict[str, Any]], payment: dict[str, Any]) -> list[dict[str, Any]]:
    """Unspent vouchers signed for another price than `payment`'s: the seller matches the amount exactly,
    so it refuses them, and the x402-buyer puts a refused voucher back at the head of its pool, where it
    would block every newer voucher. A top-up drops them."""
    price = str(payment.get("price") or "")
    return [auth for auth in tail if voucher_price(auth) != price]


def topup_object(existing: dict[str, Any], *, new_auths: list[dict[str, Any]], live_remaining: int,
                 payment: dict[str, Any], auto_refill: dict[str, Any] | None,
                 endpoint: str | None = None, signing: caps.Signing | None = None) -> dict[str, Any]:
    """The object to PUT for a top-up: unspent tail + new auths; metadata (resourceVersion) kept.

    `endpoint`, when given, replaces `spec.endpoint` (a seller that moved its offer URL), as the
    upstream top-up does; the payment guard keeps the unspent vouchers valid for it. Unspent vouchers
    signed at a price the seller no longer asks are dropped (`stale_vouchers`). `signing` (the batch in
    `new_auths`) is added to the signing history `existing` carries, in this same write.
    """
    obj = copy.deepcopy(existing)
    obj.pop("status", None)
    obj.setdefault("apiVersion", API_VERSION)
    obj.setdefault("kind", KIND)
    spec = obj.setdefault("spec", {})
    name = (obj.get("metadata") or {}).get("name", "?")
    active = active_tail(spec.get("preSignedAuths") or [], live_remaining)
    check_same_payment(existing, active, payment)
    if endpoint is not None:
        spec["endpoint"] = chat_endpoint(endpoint)
    stale = stale_vouchers(active, payment)
    active = [auth for auth in active if auth not in stale]
    pool = active + list(new_auths)
    if not pool:
        raise PurchaseError(f"top-up of PurchaseRequest {name} has no authorizations to keep or add",
                            hint="sign at least one authorization (--count 1 or a larger --budget)")
    if len(pool) > MAX_POOL:
        raise PurchaseError(
            f"PurchaseRequest {name} has {len(active)} active auths; adding {len(new_auths)} would make "
            f"{len(pool)}, above the maximum of {MAX_POOL}",
            hint=f"top up with at most {max(0, MAX_POOL - len(active))} (--count), or wait until more are spent")
    spec["preSignedAuths"] = pool
    spec["count"] = len(pool)
    spec["payment"] = merge_payment(spec.get("payment"), payment)
    if auto_refill is not None:
        spec["autoRefill"] = dict(auto_refill)
    if signing is not None:
        caps.annotate(obj, signing)
    return obj


def voucher_facts(pool: Iterable[dict[str, Any]]) -> list[tuple[int, int | None]]:
    """(amount, signing time or None) of each voucher, for the spend caps' fallback (caps.usage)."""
    facts = []
    for auth in pool:
        try:
            amount = int(voucher_price(auth) or 0)
        except ValueError:
            amount = 0
        facts.append((amount, schemes.signed_at_of(((auth.get("payment") or {}).get("payload")) or {})))
    return facts


def dropped_spent(pool: list[dict[str, Any]], live_entry: dict[str, Any] | None) -> int:
    """Vouchers the buyer spent that are no longer in the spec (a top-up drops spent ones): its `spent`
    counts every voucher it ever confirmed for the purchase (obol-wire.md §1d), the spec keeps only the
    spent ones written before the last top-up."""
    live = live_entry or {}
    remaining, spent = int(live.get("remaining") or 0), int(live.get("spent") or 0)
    still_in_spec = max(0, len(pool) - remaining)
    return max(0, spent - still_in_spec)


def _conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    conds = ((obj.get("status") or {}).get("conditions")) or []
    return [c for c in conds if isinstance(c, dict)]


def _condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in _conditions(obj) if c.get("type") == ctype), None)


def _generation_gap(obj: dict[str, Any]) -> str | None:
    """A message when the controller has not yet seen the current spec generation."""
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    if generation and observed and generation != observed:
        return f"waiting for observedGeneration {generation} (have {observed})"
    return None


def check_topup_allowed(existing: dict[str, Any], live_entry: dict[str, Any] | None, *,
                        model: str | None = None) -> None:
    """Refuse a top-up that would race the controller or the buyer (§6 step 7); raise PurchaseError."""
    name = (existing.get("metadata") or {}).get("name", "?")
    status_cmd = f"`buy.py status {name}`"
    if (existing.get("metadata") or {}).get("deletionTimestamp"):
        raise PurchaseError(
            f"existing purchase {name} is draining for deletion; wait until it is gone "
            f"(check with {status_cmd}), then buy again", hint=f"buy.py status {name}",
            data={"name": name, "state": "draining"})
    current_model = (existing.get("spec") or {}).get("model")
    if model is not None and current_model and current_model != model:
        raise PurchaseError(
            f"existing purchase {name} buys model {current_model}, not {model}; "
            f"choose another purchase name for {model}", hint=f"buy.py status {name}",
            data={"name": name, "model": current_model})
    pending = _generation_gap(existing)
    if pending is None:
        ready = _condition(existing, "Ready")
        if ready is not None and ready.get("status") != "True":
            pending = ready.get("message") or ready.get("reason") or "Ready is not True"
    if pending is not None:
        raise PurchaseError(
            f"existing purchase {name} is still converging: {pending}; wait and check with "
            f"{status_cmd} before topping it up", hint=f"buy.py status {name}",
            data={"name": name, "state": "converging"})
    if live_entry is None:
        raise PurchaseError(
            f"existing purchase {name} is not live in x402-buyer status yet; wait and check with "
            f"{status_cmd} before topping it up", hint=f"buy.py status {name}",
            data={"name": name, "state": "not_live"})


def model_owner_conflict(items: Iterable[dict[str, Any]], name: str, model: str) -> str | None:
    """The other PurchaseRequest (any state, draining included) that already buys `model`, if any."""
    for item in items:
        other = (item.get("metadata") or {}).get("name")
        if other and other != name and (item.get("spec") or {}).get("model") == model:
            return other
    return None


@dataclass(frozen=True)
class Readiness:
    ready: bool
    remaining: int | None
    public_model: str | None
    message: str
    conditions: list[tuple[str, str, str, str]] = field(default_factory=list)


def condition_summary(obj: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, message) per condition: compare successive lists to show changes once."""
    return [(str(c.get("type") or ""), str(c.get("status") or ""), str(c.get("reason") or ""),
             str(c.get("message") or "")) for c in _conditions(obj)]


def readiness(obj: dict[str, Any]) -> Readiness:
    """§8.3: current generation observed, status pool == spec pool, and Ready=True."""
    status = obj.get("status") or {}
    remaining = status.get("remaining")
    public_model = status.get("publicModel")
    conditions = condition_summary(obj)

    def not_ready(message: str) -> Readiness:
        return Readiness(False, remaining, public_model, message, conditions)

    if not status:
        return not_ready("")
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if observed != generation:
        return not_ready(f"waiting for observedGeneration {generation} (have {observed})")
    pool = len((obj.get("spec") or {}).get("preSignedAuths") or [])
    if remaining != pool:
        return not_ready(f"waiting for runtime auth pool to reach {pool} active auths")
    ready = _condition(obj, "Ready")
    if ready is None:
        return not_ready("")
    message = str(ready.get("message") or "")
    if ready.get("status") == "True":
        return Readiness(True, remaining, public_model, message, conditions)
    return not_ready(message)


def is_serving(obj: dict[str, Any]) -> bool:
    """Ready=True for the current generation, without §8.3's pool-size equality.

    Once vouchers are spent `status.remaining` drifts below `len(spec.preSignedAuths)`, so `readiness`
    is for the wait right after a write; this is for later checks of a purchase in use.
    """
    ready = _condition(obj, "Ready")
    return (_generation_gap(obj) is None and ready is not None and ready.get("status") == "True"
            and not (obj.get("metadata") or {}).get("deletionTimestamp"))


def failed_reason(obj: dict[str, Any]) -> str | None:
    """"Reason: message" for a failure of the current generation that waiting will not fix."""
    if _generation_gap(obj) is not None:
        return None  # conditions of an older spec; the controller resets them on the new generation
    for cond in _conditions(obj):
        reasons = TERMINAL_REASONS.get(str(cond.get("type")))
        if reasons and cond.get("status") == "False" and cond.get("reason") in reasons:
            message = str(cond.get("message") or "").strip()
            return f"{cond['reason']}: {message}" if message else str(cond["reason"])
    return None


def auth_deadline(auth: dict[str, Any]) -> int | None:
    """When an auth stops being payable: its payment scheme's deadline, or the legacy flat field."""
    payload = ((auth.get("payment") or {}).get("payload")) or {}
    for value in (schemes.deadline_of(payload), auth.get("validBefore")):
        if value not in (None, ""):
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


def pool_expiry(pool: Iterable[dict[str, Any]], now: float) -> tuple[int, int | None]:
    """(auths already expired, earliest real deadline) over the active pool; "never" is not a deadline."""
    expired, earliest = 0, None
    for auth in pool:
        deadline = auth_deadline(auth)
        if deadline is None or deadline >= NEVER_DEADLINE:
            continue
        if deadline <= now:
            expired += 1
        if earliest is None or deadline < earliest:
            earliest = deadline
    return expired, earliest


LIST_FIELDS = ("name", "alias", "model", "remaining", "spent", "totalSigned", "expired", "price", "chain",
               "endpoint", "autoRefill", "assetSymbol", "assetDecimals")


def list_row(obj: dict[str, Any], live_entry: dict[str, Any] | None, *,
             now: float | None = None) -> dict[str, Any]:
    """One `list --json` row (§16; the host's `obol model status` parses these exact keys).

    `chain` is the buyer's live `network` when it serves the purchase; the asset's symbol and decimals
    come from the token table when the spec does not carry them.
    """
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    live = live_entry or {}
    payment = spec.get("payment") or {}
    pool = spec.get("preSignedAuths") or []
    model = spec.get("model") or ""
    remaining = live.get("remaining") if live.get("remaining") is not None else status.get("remaining")
    remaining = int(remaining or 0)
    spent = live.get("spent") if live.get("spent") is not None else status.get("spent")
    total_signed = status.get("totalSigned")
    expired, _ = pool_expiry(active_tail(pool, remaining, clamp=True), time.time() if now is None else now)
    symbol, decimals = payment.get("assetSymbol"), payment.get("assetDecimals")
    if symbol is None or decimals is None:
        known_symbol, known_decimals = token_meta(chain_or_none(payment.get("network")), payment.get("asset"), None)
        symbol = known_symbol if symbol is None else symbol
        decimals = known_decimals if decimals is None else decimals
    return {
        "name": meta.get("name"),
        "alias": live.get("public_model") or status.get("publicModel") or alias_for(model),
        "model": model,
        "remaining": remaining,
        "spent": int(spent or 0),
        "totalSigned": int(total_signed if total_signed is not None else len(pool)),
        "expired": expired,
        "price": payment.get("price"),
        "chain": live.get("network") or payment.get("network"),
        "endpoint": spec.get("endpoint"),
        "autoRefill": bool((spec.get("autoRefill") or {}).get("enabled")),
        "assetSymbol": symbol,
        "assetDecimals": decimals,
    }

"""What the cluster can spend: the in-cluster x402-buyer's wire, in one table, and the checks before signing.

`buy` and the refill in `process` sign vouchers that the cluster spends later, not this process: the
controller probes the seller and the x402-buyer pays with them. A voucher the cluster cannot spend is
money locked for nothing, so these checks run before anything is signed. The facts
(../shared/reference/obol-wire.md): the buyer reads a 402's requirements only from the JSON body
(§1 a2), pays only with `X-PAYMENT` (b1) and forwards the voucher as it was signed, an x402 v2
envelope, never re-wrapped for v1 (c2, c3); it takes the first body entry whose network (through its
alias table), payTo, asset and price match the purchase (§1d); the controller validates only the
body's `accepts[0]` price (§3). The day the buyer learns more (say, the v2 header), change `BUYER`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import re

from .errors import KubeApiError, PurchaseError, SellerError
from .offer import PaymentOption, PaymentRequired

PAY_PER_REQUEST = "buy.py pay {url} --type inference --message TEXT, or buy.py pay-agent {url} --message TEXT"


@dataclass(frozen=True)
class BuyerWire:
    requirements_from: tuple[str, ...]   # where it reads a 402's accepts: "body" and/or "header"
    payment_header: str                   # the one header its paid retry carries
    x402_versions: tuple[int, ...]        # the versions whose sellers can read the vouchers it forwards
    networks: dict[str, str] = field(default_factory=dict)  # its alias table; other names compare as written


BUYER = BuyerWire(
    requirements_from=("body",),
    payment_header="X-PAYMENT",
    x402_versions=(2,),
    networks={
        "base": "eip155:8453", "base-mainnet": "eip155:8453", "base-sepolia": "eip155:84532",
        "ethereum": "eip155:1", "ethereum-mainnet": "eip155:1", "mainnet": "eip155:1", "sepolia": "eip155:11155111",
        "polygon": "eip155:137", "polygon-mainnet": "eip155:137", "polygon-amoy": "eip155:80002",
        "avalanche": "eip155:43114", "avalanche-mainnet": "eip155:43114", "avalanche-fuji": "eip155:43113",
        "arbitrum": "eip155:42161", "arbitrum-one": "eip155:42161", "arbitrum-sepolia": "eip155:421614",
    },
)


def buyer_network(name: str) -> str:
    """The network as the x402-buyer compares it (case-insensitively)."""
    return BUYER.networks.get(name.strip().lower(), name).lower()


def _amount(entry: dict) -> str:
    return str(entry.get("amount") or entry.get("maxAmountRequired") or "")


def _requirements(offer: PaymentRequired) -> dict | None:
    """The 402 document the buyer would read, or None when it reads none with `accepts`."""
    for source in BUYER.requirements_from:
        doc = offer.body if source == "body" else (offer.raw if offer.source == "header" else None)
        if isinstance(doc, dict) and isinstance(doc.get("accepts"), list) and doc["accepts"]:
            return doc
    return None


def _buyer_takes(entry: Any, option: PaymentOption, network: str) -> bool:
    """CanSign: the entry's network, payTo, asset and price against what the purchase will declare."""
    return (isinstance(entry, dict) and buyer_network(str(entry.get("network") or "")) == buyer_network(network)
            and str(entry.get("payTo") or "").lower() == option.pay_to.lower()
            and str(entry.get("asset") or "").lower() == option.asset.lower()
            and _amount(entry) in ("", str(option.amount)))


def _refuse(url: str, why: str, data: dict) -> SellerError:
    return SellerError(f"{url}: {why}. Nothing was signed.",
                       hint=f"to use this seller, pay per request: {PAY_PER_REQUEST.format(url=url)} (they speak "
                            "x402 v1 and v2 on each request); to buy vouchers for the cluster, choose a seller the "
                            "x402-buyer can pay", code="cluster_cannot_pay", data=data)


@dataclass(frozen=True)
class SpendProblem:
    """Why the cluster could not spend vouchers for one option; `data["works"]`, when present, lists
    the options it could."""
    why: str
    data: dict[str, Any]


def spend_problem(offer: PaymentRequired, option: PaymentOption, *, network: str) -> SpendProblem | None:
    """None when the cluster can spend vouchers for `option` of this seller, else the reason.

    `network` is the value the PurchaseRequest will carry in spec.payment.network (the chain name).
    """
    data: dict[str, Any] = {"option": option.index, "network": network}
    doc = _requirements(offer)
    if doc is None:
        return SpendProblem("the seller's 402 has no `accepts` in its JSON body (its payment requirements are only "
                            "in the PAYMENT-REQUIRED header, as the reference x402 v2 SDK sends them); the "
                            "cluster's x402-buyer reads requirements only from the body, so it could spend none of "
                            "these vouchers and the controller's probe would fail", data)
    try:
        version = int(doc.get("x402Version") or 1)
    except (TypeError, ValueError):
        version = 1
    if version not in BUYER.x402_versions:
        return SpendProblem(f"the seller speaks only x402 v{version}; the cluster's x402-buyer forwards each voucher "
                            f"as it was signed (an x402 v{BUYER.x402_versions[-1]} payment in "
                            f"{BUYER.payment_header}) and never re-wraps it for v{version}, so this seller would "
                            "refuse every one", data)
    accepts = doc["accepts"]
    if not any(_buyer_takes(entry, option, network) for entry in accepts):
        spellings = sorted({str(e.get("network")) for e in accepts if isinstance(e, dict)
                            and str(e.get("payTo") or "").lower() == option.pay_to.lower()
                            and str(e.get("asset") or "").lower() == option.asset.lower()
                            and _amount(e) == str(option.amount)})
        if spellings:
            why = (f"the x402-buyer compares networks through its own alias table, which does not map {network!r} to "
                   f"what the seller advertises ({', '.join(spellings)}); it would find no entry to pay with")
        else:
            why = (f"payment option [{option.index}] is not in the seller's 402 body as the x402-buyer reads it "
                   f"(network {network}, payTo {option.pay_to}, asset {option.asset}, amount {option.amount})")
        return SpendProblem(why, data)
    first = accepts[0] if isinstance(accepts[0], dict) else {}
    if _amount(first) != str(option.amount):
        working = [o.index for o in offer.accepts if o.chain is not None and str(o.amount) == _amount(first)
                   and any(_buyer_takes(e, o, o.chain.name) for e in accepts)]
        then = (f"choose --payment-option {working[0]}, the option at the first option's price" if working
                else "no option of this seller can become Ready")
        return SpendProblem(f"the cluster's controller checks only the price of the seller's first payment option "
                            f"({_amount(first) or 'none'} atomic), and option [{option.index}] costs "
                            f"{option.amount}: the purchase would stay PricingMismatch and never become Ready; "
                            f"{then}", dict(data, works=working))
    return None


def check_spendable(offer: PaymentRequired, option: PaymentOption, *, network: str, url: str) -> None:
    """Raise SellerError (exit 1) unless the cluster can spend vouchers for `option` of this seller."""
    problem = spend_problem(offer, option, network=network)
    if problem is None:
        return
    err = _refuse(url, problem.why, problem.data)
    if problem.data.get("works"):
        err.hint = (f"buy with --payment-option {problem.data['works'][0]}; or pay per request: "
                    f"{PAY_PER_REQUEST.format(url=url)}")
    raise err


def refusal(offer: PaymentRequired, option: PaymentOption) -> str | None:
    """Why `buy` would refuse to pre-sign vouchers for `option` on the cluster's account, or None.
    (`probe` shows it, so an operator knows before running `buy`.)"""
    if not option.payable:
        return "this skill cannot sign for this option (see the option's network, scheme and defects)"
    problem = spend_problem(offer, option, network=option.chain.name)
    return problem.why if problem else None


def can_spend(offer: PaymentRequired, option: PaymentOption) -> bool:
    """Whether `buy` would sign for `option` (the filter it chooses the cheapest option with)."""
    return refusal(offer, option) is None


# The flag of `buy` that puts each spec field there, so a refusal names what to drop or change.
FLAG_OF_FIELD = {
    "spec.autoRefill.maxUnitPrice": "--cost-cap", "spec.autoRefill.threshold": "--refill-threshold",
    "spec.autoRefill.count": "--refill-count", "spec.autoRefill.enabled": "--auto-refill",
    "spec.autoRefill.maxTotal": "--max-total", "spec.autoRefill.maxSpendPerDay": "--max-spend-per-day",
    "spec.autoRefill": "--auto-refill and its --refill-*/--cost-cap/--max-* flags", "spec.count": "--count/--budget",
    "spec.endpoint": "--endpoint", "spec.model": "--model", "spec.preSignedAuths": "--count/--budget",
}
_UNKNOWN_FIELD = re.compile(r'unknown field "([^"]+)"')


def _flag(path: str) -> str:
    while path:
        if path in FLAG_OF_FIELD:
            return FLAG_OF_FIELD[path]
        path = path.rpartition(".")[0]
    return ""


def _named(paths: list[str]) -> str:
    return "; ".join(f"{p} (set by {_flag(p)})" if _flag(p) else p for p in paths)


def _dropped(sent: Any, kept: Any, path: str) -> list[str]:
    """Paths of `sent` that the server's answer no longer has (pruned by the schema)."""
    if isinstance(sent, dict):
        if not isinstance(kept, dict):
            return [path]
        return [p for key, value in sent.items()
                for p in ([f"{path}.{key}"] if key not in kept else _dropped(value, kept[key], f"{path}.{key}"))]
    if isinstance(sent, list) and isinstance(kept, list) and len(sent) == len(kept):
        return [p for i, (a, b) in enumerate(zip(sent, kept)) for p in _dropped(a, b, f"{path}[{i}]")]
    return []


def _dry_run(kube: Any, obj: dict, replace: bool, attempts: int = 3) -> dict:
    """The dry-run answer; a replace that lost a race with a status write is retried at the fresh
    resourceVersion (the spec being checked is the same)."""
    if not replace:
        return kube.create(obj, dry_run=True)
    for attempt in range(attempts):
        try:
            return kube.replace(obj, dry_run=True)
        except KubeApiError as err:
            if err.reason != "Conflict" or attempt == attempts - 1:
                raise
            fresh = kube.get(obj["metadata"]["name"])
            obj = dict(obj, metadata=dict(obj["metadata"], resourceVersion=fresh["metadata"]["resourceVersion"]))
    raise AssertionError("unreachable")


def check_schema(kube: Any, obj: dict, *, replace: bool) -> None:
    """A server-side dry run of exactly the write to come; PurchaseError (exit 1) if the cluster would
    reject a field or prune it (a schema without spec.autoRefill.maxUnitPrice loses a cost cap)."""
    name = obj["metadata"]["name"]
    try:
        answer = _dry_run(kube, obj, replace)
    except KubeApiError as err:
        unknown = _UNKNOWN_FIELD.findall(err.message)
        if unknown:
            raise PurchaseError(
                f"this cluster's PurchaseRequest schema has no {_named(unknown)}: it would drop that setting "
                f"silently, so nothing was signed or written",
                hint=f"drop {', '.join(sorted({_flag(p) or p for p in unknown}))}, or upgrade the cluster's "
                     "PurchaseRequest CRD", code="schema", data={"fields": unknown, "name": name}) from err
        if err.reason == "Invalid":
            fields = [c.get("field") for c in ((err.data.get("details") or {}).get("causes") or []) if c.get("field")]
            raise PurchaseError(f"the cluster would refuse PurchaseRequest {name}: {err.message}; nothing was "
                                "signed or written", hint=f"change {_named(fields)}" if fields else None,
                                code="schema", data={"fields": fields, "name": name}) from err
        raise
    pruned = _dropped(obj.get("spec"), answer.get("spec"), "spec")
    if pruned:
        raise PurchaseError(f"this cluster's PurchaseRequest schema would prune {_named(pruned)}; nothing was signed "
                            "or written", hint=f"drop {', '.join(sorted({_flag(p) or p for p in pruned}))}",
                            code="schema", data={"fields": pruned, "name": name})


__all__ = ["BUYER", "BuyerWire", "buyer_network", "check_spendable", "can_spend", "check_schema", "PAY_PER_REQUEST"]

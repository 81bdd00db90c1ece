"""The spend caps at work: this agent's signing record, what a purchase signed, and the reservation of a
signing before anything is signed. `buy`, the refill flow, `list` and `status` share it; the rules are
in `caps.py`, the file in `ledger.py`."""
from __future__ import annotations

import time
from typing import Any, Callable

from . import caps, purchases
from .caps import Caps, Signing, Usage
from .errors import AgentConfigError, PurchaseError
from .ledger import SigningLedger
from .peers import Peers


def open_ledger(peers: Peers, *, required: bool) -> SigningLedger | None:
    """The signing record beside the agent's adoption record. Where the agent's home cannot be resolved,
    `required` (a capped purchase) raises: a cap is not enforced on a signing nobody records; otherwise
    None, said on stderr (the purchase's own annotation still records the signing)."""
    try:
        return SigningLedger(peers.agent.record(peers.agent_config).directory)
    except AgentConfigError as err:
        if required:
            raise PurchaseError(f"the signing record cannot be kept ({err.message}); a capped purchase signs "
                                "nothing it cannot record, so nothing was signed", hint=err.hint,
                                code="signings_unavailable") from err
        peers.ctx.notify(f"note: signing not recorded beside the agent's config ({err.message}); "
                         "the PurchaseRequest's annotation records it")
        return None


def ledger_for_reading(peers: Peers) -> SigningLedger | None:
    """The signing record to read (creates nothing); None where the agent's home cannot be resolved."""
    try:
        return SigningLedger(peers.agent.record(peers.agent_config).directory)
    except AgentConfigError:
        return None


def namespace_of(peers: Peers, obj: dict | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("namespace") or peers.kube.config.namespace)


def record_of(ledger: SigningLedger | None, obj: dict, namespace: str) -> caps.History | None:
    """What this agent's signing record holds for purchase `obj`; None without a record or an entry."""
    return ledger.history(namespace, obj["metadata"]["name"]) if ledger is not None else None


def usage_of(obj: dict, entry: dict | None, record: caps.History | None, price: int, *,
             now: float | None = None, exclude: str | None = None) -> Usage:
    """What purchase `obj` signed, from `record` (this agent's signing record), its annotation and its
    vouchers (caps.usage)."""
    pool = (obj.get("spec") or {}).get("preSignedAuths") or []
    return caps.usage(record=record, annotation=caps.annotation_of(obj), vouchers=purchases.voucher_facts(pool),
                      dropped_spent=purchases.dropped_spent(pool, entry), price=price,
                      now=time.time() if now is None else now, exclude=exclude)


class Reservation:
    """A signing recorded before its vouchers are signed; `release` when they were never written."""

    def __init__(self, ledger: SigningLedger | None, namespace: str, name: str, signing: Signing) -> None:
        self.ledger, self.namespace, self.name, self.signing = ledger, namespace, name, signing

    def release(self) -> None:
        if self.ledger is not None:
            self.ledger.release(self.namespace, self.name, self.signing.id)


def reserve(ledger: SigningLedger | None, obj: dict, entry: dict | None, signing: Signing, *, limits: Caps,
            price: int, fmt: Callable[[int], str], namespace: str, new_purchase: bool = False,
            notify: Callable[[str], None] | None = None) -> Reservation:
    """Record `signing` for purchase `obj` before signing. Under the record's lock the caps are checked
    again, with every other run's reservation counted: of two runs racing on one purchase, the second
    finds no room and signs nothing. An uncapped purchase does not depend on the record: when it cannot
    be written (a broken agent home), that is said through `notify` and the annotation records the signing."""
    name = obj["metadata"]["name"]

    def check(record: caps.History | None) -> None:
        if not limits.any or new_purchase:
            return
        use = usage_of(obj, entry, record, price)
        room = caps.fit(limits, use, price, signing.count, fmt)
        if room.count < signing.count:
            raise PurchaseError(f"{name}: another signing was recorded meanwhile and the spend caps now leave "
                                f"room for {room.count} voucher(s), not {signing.count} ({room.reason}); "
                                "nothing was signed", hint=f"buy.py status {name}", code="cap_reached")

    if ledger is not None:
        try:
            ledger.reserve(namespace, name, signing, new_purchase=new_purchase, check=check)
        except AgentConfigError as err:
            if limits.any:
                raise PurchaseError(f"{err.message}; a capped purchase signs nothing it cannot record, so nothing "
                                    "was signed", hint=err.hint, code="signings_unavailable") from err
            if notify is not None:
                notify(f"note: signing not recorded beside the agent's config ({err.message}); "
                       "the PurchaseRequest's annotation records it")
            ledger = None
    return Reservation(ledger, namespace, name, signing)


def conflict_recheck(ledger: SigningLedger | None, signing: Signing, *, limits: Caps, price: int,
                     fmt: Callable[[int], str], namespace: str) -> Callable[[dict, dict | None], None]:
    """For `replace_with_retry`: after a Conflict, the fresh object's history (another host may have
    signed) must still leave room for this batch, counting everything but this batch itself."""
    def recheck(fresh: dict, entry: dict | None) -> None:
        if not limits.any:
            return
        use = usage_of(fresh, entry, record_of(ledger, fresh, namespace), price, exclude=signing.id)
        room = caps.fit(limits, use, price, signing.count, fmt)
        if room.count < signing.count:
            name = fresh["metadata"]["name"]
            raise PurchaseError(f"{name} was topped up by another run meanwhile and the spend caps now leave room "
                                f"for {room.count} voucher(s), not {signing.count} ({room.reason}); nothing was "
                                "written and the vouchers just signed were discarded", hint=f"buy.py status {name}",
                                code="cap_reached")
    return recheck


def cap_facts(obj: dict, entry: dict | None, ledger: SigningLedger | None, *, namespace: str,
              fmt: Callable[[int], str]) -> dict[str, Any]:
    """The caps of `obj` and how much of each is used (for `status`/`list`), at the spec's price."""
    spec = obj.get("spec") or {}
    try:
        price = int((spec.get("payment") or {}).get("price") or 0)
    except ValueError:
        price = 0
    found = Caps.of(spec.get("autoRefill"), obj["metadata"]["name"])
    return caps.report(found, usage_of(obj, entry, record_of(ledger, obj, namespace), price), fmt)


__all__ = ["open_ledger", "ledger_for_reading", "record_of", "usage_of", "reserve", "Reservation", "conflict_recheck", "cap_facts", "namespace_of"]

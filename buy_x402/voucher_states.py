"""Money truth from the chain: what each voucher of a purchase is on chain, against the buyer's count.

A voucher's nonce is the one fact no party can bend: the token (EIP-3009 `authorizationState`) or
Permit2 (its nonce bitmap) says whether it can still be spent. A used nonce is told apart as
*cancelled* by the cancellation events (`AuthorizationCanceled`; Permit2's
`UnorderedNonceInvalidation`) logged since the purchase was created, and as *settled* otherwise.
An unused nonce is *expired* once its deadline passed, else *unused* (spendable by whoever holds a copy).

What this can see: the vouchers in `spec.preSignedAuths`. A top-up keeps only the unspent tail, so
vouchers spent before the last top-up are gone from the spec and cannot be checked; `audit_row`
counts them from the buyer's `spent`. The buyer spends FIFO, so of the spec's vouchers the first
`len - remaining` are the ones it no longer holds (spent, or dropped when expired).
"""
from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from typing import Any, Iterable

from . import schemes
from .errors import BuyError, ChainError
from .purchases import NEVER_DEADLINE
from .schemes import OnChainVoucher

SETTLED, CANCELLED, USED, UNUSED, EXPIRED, UNKNOWN = "settled", "cancelled", "used", "unused", "expired", "unknown"
STATES = (SETTLED, CANCELLED, USED, UNUSED, EXPIRED, UNKNOWN)
LOG_MARGIN_S = 600   # logs are searched from this long before the purchase was created


@dataclass
class Entry:
    """One voucher of a purchase: its place in the spec, what the chain knows of it, its state there."""
    index: int
    id: str
    voucher: OnChainVoucher | None   # None: no scheme recognises it (nothing on chain to ask)
    state: str = UNKNOWN


def entries_of(obj: dict[str, Any]) -> list[Entry]:
    spec = obj.get("spec") or {}
    payment = spec.get("payment") or {}
    out = []
    for index, auth in enumerate(spec.get("preSignedAuths") or []):
        voucher = schemes.identify(auth, payment) if isinstance(auth, dict) else None
        auth_id = (auth.get("id") if isinstance(auth, dict) else None) or (voucher.id if voucher else f"#{index}")
        out.append(Entry(index, str(auth_id), voucher))
    return out


def created_at(obj: dict[str, Any]) -> float | None:
    text = (obj.get("metadata") or {}).get("creationTimestamp")
    try:
        return float(calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ"))) if text else None
    except ValueError:
        return None


def read_states(client, entries: list[Entry], *, now: float, since: float | None, classify: bool = True) -> list[str]:
    """Set each entry's state from the chain; the warnings say what could not be told.

    One batched `eth_call` per voucher (bounded concurrency in `ChainClient.batch`); logs only when
    some nonce is used and `classify` asks to tell settled from cancelled, from the block mined at
    `since` − LOG_MARGIN_S (None: from genesis). Transport failures of the state reads raise.
    """
    warnings: list[str] = []
    by_chain: dict[str, list[Entry]] = {}
    for entry in entries:
        if entry.voucher is None:
            entry.state = UNKNOWN
        else:
            by_chain.setdefault(entry.voucher.chain, []).append(entry)
    for chain, group in by_chain.items():
        answers = client.call_many(chain, [schemes.SCHEMES[e.voucher.scheme].state_call(e.voucher) for e in group])
        used: list[Entry] = []
        failed = 0
        for entry, answer in zip(group, answers):
            voucher = entry.voucher
            if isinstance(answer, ChainError) or not isinstance(answer, str):
                entry.state, failed = UNKNOWN, failed + 1
            elif schemes.SCHEMES[voucher.scheme].is_used(voucher, answer):
                entry.state = USED
                used.append(entry)
            elif voucher.deadline is not None and voucher.deadline <= now:
                entry.state = EXPIRED
            else:
                entry.state = UNUSED
        if failed:
            warnings.append(f"{failed} voucher state read(s) on {chain} failed; they are shown as unknown")
        if used and classify:
            warnings += _classify_used(client, chain, used, since)
    return warnings


def _classify_used(client, chain: str, used: list[Entry], since: float | None) -> list[str]:
    try:
        start = client.block_at_or_before(chain, int(since - LOG_MARGIN_S)) if since else 0
        by_scheme: dict[str, list[Entry]] = {}
        for entry in used:
            by_scheme.setdefault(entry.voucher.scheme, []).append(entry)
        for name, members in by_scheme.items():
            scheme = schemes.SCHEMES[name]
            vouchers = [m.voucher for m in members]
            logs: list[dict] = []
            for query in scheme.event_queries(vouchers):
                logs += client.get_logs(chain, address=query.address, topics=query.topics, from_block=start)
            cancelled = scheme.cancelled_nonces(vouchers, logs)
            for member in members:
                member.state = CANCELLED if member.id in cancelled else SETTLED
    except BuyError as err:
        return [f"{len(used)} used voucher(s) on {chain} cannot be told settled or cancelled (the logs could not "
                f"be read: {err.message}); they are shown as used"]
    return []


def deadline_text(deadline: int | None) -> str:
    if deadline is None or deadline >= NEVER_DEADLINE:
        return "never"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline))


def summary(entries: Iterable[Entry]) -> dict[str, Any]:
    """Count and value of vouchers per state, and the latest deadline of the still-spendable ones."""
    entries = list(entries)
    counts = {state: 0 for state in STATES}
    values = {state: 0 for state in STATES}
    latest: int | None = None
    for entry in entries:
        counts[entry.state] += 1
        value = entry.voucher.value if entry.voucher else 0
        values[entry.state] += value
        if entry.state == UNUSED and entry.voucher is not None:
            deadline = entry.voucher.deadline if entry.voucher.deadline is not None else NEVER_DEADLINE
            latest = deadline if latest is None else max(latest, deadline)
    return {"counts": counts, "values": {k: str(v) for k, v in values.items()},
            "still_valid": {"count": counts[UNUSED], "value": str(values[UNUSED]),
                            "latest_expiry": None if latest is None else deadline_text(latest),
                            "latest_expiry_unix": latest}}


def held_split(obj: dict[str, Any], live_entry: dict[str, Any] | None) -> tuple[int | None, str]:
    """How many of the spec's vouchers the buyer still holds, and whose word that is."""
    pool = len((obj.get("spec") or {}).get("preSignedAuths") or [])
    if live_entry is not None and live_entry.get("remaining") is not None:
        remaining, source = live_entry["remaining"], "x402-buyer"
    elif (obj.get("status") or {}).get("remaining") is not None:
        remaining, source = obj["status"]["remaining"], "status"
    else:
        return None, "unknown"
    return max(0, min(int(remaining), pool)), source


DISCREPANCY_TEXT = {
    "spent_not_settled": "the buyer no longer holds it but its nonce is unused on chain: the seller was not paid "
                         "for it (it can still charge it until {expiry})",
    "spent_then_cancelled": "the buyer no longer holds it and it was cancelled on chain: the seller was never paid",
    "settled_not_counted": "settled on chain while the buyer still counts it unspent: money moved without the buyer",
    "cancelled_in_pool": "cancelled on chain while still in the buyer's pool: the seller will refuse it and the "
                         "buyer retries it at the head of its pool",
    "used_in_pool": "used on chain (settled or cancelled) while the buyer still counts it unspent",
}


def audit_row(obj: dict[str, Any], live_entry: dict[str, Any] | None, entries: list[Entry]) -> dict[str, Any]:
    """One purchase: its vouchers' states on chain against what the buyer holds and counts."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    held, source = held_split(obj, live_entry)
    head = None if held is None else len(entries) - held
    spent = (live_entry or {}).get("spent", status.get("spent"))
    discrepancies, detail = [], []
    for entry in entries:
        in_pool = None if head is None else entry.index >= head
        kind = None
        if in_pool is False and entry.state == UNUSED:
            kind = "spent_not_settled"
        elif in_pool is False and entry.state == CANCELLED:
            kind = "spent_then_cancelled"
        elif in_pool and entry.state in (SETTLED, CANCELLED, USED):
            kind = {SETTLED: "settled_not_counted", CANCELLED: "cancelled_in_pool", USED: "used_in_pool"}[entry.state]
        voucher = entry.voucher
        row = {"index": entry.index, "id": entry.id, "state": entry.state, "held_by_buyer": in_pool,
               "value": str(voucher.value) if voucher else None, "scheme": voucher.scheme if voucher else None,
               "deadline": deadline_text(voucher.deadline) if voucher else None}
        detail.append(row)
        if kind:
            expiry = row["deadline"] or "its deadline"
            discrepancies.append({"kind": kind, "index": entry.index, "id": entry.id, "state": entry.state,
                                  "value": row["value"], "text": DISCREPANCY_TEXT[kind].format(expiry=expiry)})
    outside = None if head is None or spent is None else max(0, int(spent) - head)
    return {"name": meta.get("name"), "deleting": bool(meta.get("deletionTimestamp")),
            "remaining": held, "remaining_source": source, "spent": spent, "vouchers_in_spec": len(entries),
            "not_in_spec": outside, **summary(entries), "discrepancies": discrepancies,
            "ok": not discrepancies and all(e.state != UNKNOWN for e in entries), "vouchers": detail}


__all__ = ["Entry", "entries_of", "created_at", "read_states", "summary", "held_split", "audit_row",
           "deadline_text", "STATES", "SETTLED", "CANCELLED", "USED", "UNUSED", "EXPIRED", "UNKNOWN"]

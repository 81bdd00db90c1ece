"""Human text of remove and audit: what was stopped, what is still spendable, what the chain says."""
from __future__ import annotations

from typing import Any

from .registry import plural, renderer


def _expiry_text(still: dict[str, Any]) -> str:
    latest = still.get("latest_expiry")
    return "they never expire" if latest == "never" else f"the last expires {latest}"


@renderer("remove")
def _remove(data: dict[str, Any]) -> str:
    lines = []
    if data.get("state") == "gone":
        lines.append(f"Removed purchase {data['name']} ({data['alias']}): the PurchaseRequest is gone "
                     f"after {data.get('waited_s')} s.")
    elif data.get("state"):
        lines.append(f"Purchase {data['name']} ({data['alias']}) is deleted but still {data['state']}.")
    default = data.get("default") or {}
    if default.get("restored"):
        lines.append(f"Agent default: {default['model']} again (it was {default['replaced']}).")
    elif default.get("was_default"):
        lines.append(f"Agent default: still {default['model']}, which stops answering now: "
                     "set another with `buy.py default set MODEL`.")
    elif default.get("checked"):
        lines.append(f"Agent default: {default.get('model')} (unchanged; it did not use this purchase).")
    elif default:
        lines.append("Agent default: not checked (its config could not be read).")
    revoked = data.get("revoked")
    if revoked:
        done = revoked.get("cancelled") or []
        txs = revoked.get("transactions") or []
        gas = sum(int(t.get("gasUsed") or 0) for t in txs)
        lines.append(f"Cancelled on chain: {plural(len(done), 'voucher')} in {plural(len(txs), 'transaction')}"
                     f" ({gas} gas)." if done else "Cancelled on chain: nothing was left to cancel.")
        if revoked.get("settled_meanwhile"):
            lines.append(f"  {plural(len(revoked['settled_meanwhile']), 'voucher')} settled before the "
                         "cancellation arrived.")
    vouchers = data.get("vouchers") or {}
    still = vouchers.get("still_valid") or {}
    counts = vouchers.get("counts")
    if counts:
        shown = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        lines.append(f"Its {plural(vouchers.get('in_spec', 0), 'voucher')} on chain: {shown or 'none'}.")
    if still.get("count"):
        seen = still.get("seen_by_seller")
        seen_text = f" ({seen} of them already sent to the seller)" if seen else ""
        lines.append(f"Still valid: {plural(still['count'], 'signed voucher')} worth {still.get('display')}"
                     f"{seen_text}; {_expiry_text(still)}. Whoever holds a copy can settle them to "
                     f"{data.get('payTo')} until then" + ("" if data.get("revoked") else
                                                          "; only `remove --revoke` (before removal) cancels them."))
    elif vouchers:
        lines.append("No voucher of this purchase can be charged any more (checked on chain)."
                     if vouchers.get("source") == "chain" else "No unspent vouchers by the x402-buyer's count.")
    return "\n".join(lines)


def _audit_money(row: dict[str, Any], atomic: str | int | None) -> str:
    from ..amounts import format_amount
    money = row.get("money") or {}
    try:
        return format_amount(int(atomic or 0), money.get("decimals"), money.get("symbol"))
    except (TypeError, ValueError):
        return str(atomic)


@renderer("audit")
def _audit(data: dict[str, Any]) -> str:
    rows = data.get("purchases") or []
    if not rows:
        return "No purchases to audit."
    lines = []
    for row in rows:
        counts = row.get("counts") or {}
        shown = ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no vouchers"
        mark = "OK" if row.get("ok") else "MISMATCH"
        lines.append(f"{row['name']} ({row.get('alias')}): {mark}: {row['vouchers_in_spec']} vouchers in the spec, "
                     f"on chain {shown}.")
        source = {"x402-buyer": "the x402-buyer", "status": "the PurchaseRequest status (buyer unreachable)"}.get(
            row.get("remaining_source"), "nobody (unknown)")
        lines.append(f"  Buyer ({source}): {row.get('remaining') if row.get('remaining') is not None else '?'} "
                     f"held, {row.get('spent') if row.get('spent') is not None else '?'} spent in all; "
                     f"settled on chain: {_audit_money(row, (row.get('values') or {}).get('settled'))}.")
        still = row.get("still_valid") or {}
        if still.get("count"):
            lines.append(f"  Still spendable: {plural(still['count'], 'voucher')} worth "
                         f"{_audit_money(row, still.get('value'))}; {_expiry_text(still)}.")
        if row.get("not_in_spec"):
            lines.append(f"  Not checkable: {row['not_in_spec']} vouchers the buyer counts as spent are no longer in the "
                         "spec (a top-up drops spent ones; the buyer also counts an earlier purchase of this name).")
        for item in row.get("discrepancies") or []:
            lines.append(f"  ! voucher #{item['index']} {item['id'][:18]}…: {item['text']}")
    total = data.get("discrepancies") or 0
    lines.append(f"{plural(len(rows), 'purchase')}, {plural(data.get('vouchers') or 0, 'voucher')} checked on "
                 f"chain: " + ("everything matches." if data.get("ok") else f"{plural(total, 'mismatch')}."))
    return "\n".join(lines)

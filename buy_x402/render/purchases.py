"""Human text of the commands that read or keep up purchases: list, status, refill, process, schedule."""
from __future__ import annotations

from typing import Any

from .registry import renderer


def _row_price(row: dict[str, Any]) -> str:
    from ..amounts import format_amount
    try:
        return format_amount(int(row["price"]), row.get("assetDecimals"), row.get("assetSymbol"))
    except (TypeError, ValueError):
        return str(row.get("price") or "?")


@renderer("list")
def _list(data: dict[str, Any]) -> str:
    rows = data.get("purchases") or []
    if not rows:
        return "No purchased x402 providers."
    cols = ("NAME", "ALIAS", "PRICE", "CHAIN", "REMAINING", "SPENT", "AUTO-REFILL")
    table = [cols] + [(r["name"], r["alias"], _row_price(r), str(r.get("chain") or ""),
                       f"{r['remaining']} ({r['expired']} expired)", str(r["spent"]),
                       "on" if r["autoRefill"] else "off") for r in rows]
    widths = [max(len(str(line[i])) for line in table) for i in range(len(cols))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in table]
    capped = data.get("caps") or {}
    if capped:
        lines += ["", "Spend caps:"] + [f"  {name}: {_caps_text(facts)}" for name, facts in capped.items()]
    return "\n".join(lines)


def _caps_text(facts: dict[str, Any]) -> str:
    """'maxTotal 0.006 of 0.008 USDC …; maxSpendPerDay …' — each cap with how much of it is used."""
    if facts.get("error"):
        return f"unknown ({facts['error']})"
    parts = []
    total = facts.get("maxTotal")
    if total:
        parts.append(f"maxTotal {total['display']}: {total['usedDisplay']} signed, {total['leftDisplay']} left")
    day = facts.get("maxSpendPerDay")
    if day:
        later = f", more from {day['freesAt']}" if day.get("freesAt") else ""
        parts.append(f"maxSpendPerDay {day['display']}: {day['usedDisplay']} signed in the last 24 h, "
                     f"{day['leftDisplay']} left{later}")
    source = (facts.get("signed") or {}).get("source")
    return "; ".join(parts) + (f" (from the {source})" if source and source not in ("record", "record+annotation")
                               else "")


def _in_days(seconds_left: int) -> str:
    days = seconds_left / 86400
    return f"in {days:.1f} day(s)" if days >= 1 else f"in {max(0, seconds_left) // 60} minute(s)"


@renderer("status")
def _status(data: dict[str, Any]) -> str:
    import time as _time
    row = data["purchase"]
    refill = data.get("autoRefill") or {}
    lines = [f"Upstream:        {row['name']}", f"Alias:           {row['alias']}",
             f"Endpoint:        {row['endpoint']}", f"Model:           {row['model']}",
             f"Chain:           {row['chain']}", f"Price:           {_row_price(row)} per request",
             f"Serving:         {'yes' if data.get('serving') else 'no'}"]
    for cond in data.get("conditions") or []:
        detail = f" ({cond['reason']})" if cond.get("reason") else ""
        detail += f": {cond['message']}" if cond.get("message") else ""
        lines.append(f"  {cond['type']}={cond['status']}{detail}")
    lines.append(f"Auths remaining: {row['remaining']} ({row['expired']} expired)")
    expiry = data.get("expiry") or {}
    if expiry.get("earliest") is not None:
        when = _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(expiry["earliest"]))
        if expiry.get("expired"):
            lines.append(f"WARNING: {expiry['expired']} auth(s) expired (earliest {when})")
        else:
            lines.append(f"Earliest auth expiry: {when} ({_in_days(expiry['earliest_in_s'])})")
    lines.append(f"Auths spent:     {row['spent']}")
    if refill.get("enabled"):
        cap = f", cost cap {refill['maxUnitPrice']} atomic" if refill.get("maxUnitPrice") else ""
        lines.append(f"Auto-refill:     on (threshold {refill.get('threshold')}, count {refill.get('count')}{cap})")
    else:
        lines.append("Auto-refill:     off")
    facts = data.get("caps") or {}
    if facts.get("error") or facts.get("maxTotal") or facts.get("maxSpendPerDay"):
        lines.append(f"Spend caps:      {_caps_text(facts)}")
    buyer = data.get("buyer") or {}
    if not buyer.get("running"):
        lines.append("Buyer: NOT RUNNING (x402-buyer status unavailable)")
    else:
        lines.append("Buyer: running" + ("" if buyer.get("live") else f" (not serving {row['name']} yet)"))
    default = data.get("default") or {}
    if default.get("error"):
        lines.append(f"Agent default:   unknown ({default['error']})")
    elif default.get("is_this_purchase"):
        lines.append(f"Agent default:   {default['model']} (this purchase)")
    else:
        lines.append(f"Agent default:   {default.get('model')} (not this purchase)")
    return "\n".join(lines)


def _refilled(action: dict[str, Any]) -> str:
    moved = action.get("price_moved")
    note = f" (seller price moved {moved['from']} → {moved['to']} atomic)" if moved else ""
    if action.get("capped"):
        note += f" (capped: {action['count']} of {action['wanted']}; {action['capped']})"
    return (f"{action['name']}: refilled {action['count']} vouchers at {action['price']['display']} each; "
            f"{action['pool']} active{note}")


@renderer("refill")
def _refill(data: dict[str, Any]) -> str:
    line = _refilled(data)
    facts = data.get("caps") or {}
    if facts.get("maxTotal") or facts.get("maxSpendPerDay"):
        line += f"\nSpend caps: {_caps_text(facts)}"
    return line


@renderer("process")
def _process(data: dict[str, Any]) -> str:
    """Only what changed: the Hermes cron job delivers stdout, and empty stdout stays silent."""
    lines = []
    for action in data.get("purchases") or []:
        if action["action"] == "refilled":
            lines.append(_refilled(action))
    guardian = data.get("guardian") or {}
    if guardian.get("action") == "restored":
        lines.append(f"default: restored {guardian['model']} because {guardian['reason']}; "
                     f"re-adopt later with `buy.py default set {guardian['adopted']}` after a top-up")
    elif guardian.get("action") == "left_alone" and guardian.get("recorded"):
        lines.append(f"default: {guardian['reason']}")
    return "\n".join(lines)


@renderer("schedule")
def _schedule(data: dict[str, Any]) -> str:
    if "removed" in data:
        return (f"Removed the Hermes cron job {data['job']!r}." if data["removed"]
                else f"No Hermes cron job {data['job']!r} to remove.")
    state = "Created" if data.get("created") else "Already scheduled:"
    return (f"{state} Hermes cron job {data['job']!r} ({data['schedule']}, id {data['id']}) running "
            f"{data['script']} (script mode, silent unless something changes).")

"""Human text of buy and default: what was bought, whether the agent now uses it, how to roll back."""
from __future__ import annotations

from typing import Any

from .registry import plural, renderer


def _refill_text(policy: dict[str, Any] | None) -> str:
    if not (policy or {}).get("enabled"):
        return "auto-refill off"
    return f"auto-refill on (below {policy.get('threshold')} it signs {policy.get('count')} more)"


def _adoption_lines(adopted: dict[str, Any]) -> list[str]:
    if not adopted.get("changed"):
        return [f"The agent already uses {adopted['model']}; nothing to change."]
    lines = [f"The agent now uses {adopted['model']} (it used {adopted.get('previous') or 'no model'}); "
             "the next chat turn is paid, no restart."]
    canary = adopted.get("canary")
    if canary:
        lines.append(f"Canary: one paid request answered HTTP {canary.get('status')} (it spent one voucher).")
    lines.append(f"Roll back: {adopted.get('rollback') or 'buy.py default restore'}")
    return lines


@renderer("buy")
def _buy(data: dict[str, Any]) -> str:
    from ..amounts import format_amount
    price = data["price"]
    total = format_amount(int(price["atomic"]) * int(data["count"]), price.get("decimals"), price.get("symbol"))
    head = (f"Topped up {data['name']} ({data['alias']})" if data.get("topup")
            else f"Bought {data['alias']} as purchase {data['name']}")
    lines = [f"{head}: {plural(data['count'], 'voucher')} at {price['display']} each (at most {total}) "
             f"on {data['chain']}.",
             f"Pool: {plural(data['pool'], 'active voucher')}; {_refill_text(data.get('autoRefill'))}.",
             f"Seller: {data['endpoint']} (model {data['model']})"]
    status = data.get("status") or {}
    if status.get("ready"):
        lines.append(f"Ready: LiteLLM serves {status.get('publicModel') or data['alias']} "
                     f"({status.get('remaining')} vouchers live in the x402-buyer).")
    else:
        lines.append(f"Not Ready yet: {status.get('message') or 'no status yet'}.")
    adopted = data.get("set_default")
    if adopted:
        lines += _adoption_lines(adopted)
    elif status.get("ready"):
        lines.append(f"The agent's own model is unchanged; to chat with this one: buy.py default set {data['alias']}")
    schedule = data.get("schedule")
    if schedule:
        lines.append(f"Upkeep: Hermes cron job {schedule.get('job')!s} runs `process --all` every few minutes.")
    return "\n".join(lines)


@renderer("default")
def _default(data: dict[str, Any]) -> str:
    action = data.get("action") or "show"
    if action == "set":
        if "changed" not in data:
            return ""  # refused: the error (and its fix) follow on stderr
        return "\n".join(_adoption_lines(data) + [f"Config: {data['config']} (profile {data.get('profile')})"])
    if action == "restore":
        if "changed" not in data:
            return ""
        return (f"The agent uses {data['model']} again (it used {data['replaced']}); the next chat turn uses it.\n"
                f"Config: {data['config']}")
    lines = [f"The agent chats with {data.get('model') or '(no model set)'}.",
             f"Config: {data['config']} (profile {data.get('profile')}"
             + (", managed by the operator: never written)" if data.get("managed") else ")")]
    if data.get("adopted_by_buy_x402"):
        lines.append(f"Adopted by buy-x402 at {data.get('at')} from purchase {data.get('purchase')}; "
                     f"it replaced {data.get('previous') or 'no model'}.")
        live = data.get("live")
        if live:
            lines.append(f"Its pool: {live.get('remaining')} vouchers left, {live.get('spent')} spent.")
        elif "live" in data:
            lines.append("Its pool: unknown (the x402-buyer does not answer).")
        lines.append(f"Roll back: {data.get('rollback')}")
    else:
        lines.append("Not set by buy-x402 (nothing to restore).")
    return "\n".join(lines)

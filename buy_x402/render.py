"""Human text for each command's result. JSON output is rendered in `cli`; this is the text side."""
from __future__ import annotations

from typing import Any, Callable

from .result import Result

_RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {}


def renderer(command: str) -> Callable[[Callable[[dict[str, Any]], str]], Callable[[dict[str, Any]], str]]:
    def register(func: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
        _RENDERERS[command] = func
        return func
    return register


def render_text(result: Result) -> str:
    func = _RENDERERS.get(result.command)
    if func is None:
        return _generic(result.data)
    return func(result.data)


def _generic(data: dict[str, Any], indent: str = "") -> str:
    """Any command without its own renderer: nested keys, lists as items; never a Python repr."""
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(_generic(value, indent + "  "))
        elif isinstance(value, list):
            lines.append(f"{indent}{key}:" + ("" if value else " none"))
            for item in value:
                if isinstance(item, dict):
                    lines.append(_generic(item, indent + "  - ").replace(f"\n{indent}  - ", f"\n{indent}    "))
                else:
                    lines.append(f"{indent}  - {_scalar(item)}")
        else:
            lines.append(f"{indent}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@renderer("env")
def _env(data: dict[str, Any]) -> str:
    rows = data["settings"]
    width = max(len(r["env"]) for r in rows)
    # Flags arrive as the text of a bool; a person reads yes/no.
    shown = {"True": "yes", "False": "no"}
    return "\n".join(f"{r['env']:<{width}}  {shown.get(r['value'], r['value'])}".rstrip() for r in rows)


def _option_lines(option: dict[str, Any]) -> list[str]:
    where = option["chain"] or f"{option['network']} (unsupported network)"
    head = f"[{option['index']}] {option['price']['display']} per request on {where}"
    if not option["payable"]:
        head += "  (cannot be paid by this skill)"
    domain = option.get("signingDomain")
    domain_text = (", ".join(f"{k}={v}" for k, v in domain.items()) if domain else "-")
    return [head,
            f"    scheme {option['scheme']}, network {option['network']}, transfer {option['transferMethod']}",
            f"    asset  {option['asset']}",
            f"    payTo  {option['payTo']}",
            f"    signs  EIP-712 domain {domain_text}",
            f"    maxTimeoutSeconds {option['maxTimeoutSeconds']}"]


@renderer("probe")
def _probe(data: dict[str, Any]) -> str:
    count = len(data["options"])
    lines = [f"{data['url']}: x402 v{data['x402Version']} (requirements from the {data['source']}), "
             f"{count} payment option{'s' if count != 1 else ''}"]
    for option in data["options"]:
        lines.extend(_option_lines(option))
    return "\n".join(lines)


@renderer("balance")
def _balance(data: dict[str, Any]) -> str:
    lines = [f"Wallet: {data['wallet']}", f"Chain:  {data['chain']} ({data['chainId']})"]
    width = max(len(t["symbol"]) for t in data["tokens"]) + 1
    lines += [f"{t['symbol'] + ':':<{width}} {t['display']}" for t in data["tokens"]]
    return "\n".join(lines)


def settlement_text(settled: dict[str, Any], price: str, pay_to: str) -> str:
    """One line a person reads: was it paid, on whose word, and the transaction."""
    tx = f" (tx {settled['transaction']})" if settled.get("transaction") else ""
    if settled.get("verified") is True:
        how = ("its transaction's receipt" if settled.get("how") == "receipt"
               else f"the voucher's nonce ({settled.get('how')})")
        return f"Settlement: verified on chain by {how}: {price} to {pay_to}{tx}"
    if settled.get("verified") is False:
        return f"Settlement: NOT verified on chain: {settled.get('detail')}"
    return f"Settlement: unknown: {settled.get('detail')}"


def paid_summary(data: dict[str, Any]) -> str:
    """What was paid, to whom, over what, and whether the chain agrees."""
    option = data["option"]
    return (f"Paid {data['price']['display']} to {option['payTo']} on {option['chain']} "
            f"(x402 v{data['x402Version']}, {data['paymentHeader']}); HTTP {data['status']}\n"
            + settlement_text(data.get("settlement") or {}, data["price"]["display"], option["payTo"]))


def _paid(data: dict[str, Any]) -> str:
    if data.get("streamed"):
        return ""  # stdout already carried the stream; the summary went to stderr
    lines = [paid_summary(data)]
    answer = data.get("content")
    body = answer if isinstance(answer, str) else data.get("body", "")
    if body:
        lines += ["", body + ("\n… (truncated; use --json for the byte count)" if data.get("bodyTruncated") else "")]
    return "\n".join(lines)


renderer("pay")(_paid)
renderer("pay-agent")(_paid)


@renderer("go")
def _go(data: dict[str, Any]) -> str:
    if data.get("paid"):
        if data.get("streamed") and data.get("printed"):
            return ""  # the answer went to stdout as it arrived; the summary went to stderr
        return _paid(dict(data, streamed=False))
    what = {"agent": "an agent", "chat": "a chat model", "http": "an HTTP resource"}[data["kind"]]
    model = f" ({data['model']})" if data.get("model") else ""
    count = len(data["options"])
    lines = [f"{what[0].upper()}{what[1:]} offer{model}, x402 v{data['x402Version']}, "
             f"{count} payment option{'s' if count != 1 else ''}; nothing was paid."]
    for option in data["options"]:
        where = option["chain"] or f"{option['network']} (unsupported network)"
        lines.append(f"  [{option['index']}] {option['price']['display']} per request on {where} to {option['payTo']}")
    lines += ["", "Ask it (one paid request):", f"  {data['next']}"]
    if data.get("buy"):
        lines += ["Or buy vouchers and use it as paid/<model> through LiteLLM:", f"  {data['buy']}"]
    return "\n".join(lines)


@renderer("siwx")
def _siwx(data: dict[str, Any]) -> str:
    if data.get("fetched"):
        body = data.get("body") or ""
        return body + ("\n… (truncated; use --json)" if data.get("bodyTruncated") else "")
    source = "the server's challenge" if data.get("fromChallenge") else "the URL (no challenge)"
    return "\n".join([f"Wallet: {data['wallet']}", f"Domain: {data['domain']} (message from {source})",
                      f"Header: {data['header']}", f"Example: {data['curl']}",
                      "The credential works once (single-use nonce) and for 10 minutes."])


# --- list, status, process, schedule -------------------------------------------------------------

def _row_price(row: dict[str, Any]) -> str:
    from .amounts import format_amount
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


# --- buy, default, remove, audit: what a person reads ---------------------------------------------

def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


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
    from .amounts import format_amount
    price = data["price"]
    total = format_amount(int(price["atomic"]) * int(data["count"]), price.get("decimals"), price.get("symbol"))
    head = (f"Topped up {data['name']} ({data['alias']})" if data.get("topup")
            else f"Bought {data['alias']} as purchase {data['name']}")
    lines = [f"{head}: {_plural(data['count'], 'voucher')} at {price['display']} each (at most {total}) "
             f"on {data['chain']}.",
             f"Pool: {_plural(data['pool'], 'active voucher')}; {_refill_text(data.get('autoRefill'))}.",
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
        lines.append(f"Cancelled on chain: {_plural(len(done), 'voucher')} in {_plural(len(txs), 'transaction')}"
                     f" ({gas} gas)." if done else "Cancelled on chain: nothing was left to cancel.")
        if revoked.get("settled_meanwhile"):
            lines.append(f"  {_plural(len(revoked['settled_meanwhile']), 'voucher')} settled before the "
                         "cancellation arrived.")
    vouchers = data.get("vouchers") or {}
    still = vouchers.get("still_valid") or {}
    counts = vouchers.get("counts")
    if counts:
        shown = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        lines.append(f"Its {_plural(vouchers.get('in_spec', 0), 'voucher')} on chain: {shown or 'none'}.")
    if still.get("count"):
        seen = still.get("seen_by_seller")
        seen_text = f" ({seen} of them already sent to the seller)" if seen else ""
        lines.append(f"Still valid: {_plural(still['count'], 'signed voucher')} worth {still.get('display')}"
                     f"{seen_text}; {_expiry_text(still)}. Whoever holds a copy can settle them to "
                     f"{data.get('payTo')} until then" + ("" if data.get("revoked") else
                                                          "; only `remove --revoke` (before removal) cancels them."))
    elif vouchers:
        lines.append("No voucher of this purchase can be charged any more (checked on chain)."
                     if vouchers.get("source") == "chain" else "No unspent vouchers by the x402-buyer's count.")
    return "\n".join(lines)


def _audit_money(row: dict[str, Any], atomic: str | int | None) -> str:
    from .amounts import format_amount
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
            lines.append(f"  Still spendable: {_plural(still['count'], 'voucher')} worth "
                         f"{_audit_money(row, still.get('value'))}; {_expiry_text(still)}.")
        if row.get("not_in_spec"):
            lines.append(f"  Not checkable: {row['not_in_spec']} vouchers the buyer counts as spent are no longer in the "
                         "spec (a top-up drops spent ones; the buyer also counts an earlier purchase of this name).")
        for item in row.get("discrepancies") or []:
            lines.append(f"  ! voucher #{item['index']} {item['id'][:18]}…: {item['text']}")
    total = data.get("discrepancies") or 0
    lines.append(f"{_plural(len(rows), 'purchase')}, {_plural(data.get('vouchers') or 0, 'voucher')} checked on "
                 f"chain: " + ("everything matches." if data.get("ok") else f"{_plural(total, 'mismatch')}."))
    return "\n".join(lines)

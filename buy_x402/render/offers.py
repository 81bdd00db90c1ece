"""Human text of the commands that look at or pay a seller: probe, balance, pay, pay-agent, go, siwx, env."""
from __future__ import annotations

from typing import Any

from .registry import renderer


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
            f"    maxTimeoutSeconds {option['maxTimeoutSeconds']}",
            *_buy_line(option)]


def _buy_line(option: dict[str, Any]) -> list[str]:
    """Whether `buy` would pre-sign vouchers for the option (chat offers only; absent elsewhere)."""
    if option.get("clusterCanSpend") is None:
        return []
    if option["clusterCanSpend"]:
        return ["    buy    yes: the cluster's x402-buyer can spend vouchers for it"]
    return [f"    buy    no: {option['clusterRefusal']}; pay per request with `pay` or `pay-agent`"]


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

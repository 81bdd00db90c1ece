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
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(_generic(value, indent + "  "))
        else:
            lines.append(f"{indent}{key}: {value}")
    return "\n".join(line for line in lines if line)


@renderer("env")
def _env(data: dict[str, Any]) -> str:
    rows = data["settings"]
    width = max(len(r["env"]) for r in rows)
    return "\n".join(f"{r['env']:<{width}}  {r['value']}" for r in rows)


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


def _paid(data: dict[str, Any]) -> str:
    if data.get("streamed"):
        return ""  # stdout already carried the stream; the summary went to stderr
    settlement = data.get("settlement") or {}
    lines = [f"Paid {data['price']['display']} on {data['option']['chain']} "
             f"(x402 v{data['x402Version']}, {data['paymentHeader']}); HTTP {data['status']}"]
    if settlement:
        lines.append(f"Settlement: success={settlement.get('success')} tx={settlement.get('transaction')} "
                     f"payer={settlement.get('payer')} network={settlement.get('network')}")
    answer = data.get("content")
    body = answer if isinstance(answer, str) else data.get("body", "")
    if body:
        lines += ["", body + ("\n… (truncated; use --json for the byte count)" if data.get("bodyTruncated") else "")]
    return "\n".join(lines)


renderer("pay")(_paid)
renderer("pay-agent")(_paid)

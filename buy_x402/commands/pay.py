"""`buy.py pay URL` and `buy.py pay-agent URL`: one paid request with ONE freshly signed voucher.

Everything that can fail without spending (arguments, the seller's price, the option, the wallet's
balance and allowance) is checked before the voucher is signed. After it is sent, every failure says
whether the payment may have settled, because a retry would pay again.
"""
from __future__ import annotations

import json
import re
import time
from argparse import Namespace
from typing import Any

from .. import payment, x402
from ..amounts import auth_expiry, format_amount
from ..errors import Interrupted, UsageError, WalletError
from ..offer import PaymentOption, PaymentRequired
from ..peers import Peers
from ..result import Context, Result
from ..urls import seller_url, shown
from ..vouchers import choose, preflight

DEFAULT_TIMEOUTS_S = {"http": 100.0, "inference": 600.0}
AGENT_TIMEOUT_S = 3600.0
BODY_LIMIT_CHARS = 64_000
URL_RE = re.compile(r"^https?://[^/\s]+", re.IGNORECASE)


def run_pay(ctx: Context, args: Namespace) -> Result:
    return _run(ctx, args, agent=False)


def run_pay_agent(ctx: Context, args: Namespace) -> Result:
    return _run(ctx, args, agent=True)


def build_request(args: Namespace, *, agent: bool) -> payment.PaidRequest:
    """The request to pay for, from the flags; usage errors before anything goes on the wire."""
    command = "pay-agent" if agent else "pay"
    if not URL_RE.match(args.url or ""):
        raise UsageError(f"{shown(args.url, 80)} is not an http(s) URL", hint=f"e.g. buy.py {command} https://seller/services/x")
    seller_url(args.url, f"the {command} URL")
    if args.type == "http":
        if agent:
            raise UsageError("pay-agent talks to a chat endpoint; --type http is for `pay`",
                             hint="use `buy.py pay URL --type http`")
        if args.message is not None:
            raise UsageError("--message is for --type inference", hint="send a body with --data")
        body = args.data.encode("utf-8") if args.data is not None else None
        content_type = None
        if body is not None:
            content_type = "application/json" if _is_json(args.data) else "text/plain; charset=utf-8"
        return payment.PaidRequest(method=(args.method or "GET").upper(), url=args.url, body=body,
                                   content_type=content_type)
    if args.message is not None and args.data is not None:
        raise UsageError("give either --message or --data, not both")
    if args.data is not None:
        try:
            doc = json.loads(args.data)
        except ValueError as exc:
            raise UsageError(f"--data is not JSON: {exc}", hint='e.g. --data \'{"messages": [...]}\'') from None
        if not isinstance(doc, dict):
            raise UsageError("--data must be a JSON object (an OpenAI chat completion request)")
        doc.setdefault("model", args.model or "default")
    elif args.message is not None:
        doc = {"model": args.model or "default", "messages": [{"role": "user", "content": args.message}]}
    else:
        raise UsageError(f"{command} --type inference needs --message TEXT or --data JSON")
    if agent:
        doc["stream"] = True
    url = x402.chat_url(args.url)
    return payment.PaidRequest(method=(args.method or "POST").upper(), url=url,
                               body=json.dumps(doc).encode("utf-8"), content_type="application/json", stream=agent)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _run(ctx: Context, args: Namespace, *, agent: bool) -> Result:
    command = "pay-agent" if agent else "pay"
    request = build_request(args, agent=agent)
    timeout = args.timeout or (AGENT_TIMEOUT_S if agent else DEFAULT_TIMEOUTS_S[args.type])
    peers = Peers(ctx)

    # 1. Price (unpaid; a seller that is down fails here, before anything is signed).
    ctx.notify(f"Probing {request.url} ...")
    model = json.loads(request.body).get("model") if args.type == "inference" else None
    offer = x402.probe(peers.session, args.url, model, kind=args.type,
                       method=request.method if args.type == "http" else None)

    # 2. Option and wallet.
    wallet = peers.signer.address()
    choice = choose(peers, offer, wallet, index=args.payment_option, token=args.token, network=args.network)
    option = choice.option
    price_text = format_amount(option.amount, option.decimals, option.symbol)
    balance = peers.chain.balance_of(option.chain.name, option.asset, wallet)
    if balance < option.amount:
        raise WalletError(f"wallet {wallet} holds {format_amount(balance, option.decimals, option.symbol)} on "
                          f"{option.chain.name}; this request costs {price_text}",
                          hint=f"fund {wallet}; nothing was signed",
                          data={"wallet": wallet, "balance": str(balance), "price": str(option.amount)})
    plan = preflight(peers, option, wallet)  # one-shot vouchers use no sponsoring extension (as before)

    # 3. Sign one voucher (the only step that commits the wallet) and send it once.
    now = int(time.time())
    ttl = args.auth_ttl or ctx.settings.auth_ttl
    valid_before = auth_expiry(ttl, now) if ttl else payment.one_shot_expiry(option, now)
    voucher = payment.sign_voucher(peers.signer, option, wallet=wallet, valid_before=valid_before, plan=plan,
                                   extensions=offer.extensions)
    header_name, header_value, _ = payment.payment_header(offer, option, voucher)
    ctx.notify(f"Paying {price_text} to {option.pay_to} on {option.chain.name} (x402 v{offer.x402_version}, "
               f"{header_name}) ...")
    sink = ctx.stream if (agent and not args.json) else None
    try:
        response = payment.send_paid(peers.session, request, header_name, header_value, timeout=timeout, on_line=sink)
    except Interrupted as exc:  # the voucher left this process: stopping cannot take it back
        exc.data = {**exc.data, "url": request.url, "voucher_sent": True, "wallet": wallet,
                    "price": {"atomic": str(option.amount), "display": price_text}}
        exc.note = "the signed voucher was sent and may have been spent: check `buy.py balance` before retrying"
        raise

    # 4. Outcome.
    settled = payment.settled_warning(response.settlement)
    try:
        payment.check_outcome(response, request.url)
    except payment.PaymentFailed:
        if settled:
            ctx.warn(settled)
        raise
    warnings = []
    if response.settlement is None:
        warnings.append("the seller sent no settlement header (PAYMENT-RESPONSE / X-PAYMENT-RESPONSE); "
                        "whether the payment settled is unknown: check `buy.py balance`")
    elif response.settlement.success is False:
        warnings.append(f"the seller answered {response.status} but reports the settlement failed: "
                        f"{response.settlement.error_reason or 'no reason given'}")
    data = _data(args, request, response, offer, option, choice.reason, wallet, streamed=sink is not None)
    if sink is not None:
        ctx.notify(settlement_summary(data))
    return Result(command=command, data=data, warnings=warnings)


def _data(args: Namespace, request: payment.PaidRequest, response: payment.PaidResponse,
          offer: PaymentRequired, option: PaymentOption, reason: str, wallet: str,
          *, streamed: bool) -> dict[str, Any]:
    text = response.body.decode("utf-8", "replace")
    data: dict[str, Any] = {
        "url": request.url, "type": args.type, "method": request.method, "status": response.status,
        "contentType": response.headers.get("content-type") or response.headers.get("Content-Type"),
        "x402Version": offer.x402_version, "paymentHeader": response.payment_header,
        "option": x402.option_view(option), "optionReason": reason, "wallet": wallet,
        "price": {"atomic": str(option.amount), "display": option.price_text(), "symbol": option.symbol,
                  "decimals": option.decimals},
        "settlement": response.settlement.as_dict() if response.settlement else None,
        "body": text[:BODY_LIMIT_CHARS], "bodyTruncated": len(text) > BODY_LIMIT_CHARS,
        "bodyBytes": len(response.body), "elapsedS": response.elapsed_s,
    }
    if request.stream:
        data["streamed"] = streamed
        data["lines"] = len(response.lines)
        data["content"] = sse_content(response.lines)
    elif args.type == "inference":
        data["content"] = completion_content(text)
    return data


def completion_content(text: str) -> str | None:
    """The assistant's answer of an OpenAI chat completion, if the body is one."""
    try:
        doc = json.loads(text)
        return doc["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def sse_content(lines: list[str]) -> str | None:
    """The concatenated `delta.content` of OpenAI SSE chunks; None when the stream had none."""
    parts = []
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            continue
        try:
            piece = json.loads(payload)["choices"][0]["delta"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            continue
        if isinstance(piece, str):
            parts.append(piece)
    return "".join(parts) if parts else None


def settlement_summary(data: dict[str, Any]) -> str:
    s = data.get("settlement") or {}
    return (f"Paid {data['price']['display']} on {data['option']['chain']} (x402 v{data['x402Version']}, "
            f"{data['paymentHeader']}); HTTP {data['status']}; settlement success={s.get('success')} "
            f"tx={s.get('transaction')} payer={s.get('payer')} network={s.get('network')}")

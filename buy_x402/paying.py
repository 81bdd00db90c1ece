"""One paid request with ONE freshly signed voucher: the flow `pay`, `pay-agent` and `go` share.

Everything that can fail without spending (arguments, the seller's price, an extension it requires
that this skill cannot supply, the option, the wallet's balance and allowance) is checked before
the voucher is signed. After it is sent, every failure says whether the payment may have settled,
because a retry would pay again. Once answered, the chain says whether the payment happened
(buy_x402/settlement.py), not the seller's header.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import discover, extensions, payment, settlement, x402
from .amounts import auth_expiry, format_amount
from .errors import BuyError, Interrupted, PaymentFailed, UsageError, WalletError
from .offer import PaymentOption, PaymentRequired
from .peers import Peers
from .render import paid_summary
from .result import Context
from .urls import seller_url, shown
from .vouchers import choose, preflight

DEFAULT_TIMEOUTS_S = {"http": 100.0, "inference": 600.0}
AGENT_TIMEOUT_S = 3600.0
BODY_LIMIT_CHARS = 64_000
URL_RE = re.compile(r"^https?://[^/\s]+", re.IGNORECASE)
FALLBACK_MODEL = "auto"   # the model a chat request names when neither --model nor the offer names one (upstream)


@dataclass
class Ask:
    """What to pay for, as the flags say it (pay, pay-agent and go fill it in)."""
    url: str
    kind: str = "http"                 # "http" or "inference"
    agent: bool = False                # stream a chat (pay-agent): stream:true, SSE lines out as they arrive
    method: str | None = None
    data: str | None = None
    message: str | None = None
    model: str | None = None
    payment_option: int | None = None
    token: str | None = None
    network: str | None = None
    auth_ttl: str | None = None
    timeout: float | None = None
    command: str = "pay"


@dataclass
class Paid:
    data: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    failure: BuyError | None = None    # answered, but the chain contradicts the seller's settlement


def build_request(ask: Ask, *, model: str | None = None) -> payment.PaidRequest:
    """The request to pay for; usage errors before anything goes on the wire. `model` is the one a
    chat request names when --model does not (see `chat_model`)."""
    if not URL_RE.match(ask.url or ""):
        raise UsageError(f"{shown(ask.url, 80)} is not an http(s) URL", hint=f"e.g. buy.py {ask.command} https://seller/services/x")
    seller_url(ask.url, f"the {ask.command} URL")
    if ask.kind == "http":
        if ask.agent:
            raise UsageError("pay-agent talks to a chat endpoint; --type http is for `pay`",
                             hint="use `buy.py pay URL --type http`")
        if ask.message is not None:
            raise UsageError("--message is for chat offers (--type inference)", hint="send a body with --data")
        body = ask.data.encode("utf-8") if ask.data is not None else None
        content_type = None
        if body is not None:
            content_type = "application/json" if _is_json(ask.data) else "text/plain; charset=utf-8"
        method = (ask.method or ("POST" if body is not None and ask.command == "go" else "GET")).upper()
        return payment.PaidRequest(method=method, url=ask.url, body=body, content_type=content_type)
    if ask.message is not None and ask.data is not None:
        raise UsageError("give either --message or --data, not both")
    if ask.data is not None:
        try:
            doc = json.loads(ask.data)
        except ValueError as exc:
            raise UsageError(f"--data is not JSON: {exc}", hint='e.g. --data \'{"messages": [...]}\'') from None
        if not isinstance(doc, dict):
            raise UsageError("--data must be a JSON object (an OpenAI chat completion request)")
        doc.setdefault("model", ask.model or model or FALLBACK_MODEL)
    elif ask.message is not None:
        doc = {"model": ask.model or model or FALLBACK_MODEL, "messages": [{"role": "user", "content": ask.message}]}
    else:
        raise UsageError(f"{ask.command} needs --message TEXT or --data JSON for a chat offer")
    if ask.agent:
        doc["stream"] = True
    return payment.PaidRequest(method=(ask.method or "POST").upper(), url=x402.chat_url(ask.url),
                               body=json.dumps(doc).encode("utf-8"), content_type="application/json", stream=ask.agent)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def chat_model(ask: Ask, offer: PaymentRequired) -> str:
    """--model, else the model the offer advertises, else "auto" (upstream pay-agent's rule)."""
    return ask.model or discover.advertised_model(offer) or FALLBACK_MODEL


def pay(ctx: Context, ask: Ask, *, json_mode: bool, peers: Peers | None = None,
        offer: PaymentRequired | None = None, answer_only: bool = False) -> Paid:
    """Probe (unless `offer` is the 402 of exactly this request), check, sign one voucher, send it
    once, and verify the settlement on chain. A streamed chat goes to stdout as it arrives: its SSE
    lines as they are, or with `answer_only` just the answer's text."""
    request = build_request(ask)  # usage errors first, before any request
    timeout = ask.timeout or (AGENT_TIMEOUT_S if ask.agent else DEFAULT_TIMEOUTS_S[ask.kind])
    peers = peers or Peers(ctx)

    # 1. Price (unpaid; a seller that is down fails here, before anything is signed).
    if offer is None:
        ctx.notify(f"Probing {request.url} ...")
        offer = x402.probe(peers.session, ask.url, ask.model or FALLBACK_MODEL, kind=ask.kind,
                           method=request.method if ask.kind == "http" else None)
    if ask.kind == "inference":
        request = build_request(ask, model=chat_model(ask, offer))
    extensions.check_satisfiable(offer.extensions, url=request.url)

    # 2. Option and wallet.
    wallet = peers.signer.address()
    choice = choose(peers, offer, wallet, index=ask.payment_option, token=ask.token, network=ask.network)
    option = choice.option
    price_text = format_amount(option.amount, option.decimals, option.symbol)
    balance = peers.chain.balance_of(option.chain.name, option.asset, wallet)
    if balance < option.amount:
        raise WalletError(f"wallet {wallet} holds {format_amount(balance, option.decimals, option.symbol)} on "
                          f"{option.chain.name}; this request costs {price_text}",
                          hint=f"fund {wallet}; nothing was signed",
                          data={"wallet": wallet, "balance": str(balance), "price": str(option.amount)})
    plan = preflight(peers, option, wallet)  # one-shot vouchers use no sponsoring extension

    # 3. Sign one voucher (the only step that commits the wallet) and send it once.
    now = int(time.time())
    valid_before = auth_expiry(ask.auth_ttl, now) if ask.auth_ttl else payment.one_shot_expiry(option, now)
    voucher = payment.sign_voucher(peers.signer, option, wallet=wallet, valid_before=valid_before, plan=plan,
                                   extensions=offer.extensions)
    header_name, header_value, _ = payment.payment_header(offer, option, voucher)
    ctx.notify(f"Paying {price_text} to {option.pay_to} on {option.chain.name} (x402 v{offer.x402_version}, "
               f"{header_name}) ...")
    sink = None
    if ask.agent and not json_mode and ctx.stream is not None:
        sink = AnswerLines(ctx.stream) if answer_only else ctx.stream
    try:
        response = payment.send_paid(peers.session, request, header_name, header_value, timeout=timeout,
                                     on_line=sink)
    except Interrupted as exc:  # the voucher left this process: stopping cannot take it back
        exc.data = {**exc.data, "url": request.url, "voucher_sent": True, "wallet": wallet,
                    "price": {"atomic": str(option.amount), "display": price_text}}
        exc.note = "the signed voucher was sent and may have been spent: check `buy.py balance` before retrying"
        raise
    if isinstance(sink, AnswerLines):
        sink.flush()

    # 4. Outcome, then the chain's word on the payment.
    settled = payment.settled_warning(response.settlement)
    try:
        payment.check_outcome(response, request.url)
    except PaymentFailed:
        if settled:
            ctx.warn(settled)
        raise
    transaction = response.settlement.transaction if response.settlement else None
    checked = settlement.verify(peers.chain, option, wallet, voucher, transaction, expires_at=valid_before)
    data = _data(ask, request, response, offer, option, choice.reason, wallet, voucher, checked,
                 streamed=sink is not None)
    if isinstance(sink, AnswerLines):
        data["printed"] = sink.printed
    warnings, failure = _judge(response, checked)
    if sink is not None:
        ctx.notify(paid_summary(data))
    return Paid(data, warnings, failure)


def _judge(response: payment.PaidResponse, checked: settlement.Verification) -> tuple[list[str], BuyError | None]:
    """Warnings for what is doubtful; a failure (exit 1) when the seller claims a settlement the chain denies."""
    warnings = []
    if response.settlement is not None and response.settlement.success is False:
        warnings.append(f"the seller answered {response.status} but reports the settlement failed: "
                        f"{response.settlement.error_reason or 'no reason given'}")
    if checked.verified is True:
        if checked.seller_claim == "contradicted":
            warnings.append(f"the seller's settlement report is wrong, but the payment happened: {checked.detail}")
        return warnings, None
    if checked.verified is None:
        warnings.append(f"settlement not verified: {checked.detail}; check `buy.py balance`")
        return warnings, None
    if checked.seller_claim == "contradicted":
        return warnings, PaymentFailed(
            f"the seller reported a settlement the chain does not show: {checked.detail}",
            hint="the answer was delivered but not paid as claimed; do not treat this seller's receipts as payment",
            code="settlement_unverified", data={"settlement": checked.as_dict()})
    warnings.append(f"answered but not paid (yet): {checked.detail}")
    return warnings, None


def _data(ask: Ask, request: payment.PaidRequest, response: payment.PaidResponse, offer: PaymentRequired,
          option: PaymentOption, reason: str, wallet: str, voucher: dict, checked: settlement.Verification,
          *, streamed: bool) -> dict[str, Any]:
    text = response.body.decode("utf-8", "replace")
    header = response.settlement.as_dict() if response.settlement else {
        "header": None, "success": None, "transaction": None, "payer": None, "network": None}
    data: dict[str, Any] = {
        "url": request.url, "type": ask.kind, "method": request.method, "status": response.status,
        "contentType": response.headers.get("content-type") or response.headers.get("Content-Type"),
        "x402Version": offer.x402_version, "paymentHeader": response.payment_header,
        "option": x402.option_view(option), "optionReason": reason, "wallet": wallet,
        "price": {"atomic": str(option.amount), "display": option.price_text(), "symbol": option.symbol,
                  "decimals": option.decimals},
        "paymentId": extensions.payment_id(voucher["payment"].get("extensions")),
        "settlement": {**header, **checked.as_dict(), "transaction": header["transaction"] or checked.transaction},
        "body": text[:BODY_LIMIT_CHARS], "bodyTruncated": len(text) > BODY_LIMIT_CHARS,
        "bodyBytes": len(response.body), "elapsedS": response.elapsed_s,
    }
    if request.stream:
        data["streamed"] = streamed
        data["lines"] = len(response.lines)
        data["content"] = sse_content(response.lines)
    elif ask.kind == "inference":
        data["content"] = completion_content(text)
    if ask.kind == "inference":
        data["model"] = json.loads(request.body).get("model")
    return data


def completion_content(text: str) -> str | None:
    """The assistant's answer of an OpenAI chat completion, if the body is one."""
    try:
        doc = json.loads(text)
        return doc["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def sse_piece(line: str) -> str | None:
    """The `delta.content` of one OpenAI SSE line, if it carries any."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if payload == "[DONE]":
        return None
    try:
        piece = json.loads(payload)["choices"][0]["delta"].get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return piece if isinstance(piece, str) else None


def sse_content(lines: list[str]) -> str | None:
    """The concatenated `delta.content` of OpenAI SSE chunks; None when the stream had none."""
    parts = [piece for piece in map(sse_piece, lines) if piece is not None]
    return "".join(parts) if parts else None


class AnswerLines:
    """An SSE sink that writes only the answer's text, a whole line at a time, as it arrives (`go`)."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.pending = ""
        self.printed = False

    def __call__(self, line: str) -> None:
        piece = sse_piece(line)
        if piece:
            self.pending += piece
            while "\n" in self.pending:
                done, self.pending = self.pending.split("\n", 1)
                self._emit(done)

    def flush(self) -> None:
        if self.pending:
            self._emit(self.pending)
            self.pending = ""

    def _emit(self, text: str) -> None:
        self.write(text)
        self.printed = True


__all__ = ["Ask", "Paid", "pay", "build_request", "chat_model", "completion_content", "sse_content",
           "AnswerLines", "sse_piece",
           "FALLBACK_MODEL"]

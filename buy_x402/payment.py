"""One-shot paid requests: sign ONE voucher, send it the way the seller's x402 version wants, read
the settlement back. No printing; streamed lines leave through a callback.

v2 sellers get `PAYMENT-SIGNATURE: base64({x402Version: 2, payload, accepted, resource?, extensions?})`
with `accepted` echoed verbatim; v1/Obol sellers (x402Version 1 in the 402 body) get
`X-PAYMENT: base64({x402Version: 1, scheme, network, payload})`. Redirects are never followed: a
voucher that left this process may be redeemed, so anything unexpected after sending it says so.
"""
from __future__ import annotations

import base64
import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import requests
import urllib3

from . import http
from .errors import PaymentFailed, TransportError
from .offer import PaymentOption, PaymentRequired
from .schemes import SigningPlan
from .x402 import decode_b64_json

V2_REQUEST_HEADER = "PAYMENT-SIGNATURE"
V1_REQUEST_HEADER = "X-PAYMENT"
SETTLEMENT_HEADERS = ("payment-response", "x-payment-response")
MIN_ONE_SHOT_TTL_S = 60
CONNECT_TIMEOUT_S = 10.0
STREAM_CHUNK_BYTES = 1024

LineSink = Callable[[str], None]


@dataclass
class Settlement:
    """The seller's decoded PAYMENT-RESPONSE / X-PAYMENT-RESPONSE header."""
    header: str
    success: bool | None = None
    transaction: str | None = None
    payer: str | None = None
    network: str | None = None
    error_reason: str | None = None
    raw: dict | None = None
    decode_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"header": self.header, "success": self.success, "transaction": self.transaction,
                               "payer": self.payer, "network": self.network}
        if self.error_reason:
            out["errorReason"] = self.error_reason
        if self.decode_error:
            out["decodeError"] = self.decode_error
        return out


@dataclass
class PaidRequest:
    """What to send once paid: method, URL, body bytes and content type."""
    method: str
    url: str
    body: bytes | None = None
    content_type: str | None = None
    stream: bool = False


@dataclass
class PaidResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    settlement: Settlement | None
    payment_header: str
    elapsed_s: float
    lines: list[str] = field(default_factory=list)   # streamed lines (also sent to the sink, if any)


# ------------------------------------------------------------------------------------------ voucher

def one_shot_expiry(option: PaymentOption, now: int, ttl_override: int | None = None) -> int:
    """validBefore of a one-shot voucher: the seller's maxTimeoutSeconds (what the x402 SDK client
    uses), at least a minute, unless the caller asked for an explicit TTL. A voucher that is spent at
    once has no reason to stay redeemable for 30 days."""
    if ttl_override is not None:
        return int(ttl_override)
    return now + max(int(option.max_timeout_seconds or 0), MIN_ONE_SHOT_TTL_S)


def sign_voucher(signer, option: PaymentOption, *, wallet: str, valid_before: int,
                 plan: SigningPlan | None = None, extensions: Mapping[str, Any] | None = None) -> dict:
    """ONE voucher for `option` through the remote signer, in `spec.preSignedAuths` form
    (`{id, payment: {x402Version: 2, accepted, payload, extensions?}}`)."""
    return signer.presign(option, address=wallet, count=1, deadline=valid_before, plan=plan,
                          extensions=dict(extensions) if extensions else None, workers=1)[0]


def _b64json(doc: dict) -> str:
    return base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()


def payment_header(offer: PaymentRequired, option: PaymentOption, voucher: dict) -> tuple[str, str, dict]:
    """(header name, header value, decoded document) for the seller's x402 version."""
    payment = voucher["payment"]
    if offer.x402_version == 1:
        doc = {"x402Version": 1, "scheme": option.scheme, "network": option.network,
               "payload": copy.deepcopy(payment["payload"])}
        return V1_REQUEST_HEADER, _b64json(doc), doc
    doc: dict[str, Any] = {"x402Version": 2, "payload": copy.deepcopy(payment["payload"]),
                           "accepted": copy.deepcopy(option.raw) or copy.deepcopy(payment["accepted"])}
    if offer.resource is not None:
        doc["resource"] = copy.deepcopy(offer.resource)
    if payment.get("extensions"):
        doc["extensions"] = copy.deepcopy(payment["extensions"])
    return V2_REQUEST_HEADER, _b64json(doc), doc


# --------------------------------------------------------------------------------------- settlement

def decode_settlement(headers: Mapping[str, str]) -> Settlement | None:
    """PAYMENT-RESPONSE (v2), else X-PAYMENT-RESPONSE (v1); None when neither is present.
    An undecodable header is kept with `decode_error` rather than failing the whole request."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in SETTLEMENT_HEADERS:
        value = (lowered.get(name) or "").strip()
        if not value:
            continue
        try:
            doc = decode_b64_json(value)
        except ValueError as exc:
            return Settlement(header=name, decode_error=f"{exc.__class__.__name__}: {value[:80]}")
        if not isinstance(doc, dict):
            return Settlement(header=name, decode_error=f"not a JSON object: {value[:80]}")
        success = doc.get("success")
        return Settlement(header=name, success=success if isinstance(success, bool) else None,
                          transaction=doc.get("transaction") or None, payer=doc.get("payer"),
                          network=doc.get("network"), error_reason=doc.get("errorReason") or doc.get("error_reason"),
                          raw=doc)
    return None


def rejection_reason(status: int, headers: Mapping[str, str], body: bytes) -> str | None:
    """Why a seller answered 402 to a paid request: PAYMENT-REQUIRED.error (v2) or the body's error (v1)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    candidates = []
    if lowered.get("payment-required"):
        value = lowered["payment-required"].strip()
        try:
            candidates.append(decode_b64_json(value))
        except ValueError:
            pass
    try:
        candidates.append(json.loads(body or b""))
    except ValueError:
        pass
    for doc in candidates:
        if isinstance(doc, dict) and doc.get("error"):
            return str(doc["error"])
    return None


# ------------------------------------------------------------------------------------------- sending

def send_paid(session: requests.Session, request: PaidRequest, header_name: str, header_value: str, *,
              timeout: float, on_line: LineSink | None = None) -> PaidResponse:
    """Send the paid request once, never following redirects. With `request.stream`, a 2xx body is
    read line by line and each line goes to `on_line` as it arrives. Transport failures after the
    voucher left say that it may have been spent."""
    headers = {header_name: header_value}
    if request.content_type:
        headers["Content-Type"] = request.content_type
    if request.stream:
        headers["Accept"] = "text/event-stream"
    started = time.monotonic()
    with http.deadline(timeout) as exchange:  # one deadline for the whole exchange, body included
        try:
            response = session.request(request.method, request.url, data=request.body, headers=headers,
                                       timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout), allow_redirects=False,
                                       stream=request.stream)
        except requests.RequestException as exc:
            raise _after_send_transport(request.url, exc, timeout, expired=exchange.expired) from exc
        with response:
            settlement = decode_settlement(response.headers)
            lines: list[str] = []
            try:
                if request.stream and 200 <= response.status_code < 300:
                    body = _read_lines(response, lines, on_line, exchange.due, timeout)
                else:
                    body = response.content
            except requests.RequestException as exc:
                raise _after_send_transport(request.url, exc, timeout, settlement=settlement,
                                            expired=exchange.expired) from exc
            if exchange.expired:  # the answer was cut short at the deadline
                raise _after_send_transport(request.url, requests.Timeout(), timeout, settlement=settlement)
            return PaidResponse(status=response.status_code, headers=dict(response.headers), body=body,
                                settlement=settlement, payment_header=header_name,
                                elapsed_s=round(time.monotonic() - started, 3), lines=lines)


def _read_lines(response: requests.Response, lines: list[str], on_line: LineSink | None,
                deadline: float, timeout: float) -> bytes:
    """Split the streamed body on newlines as bytes arrive and hand each complete line over at once.

    `iter_content`/`iter_lines` block until a whole chunk of their size has arrived (or the body
    ends), which would hold an SSE stream back; `read1` returns whatever the socket has.
    """
    raw = bytearray()
    pending = b""
    for chunk in _arrivals(response):
        if time.monotonic() > deadline:
            raise requests.Timeout(f"stream still open after {timeout:g} s")
        if not chunk:
            continue
        raw += chunk
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            _deliver(line, lines, on_line)
    if pending:
        _deliver(pending, lines, on_line)
    return bytes(raw)


def _arrivals(response: requests.Response):
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:  # urllib3 < 2: byte-wise is slow but never holds a line back
        yield from response.iter_content(chunk_size=1)
        return
    try:
        while True:
            chunk = read1(STREAM_CHUNK_BYTES, decode_content=True)
            if not chunk:
                return
            yield chunk
    except urllib3.exceptions.ReadTimeoutError as exc:  # requests only wraps these inside iter_content
        raise requests.Timeout(str(exc)) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise requests.ConnectionError(str(exc)) from exc


def _deliver(line: bytes, lines: list[str], on_line: LineSink | None) -> None:
    text = line.rstrip(b"\r").decode("utf-8", "replace")
    lines.append(text)
    if on_line is not None:
        on_line(text)


def _after_send_transport(url: str, exc: Exception, timeout: float, settlement: Settlement | None = None,
                          expired: bool = False) -> TransportError:
    timed_out = expired or isinstance(exc, requests.Timeout)
    what = f"did not answer within {timeout:g} s" if timed_out else \
        f"failed after the payment was sent ({exc.__class__.__name__})"
    data: dict[str, Any] = {"url": url, "voucher_sent": True}
    if settlement is not None:
        data["settlement"] = settlement.as_dict()
    return TransportError(f"the seller at {url} {what}; the signed voucher was sent and may have been spent",
                          hint="check the wallet balance (buy.py balance) before retrying",
                          code="timeout" if timed_out else "unreachable", data=data)


def check_outcome(response: PaidResponse, url: str) -> None:
    """Raise for anything but a 2xx after paying; say whether the payment may have settled."""
    status = response.status
    settlement = response.settlement
    settled_tx = settlement.transaction if settlement else None
    data: dict[str, Any] = {"status": status, "url": url,
                            "settlement": settlement.as_dict() if settlement else None}
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        location = response.headers.get("Location") or response.headers.get("location") or "(no Location header)"
        raise PaymentFailed(f"the seller redirected the paid request (HTTP {status}) to {location}; the redirect "
                            "was not followed and the voucher may have been spent",
                            hint="check the wallet balance before retrying; use the final URL if you trust it",
                            data=dict(data, location=location))
    preview = response.body[:300].decode("utf-8", "replace")
    if status == 402:
        reason = rejection_reason(status, response.headers, response.body) or (settlement.error_reason if settlement else None)
        message = f"the seller refused the payment (HTTP 402): {reason or 'no reason given'}"
    else:
        message = f"the seller answered HTTP {status} after payment: {preview or '(empty body)'}"
    data["body"] = preview
    raise PaymentFailed(message, data=data,
                        hint="check the wallet balance (buy.py balance) before retrying" if settled_tx else None)


def settled_warning(settlement: Settlement | None) -> str | None:
    """The warning a failed paid request carries when the seller reports a settlement transaction."""
    if settlement is None or not settlement.transaction:
        return None
    return f"the payment may have settled on-chain (tx {settlement.transaction})"


__all__ = ["PaidRequest", "PaidResponse", "Settlement", "PaymentFailed", "one_shot_expiry", "sign_voucher",
           "payment_header", "decode_settlement", "rejection_reason", "send_paid", "check_outcome", "settled_warning",
           "V2_REQUEST_HEADER", "V1_REQUEST_HEADER"]

"""Simulated Obol seller gateway (the in-process gateway of `obol sell inference`) serving the devstack's offers.

    python -m devstack.sim.seller --port P --rpc ANVIL_URL --offers FILE

The wire rules are in devstack/sim/seller_wire.py (obol-wire.md §2a, 2b, 2d). This module follows
§2c: settlement runs only after the upstream answered < 400 — for a JSON answer before the status is
written, so a failed settle still becomes a 503 `settlement_failed` or a 402 `settlement_rejected`
re-challenge; for an SSE answer after the stream, with both settlement headers as HTTP trailers —
and a POST to the offer's empty path, `/v1` or `/chat/completions` is served as `/v1/chat/completions`.
The upstream is the offer's model itself (devstack/answers.py).

Verify and settle go to the x402 SDK's own facilitator (x402FacilitatorSync) in process, settling on
anvil. The real gateway POSTs the same payload JSON and its own matched entry to a remote
facilitator, tagged x402Version 2; here the payload is validated as a v2 PaymentPayload for the same
reason. Where the reference is silent (an exception inside the in-process facilitator) the gateway
answers as for a reachable facilitator that rejected the call: 503 `facilitator_error`. That is what a
payment whose `accepted.network` is the legacy alias gets: it passes the gateway's alias-tolerant
match (§2d) and goes on as sent, and the SDK facilitator knows its v2 scheme only as the CAIP-2 name.
The x402-buyer always sends CAIP-2 (§1 c2), and so does `buy.py pay` (the first spelling offered).

Every 402 carries the route's `bazaar` extension (chat-completions shape for inference and agent
offers, bazaar.go), and an agent offer's options carry agentModel/agentRuntime/agentSkills in
`extra` (mergeAgentExtras); `go` classifies offers by them. A `gate: auth` route is SIWX-gated
(devstack/sim/seller_siwx.py, obol-wire.md §4) in front of an upstream that echoes the
`X-Verified-Wallet` it was given.

Not served: the HTML 402 the real gateway sends to browsers (`Accept: text/html`), the service
catalog behind the `Link` header, SIWX sessions and sign-in pages, the payer system message of agent
offers (the upstream's answer is canned; an `http` offer's upstream answers any method and path
with a small JSON document); no client of the devstack asks for them.

Offers file: a JSON list of {"offer", "model", "type"?, "gate"?, "prices": [atomic, ...]} or
{"offer", "model", "price_file"}; `type` is inference (default) or agent; a price file is read at every request (a seller whose price moves), a missing one makes
the gateway answer 500 (a seller whose pricing broke), and text that is not a number is advertised
as it is (a seller whose 402 is malformed).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from eth_account import Account

from .. import answers, config
from ..loopback import LoopbackHandler, make_server
from . import seller_siwx
from . import seller_wire as wire

MAX_TIMEOUT_SECONDS = 300
CHAT_PATHS = ("", "/", "/v1", "/chat/completions", "/v1/chat/completions")


def log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} obol-seller: {msg}\n")
    sys.stderr.flush()


class PricingBroken(Exception):
    """The offer's price cannot be read: the gateway answers 500, like a seller whose config broke."""


class Gateway:
    """The offers, the seller's wallet and the facilitator; one per process."""

    def __init__(self, offers: list[dict], rpc_url: str) -> None:
        from x402 import x402FacilitatorSync
        from x402.mechanisms.evm import FacilitatorWeb3Signer
        from x402.mechanisms.evm.exact import register_exact_evm_facilitator

        self.offers = {o["offer"]: o for o in offers}
        self.siwx = seller_siwx.Authenticator()
        self.pay_to = Account.from_key(config.SELLER_KEY).address
        self.facilitator = x402FacilitatorSync()
        register_exact_evm_facilitator(self.facilitator, FacilitatorWeb3Signer(
            private_key=config.FACILITATOR_KEY, rpc_url=rpc_url), config.CAIP2)

    def requirements(self, offer: dict) -> list[dict]:
        """The offer's canonical (CAIP-2) entries, one per payment option."""
        if "price_file" in offer:
            try:
                prices = [Path(offer["price_file"]).read_text(encoding="ascii").strip()]
            except OSError as exc:
                raise PricingBroken(f"price of {offer['offer']} unreadable: {exc.strerror}") from exc
        else:
            prices = [str(p) for p in offer["prices"]]
        extra = {"name": "USDC", "version": "2", "assetTransferMethod": "eip3009"}
        if offer.get("type") == "agent":  # mergeAgentExtras
            extra.update(agentModel=offer["model"], agentRuntime="hermes", agentSkills=list(offer.get("skills") or []))
        return [wire.requirement(config.CAIP2, price, config.USDC_ADDRESS, self.pay_to, MAX_TIMEOUT_SECONDS, extra)
                for price in prices]

    def verify(self, raw: bytes, req: dict):
        """(SDK payload, SDK requirements, VerifyResponse) for the payment bytes and the matched entry."""
        from x402.schemas import PaymentPayload, PaymentRequirements
        doc = json.loads(raw)
        if isinstance(doc.get("resource"), str):
            doc["resource"] = {"url": doc["resource"]}
        payload = PaymentPayload.model_validate({**doc, "x402Version": 2})
        requirements = PaymentRequirements.model_validate(req)
        return payload, requirements, self.facilitator.verify(payload, requirements)

    def settle(self, payload, requirements):
        return self.facilitator.settle(payload, requirements)


class Handler(LoopbackHandler):
    server_version = "obol-seller-sim/1"
    gateway: Gateway

    def do_GET(self) -> None:  # noqa: N802
        if urlsplit(self.path).path == "/healthz":
            self.send_body(200, b"ok", "text/plain")
        else:
            self.read_body()
            self._offer_request(is_post=False)

    def do_POST(self) -> None:  # noqa: N802
        self._offer_request(is_post=True)

    # -- one request to an offer ---------------------------------------------------------------
    def _offer_request(self, *, is_post: bool) -> None:
        body = self.read_body() if is_post else b""
        parts = urlsplit(self.path)
        segments = parts.path.split("/", 3)  # "", "services", offer, rest
        offer = self.gateway.offers.get(segments[2]) if len(segments) > 2 and segments[1] == "services" else None
        if offer is None:
            self.send_body(404, b"404 page not found\n", "text/plain; charset=utf-8")
            return
        if offer.get("gate") == "auth":
            self._auth_route(offer, parts, is_post)
            return
        try:
            requirements = self.gateway.requirements(offer)
        except PricingBroken as exc:
            log(str(exc))
            self.send_body(500, b"Internal Server Error\n", "text/plain; charset=utf-8")
            return
        resource_url = f"http://{self.headers.get('Host', '127.0.0.1')}{self.path}"

        extensions = {"bazaar": wire.bazaar(offer.get("type", "inference"), offer["model"])}

        def challenge(failure: dict | None = None) -> None:
            data = wire.payment_required_body(resource_url, parts.path, requirements, extensions=extensions,
                                              failure=failure)
            self.send_body(402, data, "application/json", wire.payment_required_headers(data))

        header = wire.payment_header(self.headers)
        if header is None:
            challenge()
            return
        try:
            payment, raw = wire.decode_payment(header)
        except wire.BadPaymentHeader as exc:
            self.send_body(400, wire.error_body("Invalid payment header", "invalid_payment_header", hint=exc.hint))
            return
        matched = wire.match(payment, requirements)
        if matched is None:
            log(f"no matching requirement for accepted={payment.get('accepted')!r} x402Version={payment.get('x402Version')}")
            challenge(wire.no_match_failure(payment))
            return
        raw = wire.normalize_v(raw)
        try:
            sdk_payload, sdk_requirements, verified = self.gateway.verify(raw, matched)
        except Exception as exc:  # a facilitator that rejects the call (malformed payload, unknown scheme)
            log(f"verify error: {exc!r}")
            self.send_body(503, wire.error_body(
                "Payment verification failed", "facilitator_error", detail=str(exc).strip()[:300],
                hint="seller facilitator rejected this payment voucher (auth not consumed) — do not spam identical "
                     "retries; rebuild the voucher from the 402 accepts[] entry verbatim (network/amount/asset/payTo) "
                     "and re-sign"))
            return
        if not verified.is_valid:
            detail = " — ".join(p for p in (verified.invalid_reason, verified.invalid_message) if p)
            log(f"payment invalid: {detail}")
            challenge({"reason": "payment_invalid", "detail": detail, "hint": wire.signature_hint(detail, matched)})
            return
        self._serve_paid(offer, parts.path, body, is_post, sdk_payload, sdk_requirements, matched, challenge)

    def _auth_route(self, offer: dict, parts, is_post: bool) -> None:
        """A gate:auth route (devstack/sim/seller_siwx.py): SIWX, then the upstream with X-Verified-Wallet."""
        host = seller_siwx.request_host(self.headers)
        try:
            wallet = self.gateway.siwx.authenticate(self.headers, host, time.time())
        except seller_siwx.Refused as exc:
            log(f"siwx refused on {parts.path}: {exc}")
            headers, body = self.gateway.siwx.challenge(offer["offer"], host, f"https://{host}{parts.path}", str(exc))
            self.send_body(401, body, "application/json", headers)
            return
        # The upstream sees only the verifier's X-Verified-Wallet (a client's own is stripped); it echoes it.
        upstream = {"offer": offer["offer"], "method": "POST" if is_post else "GET", "path": parts.path,
                    "verifiedWallet": wallet, "content": f"members-only answer from {offer['offer']}"}
        self.send_body(200, json.dumps(upstream).encode(), "application/json")

    def _serve_paid(self, offer: dict, path: str, body: bytes, is_post: bool, sdk_payload, sdk_requirements,
                    matched: dict, challenge) -> None:
        rest = path.split("/", 3)[3] if path.count("/") >= 3 else ""
        rest = "/" + rest if rest else ""
        if offer.get("type") == "http":  # an HTTP offer's upstream: any method and path, a JSON answer
            data = {"offer": offer["offer"], "method": "POST" if is_post else "GET", "path": rest or "/",
                    "content": f"paid data from {offer['model']}"}
            headers = self._settle(sdk_payload, sdk_requirements, matched, challenge)
            if headers is not None:
                self.send_body(200, json.dumps(data).encode(), "application/json", headers)
            return
        if not is_post or rest not in CHAT_PATHS:
            self.send_body(404 if is_post else 405, b'{"error":"not found"}', "application/json")
            return  # upstream >= 400: no settlement
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self.send_body(400, b'{"error":{"message":"request body is not a JSON object"}}', "application/json")
            return
        answer = answers.completion(offer["model"], request)
        if request.get("stream") is True:
            self._stream(answer, sdk_payload, sdk_requirements)
            return
        headers = self._settle(sdk_payload, sdk_requirements, matched, challenge)
        if headers is not None:
            self.send_body(200, json.dumps(answer).encode(), "application/json", headers)

    def _settle(self, sdk_payload, sdk_requirements, matched: dict, challenge) -> dict | None:
        """Settle before the status is written: the settlement headers, or None when the answer was an error."""
        try:
            settled = self.gateway.settle(sdk_payload, sdk_requirements)
        except Exception as exc:
            log(f"settlement failed: {exc!r}")
            self.send_body(503, wire.error_body("Payment settlement failed", "settlement_failed",
                                                hint="transient facilitator error — retry the same request in a few "
                                                     "seconds", retriable=True))
            return None
        if not settled.success:
            detail = " ".join(p.strip() for p in (settled.error_reason or "", settled.error_message or "") if p.strip())
            log(f"settlement unsuccessful: {detail}")
            challenge({"reason": "settlement_rejected", "detail": detail,
                       "hint": wire.signature_hint(detail, matched)})
            return None
        value = wire.settlement_header(True, settled.transaction or "", settled.network or "", settled.payer,
                                       settled.error_reason, settled.error_message)
        return {"X-PAYMENT-RESPONSE": value, "PAYMENT-RESPONSE": value}

    def _stream(self, answer: dict, sdk_payload, sdk_requirements) -> None:
        """SSE: the status goes out first, settlement only after the stream, its receipt as trailers."""
        self.start_chunked(200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                 "Trailer": "X-PAYMENT-RESPONSE, PAYMENT-RESPONSE"})
        try:
            for event in answers.sse_events(answer):
                self.write_chunk(event.encode())
        except OSError as exc:  # the buyer went away: no settlement for an answer nobody received
            log(f"client write failed, skipping settlement: {exc!r}")
            return
        trailers = {}
        try:
            settled = self.gateway.settle(sdk_payload, sdk_requirements)
            if settled.success:
                value = wire.settlement_header(True, settled.transaction or "", settled.network or "", settled.payer)
                trailers = {"X-PAYMENT-RESPONSE": value, "PAYMENT-RESPONSE": value}
            else:
                log(f"settlement unsuccessful after the stream: {settled.error_reason}")
        except Exception as exc:
            log(f"settlement failed after the stream: {exc!r}")
        self.end_chunked(trailers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.sim.seller", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rpc", required=True, help="anvil JSON-RPC URL the facilitator settles on")
    parser.add_argument("--offers", type=Path, required=True, help="JSON list of offers")
    args = parser.parse_args(argv)
    Handler.gateway = Gateway(json.loads(args.offers.read_text()), args.rpc)
    server = make_server(args.port, Handler)
    log(f"listening on 127.0.0.1:{args.port}; offers {', '.join(Handler.gateway.offers)}")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

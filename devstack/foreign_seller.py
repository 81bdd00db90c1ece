"""The foreign seller: chat completions behind the reference x402 SDK's FastAPI payment middleware.

Run by devstack/parts/foreign.py as `uvicorn --factory devstack.foreign_seller:create_app` with
SELLER_RPC_URL (anvil). Payments are verified and settled by the SDK's own facilitator, in process,
on the local chain (no remote facilitator). It stands for sellers on the internet that are not Obol
gateways, which the in-cluster x402-buyer cannot pay (obol-wire.md "mismatch cases"):

- `sdk`: x402 v2 exactly as the SDK middleware serves it: requirements only in the base64
  `PAYMENT-REQUIRED` header (the JSON body is `{}`), payment read only from `PAYMENT-SIGNATURE`;
- `legacy`: x402 v1, the requirement in the JSON body, paid with `X-PAYMENT` carrying a v1 payload
  (the SDK server cannot emit v1, so this route drives the same in-process facilitator by hand);
- `pid`: like `sdk`, requiring the SDK's payment-identifier extension (its own declaration and
  requirement check, run as a before-verify hook); `future`: like `sdk`, declaring a required
  extension no client implements.
"""
from __future__ import annotations

import os

from eth_account import Account
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from x402 import x402Facilitator, x402ResourceServer
from x402.extensions.payment_identifier import (PAYMENT_IDENTIFIER, declare_payment_identifier_extension,
                                                is_payment_identifier_required, validate_payment_identifier_requirement)
from x402.http.middleware.fastapi import PaymentMiddlewareASGI
from x402.http.types import PaymentOption, RouteConfig
from x402.http.utils import decode_payment_signature_header, encode_payment_response_header
from x402.mechanisms.evm import FacilitatorWeb3Signer
from x402.mechanisms.evm.exact import ExactEvmServerScheme, register_exact_evm_facilitator
from x402.schemas.v1 import PaymentPayloadV1, PaymentRequiredV1, PaymentRequirementsV1

from devstack import answers, config
from devstack.parts.foreign import LEGACY_PRICE, UNKNOWN_EXTENSION, foreign_offers
from x402.schemas.hooks import AbortResult

MAX_TIMEOUT_SECONDS = 300
USDC_EXTRA = {"name": "USDC", "version": "2"}


def _usdc(amount: str) -> dict:
    return {"amount": amount, "asset": config.USDC_ADDRESS, "extra": dict(USDC_EXTRA)}


def _option(pay_to: str, amount: str) -> PaymentOption:
    """One exact-scheme USDC option at `amount` atomic units."""
    return PaymentOption(scheme="exact", pay_to=pay_to, network=config.CAIP2, price=_usdc(amount),
                         max_timeout_seconds=MAX_TIMEOUT_SECONDS)


async def _answer(request: Request, model: str) -> Response:
    try:
        body = await request.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    answer = answers.completion(model, body)
    if body.get("stream") is True:
        return StreamingResponse(answers.sse_events(answer), media_type="text/event-stream")
    return JSONResponse(answer)


def _add_chat_route(app: FastAPI, path: str, model: str) -> None:
    async def chat(request: Request) -> Response:
        return await _answer(request, model)
    app.add_api_route(path, chat, methods=["POST"], name=f"chat {path}")


def create_app() -> FastAPI:
    rpc_url = os.environ["SELLER_RPC_URL"]
    pay_to = Account.from_key(config.SELLER_KEY).address
    facilitator = x402Facilitator()
    # Registers the v2 scheme for eip155:84532 and the v1 scheme for the legacy names (base-sepolia …).
    register_exact_evm_facilitator(facilitator, FacilitatorWeb3Signer(private_key=config.FACILITATOR_KEY,
                                                                      rpc_url=rpc_url), config.CAIP2)
    server = x402ResourceServer(facilitator)
    server.register(config.CAIP2, ExactEvmServerScheme())
    server.on_before_verify(_require_payment_identifier)

    app = FastAPI(title="devstack foreign x402 seller")
    routes: dict[str, RouteConfig] = {}
    for offer in foreign_offers():
        path = f"/services/{offer['offer']}/v1/chat/completions"
        if offer["x402Version"] == 1:
            _add_legacy_route(app, path, offer["model"], pay_to, facilitator)
            continue
        accepts = [_option(pay_to, offer["price"])]
        routes[f"POST {path}"] = RouteConfig(accepts=accepts,
                                             description=f"chat completions from {offer['model']}",
                                             mime_type="application/json", extensions=_extensions(offer))
        _add_chat_route(app, path, offer["model"])
    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


def _extensions(offer: dict) -> dict | None:
    """What a route declares: the payment-identifier extension as the SDK declares it, or an extension
    no client knows, both required."""
    if offer.get("requires") == PAYMENT_IDENTIFIER:
        return {PAYMENT_IDENTIFIER: declare_payment_identifier_extension(required=True)}
    if offer.get("requires") == UNKNOWN_EXTENSION:
        return {UNKNOWN_EXTENSION: {"info": {"required": True, "version": "1"}, "schema": {"type": "object"}}}
    return None


def _require_payment_identifier(context) -> AbortResult | None:
    """The SDK's server-side check of a required payment identifier, before verification (a payment
    without one is refused with a 402 naming the reason and never settles)."""
    declared = (context.declared_extensions or {}).get(PAYMENT_IDENTIFIER)
    result = validate_payment_identifier_requirement(context.payment_payload, is_payment_identifier_required(declared))
    if not result.valid:
        return AbortResult(reason="payment_identifier_required: " + "; ".join(result.errors))
    return None


def _add_legacy_route(app: FastAPI, path: str, model: str, pay_to: str, facilitator: x402Facilitator) -> None:
    """An x402 v1 seller: 402 JSON body with maxAmountRequired; `X-PAYMENT` in, `X-PAYMENT-RESPONSE` out."""
    async def legacy_chat(request: Request) -> Response:
        requirements = PaymentRequirementsV1(
            scheme="exact", network=config.CHAIN_NAME, max_amount_required=LEGACY_PRICE,
            resource=str(request.url), description="", mime_type="application/json", pay_to=pay_to,
            max_timeout_seconds=MAX_TIMEOUT_SECONDS, asset=config.USDC_ADDRESS, extra=dict(USDC_EXTRA))

        def payment_required(error: str) -> Response:
            body = PaymentRequiredV1(error=error, accepts=[requirements]).model_dump(by_alias=True, exclude_none=True)
            return JSONResponse(body, status_code=402, headers={"Cache-Control": "no-store"})

        header = request.headers.get("x-payment")
        if not header:
            return payment_required("X-PAYMENT header is required")
        try:
            payload = decode_payment_signature_header(header)
        except Exception as exc:  # malformed base64/JSON/schema all mean "no valid payment"
            return payment_required(f"invalid X-PAYMENT header: {exc}")
        if not isinstance(payload, PaymentPayloadV1):
            return payment_required("this seller speaks x402 v1; send an x402Version 1 payload")
        if payload.scheme != requirements.scheme or payload.network != requirements.network:
            return payment_required("unsupported scheme or network")
        verified = await facilitator.verify(payload, requirements)
        if not verified.is_valid:
            return payment_required(verified.invalid_reason or "invalid payment")
        response = await _answer(request, model)
        if isinstance(response, StreamingResponse):  # settle before answering, like the SDK middleware
            chunks = [c if isinstance(c, bytes) else c.encode() async for c in response.body_iterator]
            response = Response(b"".join(chunks), media_type="text/event-stream")
        settled = await facilitator.settle(payload, requirements)
        if not settled.success:
            return payment_required(settled.error_reason or "settlement failed")
        response.headers["X-PAYMENT-RESPONSE"] = encode_payment_response_header(settled)
        response.headers["Cache-Control"] = "private"
        return response

    app.add_api_route(path, legacy_chat, methods=["POST"], name=f"legacy {path}")

"""The reference x402 seller: chat completions behind the x402 SDK's FastAPI payment middleware.

Run by devstack/parts/seller.py as `uvicorn --factory devstack.seller:create_app` with
SELLER_RPC_URL (anvil). Payments are verified and settled by the SDK's own facilitator, in process,
on the local chain (no remote facilitator).

Offers (`POST /services/<offer>/v1/chat/completions`):
- every config.OFFERS entry: x402 v2, one USDC option at the offer's price;
- `multi`: two USDC options (3000 and 1000 atomic), for payment-option choice;
- `legacy`: x402 v1, the requirement in the JSON body, paid with `X-PAYMENT` (the SDK server
  cannot emit v1, so this route drives the same in-process facilitator by hand);
- `drift`: x402 v2 with the SDK's dynamic price, read at each request from
  `$SELLER_PRICES_DIR/drift`, so a test can move the seller's price under a live purchase.
"""
from __future__ import annotations

import json
import os
import time
import uuid

from eth_account import Account
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from x402 import x402Facilitator, x402ResourceServer
from x402.http.middleware.fastapi import PaymentMiddlewareASGI
from x402.http.types import PaymentOption, RouteConfig
from x402.http.utils import decode_payment_signature_header, encode_payment_response_header
from x402.mechanisms.evm import FacilitatorWeb3Signer
from x402.mechanisms.evm.exact import ExactEvmServerScheme, register_exact_evm_facilitator
from x402.schemas.v1 import PaymentPayloadV1, PaymentRequiredV1, PaymentRequirementsV1

from devstack import config
from devstack.parts.seller import LEGACY_PRICE, all_offers

MAX_TIMEOUT_SECONDS = 300
USDC_EXTRA = {"name": "USDC", "version": "2"}


def _usdc(amount: str) -> dict:
    return {"amount": amount, "asset": config.USDC_ADDRESS, "extra": dict(USDC_EXTRA)}


def _option(pay_to: str, amount) -> PaymentOption:
    """One exact-scheme USDC option; `amount` is atomic units, or a DynamicPrice."""
    price = amount if callable(amount) else _usdc(amount)
    return PaymentOption(scheme="exact", pay_to=pay_to, network=config.CAIP2, price=price,
                         max_timeout_seconds=MAX_TIMEOUT_SECONDS)


def _price_from_file(path: str):
    """A DynamicPrice for the SDK: the file's atomic amount, read at each request."""
    def price(_context) -> dict:
        with open(path, encoding="ascii") as f:
            return _usdc(f.read().strip())
    return price


def _completion(model: str, request_body: dict) -> dict:
    content = f"paid answer from {model} via x402"
    prompt = " ".join(str(m.get("content", "")) for m in request_body.get("messages") or [] if isinstance(m, dict))
    prompt_tokens, completion_tokens = max(1, len(prompt.split())), len(content.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _stream(completion: dict):
    """The completion as OpenAI SSE chunks: role, content, finish, then [DONE]."""
    base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"],
            "model": completion["model"]}
    deltas = [({"role": "assistant"}, None), ({"content": completion["choices"][0]["message"]["content"]}, None),
              ({}, "stop")]
    for delta, finish in deltas:
        chunk = dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish}])
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


async def _answer(request: Request, model: str) -> Response:
    try:
        body = await request.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    completion = _completion(model, body)
    if body.get("stream") is True:
        return StreamingResponse(_stream(completion), media_type="text/event-stream")
    return JSONResponse(completion)


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

    app = FastAPI(title="devstack x402 seller")
    routes: dict[str, RouteConfig] = {}
    for offer in all_offers():
        path = f"/services/{offer['offer']}/v1/chat/completions"
        if offer["x402Version"] == 1:
            _add_legacy_route(app, path, offer["model"], pay_to, facilitator)
            continue
        if offer.get("movable"):
            accepts = [_option(pay_to, _price_from_file(os.path.join(os.environ["SELLER_PRICES_DIR"], offer["offer"])))]
        else:
            accepts = [_option(pay_to, p) for p in offer.get("prices") or [offer["price"]]]
        routes[f"POST {path}"] = RouteConfig(accepts=accepts,
                                             description=f"chat completions from {offer['model']}",
                                             mime_type="application/json")
        _add_chat_route(app, path, offer["model"])
    app.add_middleware(PaymentMiddlewareASGI, routes=routes, server=server)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    return app


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
